"""Grid-support services stacked on any mode: one module each, registered by name.

A service is a controller at GRID_SUPPORT priority that runs after the active mode (in Run only) and
adds its power to a setpoint (`ctx.support`) instead of pinning it: the battery gives the mode's power
plus the service's. The addition skips the setpoint's ramp limit (the service's response time is the
grid code's), and the charge limiter's and the interlocks' bounds still hold. The site enables a service
by listing it under `grid_support:` in its `control:` section with its parameters.

SOC endurance (`soc_min`, `soc_max`): a service gives no discharge at or below `soc_min` and takes no
charge at or above `soc_max`, so the battery keeps the energy to sustain a full activation for the
time the market asks. With `endurance_min` and the battery's `energy_kwh` the band is also derived from
the service's full power: discharge needs SOC above `full discharge x endurance / energy`, charge below
100 % minus the same for full charge (a 20-minute endurance of 100 kW on 200 kWh: above 16.7 %).
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

    def full_power(self) -> tuple[float, float]:
        """(discharge, charge) in kW at full activation: what the SOC endurance is sized for."""
        return 0.0, 0.0

    def soc_band(self) -> tuple[float, float]:
        """(lowest SOC for discharge, highest SOC for charge), %: `soc_min`/`soc_max`, narrowed so that a full
        activation can last `endurance_min` minutes when the site gives the battery's `energy_kwh`."""
        low, high = self.param("soc_min"), self.param("soc_max")
        minutes, energy = self.param("endurance_min"), self.param("energy_kwh")
        if minutes > 0 and energy > 0:
            up, down = self.full_power()
            low = max(low, up * minutes / 60.0 / energy * 100.0)
            high = min(high, 100.0 - down * minutes / 60.0 / energy * 100.0)
        return low, high

    def endurance(self, ctx: CycleContext, power: float) -> float:
        """`power` (> 0 discharging) as the SOC allows: nothing the battery could not sustain."""
        soc = ctx.number("soc") if "soc" in ctx.signals else None
        if soc is None and "soc" in ctx.signals:
            return 0.0  # a SOC it cannot see: no promise of energy
        low, high = self.soc_band()
        if soc is not None and power > 0 and soc <= low:
            return 0.0
        if soc is not None and power < 0 and soc >= high:
            return 0.0
        return power


ENDURANCE = (
    Param("soc_min", 10.0, "%", 0.0, 100.0, "No discharge for the service at or below this SOC."),
    Param("soc_max", 90.0, "%", 0.0, 100.0, "No charge for the service at or above this SOC."),
    Param("endurance_min", 0.0, "min", 0.0, 1440.0, "Minutes a full activation must last (0: soc_min/max only)."),
    Param("energy_kwh", 0.0, "kWh", 0.0, 1e7, "Usable battery energy the endurance is sized from (0: off)."),
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
