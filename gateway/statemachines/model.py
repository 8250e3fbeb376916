"""A Part 16 finite state machine as the gateway runs it: its states, its transitions, and which one may fire.

A machine type lists its states (each with a StateNumber) and its transitions (each with a
TransitionNumber, one FromState and one ToState, the methods that cause it and the event type it
raises). A machine is in one state; it changes state only through a transition of its type that starts
in that state, so a request for anything else is refused with BadInvalidState, the status Part 10 gives
a program method called in a state that does not allow it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from asyncua import ua

from gateway.security.roles import Role

TRANSITION_EVENT = ua.NodeId(ua.ObjectIds.TransitionEventType)


class StateMachineError(Exception):
    """A request a machine cannot serve; `status` is what a method call answers."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class TransitionRefused(StateMachineError):
    """The machine has no such transition from the state it is in."""

    def __init__(self, message: str) -> None:
        super().__init__(ua.StatusCodes.BadInvalidState, message)


@dataclass(frozen=True, slots=True)
class State:
    nodeid: ua.NodeId  # the state object in the type (Part 16: where the state is first defined)
    name: str  # its BrowseName
    display: str  # its DisplayName, the text of CurrentState
    number: int  # StateNumber
    ns: int = 0  # the namespace of its BrowseName (CurrentState/Name is a QualifiedName)

    @property
    def qualified_name(self) -> ua.QualifiedName:
        return ua.QualifiedName(self.name, self.ns)


@dataclass(frozen=True, slots=True)
class Transition:
    nodeid: ua.NodeId
    name: str
    display: str
    number: int  # TransitionNumber
    source: State  # FromState
    target: State  # ToState
    causes: frozenset[ua.NodeId] = frozenset()  # methods (HasCause) that fire it
    event_type: ua.NodeId = TRANSITION_EVENT  # what it raises (HasEffect), TransitionEventType or a subtype
    ns: int = 0

    @property
    def qualified_name(self) -> ua.QualifiedName:
        return ua.QualifiedName(self.name, self.ns)


@dataclass(slots=True)
class MachineType:
    nodeid: ua.NodeId
    name: str
    states: list[State]
    transitions: list[Transition]
    initial: State | None = None  # the InitialStateType state, if the type has one
    methods: dict[ua.NodeId, MethodSpec] = field(default_factory=dict)  # the type's methods that cause transitions

    def state(self, key: str | int | ua.NodeId | State) -> State:
        """A state by BrowseName, StateNumber or NodeId; StateMachineError naming the known states otherwise."""
        for s in self.states:
            if s is key or s.nodeid == key or s.name == key or (_is_int(key) and s.number == key):
                return s
        known = ", ".join(f"{s.name} ({s.number})" for s in self.states)
        raise StateMachineError(ua.StatusCodes.BadInvalidArgument,
                                f"{self.name} has no state {key!r} (states: {known})")

    def transition(self, key: str | int | ua.NodeId | Transition) -> Transition:
        for t in self.transitions:
            if t is key or t.nodeid == key or t.name == key or (_is_int(key) and t.number == key):
                return t
        known = ", ".join(f"{t.name} ({t.number})" for t in self.transitions)
        raise StateMachineError(ua.StatusCodes.BadInvalidArgument,
                                f"{self.name} has no transition {key!r} (transitions: {known})")

    def from_state(self, state: State) -> list[Transition]:
        return [t for t in self.transitions if t.source == state]


@dataclass(frozen=True, slots=True)
class MethodSpec:
    nodeid: ua.NodeId
    name: str
    role: Role  # operator or admin (checked when the site is read)


def choose_to(mtype: MachineType, current: State, target: State) -> Transition:
    """The transition from `current` to `target` (the lowest-numbered if several); TransitionRefused if none."""
    found = sorted((t for t in mtype.from_state(current) if t.target == target), key=lambda t: t.number)
    if not found:
        raise TransitionRefused(f"no transition from {current.name} to {target.name}"
                                f" ({_reachable(mtype, current)})")
    return found[0]


def check_fires(mtype: MachineType, current: State, transition: Transition) -> Transition:
    """The transition itself if it starts in `current`; TransitionRefused otherwise."""
    if transition.source != current:
        raise TransitionRefused(f"{transition.name} starts in {transition.source.name}, the machine is in "
                                f"{current.name} ({_reachable(mtype, current)})")
    return transition


def caused_by(mtype: MachineType, current: State, method: ua.NodeId) -> Transition:
    """The transition from `current` that `method` causes; TransitionRefused if it causes none from there."""
    spec = mtype.methods.get(method)
    name = spec.name if spec is not None else method.to_string()
    found = sorted((t for t in mtype.from_state(current) if method in t.causes), key=lambda t: t.number)
    if not found:
        raise TransitionRefused(f"{name} causes no transition from {current.name} ({_reachable(mtype, current)})")
    return found[0]


def _reachable(mtype: MachineType, current: State) -> str:
    targets = sorted({t.target.name for t in mtype.from_state(current)})
    return f"from {current.name}: {', '.join(targets)}" if targets else f"{current.name} has no transitions"


def _is_int(key: object) -> bool:
    return isinstance(key, int) and not isinstance(key, bool)
