"""What a controller is: a small object whose `run` reads a few inputs and adds constraints each cycle.

Controllers never write: they say what each setpoint must be (`=`), may be at most (`<=`) or at least
(`>=`), and the engine arbitrates (control/arbitration.py). Inputs and setpoints are named by their role
in the site's control configuration ("grid_power", "battery_power"), not by NodeId, so one controller
serves any site.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from asyncua import ua

from gateway.control.arbitration import Constraint
from gateway.control.image import Input, ProcessImage

# Priorities: safety over limits over grid support over the mode. Higher wins.
SAFETY = 1000
LIMITS = 800
GRID_SUPPORT = 500
MODE = 100


@dataclass
class CycleContext:
    """What one controller sees in one cycle."""

    image: ProcessImage
    signals: Mapping[str, ua.NodeId]  # role -> node
    now: datetime
    dt: float  # seconds since the previous cycle
    max_age: float  # inputs older than this are not usable
    outputs: Mapping[str, float | None]  # each setpoint's output after the previous cycle
    supported: Mapping[str, float] = field(default_factory=dict)  # grid support in each output last cycle
    constraints: list[Constraint] = field(default_factory=list)
    supports: dict[str, float] = field(default_factory=dict)  # grid support added this cycle, per setpoint
    source: str = ""
    priority: int = MODE

    def input(self, role: str) -> Input:
        node = self.signals.get(role)
        if node is None:
            return Input(ua.NodeId(role, 0), None, ua.StatusCodes.BadConfigurationError, math.inf)
        return self.image.get(node)

    def number(self, role: str) -> float | None:
        """The role's value when usable (Good, fresh, finite), else None: a controller then holds off."""
        return self.input(role).number(self.max_age)

    def output(self, setpoint: str) -> float | None:
        return self.outputs.get(setpoint)

    def support(self, setpoint: str, value: float) -> None:
        """Add `value` to the setpoint on top of the mode (grid services stack; bounds and safety still hold)."""
        if math.isfinite(value) and value:
            self.supports[setpoint] = self.supports.get(setpoint, 0.0) + value

    def constrain(self, setpoint: str, op: str, value: float, reason: str = "", priority: int | None = None) -> None:
        self.constraints.append(Constraint(setpoint, op, float(value), self.priority if priority is None else priority,
                                           self.source, reason))


class Controller:
    """One controller. Subclasses set `name` and implement `run`; `inputs` lists the roles they read."""

    name: str = ""
    priority: int = MODE
    inputs: tuple[str, ...] = ()
    setpoints: tuple[str, ...] = ()

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self.params: dict[str, Any] = dict(params or {})

    def activate(self, ctx: CycleContext) -> None:
        """Called when the controller takes over (bumpless start: begin from the present outputs)."""

    def run(self, ctx: CycleContext) -> None:
        raise NotImplementedError
