"""Operating modes: one module each, registered by name. A new mode is one file here plus its test.

A mode is a controller at MODE priority that runs only while it is the active mode and the system is in
Run. Its parameters (name, unit, range, default) are declared in `PARAMETERS`: the YAML compiler makes
each a writable, persisted variable of the site, and the engine reads them from there every cycle.

Each mode has a fixed numeric `code` (the engine shows the active one as `ModeCode`, a Modbus master
reads and writes it through the facade): 0 Passive, 1 Manual, 2 MaxSelfConsumption, 3 PeakShaving,
4 ChargeOnly, 5 ExternalControl, 6 LoadMatching, 7 CostSaving, 8 LocalControl, 9 Backup. A new mode
takes the next free code; a code is never reused, so a SCADA's configuration keeps its meaning across
versions.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any

from gateway.control.controller import MODE, Controller, CycleContext


@dataclass(frozen=True)
class Param:
    name: str
    default: float
    unit: str = ""
    low: float = -1e9
    high: float = 1e9
    description: str = ""


class Mode(Controller):
    priority = MODE
    code: int = -1  # its number in ModeCode: fixed per mode, unique
    PARAMETERS: tuple[Param, ...] = ()

    def param(self, name: str) -> float:
        value = self.params.get(name)
        if value is None:
            value = next(p.default for p in self.PARAMETERS if p.name == name)
        return float(value)

    def hand_over(self, ctx: CycleContext) -> str:
        """Why this mode must give up control now ("" while it may keep it): the engine then switches to the
        site's fallback mode (`fallback:` in the control section), as a supervised mode whose supervisor
        went silent must. Asked every cycle once the mode has started."""
        return ""

    def run(self, ctx: CycleContext) -> None:
        raise NotImplementedError


MODES: dict[str, type[Mode]] = {}


def register(cls: type[Mode]) -> type[Mode]:
    if not cls.name or cls.name in MODES:
        raise ValueError(f"mode {cls.__name__}: needs a name of its own, got {cls.name!r}")
    if cls.code < 0 or any(m.code == cls.code for m in MODES.values()):
        raise ValueError(f"mode {cls.__name__}: needs a code of its own (>= 0), got {cls.code}")
    MODES[cls.name] = cls
    return cls


def load_modes() -> dict[str, type[Mode]]:
    """Import every module of this package (each registers its mode) and return the registry."""
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    return MODES


def mode_codes() -> dict[str, int]:
    """Mode name -> its code in ModeCode."""
    return {name: cls.code for name, cls in load_modes().items()}


def mode_names() -> list[str]:
    """ModeCode's names: index = code ("" for a code no mode has)."""
    codes = mode_codes()
    names = [""] * (max(codes.values()) + 1)
    for name, code in codes.items():
        names[code] = name
    return names


def make_mode(name: str, params: dict[str, Any] | None = None) -> Mode:
    modes = load_modes()
    if name not in modes:
        raise ValueError(f"unknown mode {name!r} (known: {', '.join(sorted(modes))})")
    return modes[name](params)


__all__ = ["MODES", "CycleContext", "Mode", "Param", "load_modes", "make_mode", "mode_codes", "mode_names",
           "register"]
