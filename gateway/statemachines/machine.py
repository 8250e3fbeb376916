"""One served state machine: the state it is in, and the one way that changes.

`go_to(state, writer)` and `fire(transition, writer)` are how a program (a control mode, a sequence)
drives a machine; a method call of a client comes through `fire_method`. Each takes the machine's lock,
refuses a transition its type does not have from the current state (TransitionRefused, BadInvalidState)
before anything changes, then stores CurrentState and LastTransition (with their properties) through the
change feed, so subscribers see them like any value, and emits one TransitionEvent naming the writer.
Going to the state the machine is in is refused too unless the type has a transition from that state to
itself: every accepted request is exactly one transition and one event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from asyncua import ua

from gateway.clock import Clock
from gateway.events.audit import Writer
from gateway.events.event import GatewayEvent, base_fields, path
from gateway.events.service import EventService
from gateway.statemachines.config import MachineConfig
from gateway.statemachines.model import MachineType, State, Transition, caused_by, check_fires, choose_to
from gateway.values.aspace_io import StoredDataValue
from gateway.values.feed import ChangeFeed

log = logging.getLogger(__name__)

TRANSITION_SEVERITY = 100  # Part 9's range 1-1000; a transition reports, it does not alarm
_TEXT = ua.VariantType.LocalizedText
_ID = ua.VariantType.NodeId
_NUMBER = ua.VariantType.UInt32
_NAME = ua.VariantType.QualifiedName
_TIME = ua.VariantType.DateTime

# (machine, the transition a method call asks for, caller): a program that owns the machine's state.
Delegate = Callable[["StateMachine", Transition, Writer], Awaitable[None]]


class StateMachine:
    def __init__(self, cfg: MachineConfig, feed: ChangeFeed, events: EventService,
                 notifiers: tuple[ua.NodeId, ...], clock: Clock) -> None:
        self.cfg = cfg
        self.feed = feed
        self.events = events
        self.notifiers = notifiers
        self.clock = clock
        self.state: State = cfg.initial
        self.last: Transition | None = None
        self.last_time: datetime | None = None
        self.transitions = 0  # transitions fired since start
        # A program whose own state this machine shows (the control engine's system state): a method call is
        # passed to it instead of firing here, and the program drives the machine when its state changes.
        self.delegate: Delegate | None = None
        self._lock = asyncio.Lock()

    @property
    def nodeid(self) -> ua.NodeId:
        return self.cfg.nodeid

    @property
    def name(self) -> str:
        """Device/Machine: how messages and logs name it."""
        return self.cfg.source_name

    @property
    def mtype(self) -> MachineType:
        return self.cfg.mtype

    def available(self) -> list[Transition]:
        """The transitions that can fire from the current state."""
        return self.mtype.from_state(self.state)

    async def go_to(self, state: str | int | ua.NodeId | State, writer: Writer) -> Transition:
        """Go to a state (by BrowseName, StateNumber or NodeId) through the transition that leads there."""
        target = self.mtype.state(state)
        return await self._run(lambda current: choose_to(self.mtype, current, target), writer)

    async def fire(self, transition: str | int | ua.NodeId | Transition, writer: Writer) -> Transition:
        """Fire a transition (by BrowseName, TransitionNumber or NodeId); it must start in the current state."""
        chosen = self.mtype.transition(transition)
        return await self._run(lambda current: check_fires(self.mtype, current, chosen), writer)

    async def fire_method(self, method: ua.NodeId, writer: Writer) -> Transition:
        """Fire the transition from the current state that `method` (a method of the type) causes; with a
        delegate, ask it instead (it refuses by raising StateMachineError)."""
        if self.delegate is not None:
            transition = caused_by(self.mtype, self.state, method)
            await self.delegate(self, transition, writer)
            return transition
        return await self._run(lambda current: caused_by(self.mtype, current, method), writer)

    async def _run(self, choose: Callable[[State], Transition], writer: Writer) -> Transition:
        # One transition at a time: its values and event are out before the next one is chosen.
        async with self._lock:
            transition = choose(self.state)
            now = self.clock.now()
            source = self.state
            self.state, self.last, self.last_time = transition.target, transition, now
            self.transitions += 1
            await self._store_state(now)
            event = self._event(transition, source, writer, now)
            self.events.emit(event)
            log.info("%s", event.fields[path("Message")].Value.Text)
            return transition

    # -- what clients see --------------------------------------------------------------------------------

    async def publish_initial(self) -> None:
        """The start state and the machine's states and transitions, before anyone can ask for a change."""
        now = self.clock.now()
        await self._store_state(now)
        mtype = self.mtype
        await self._store("AvailableStates", ua.Variant([s.nodeid for s in mtype.states], _ID), now)
        await self._store("AvailableTransitions", ua.Variant([t.nodeid for t in mtype.transitions], _ID), now)

    async def _store_state(self, now: datetime) -> None:
        state = self.state
        await self._store("CurrentState", ua.Variant(ua.LocalizedText(state.display), _TEXT), now)
        await self._store("CurrentState/Id", ua.Variant(state.nodeid, _ID), now)
        await self._store("CurrentState/Number", ua.Variant(state.number, _NUMBER), now)
        await self._store("CurrentState/Name", ua.Variant(state.qualified_name, _NAME), now)
        await self._store("CurrentState/EffectiveDisplayName", ua.Variant(ua.LocalizedText(state.display), _TEXT), now)
        last = self.last
        if last is None:
            return  # LastTransition keeps what the site gave it until the first transition
        await self._store("LastTransition", ua.Variant(ua.LocalizedText(last.display), _TEXT), now)
        await self._store("LastTransition/Id", ua.Variant(last.nodeid, _ID), now)
        await self._store("LastTransition/Number", ua.Variant(last.number, _NUMBER), now)
        await self._store("LastTransition/Name", ua.Variant(last.qualified_name, _NAME), now)
        await self._store("LastTransition/TransitionTime", ua.Variant(self.last_time, _TIME), now)
        await self._store("LastTransition/EffectiveTransitionTime", ua.Variant(self.last_time, _TIME), now)

    async def _store(self, key: str, variant: ua.Variant, now: datetime) -> None:
        node = self.cfg.nodes.get(key)
        if node is not None:
            await self.feed.store(node, StoredDataValue(variant, SourceTimestamp=now, ServerTimestamp=now))

    def _event(self, transition: Transition, source: State, writer: Writer, now: datetime) -> GatewayEvent:
        target = transition.target
        message = f"{self.name}: {source.display} -> {target.display} ({transition.name}) by {writer.name}"
        if writer.reason:
            message += f": {writer.reason}"
        fields = base_fields(transition.event_type, self.nodeid, self.name, message, TRANSITION_SEVERITY, now)
        fields.update({
            path("Transition"): ua.Variant(ua.LocalizedText(transition.display), _TEXT),
            path("Transition", "Id"): ua.Variant(transition.nodeid, _ID),
            path("Transition", "Number"): ua.Variant(transition.number, _NUMBER),
            path("Transition", "Name"): ua.Variant(transition.qualified_name, _NAME),
            path("Transition", "TransitionTime"): ua.Variant(now, _TIME),
            path("Transition", "EffectiveTransitionTime"): ua.Variant(now, _TIME),
        })
        for field, state in (("FromState", source), ("ToState", target)):
            fields.update({
                path(field): ua.Variant(ua.LocalizedText(state.display), _TEXT),
                path(field, "Id"): ua.Variant(state.nodeid, _ID),
                path(field, "Number"): ua.Variant(state.number, _NUMBER),
                path(field, "Name"): ua.Variant(state.qualified_name, _NAME),
                path(field, "EffectiveDisplayName"): ua.Variant(ua.LocalizedText(state.display), _TEXT),
            })
        return GatewayEvent(transition.event_type, fields, self.notifiers)
