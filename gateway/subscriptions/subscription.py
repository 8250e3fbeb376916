"""One subscription: its monitored items, what they queued, and the publishing cycle (Part 4, 5.13.1).

Every publishing interval the subscription sends what its items queued (at most MaxNotificationsPerPublish
per message, MoreNotifications when more wait, and then at once into the next Publish request the
session holds), or a keep-alive after MaxKeepAliveCount empty intervals. A message is encoded once
and kept, by sequence number, until the client acknowledges it (Republish answers from there). Intervals
in which it had something to send but no Publish request count against the lifetime; past
LifetimeCount it expires and is deleted with its items.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import struct_from_binary

from gateway.subscriptions import encoding
from gateway.subscriptions.items import DataItem, EventItem, FilterRefused, Item, queued

if TYPE_CHECKING:
    from gateway.subscriptions.service import SubscriptionService

log = logging.getLogger(__name__)

STOP_WITHIN_S = 5.0
_BOTH = ua.TimestampsToReturn.Both
_SOURCE = ua.TimestampsToReturn.Source
_SERVER = ua.TimestampsToReturn.Server


@dataclass(slots=True)
class EncodedPublish:
    """What a subscription hands its session's processor: a PublishResponse but for the header and the
    acknowledgement results, with the NotificationMessage already encoded."""

    subscription_id: int
    available: list[int]
    more_notifications: bool
    message: bytes


PublishCallback = Callable[..., Awaitable[None]]
RequestCallback = Callable[[int], Any]


class Subscription:
    def __init__(self, service: SubscriptionService, data: ua.CreateSubscriptionResult, session_id: ua.NodeId,
                 callback: PublishCallback, request_callback: RequestCallback | None,
                 params: ua.CreateSubscriptionParameters) -> None:
        self.service = service
        self.data = data
        self.session_id = session_id
        self.pub_result_callback = callback
        self.pub_request_callback = request_callback
        self.publishing_enabled = params.PublishingEnabled
        self.max_notifications = params.MaxNotificationsPerPublish
        self.gateway_owner: Any = None  # who may act on it (gateway.transport.ownership), set by the session
        self.items: dict[int, Item] = {}
        self.event_items: dict[ua.NodeId, list[int]] = {}
        self.retained: dict[int, bytes] = {}
        self.expired = False
        self._values: dict[DataItem, Any] = {}  # a DataValue (queue size 1) or a deque of [DataValue, bits]
        self._events: dict[EventItem, deque[bytes]] = {}
        self._held: set[DataItem] = set()
        self._next_seq = 1
        self._keep_alive_counter = 0
        self._lifetime_counter = 0
        self._waiting = False  # had something to send and no Publish request: the processor calls back
        self._first = True
        self._task: asyncio.Task[None] | None = None
        self.monotonic = time.monotonic

    @property
    def next_sequence_number(self) -> int:
        return self._next_seq

    @property
    def subscription_id(self) -> int:
        return int(self.data.SubscriptionId)

    def __repr__(self) -> str:
        return f"Subscription({self.subscription_id})"

    # -- life ----------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"subscription {self.subscription_id}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            try:
                async with asyncio.timeout(STOP_WITHIN_S):
                    await asyncio.wait([task])
            except TimeoutError:
                log.error("%s did not stop within %g s", self, STOP_WITHIN_S)
        self.delete_items(list(self.items))

    async def _run(self) -> None:
        next_at = self.monotonic()
        while True:
            period = self.data.RevisedPublishingInterval / 1000.0
            next_at += period
            now = self.monotonic()
            if next_at < now:  # overran (a stalled loop): skip the missed cycles rather than burst
                next_at = now + period
            await asyncio.sleep(next_at - now)
            try:
                await self._cycle()
            except Exception:  # one failed cycle must not end the subscription
                log.exception("%s: publishing cycle failed", self)
            if self.expired:
                return

    async def _cycle(self) -> None:
        if self._held:
            now = self.monotonic()
            self._held = {item for item in self._held if not item.release_held(now)}
        if self._waiting:
            # Ask again rather than only wait for the processor's call back: after a transfer the request
            # arrives at another session's processor, which never heard that this one waits.
            await self._try_send()
        elif self._first or (self.publishing_enabled and self.has_notifications()):
            await self._try_send()
        else:
            self._keep_alive_counter += 1
            if self._keep_alive_counter >= self.data.RevisedMaxKeepAliveCount:
                await self._try_send()
        if self._lifetime_counter > self.data.RevisedLifetimeCount:
            await self._expire()

    async def _expire(self) -> None:
        log.warning("%s of session %s expired: no Publish request for %d publishing intervals", self,
                    self.session_id.to_string(), self.data.RevisedLifetimeCount)
        self.expired = True
        await self.service.expired(self)

    # -- sending -------------------------------------------------------------------------------------------

    def has_notifications(self) -> bool:
        return bool(self._values or self._events)

    async def _try_send(self) -> None:
        if self.pub_request_callback is None:
            await self._send_internal()
            return
        request = self.pub_request_callback(self.subscription_id)
        if request is None:
            self._waiting = True
            self._lifetime_counter += 1
            return
        await self._send(request)

    async def publish_results(self, requestdata: Any = None) -> bool:
        """A Publish request for a subscription that was waiting for one (asyncua's processor calls this)."""
        if not self._waiting:
            return False
        await self._send(requestdata)
        return True

    async def _send(self, request: Any) -> None:
        while True:
            self._waiting = False
            self._first = False
            self._keep_alive_counter = 0
            self._lifetime_counter = 0
            now = datetime.now(UTC)
            notifications, more = self._collect()
            if notifications:
                seq = self._next_seq
                self._next_seq = seq + 1 if seq < 0xFFFFFFFF else 1
                message = encoding.notification_message(seq, now, notifications)
                self._retain(seq, message)
            else:  # a keep-alive carries the next sequence number without using it
                message = encoding.empty_message(self._next_seq, now)
            await self.pub_result_callback(
                EncodedPublish(self.subscription_id, list(self.retained), more, message), request)
            if not more:
                return
            request = self.pub_request_callback(self.subscription_id) if self.pub_request_callback else None
            if request is None:
                self._waiting = True
                return

    async def _send_internal(self) -> None:
        """A subscription made inside the process (asyncua's `Server.create_subscription`): no Publish
        requests, no acknowledgements; its callback takes a decoded PublishResult."""
        self._first = False
        self._keep_alive_counter = 0
        notifications, _ = self._collect()
        if not notifications:
            return
        seq, self._next_seq = self._next_seq, self._next_seq + 1
        message = encoding.notification_message(seq, datetime.now(UTC), notifications)
        result = ua.PublishResult(SubscriptionId=self.subscription_id,
                                  NotificationMessage=struct_from_binary(ua.NotificationMessage, Buffer(message)))
        await self.pub_result_callback(result)

    def _retain(self, seq: int, message: bytes) -> None:
        self.retained[seq] = message
        limit = self.service.max_unacked
        while len(self.retained) > limit:
            del self.retained[next(iter(self.retained))]

    def _collect(self) -> tuple[list[bytes], bool]:
        """The notifications of the next message: data changes then events, at most the limit."""
        parts: list[bytes] = []
        if not self.publishing_enabled:
            return parts, False
        budget = self.max_notifications or 1 << 62
        changes: list[bytes] = []
        values = self._values
        if values:
            if len(values) <= budget and all(type(v) is not deque for v in values.values()):
                # the common case: queue size 1, everything fits
                changes = _notifications(values)
                values.clear()
            else:
                changes = self._take_values(budget)
            parts.append(encoding.data_change_notification(changes))
        events: list[bytes] = []
        if self._events and len(changes) < budget:
            events = self._take_events(budget - len(changes))
            if events:
                parts.append(encoding.event_notification_list(events))
        return parts, bool(self._values or self._events)

    def _take_values(self, budget: int) -> list[bytes]:
        out: list[bytes] = []
        values = self._values
        for item, entry in list(values.items()):
            if len(out) >= budget:
                break
            if type(entry) is not deque:
                out.append(_notification(item, entry))
                del values[item]
                continue
            while entry and len(out) < budget:
                dv, bits = entry.popleft()
                out.append(_notification(item, dv, bits))
            if not entry:
                del values[item]
        return out

    def _take_events(self, budget: int) -> list[bytes]:
        out: list[bytes] = []
        for item, entries in list(self._events.items()):
            while entries and len(out) < budget:
                out.append(entries.popleft())
            if not entries:
                del self._events[item]
            if len(out) >= budget:
                break
        return out

    # -- what items queue ----------------------------------------------------------------------------------

    def queue_value(self, item: DataItem, dv: ua.DataValue) -> None:
        if item.queue_size == 1:
            self._values[item] = dv
        else:
            self._values[item] = queued(self._values.get(item), dv, item.queue_size, item.discard_oldest)

    def queue_event(self, item: EventItem, fields: ua.EventFieldList) -> None:
        entries = self._events.get(item)
        if entries is None:
            entries = self._events[item] = deque()
        if len(entries) >= item.queue_size:
            if not item.discard_oldest:
                return
            entries.popleft()
        entries.append(encoding.event_field_list(fields))

    def hold(self, item: DataItem) -> None:
        self._held.add(item)

    def resize(self, item: DataItem, size: int) -> None:
        """A queue size changed (ModifyMonitoredItems): keep the newest values that fit."""
        entry = self._values.get(item)
        if entry is None:
            return
        newest = [entry[-1][0]] if type(entry) is deque else [entry]
        if type(entry) is deque and size > 1:
            newest = [dv for dv, _ in list(entry)[-size:]]
        self._values[item] = newest[-1] if size == 1 else deque([dv, 0] for dv in newest)

    # -- acknowledgements, Republish -------------------------------------------------------------------------

    def acknowledge(self, seq: int) -> bool:
        return self.retained.pop(seq, None) is not None

    def republish(self, seq: int) -> bytes | None:
        return self.retained.get(seq)

    # -- monitored items -----------------------------------------------------------------------------------

    def read(self, rvid: ua.ReadValueId) -> ua.DataValue | None:
        return self.service.aspace.read_attribute_value(rvid.NodeId, rvid.AttributeId)

    def create_items(self, params: ua.CreateMonitoredItemsParameters) -> list[ua.MonitoredItemCreateResult]:
        if params.TimestampsToReturn not in ua.TimestampsToReturn:
            raise FilterRefused(ua.StatusCodes.BadTimestampsToReturnInvalid, "")
        return [self._create(request, params.TimestampsToReturn) for request in params.ItemsToCreate]

    def _create(self, request: ua.MonitoredItemCreateRequest, timestamps: Any) -> ua.MonitoredItemCreateResult:
        result = ua.MonitoredItemCreateResult()
        rvid = request.ItemToMonitor
        node = self.service.aspace.get(rvid.NodeId)
        if node is None:
            result.StatusCode = ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown)
            return result
        if rvid.AttributeId not in node.attributes:
            result.StatusCode = ua.StatusCode(ua.StatusCodes.BadAttributeIdInvalid)
            return result
        if rvid.IndexRange:
            result.StatusCode = ua.StatusCode(ua.StatusCodes.BadIndexRangeInvalid)  # not served: refused, not ignored
            return result
        if request.MonitoringMode not in ua.MonitoringMode:
            result.StatusCode = ua.StatusCode(ua.StatusCodes.BadMonitoringModeInvalid)
            return result
        mid = self.service.next_item_id()
        queue_size = self.service.revise_queue_size(request.RequestedParameters.QueueSize,
                                                    rvid.AttributeId == ua.AttributeIds.EventNotifier)
        try:
            if rvid.AttributeId == ua.AttributeIds.EventNotifier:
                item: Item = self._create_event_item(mid, request, queue_size)
            else:
                item = self._create_data_item(mid, request, queue_size, timestamps)
        except FilterRefused as refused:
            log.info("%s: monitored item on %s refused: %s", self, rvid.NodeId.to_string(), refused)
            result.StatusCode = ua.StatusCode(refused.status)
            return result
        self.items[mid] = item
        result.MonitoredItemId = mid
        result.RevisedQueueSize = queue_size
        result.RevisedSamplingInterval = item.sampling_ms if isinstance(item, DataItem) else 0.0
        if isinstance(item, DataItem):
            self._initial_value(item)
        return result

    def _create_event_item(self, mid: int, request: ua.MonitoredItemCreateRequest, queue_size: int) -> EventItem:
        notifier = self.read(request.ItemToMonitor)
        bits = notifier.Value.Value if notifier is not None and notifier.Value is not None else None
        if not isinstance(bits, int) or not bits & ua.EventNotifier.SubscribeToEvents.mask:
            raise FilterRefused(ua.StatusCodes.BadServiceUnsupported, "the node does not notify events")
        item = EventItem(self, mid, request, queue_size)
        self.event_items.setdefault(item.node, []).append(mid)
        return item

    def _create_data_item(self, mid: int, request: ua.MonitoredItemCreateRequest, queue_size: int,
                          timestamps: Any) -> DataItem:
        rvid = request.ItemToMonitor
        sampling = self.service.revise_sampling(rvid, request.RequestedParameters.SamplingInterval, self)
        item = DataItem(self, mid, request, sampling, queue_size)
        item.timestamps = timestamps
        status, handle = self.service.aspace.add_datachange_callback(rvid.NodeId, rvid.AttributeId, item.changed)
        if not status.is_good():
            raise FilterRefused(status.value, f"cannot watch the attribute: {status.name}")
        item.callback_handle = handle
        return item

    def _initial_value(self, item: DataItem) -> None:
        if item.mode is ua.MonitoringMode.Disabled:
            return
        dv = self.read(item.read_value_id)
        if dv is not None:
            item.next_sample_s = self.monotonic() + item.min_gap_s
            item.take(dv)  # the first value is reported whatever the filter says (Part 4, 5.12.1.2)

    def modify_items(self, params: ua.ModifyMonitoredItemsParameters) -> list[ua.MonitoredItemModifyResult]:
        if params.TimestampsToReturn not in ua.TimestampsToReturn:
            raise FilterRefused(ua.StatusCodes.BadTimestampsToReturnInvalid, "")
        results = []
        for request in params.ItemsToModify:
            result = ua.MonitoredItemModifyResult()
            item = self.items.get(request.MonitoredItemId)
            if item is None:
                result.StatusCode = ua.StatusCode(ua.StatusCodes.BadMonitoredItemIdInvalid)
                results.append(result)
                continue
            queue_size = self.service.revise_queue_size(request.RequestedParameters.QueueSize,
                                                        isinstance(item, EventItem))
            try:
                if isinstance(item, DataItem):
                    sampling = self.service.revise_sampling(item.read_value_id,
                                                            request.RequestedParameters.SamplingInterval, self)
                    item.configure(request.RequestedParameters, sampling, queue_size)
                    item.timestamps = params.TimestampsToReturn
                    result.RevisedSamplingInterval = sampling[0]
                else:
                    item.configure(request.RequestedParameters, queue_size)
            except FilterRefused as refused:
                result.StatusCode = ua.StatusCode(refused.status)
                results.append(result)
                continue
            result.RevisedQueueSize = queue_size
            results.append(result)
        return results

    def set_monitoring_mode(self, mode: ua.MonitoringMode, ids: Iterable[int]) -> list[ua.StatusCode]:
        results = []
        for mid in ids:
            item = self.items.get(mid)
            if item is None:
                results.append(ua.StatusCode(ua.StatusCodes.BadMonitoredItemIdInvalid))
                continue
            before, item.mode = item.mode, mode
            if isinstance(item, DataItem):
                if mode is ua.MonitoringMode.Disabled:
                    self._values.pop(item, None)
                    item.sampled = item.held = None
                    item.last = None
                elif before is ua.MonitoringMode.Disabled:
                    self._initial_value(item)
                elif mode is ua.MonitoringMode.Reporting and item.sampled is not None:
                    entries = [item.sampled] if type(item.sampled) is not deque else [dv for dv, _ in item.sampled]
                    item.sampled = None
                    for dv in entries:
                        self.queue_value(item, dv)
            elif mode is ua.MonitoringMode.Disabled:
                self._events.pop(item, None)
            results.append(ua.StatusCode())
        return results

    def delete_items(self, ids: Iterable[int]) -> list[ua.StatusCode]:
        results = []
        for mid in ids:
            item = self.items.pop(mid, None)
            if item is None:
                results.append(ua.StatusCode(ua.StatusCodes.BadMonitoredItemIdInvalid))
                continue
            if isinstance(item, DataItem):
                self._values.pop(item, None)
                self._held.discard(item)
                if item.callback_handle is not None:
                    try:
                        self.service.aspace.delete_datachange_callback(item.callback_handle)
                    except KeyError:  # the node was deleted with its callbacks
                        pass
            else:
                self._events.pop(item, None)
                mids = self.event_items.get(item.node, [])
                if mid in mids:
                    mids.remove(mid)
                if not mids:
                    self.event_items.pop(item.node, None)
            results.append(ua.StatusCode())
        return results

    def send_initial_values(self) -> None:
        for item in self.items.values():
            if isinstance(item, DataItem):
                item.last = None
                self._initial_value(item)


