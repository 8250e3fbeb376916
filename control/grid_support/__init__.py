"""Grid-support services stacked on any mode: one module each, registered by name.

A service is a controller at GRID_SUPPORT priority that runs after the active mode (in Run only) and
adds its power to a setpoint (`ctx.support`) instead of pinning it: the battery gives the mode's power
plus the service's. The addition skips the setpoint's ramp limit (the service's response time is the
grid code's), and the charge limiter's and the interlocks' bounds still hold. The site enables a service
by listing it under `grid_support:` in its `control:` section with its parameters.

SOC endurance (`soc_min`, `soc_max`): a service gives no discharge at or below `soc_min` and takes no
charge at or above `soc_max`, so the battery keeps the energy to sustain a full activation for the
time the market asks (the site sizes these from its capacity and the service's endurance).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any

from gateway.control.controller import GRID_SUPPORT, Controller, CycleContext
from gateway.control.modes import Param

SERVICES: dict[str, type[GridSupport]] = {}


class GridSupport(Controller):
    priority = GRID_SUPPORT
    setpoints = ("battery_power",)
    PARAMETERS: tuple[Param, ...] = ()

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        known = {p.name for p in self.PARAMETERS}
        unknown = sorted(set(self.params) - known)
        if unknown:
            raise ValueError(f"grid support {self.name}: unknown parameter(s) {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(known))})")
        for p in self.PARAMETERS:
            value = self.param(p.name)
            if not p.low <= value <= p.high:
                raise ValueError(f"grid support {self.name}: {p.name} = {value:g} outside {p.low:g}..{p.high:g}")

    def param(self, name: str) -> float:
        value = self.params.get(name)
        if value is None:
            value = next(p.default for p in self.PARAMETERS if p.name == name)
        return float(value)

    def endurance(self, ctx: CycleContext, power: float) -> float:
        """`power` (> 0 discharging) as the SOC allows: nothing the battery could not sustain."""
        soc = ctx.number("soc") if "soc" in ctx.signals else None
        if soc is None and "soc" in ctx.signals:
            return 0.0  # a SOC it cannot see: no promise of energy
        if soc is not None and power > 0 and soc <= self.param("soc_min"):
            return 0.0
        if soc is not None and power < 0 and soc >= self.param("soc_max"):
            return 0.0
        return power


ENDURANCE = (
    Param("soc_min", 10.0, "%", 0.0, 100.0, "No discharge for the service at or below this SOC."),
    Param("soc_max", 90.0, "%", 0.0, 100.0, "No charge for the service at or above this SOC."),
)


def register(cls: type[GridSupport]) -> type[GridSupport]:
    if not cls.name or cls.name in SERVICES:
        raise ValueError(f"grid support {cls.__name__}: needs a name of its own, got {cls.name!r}")
    SERVICES[cls.name] = cls
    return cls


def load_services() -> dict[str, type[GridSupport]]:
    """Import every module of this package (each registers its service) and return the registry."""
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    return SERVICES


def make_service(name: str, params: Mapping[str, Any] | None = None) -> GridSupport:
    services = load_services()
    if name not in services:
        raise ValueError(f"unknown grid support {name!r} (known: {', '.join(sorted(services))})")
    return services[name](params)


__all__ = ["ENDURANCE", "SERVICES", "CycleContext", "GridSupport", "Param", "load_services", "make_service",
           "register"]
