"""The one event service: alarms, state-machine transitions and audit events reach clients here.

`emit` is synchronous and cheap (alarm evaluation calls it from a change-feed listener); delivery runs
in one task, in order. An event goes to every event monitored item on any node of its notifier chain
(the source's ancestors up to the Server object) in every subscription, filtered by that item's where
clause and answered with its select clauses. A refresh goes to one subscription only (or one item):
RefreshStart, the retained conditions, RefreshEnd, where RefreshStart/End pass whatever the where
clause says so a client always sees the bracket. Stored events (history) are handed to `sink`, and
every emitted event to each listener (`listen`: the series writer records alarm states through it).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from asyncua import ua

from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.events.audit import AuditRecord, CallRecord
from gateway.events.audit_events import audit_event
from gateway.events.event import GatewayEvent, base_fields
from gateway.events.filter import FilterError, Predicate, TypeTree, compile_where, select
from gateway.subscriptions.items import EventItem

log = logging.getLogger(__name__)

SERVER = ua.NodeId(ua.ObjectIds.Server)
_REFRESH_START = ua.NodeId(ua.ObjectIds.RefreshStartEventType)
_REFRESH_END = ua.NodeId(ua.ObjectIds.RefreshEndEventType)
DELIVERY_SLICE_S = 0.003  # longest the delivery task runs before it lets the event loop's other work in
_LOG_EVERY_S = 60.0

EventListener = Callable[[GatewayEvent], None]


class EventSink(Protocol):
    def append_event(self, event: GatewayEvent) -> None: ...


class EventService:
    def __init__(self, iserver: Any, clock: Clock = SYSTEM_CLOCK, sink: EventSink | None = None) -> None:
        self.iserver = iserver
        self.types = TypeTree(iserver.aspace)
        self.clock = clock
        self.sink = sink
        self.canonical_method: Callable[[ua.NodeId], ua.NodeId] = lambda m: m  # a method copy -> the type's
        self.emitted = 0
        self.delivered = 0
        self._jobs: deque[Callable[[], Awaitable[None]]] = deque()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._slice_end = 0.0
        self._filters: weakref.WeakKeyDictionary[Any, tuple[Any, Predicate | None]] = weakref.WeakKeyDictionary()
        self._listeners: list[EventListener] = []
        self._listener_logged: dict[EventListener, float] = {}

    # -- emitting ---------------------------------------------------------------------------------------

    def emit(self, event: GatewayEvent) -> None:
        self.emitted += 1
        if self.sink is not None:
            self.sink.append_event(event)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # a listener's bug must not cost clients or history their event
                now = time.monotonic()
                if now - self._listener_logged.get(listener, float("-inf")) >= _LOG_EVERY_S:
                    self._listener_logged[listener] = now
                    log.exception("event listener %s failed", getattr(listener, "__qualname__", listener))
        self._submit(lambda: self._deliver(event))

    def listen(self, listener: EventListener) -> Callable[[], None]:
        """Call `listener` with every emitted event, on the event loop as it is emitted (it must be cheap and
        never block); returns the function that ends it."""
        self._listeners.append(listener)

        def close() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)
        return close

    def audit(self, record: AuditRecord) -> None:
        """An audit record (a write, a call) as an audit event on the Server object."""
        method = self.canonical_method(record.method) if isinstance(record, CallRecord) else None
        self.emit(audit_event(record, method))

    def refresh(self, subscription_id: int, retained: Callable[[], Iterable[GatewayEvent]],
                monitored_item_id: int | None = None) -> None:
        """Queue a refresh for one subscription (ConditionRefresh) or one of its items (ConditionRefresh2).

        The retained conditions are taken when the refresh runs, after every event queued before it.
        """
        self._submit(lambda: self._refresh(subscription_id, monitored_item_id, retained))

    def _submit(self, job: Callable[[], Awaitable[None]]) -> None:
        self._jobs.append(job)
        self._ready.set()

    # -- the delivery task ----------------------------------------------------------------------------------

    def start(self) -> None:
        if self.sink is not None:  # events are stored: the Server object answers HistoryReadEvents
            av = self.iserver.aspace[SERVER].attributes[ua.AttributeIds.EventNotifier]
            bits = av.value.Value.Value if av.value is not None and av.value.Value is not None else 0
            av.value = ua.DataValue(ua.Variant(bits | ua.EventNotifier.HistoryRead.mask, ua.VariantType.Byte))
        self._task = asyncio.create_task(self._run(), name="event delivery")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
            self._task = None

    async def drain(self) -> None:
        """Deliver what is queued now (tests, and the stop path)."""
        while self._jobs:
            await self._jobs.popleft()()

    async def _run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            self._slice_end = asyncio.get_running_loop().time() + DELIVERY_SLICE_S
            while self._jobs:
                job = self._jobs.popleft()
                try:
                    await job()
                except Exception:  # a bad filter or a closed subscription must not stop event delivery
                    log.exception("delivering an event failed")
                await self._let_others_run()

    async def _let_others_run(self) -> None:
        """Delivering never waits for anything, so a flood (1,000 alarms and their audit events to each
        subscriber, a refresh of 1,000 conditions) would hold the event loop to its end: at most a slice."""
        loop = asyncio.get_running_loop()
        if loop.time() >= self._slice_end:
            await asyncio.sleep(0)
            self._slice_end = loop.time() + DELIVERY_SLICE_S

    def _items(self, notifiers: Iterable[ua.NodeId]) -> Iterable[tuple[Any, int, Any]]:
        for sub in list(self.iserver.subscription_service.subscriptions.values()):
            for node in notifiers:
                for mid in sub.event_items.get(node, ()):
                    item = sub.items.get(mid)
                    if item is not None and item.mode != ua.MonitoringMode.Disabled:
                        yield sub, mid, item

    def _where(self, mdata: Any) -> Predicate | None:
        flt = mdata.filter
        cached = self._filters.get(mdata)
        if cached is not None and cached[0] is flt:
            return cached[1]
        try:
            predicate: Predicate | None = compile_where(getattr(flt, "WhereClause", None), self.types)
        except FilterError as exc:
            log.warning("event monitored item %s has a where clause the gateway cannot evaluate (%s): it gets no "
                        "events", mdata.monitored_item_id, exc)
            predicate = None
        self._filters[mdata] = (flt, predicate)
        return predicate

    async def _send(self, sub: Any, mid: int, mdata: Any, event: GatewayEvent, filtered: bool = True) -> None:
        if filtered:
            where = self._where(mdata)
            if where is None or not where(event):
                return
        fields = ua.EventFieldList()
        fields.ClientHandle = mdata.client_handle
        fields.EventFields = select(event, list(getattr(mdata.filter, "SelectClauses", None) or []), self.types)
        sub.queue_event(mdata, fields)
        self.delivered += 1

    async def _deliver(self, event: GatewayEvent) -> None:
        for sub, mid, mdata in list(self._items(event.notifiers)):
            await self._send(sub, mid, mdata, event)

    async def _refresh(self, subscription_id: int, monitored_item_id: int | None,
                       retained: Callable[[], Iterable[GatewayEvent]]) -> None:
        subs = self.iserver.subscription_service.subscriptions
        sub = subs.get(subscription_id)
        if sub is None:
            return
        mids = [monitored_item_id] if monitored_item_id is not None else [
            mid for mids in sub.event_items.values() for mid in mids]
        conditions = list(retained())
        for mid in mids:
            mdata = sub.items.get(mid)
            if not isinstance(mdata, EventItem):  # ConditionRefresh2 named a data item
                continue
            watched = {node for node, ids in sub.event_items.items() if mid in ids}
            await self._send(sub, mid, mdata, self._bracket(_REFRESH_START), filtered=False)
            for event in conditions:
                if watched.intersection(event.notifiers):
                    await self._send(sub, mid, mdata, event)
                    await self._let_others_run()
            await self._send(sub, mid, mdata, self._bracket(_REFRESH_END), filtered=False)

    def _bracket(self, event_type: ua.NodeId) -> GatewayEvent:
        now = self.clock.now()
        return GatewayEvent(event_type, base_fields(event_type, SERVER, "Server", "", 1, now), (SERVER,))
