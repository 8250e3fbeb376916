"""The engine's system state served as one of the site's Part 16 state machines.

The site names the machine (`state_machine: Battery1/SystemState` in the `control:` section); its type
must have the states Init, Run, Sleep, Maintenance and Error and the transitions between them the
engine makes. The engine owns the state: each of its transitions moves the machine (CurrentState,
LastTransition and a TransitionEvent naming the cause, as `control:engine`), in order; a client's method
call on the machine (GoToState_Sleep, Reset, ...) is passed to the engine, which may refuse it (a Reset
while an interlock's cause is still there) and, when it accepts, moves the machine through the same path.
A state of the machine the engine does not have (a Reboot) is refused: the engine cannot be there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from asyncua import ua

from gateway.control.engine import ControlEngine
from gateway.control.state import SystemState
from gateway.events.audit import Writer
from gateway.security.roles import ServiceRole
from gateway.statemachines.machine import StateMachine
from gateway.statemachines.model import StateMachineError, Transition

log = logging.getLogger(__name__)

SETTLE_S = 5.0


def machine_problems(machine: StateMachine) -> list[str]:
    """Why the machine cannot show the engine's state (empty when it can)."""
    names = {s.name for s in machine.mtype.states}
    missing = [s.name for s in SystemState if s.name not in names]
    return [f"state machine {machine.name} has no state {', '.join(missing)} of the control system state"] \
        if missing else []


class SystemStateBridge:
    def __init__(self, engine: ControlEngine, machine: StateMachine) -> None:
        problems = machine_problems(machine)
        if problems:
            raise ValueError("; ".join(problems))
        self.engine = engine
        self.machine = machine
        self._moves: asyncio.Queue[tuple[SystemState, str]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.engine.state.listeners.append(self._changed)
        self.machine.delegate = self._asked
        if self.machine.state.name != self.engine.state.state.name:  # the engine may have moved already
            self._moves.put_nowait((self.engine.state.state, self.engine.state.cause or "control engine started"))
        self._task = asyncio.create_task(self._follow(), name="control state machine")

    async def stop(self) -> None:
        self.machine.delegate = None
        if self._changed in self.engine.state.listeners:
            self.engine.state.listeners.remove(self._changed)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def settled(self) -> None:
        """Wait until the machine shows every engine transition so far."""
        await self._moves.join()

    def _changed(self, old: SystemState, new: SystemState, cause: str) -> None:
        self._moves.put_nowait((new, cause))

    async def _follow(self) -> None:
        while True:
            state, cause = await self._moves.get()
            try:
                if self.machine.state.name != state.name:
                    await self.machine.go_to(state.name, Writer("control:engine", ServiceRole.control, reason=cause))
            except StateMachineError as exc:  # the site's type lacks a transition the engine made
                log.error("control state %s not shown by %s: %s", state.name, self.machine.name, exc)
            except Exception:  # the machine must keep following whatever one move did
                log.exception("control state %s not shown by %s", state.name, self.machine.name)
            finally:
                self._moves.task_done()

    async def _asked(self, machine: StateMachine, transition: Transition, writer: Writer) -> None:
        """A client's method call on the machine: the engine decides."""
        target = transition.target.name
        if machine.state.name == SystemState.Error.name and target == SystemState.Run.name:
            status, text = self.engine.reset("*", writer)
        elif target in (SystemState.Run.name, SystemState.Sleep.name, SystemState.Maintenance.name):
            status, text = self.engine.request_state(target, writer)
        else:
            status = ua.StatusCode(ua.StatusCodes.BadNotSupported)
            text = f"the control engine has no state {target}; {machine.name} shows the engine's state"
        if not status.is_good():
            raise StateMachineError(status.value, text or status.name)
        async with asyncio.timeout(SETTLE_S):  # the call answers once the machine shows the new state
            await self.settled()
