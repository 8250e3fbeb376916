"""Operating modes: one module each, registered by name. A new mode is one file here plus its test.

A mode is a controller at MODE priority that runs only while it is the active mode and the system is in
Run. Its parameters (name, unit, range, default) are declared in `PARAMETERS`: the YAML compiler makes
each a writable, persisted variable of the site, and the engine reads them from there every cycle.
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
    MODES[cls.name] = cls
    return cls


def load_modes() -> dict[str, type[Mode]]:
    """Import every module of this package (each registers its mode) and return the registry."""
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    return MODES


def make_mode(name: str, params: dict[str, Any] | None = None) -> Mode:
    modes = load_modes()
    if name not in modes:
        raise ValueError(f"unknown mode {name!r} (known: {', '.join(sorted(modes))})")
    return modes[name](params)


__all__ = ["MODES", "CycleContext", "Mode", "Param", "load_modes", "make_mode", "register"]
