"""The system state (Init, Run, Sleep, Maintenance, Error), kept small so a Part 16 machine can wrap it.

Init until the first complete cycle; Run while controlling; Error on a critical interlock trip or an
engine stall (setpoints safe), left only by a reset once nothing is tripped; Maintenance and Sleep by
request (setpoints safe in both). `listeners` hear every transition (old, new, cause): the hook for a
state machine's transition events.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


class SystemState(enum.IntEnum):
    Init = 0
    Run = 1
    Sleep = 2
    Maintenance = 3
    Error = 4


# Which transitions exist (from -> allowed to); anything else is refused.
_ALLOWED: dict[SystemState, set[SystemState]] = {
    SystemState.Init: {SystemState.Run, SystemState.Error, SystemState.Maintenance},
    SystemState.Run: {SystemState.Sleep, SystemState.Maintenance, SystemState.Error},
    SystemState.Sleep: {SystemState.Run, SystemState.Maintenance, SystemState.Error},
    SystemState.Maintenance: {SystemState.Run, SystemState.Error},
    SystemState.Error: {SystemState.Run, SystemState.Maintenance},
}

Transition = Callable[[SystemState, SystemState, str], None]


class SystemStateMachine:
    def __init__(self) -> None:
        self.state = SystemState.Init
        self.cause = ""
        self.listeners: list[Transition] = []

    @property
    def controlling(self) -> bool:
        """Whether modes may steer (only in Run); in every other state the setpoints are safe."""
        return self.state is SystemState.Run

    def can(self, target: SystemState) -> bool:
        return target in _ALLOWED[self.state]

    def go(self, target: SystemState, cause: str = "") -> bool:
        """Change state if the transition exists; returns whether it happened (same state: False)."""
        if target is self.state or not self.can(target):
            return False
        old, self.state, self.cause = self.state, target, cause
        log.log(logging.WARNING if target is SystemState.Error else logging.INFO,
                "control state %s -> %s%s", old.name, target.name, f": {cause}" if cause else "")
        for listener in self.listeners:
            listener(old, target, cause)
        return True