def _notifications(values: dict[DataItem, ua.DataValue]) -> list[bytes]:
    """`_notification` of each queued value (queue size 1, no overflow), the common case's call chain shortened."""
    encoded = encoding.encoded
    return [item.handle_bytes + encoded(dv) if item.timestamps is _BOTH else _notification(item, dv)
            for item, dv in values.items()]


def _notification(item: DataItem, dv: ua.DataValue, bits: int = 0) -> bytes:
    timestamps = item.timestamps
    if bits:
        if timestamps is not _BOTH:
            dv = _stamped(dv, timestamps)
        return item.handle_bytes + encoding.encode_data_value(dv, bits)
    if timestamps is _BOTH:
        return item.handle_bytes + encoding.encoded(dv)
    return item.handle_bytes + encoding.encoded_with(dv, timestamps is _SOURCE, timestamps is _SERVER)


def _stamped(dv: ua.DataValue, timestamps: Any) -> ua.DataValue:
    """`dv` with only the timestamps the client asked for."""
    source = dv.SourceTimestamp if timestamps in (_SOURCE, _BOTH) else None
    server = dv.ServerTimestamp if timestamps in (_SERVER, _BOTH) else None
    return ua.DataValue(dv.Value, dv.StatusCode, source, server,
                        dv.SourcePicoseconds if source is not None else None,
                        dv.ServerPicoseconds if server is not None else None)
