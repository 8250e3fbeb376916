"""The state machine service: the site's machines served, driven by programs and by method calls.

`start` publishes each machine's start state and its AvailableStates/AvailableTransitions, makes the
machine and its ancestors event notifiers, and binds the methods that cause transitions in the method
registry with the role the site gives them (on the type's method, called with the machine as ObjectId,
and on the machine's own copy). A program gets a machine with `machine(nodeid or "Device/Machine")` and
drives it with `go_to` / `fire` (gateway.statemachines.machine).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from asyncua import ua

from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.events.notifiers import notifier_chain
from gateway.events.service import EventService
from gateway.methods import MethodCall, MethodError, MethodRegistry
from gateway.methods.registry import Handler
from gateway.statemachines.config import MachineConfig
from gateway.statemachines.machine import StateMachine
from gateway.statemachines.model import StateMachineError
from gateway.values.feed import ChangeFeed

log = logging.getLogger(__name__)


class StateMachineService:
    def __init__(self, iserver: Any, feed: ChangeFeed, events: EventService, methods: MethodRegistry,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.iserver = iserver
        self.feed = feed
        self.events = events
        self.methods = methods
        self.clock = clock
        self.machines: dict[ua.NodeId, StateMachine] = {}
        self._by_name: dict[str, StateMachine] = {}

    async def start(self, configs: Iterable[MachineConfig]) -> None:
        for cfg in configs:
            machine = StateMachine(cfg, self.feed, self.events, notifier_chain(self.iserver, cfg.nodeid), self.clock)
            self.machines[cfg.nodeid] = machine
            self._by_name[cfg.source_name] = machine
            await machine.publish_initial()
            for method, spec in cfg.mtype.methods.items():
                if not self.methods.bound(method):
                    self.methods.bind(method, self._handler(method), spec.role)
            for copy, method in cfg.method_copies.items():
                if not self.methods.bound(copy):
                    self.methods.alias(copy, method)  # the type's handler, role and (audit) identity
        if self.machines:
            log.info("%d state machine(s): %s", len(self.machines),
                     ", ".join(f"{m.name} in {m.state.name}" for m in self.machines.values()))

    def machine(self, key: ua.NodeId | str) -> StateMachine:
        """A machine by its NodeId or its name as events give it (Device/Machine); KeyError naming the known ones."""
        found = self.machines.get(key) if isinstance(key, ua.NodeId) else self._by_name.get(key)
        if found is None:
            raise KeyError(f"no state machine {key!r} (machines: {', '.join(self._by_name) or 'none'})")
        return found

    def _handler(self, method: ua.NodeId) -> Handler:
        async def call(request: MethodCall) -> list[ua.Variant]:
            machine = self.machines.get(request.object_id)
            if machine is None or method not in machine.mtype.methods:
                raise MethodError(ua.StatusCodes.BadMethodInvalid,
                                  f"{request.object_id.to_string()} is not a state machine with this method")
            try:
                await machine.fire_method(method, request.writer)
            except StateMachineError as exc:
                log.info("%s: %s refused for %s: %s", machine.name, machine.mtype.methods[method].name,
                         request.writer.name, exc)
                raise MethodError(exc.status, str(exc)) from None
            return []
        return call
