"""Drivers registered by connection scheme, as python-can registers its bus backends.

A driver is a module or sub-package of `gateway.drivers` that decorates its Driver class with
`@register("scheme", ...)`; it is found by scanning the package, so adding one touches nothing
else. Drivers shipped in other distributions register through the `gateway.drivers` entry-point
group (value: the module to import).
"""

from __future__ import annotations

import difflib
import importlib
import logging
import pkgutil
from collections.abc import Callable
from importlib.metadata import entry_points

from gateway.drivers.base import Driver

log = logging.getLogger(__name__)

_DRIVERS: dict[str, type[Driver]] = {}
_NOT_DRIVERS = {"base", "registry", "options", "reference", "worker", "simulators"}  # simulators: plant models
_loaded = False


def register(*schemes: str) -> Callable[[type[Driver]], type[Driver]]:
    def deco(cls: type[Driver]) -> type[Driver]:
        cls.schemes = tuple(schemes)
        for s in schemes:
            _DRIVERS[s] = cls
        return cls

    return deco


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    package = importlib.import_module("gateway.drivers")
    modules = [f"gateway.drivers.{m.name}" for m in pkgutil.iter_modules(package.__path__)
               if m.name not in _NOT_DRIVERS and not m.name.startswith("_")]
    modules += [ep.value for ep in entry_points(group="gateway.drivers")]
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # one broken driver must not take the others down
            log.error("driver module %s failed to import: %s", name, exc)


def driver_for(scheme: str) -> type[Driver] | None:
    _load_all()
    return _DRIVERS.get(scheme)


def known_schemes() -> list[str]:
    _load_all()
    return sorted(_DRIVERS)


def unknown_scheme(scheme: str) -> str:
    """The message for a connection scheme no driver registered, with the nearest known one if any."""
    known = known_schemes()
    close = difflib.get_close_matches(scheme.lower(), known, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"unknown connection scheme '{scheme}' ({hint}known: {', '.join(known)})"
