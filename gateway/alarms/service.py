"""The alarm service: conditions evaluated on every change of their inputs, operated through methods.

Each condition listens on the change feed for its input (and its setpoint or normal-state variable),
so an alarm follows the value it watches, not a timer: every change is queued with its value and the
alarm task evaluates the queue in slices of a few milliseconds, so a scan that stores thousands of
inputs at once does not hold the event loop for all their alarms together. An input that turns Bad
changes the condition's Quality and leaves its ActiveState as it was: a lost device does not clear an
alarm. On- and off-delays hold a transition until the input stayed there that long. Every device gets a
communication alarm on its Diagnostics/ConnectionState, active while the device does not answer.

The methods of Part 9 are bound in the method registry, on the type's method (called with the
condition as ObjectId, as most clients do) and on any copy of the method in the condition's own
nodes: Enable and Disable for admins; Acknowledge, Confirm, AddComment and the shelving methods for
operators; ConditionRefresh and ConditionRefresh2 for anyone, on their own subscriptions only.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Iterable
from typing import Any

from asyncua import ua

from gateway.alarms.condition import Condition, ConditionError
from gateway.alarms.config import OFF_NORMAL, AlarmConfig
from gateway.alarms.evaluate import describe_limit, exclusive_state, limit_states, off_normal
from gateway.alarms.evaluate import states as limit_states_of
from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.events.event import GatewayEvent
from gateway.events.notifiers import notifier_chain
from gateway.events.service import EventService
from gateway.methods import MethodCall, MethodError, MethodRegistry
from gateway.security.roles import Role
from gateway.values.aspace_io import read_value
from gateway.values.feed import Change, ChangeFeed

log = logging.getLogger(__name__)
_NO_STATES = limit_states_of()

EVALUATE_SLICE_S = 0.002  # the alarm task lets other work run after this much evaluation
_HAS_COMPONENT = ua.NodeId(ua.ObjectIds.HasComponent)
_M = ua.ObjectIds
# Method of the type -> (role, handler name). The shelving methods also have copies in the
# AlarmConditionType's ShelvingState instance declaration, which clients call too.
_METHODS: dict[int, tuple[Role, str]] = {
    _M.ConditionType_Enable: (Role.admin, "_enable"),
    _M.ConditionType_Disable: (Role.admin, "_disable"),
    _M.ConditionType_AddComment: (Role.operator, "_add_comment"),
    _M.AcknowledgeableConditionType_Acknowledge: (Role.operator, "_acknowledge"),
    _M.AcknowledgeableConditionType_Confirm: (Role.operator, "_confirm"),
    _M.ShelvedStateMachineType_TimedShelve: (Role.operator, "_timed_shelve"),
    _M.ShelvedStateMachineType_OneShotShelve: (Role.operator, "_one_shot_shelve"),
    _M.ShelvedStateMachineType_Unshelve: (Role.operator, "_unshelve"),
    _M.AlarmConditionType_ShelvingState_TimedShelve: (Role.operator, "_timed_shelve"),
    _M.AlarmConditionType_ShelvingState_OneShotShelve: (Role.operator, "_one_shot_shelve"),
    _M.AlarmConditionType_ShelvingState_Unshelve: (Role.operator, "_unshelve"),
    _M.ConditionType_ConditionRefresh: (Role.viewer, "_refresh"),
    _M.ConditionType_ConditionRefresh2: (Role.viewer, "_refresh2"),
}


class AlarmService:
    def __init__(self, iserver: Any, feed: ChangeFeed, events: EventService, methods: MethodRegistry,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.iserver = iserver
        self.aspace = iserver.aspace
        self.feed = feed
        self.events = events
        self.methods = methods
        self.clock = clock
        self.conditions: dict[ua.NodeId, Condition] = {}
        self.evaluations = 0
        self._watchers: dict[ua.NodeId, list[tuple[Condition, bool]]] = {}  # (condition, is its input)
        self._timers: dict[ua.NodeId, asyncio.TimerHandle] = {}
        self._subscription = None
        self._queue: collections.deque[tuple[Condition, ua.DataValue | None]] = collections.deque()  # input's value
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- set-up -------------------------------------------------------------------------------------------

    def add_communication_alarm(self, device: ua.NodeId, device_name: str, connection_state: ua.NodeId,
                                gw_ns: int, severity: int = 700) -> AlarmConfig:
        """A device's alarm for not answering, active while its Diagnostics/ConnectionState is Disconnected."""
        return self.add_system_alarm(device, device_name, "CommunicationAlarm", connection_state, "Disconnected",
                                     (f"{device_name} does not answer", f"{device_name} answers again"), gw_ns,
                                     severity)

    def add_system_alarm(self, source: ua.NodeId, source_name: str, name: str, input_node: ua.NodeId,
                         active_value: Any, texts: tuple[str, str], gw_ns: int, severity: int) -> AlarmConfig:
        """An alarm of the gateway's own (an OffNormalAlarmType object under `source`), active while
        `input_node` holds `active_value`; `texts` are its messages when active and when normal again."""
        nodeid = ua.NodeId(f"{_text_id(source)}.{name}", gw_ns)
        if self.aspace.get(nodeid) is None:
            item = ua.AddNodesItem()
            item.RequestedNewNodeId = nodeid
            item.BrowseName = ua.QualifiedName(name, gw_ns)
            item.NodeClass = ua.NodeClass.Object
            item.ParentNodeId = source
            item.ReferenceTypeId = _HAS_COMPONENT
            item.TypeDefinition = OFF_NORMAL
            attrs = ua.ObjectAttributes()
            attrs.DisplayName = ua.LocalizedText(name)
            attrs.Description = ua.LocalizedText(texts[0])
            attrs.EventNotifier = 0
            item.NodeAttributes = attrs
            result = self.iserver.node_mgt_service.add_nodes([item])[0]
            if not result.StatusCode.is_good():
                raise RuntimeError(f"{source_name}: cannot add its {name}: {result.StatusCode.name}")
        input_name = self.aspace[input_node].attributes[ua.AttributeIds.BrowseName].value.Value.Value.Name
        return AlarmConfig(nodeid, name, OFF_NORMAL, "offnormal", source, source_name, input_node, input_name,
                           severity=severity, active_value=active_value, texts=texts)

    def start(self, configs: Iterable[AlarmConfig], system: Iterable[AlarmConfig] = ()) -> None:
        for method, (role, handler) in _METHODS.items():
            self.methods.bind(ua.NodeId(method), getattr(self, handler), role)
        self._subscription = self.feed.listen(self._on_change, [], name="alarms")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="alarm evaluation")
        self.add(configs)
        self.add(system, system=True)

    def add(self, configs: Iterable[AlarmConfig], system: bool = False) -> None:
        """Evaluate more conditions from now on (the site's at start; later parts add their own)."""
        assert self._subscription is not None, "start() first"
        added = []
        for cfg in configs:
            cond = Condition(cfg, self._notifiers(cfg.source), system=system)
            self.conditions[cfg.nodeid] = cond
            added.append(cond)
            for node in (cfg.input, cfg.setpoint, cfg.normal_state):
                if node is not None:
                    self._watchers.setdefault(node, []).append((cond, node is cfg.input))
                    self._subscription.add([node])
        self._alias_instance_methods(added)
        now = self.clock.now()
        for cond in added:
            cond.quality = self._input(cond.cfg.input)[1]  # where the input stands now, not news
            self._evaluate(cond)
            if cond.event_id is None:  # an inactive alarm still has a latest event for refresh and comments
                cond.event(cond.message or f"{self._label(cond)} normal", now)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def retained(self) -> list[GatewayEvent]:
        events = (c.latest_event() for c in self.conditions.values() if c.retain)
        return [e for e in events if e is not None]

    def _notifiers(self, source: ua.NodeId) -> tuple[ua.NodeId, ...]:
        return notifier_chain(self.iserver, source)

    def _alias_instance_methods(self, conditions: Iterable[Condition]) -> None:
        """Copies of the type's methods under a condition call the same handler (matched by browse name)."""
        by_name = {}
        for method in _METHODS:
            nd = self.aspace.get(ua.NodeId(method))
            if nd is not None:
                by_name.setdefault(nd.attributes[ua.AttributeIds.BrowseName].value.Value.Value.Name, ua.NodeId(method))
        for cond in conditions:
            stack = [cond.nodeid]
            while stack:
                nd = self.aspace.get(stack.pop())
                for ref in nd.references if nd is not None else ():
                    if not ref.IsForward or ref.ReferenceTypeId != _HAS_COMPONENT:
                        continue
                    if ref.NodeClass == ua.NodeClass.Method:
                        target = by_name.get(ref.BrowseName.Name)
                        if target is not None and not self.methods.bound(ref.NodeId):
                            self.methods.alias(ref.NodeId, target)
                    elif ref.NodeClass == ua.NodeClass.Object:
                        stack.append(ref.NodeId)

    # -- evaluation -----------------------------------------------------------------------------------------

    def _on_change(self, change: Change) -> None:
        # Queued with the value that changed, evaluated by the alarm task in slices: a scan of thousands of
        # inputs stores them at once, and evaluating inline would hold the loop for all of them together.
        watchers = self._watchers.get(change.node)
        if watchers:
            dv = change.dv
            for cond, is_input in watchers:
                self._queue.append((cond, dv if is_input else None))
            self._ready.set()

    async def _run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._queue:
                self.drain(EVALUATE_SLICE_S)
                await asyncio.sleep(0)

    def drain(self, within_s: float | None = None) -> None:
        """Evaluate what is queued (all of it, or for about `within_s`)."""
        started = time.perf_counter()
        queue = self._queue
        while queue:
            cond, dv = queue.popleft()
            try:
                self._evaluate(cond, input_dv=dv)
            except Exception:  # one condition's bug must not stop the others' evaluation
                log.exception("evaluating %s failed", cond.nodeid.to_string())
            if within_s is not None and time.perf_counter() - started > within_s:
                break

    def _input(self, node: ua.NodeId | None) -> tuple[Any, ua.StatusCode]:
        dv = read_value(self.aspace, node) if node is not None else None
        if dv is None:
            return None, ua.StatusCode(ua.StatusCodes.BadWaitingForInitialData)
        status = dv.StatusCode if dv.StatusCode is not None else ua.StatusCode()
        return (dv.Value.Value if dv.Value is not None else None), status

    def _evaluate(self, cond: Condition, delayed: bool = False, input_dv: ua.DataValue | None = None) -> None:
        self.evaluations += 1
        if not cond.enabled:
            return
        cfg = cond.cfg
        if input_dv is not None:  # the value that changed, not a later one
            dv = input_dv
            value = dv.Value.Value if dv.Value is not None else None
            status = dv.StatusCode if dv.StatusCode is not None else ua.StatusCode()
        else:
            value, status = self._input(cfg.input)
        now = None  # asked of the clock only when there is news: most changes are none
        # Waiting for an input's first value after start, and getting it, is no news: only later quality
        # changes are reported.
        waiting = ua.StatusCodes.BadWaitingForInitialData
        quality_changed = status.value != cond.quality.value and waiting not in (status.value, cond.quality.value)
        if status.value != cond.quality.value:
            now = self.clock.now()
            cond.quality, cond.quality_time = status, now
        if not status.is_good() or value is None or (isinstance(value, float) and math.isnan(value)):
            if quality_changed:  # a lost input changes the quality, never the alarm state
                self._emit(cond, f"{self._label(cond)}: input quality {status.name}", now)
            return
        target = self._target(cond, value)
        if target is None:
            if quality_changed:
                self._emit(cond, f"{self._label(cond)}: input quality {status.name}", now)
            return
        active, state, states, measured = target
        changed = active != cond.active or state != cond.limit_state or states != cond.limit_states
        if changed and not delayed:
            delay = cfg.on_delay if active and not cond.active else cfg.off_delay if cond.active and not active else 0
            if delay > 0:
                if cfg.nodeid not in self._timers:
                    loop = asyncio.get_running_loop()
                    self._timers[cfg.nodeid] = loop.call_later(delay, self._delay_over, cond)
                return
        timer = self._timers.pop(cfg.nodeid, None) if self._timers else None
        if timer is not None:
            timer.cancel()
        if not changed:
            if quality_changed:
                self._emit(cond, self._message(cond, value, active, state, measured), now)
            return
        now = now or self.clock.now()
        if active and not cond.active:
            cond.active_time = now
            cond.acked = False
            if cfg.confirm:
                cond.confirmed = False
        elif not active and cond.active:
            cond.active_time = now
        if cond.shelving == "OneShotShelved" and cond.active and not active:
            cond.shelving, cond.unshelve_at = "Unshelved", None
        cond.active, cond.limit_state, cond.limit_states, cond.value = active, state, states, value
        self._emit(cond, self._message(cond, value, active, state, measured), now)

    def _delay_over(self, cond: Condition) -> None:
        self._timers.pop(cond.nodeid, None)
        self._evaluate(cond, delayed=True)

    def _target(self, cond: Condition, value: Any) -> tuple[bool, str | None, frozenset[str], float] | None:
        """Where the input puts the alarm: (active, limit state, limit states, measured), or None if the
        value cannot be judged (not a number, setpoint or normal state not Good). The message is made
        only when there is news (`_message`): most changes are none."""
        cfg = cond.cfg
        if cfg.kind in ("exclusive", "nonexclusive"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                return None
            measured = float(value)
            if cfg.setpoint is not None:
                sp, sp_status = self._input(cfg.setpoint)
                if not sp_status.is_good() or not isinstance(sp, int | float):
                    return None
                measured -= float(sp)
            if cfg.kind == "exclusive":
                state = exclusive_state(cfg, measured, cond.limit_state if cond.active else None)
                states = limit_states_of((state,) if state else ())
            else:
                states = limit_states(cfg, measured, cond.limit_states)
                state = next((s for s in ("HighHigh", "High", "LowLow", "Low") if s in states), None)
            return state is not None, state, states, measured
        normal = cfg.normal_value
        if cfg.normal_state is not None:
            normal, n_status = self._input(cfg.normal_state)
            if not n_status.is_good():
                return None
        return off_normal(cfg, value, normal), None, _NO_STATES, 0.0

    def _message(self, cond: Condition, value: Any, active: bool, state: str | None, measured: float) -> str:
        cfg = cond.cfg
        label = self._label(cond)
        unit = f" {cfg.unit}" if cfg.unit else ""
        if cfg.kind in ("exclusive", "nonexclusive"):
            shown = f"{value:.6g}{unit}"
            if state is None:
                return f"{label} {shown} back within limits"
            words, limit = describe_limit(state, cfg)
            if cfg.setpoint is not None:
                shown = f"{shown}, {measured:+.6g}{unit} from its setpoint,"
            return f"{label} {shown} {words} {limit:g}{unit}"
        if cfg.active_value is not None:
            return cfg.texts[0] if active else cfg.texts[1]
        normal = cfg.normal_value if cfg.normal_state is None else self._input(cfg.normal_state)[0]
        return f"{label} is {_shown(value)}{unit}" + (f" (normal {_shown(normal)})" if active else ", normal")

    def _label(self, cond: Condition) -> str:
        return cond.cfg.message or f"{cond.cfg.source_name} {cond.cfg.input_name}"

    def _emit(self, cond: Condition, message: str, now: Any = None) -> None:
        # A shelved alarm still reports its state, with SuppressedOrShelved set: Part 9 leaves hiding it to the
        # client, and history keeps what happened while it was shelved.
        cond.last_severity = cond.severity
        self.events.emit(cond.event(message, now or self.clock.now()))

    # -- methods ------------------------------------------------------------------------------------------

    def _condition(self, call: MethodCall) -> Condition:
        cond = self.conditions.get(call.object_id)
        if cond is None:
            # A method copy under ShelvingState is called on the ShelvingState object: its parent condition.
            nd = self.aspace.get(call.object_id)
            parent = next((r.NodeId for r in nd.references if not r.IsForward and r.ReferenceTypeId == _HAS_COMPONENT),
                          None) if nd is not None else None
            cond = self.conditions.get(parent) if parent is not None else None
        if cond is None:
            raise MethodError(ua.StatusCodes.BadNodeIdInvalid, "the object is not a condition")
        return cond

    async def _operate(self, call: MethodCall, action: str, verb: str) -> list[ua.Variant]:
        cond = self._condition(call)
        now = self.clock.now()
        comment = call.arg(1)
        text = comment.Text if isinstance(comment, ua.LocalizedText) else (comment or "")
        try:
            getattr(cond, action)(call.arg(0), text or "", call.writer.name, now)
        except ConditionError as exc:
            raise MethodError(exc.status, str(exc)) from None
        self._emit(cond, cond.message)
        log.info("%s %s by %s%s", cond.cfg.source_name + "/" + cond.cfg.name, verb, call.writer.name,
                 f": {text}" if text else "")
        return []

    async def _acknowledge(self, call: MethodCall) -> list[ua.Variant]:
        return await self._operate(call, "acknowledge", "acknowledged")

    async def _confirm(self, call: MethodCall) -> list[ua.Variant]:
        return await self._operate(call, "confirm", "confirmed")

    async def _add_comment(self, call: MethodCall) -> list[ua.Variant]:
        return await self._operate(call, "add_comment", "commented")

    async def _set_enabled(self, call: MethodCall, enabled: bool) -> list[ua.Variant]:
        cond = self._condition(call)
        try:
            cond.set_enabled(enabled)
        except ConditionError as exc:
            raise MethodError(exc.status, str(exc)) from None
        cond.client_user_id = call.writer.name
        if enabled:
            cond.active, cond.acked, cond.confirmed, cond.limit_state, cond.limit_states = (
                False, True, True, None, limit_states_of())
            self._emit(cond, f"{self._label(cond)} enabled")
            self._evaluate(cond)
        else:
            timer = self._timers.pop(cond.nodeid, None)
            if timer is not None:
                timer.cancel()
            self._emit(cond, f"{self._label(cond)} disabled")
        return []

    async def _enable(self, call: MethodCall) -> list[ua.Variant]:
        return await self._set_enabled(call, True)

    async def _disable(self, call: MethodCall) -> list[ua.Variant]:
        return await self._set_enabled(call, False)

    async def _shelve(self, call: MethodCall, how: str, seconds: float | None = None) -> list[ua.Variant]:
        cond = self._condition(call)
        now = self.clock.now()
        try:
            cond.shelve(how, now, seconds)
        except ConditionError as exc:
            raise MethodError(exc.status, str(exc)) from None
        cond.client_user_id = call.writer.name
        timer_key = ua.NodeId(f"shelve:{cond.nodeid.to_string()}")
        old = self._timers.pop(timer_key, None)
        if old is not None:
            old.cancel()
        if cond.unshelve_at is not None:
            delay = max((cond.unshelve_at - now).total_seconds(), 0.0)
            self._timers[timer_key] = asyncio.get_running_loop().call_later(delay, self._shelving_over, cond)
        self._emit(cond, f"{self._label(cond)} {how.lower()} by {call.writer.name}", now)
        return []

    def _shelving_over(self, cond: Condition) -> None:
        self._timers.pop(ua.NodeId(f"shelve:{cond.nodeid.to_string()}"), None)
        if cond.shelved:
            cond.shelving, cond.unshelve_at = "Unshelved", None
            self._emit(cond, f"{self._label(cond)} unshelved (shelving time over)")

    async def _timed_shelve(self, call: MethodCall) -> list[ua.Variant]:
        ms = call.arg(0)
        return await self._shelve(call, "TimedShelved", float(ms) / 1000.0 if isinstance(ms, int | float) else None)

    async def _one_shot_shelve(self, call: MethodCall) -> list[ua.Variant]:
        return await self._shelve(call, "OneShotShelved")

    async def _unshelve(self, call: MethodCall) -> list[ua.Variant]:
        return await self._shelve(call, "Unshelved")

    def _own_subscription(self, call: MethodCall) -> int:
        sub_id = call.arg(0)
        session = call.session
        if not isinstance(sub_id, int) or session is None or not session.owns_subscription(sub_id):
            raise MethodError(ua.StatusCodes.BadSubscriptionIdInvalid, "not a subscription of this session")
        return sub_id

    async def _refresh(self, call: MethodCall) -> list[ua.Variant]:
        self.events.refresh(self._own_subscription(call), self.retained)
        return []

    async def _refresh2(self, call: MethodCall) -> list[ua.Variant]:
        sub_id = self._own_subscription(call)
        mid = call.arg(1)
        sub = self.iserver.subscription_service.subscriptions.get(sub_id)
        if sub is None or mid not in sub.items:
            raise MethodError(ua.StatusCodes.BadMonitoredItemIdInvalid)
        self.events.refresh(sub_id, self.retained, mid)
        return []


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _text_id(node: ua.NodeId) -> str:
    return str(node.Identifier)
