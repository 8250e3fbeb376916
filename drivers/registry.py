"""Drivers registered by connection scheme: a new driver module registers itself and touches nothing else."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from gateway.drivers.base import Driver

_DRIVERS: dict[str, type[Driver]] = {}
# Modules imported on first lookup so their @register decorators run.
BUILTIN_MODULES = ("gateway.drivers.sim",)


def register(*schemes: str) -> Callable[[type[Driver]], type[Driver]]:
    def deco(cls: type[Driver]) -> type[Driver]:
        cls.schemes = tuple(schemes)
        for s in schemes:
            _DRIVERS[s] = cls
        return cls

    return deco


def _load_builtins() -> None:
    for mod in BUILTIN_MODULES:
        importlib.import_module(mod)


def driver_for(scheme: str) -> type[Driver] | None:
    _load_builtins()
    return _DRIVERS.get(scheme)


def known_schemes() -> list[str]:
    _load_builtins()
    return sorted(_DRIVERS)
