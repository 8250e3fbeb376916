"""Monitored items: what a subscription watches, which changes it reports and how many it keeps.

A data item is called by the address space as each value is stored (a plain function, see
`gateway.values.aspace_io.store_value`), so a change costs a filter check and a reference in the
subscription's queue: no copy, no notification object, no coroutine. It compares with the last value it
*reported* (Part 4, 7.22.2: a deadband is measured from the last reported value, not the last sample),
honours the trigger (Status, StatusValue, StatusValueTimestamp) and the absolute or percent deadband
(percent of the variable's EURange), and queues at most its queue size with discardOldest and the
Overflow info bit (Part 4, 5.12.1.5). An event item holds a filter; the event service fills its queue.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from asyncua import ua
from asyncua.ua import uaprotocol_auto

from gateway.subscriptions.encoding import client_handle
from gateway.values.aspace_io import DONE, Done

if TYPE_CHECKING:
    from gateway.subscriptions.subscription import Subscription

# asyncua decodes a filter into its generated class; `ua.DataChangeFilter` is a hand-written one.
_DATA_CHANGE_FILTERS = (ua.DataChangeFilter, uaprotocol_auto.DataChangeFilter)
OVERFLOW = 0x480  # InfoType DataValue (0x400) | Overflow (0x80)
_REPORTING = ua.MonitoringMode.Reporting
_DISABLED = ua.MonitoringMode.Disabled
_STATUS = ua.DataChangeTrigger.Status
_STATUS_VALUE_TIMESTAMP = ua.DataChangeTrigger.StatusValueTimestamp
_NUMERIC = frozenset({
    ua.VariantType.SByte, ua.VariantType.Byte, ua.VariantType.Int16, ua.VariantType.UInt16, ua.VariantType.Int32,
    ua.VariantType.UInt32, ua.VariantType.Int64, ua.VariantType.UInt64, ua.VariantType.Float, ua.VariantType.Double,
})


class FilterRefused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class DataItem:
    """A monitored item on an attribute's value (in practice: a variable's Value)."""

    __slots__ = (
        "callback_handle",
        "client_handle",
        "deadband",
        "discard_oldest",
        "handle_bytes",
        "held",
        "last",
        "min_gap_s",
        "mode",
        "monitored_item_id",
        "next_sample_s",
        "queue_size",
        "read_value_id",
        "sampled",
        "sampling_ms",
        "sub",
        "timestamps",
        "trigger",
    )

    def __init__(self, sub: Subscription, monitored_item_id: int, request: ua.MonitoredItemCreateRequest,
                 sampling: tuple[float, float], queue_size: int) -> None:
        self.sub = sub
        self.monitored_item_id = monitored_item_id
        self.read_value_id = request.ItemToMonitor
        self.mode = request.MonitoringMode
        self.callback_handle: int | None = None
        self.last: ua.DataValue | None = None  # last value reported (queued)
        self.sampled: Any = None  # values taken while the mode is Sampling
        self.held: ua.DataValue | None = None  # a change inside the sampling interval, reported at its end
        self.next_sample_s = 0.0
        self.timestamps = ua.TimestampsToReturn.Both
        self.configure(request.RequestedParameters, sampling, queue_size)

    def configure(self, params: ua.MonitoringParameters, sampling: tuple[float, float], queue_size: int) -> None:
        """Apply (create or modify) the parameters; FilterRefused leaves the item as it was. `sampling` is the
        revised interval (ms) and the least time between two values taken (s): zero when the interval is
        the variable's own scan period, so scan jitter never holds a value back."""
        self.trigger, self.deadband = self._filter(params.Filter)
        self.client_handle = params.ClientHandle
        self.handle_bytes = client_handle(params.ClientHandle)
        self.discard_oldest = params.DiscardOldest
        self.sampling_ms, self.min_gap_s = sampling
        if getattr(self, "queue_size", queue_size) != queue_size:
            self.sub.resize(self, queue_size)
        self.queue_size = queue_size

    def _filter(self, flt: Any) -> tuple[int, float]:
        if no_filter(flt):
            return ua.DataChangeTrigger.StatusValue, 0.0
        if not isinstance(flt, _DATA_CHANGE_FILTERS):
            raise FilterRefused(ua.StatusCodes.BadMonitoredItemFilterUnsupported,
                                f"{type(flt).__name__} is not served on a value")
        kind = flt.DeadbandType
        if kind == ua.DeadbandType.None_:
            return flt.Trigger, 0.0
        if flt.DeadbandValue < 0:
            raise FilterRefused(ua.StatusCodes.BadDeadbandFilterInvalid, "a deadband is not negative")
        if flt.Trigger == _STATUS:
            raise FilterRefused(ua.StatusCodes.BadDeadbandFilterInvalid, "a deadband needs a value trigger")
        current = self.sub.read(self.read_value_id)
        variant = current.Value if current is not None else None
        if variant is not None and variant.VariantType not in _NUMERIC and variant.VariantType != ua.VariantType.Null:
            raise FilterRefused(ua.StatusCodes.BadFilterNotAllowed,
                                f"a deadband needs a number, the value is {variant.VariantType.name}")
        if kind == ua.DeadbandType.Absolute:
            return flt.Trigger, float(flt.DeadbandValue)
        if kind == ua.DeadbandType.Percent:
            eu_range = self.sub.service.eu_range(self.read_value_id)
            if eu_range is None:
                raise FilterRefused(ua.StatusCodes.BadMonitoredItemFilterUnsupported,
                                    "a percent deadband needs the variable's EURange")
            if flt.DeadbandValue > 100:
                raise FilterRefused(ua.StatusCodes.BadDeadbandFilterInvalid, "a percent deadband is 0 to 100")
            low, high = eu_range
            return flt.Trigger, float(flt.DeadbandValue) / 100.0 * abs(high - low)
        raise FilterRefused(ua.StatusCodes.BadDeadbandFilterInvalid, f"deadband type {kind} is not defined")

    # -- the value path ------------------------------------------------------------------------------------

    def changed(self, handle: int, dv: ua.DataValue | None, error: ua.StatusCode | None = None) -> Done:
        """Called by the address space with each stored value (or an error when the node is deleted)."""
        if dv is None:
            return DONE
        mode = self.mode
        if mode is _DISABLED or not self.passes(dv):
            return DONE
        if self.min_gap_s:
            now = self.sub.monotonic()
            if now < self.next_sample_s:
                if self.held is None:
                    self.sub.hold(self)
                self.held = dv
                return DONE
            self.next_sample_s = now + self.min_gap_s
        self.take(dv)
        return DONE

    def take(self, dv: ua.DataValue) -> None:
        self.last = dv
        if self.mode is _REPORTING:
            self.sub.queue_value(self, dv)
        else:
            self.sampled = queued(self.sampled, dv, self.queue_size, self.discard_oldest)

    def passes(self, dv: ua.DataValue) -> bool:
        last = self.last
        if last is None:
            return True
        status, last_status = dv.StatusCode, last.StatusCode
        if status is not last_status and status != last_status:  # stored values share StatusCode objects
            return True
        trigger = self.trigger
        if trigger == _STATUS:
            return False
        new, old = dv.Value, last.Value
        if self.deadband:
            if _exceeds(new, old, self.deadband):
                return True
        elif new is not old and (new is None or old is None or new.Value != old.Value
                                 or new.VariantType != old.VariantType):
            return True
        return trigger == _STATUS_VALUE_TIMESTAMP and dv.SourceTimestamp != last.SourceTimestamp

    def release_held(self, now: float) -> bool:
        """A change held back by the sampling interval, once the interval is over; False while it is not."""
        if self.held is None:
            return True
        if now < self.next_sample_s:
            return False
        dv, self.held = self.held, None
        self.next_sample_s = now + self.min_gap_s
        self.take(dv)
        return True


def no_filter(flt: Any) -> bool:
    """None, or the null ExtensionObject a client sends for "no filter"."""
    return flt is None or (isinstance(flt, ua.ExtensionObject) and flt.Body is None)


def _exceeds(new: ua.Variant | None, old: ua.Variant | None, deadband: float) -> bool:
    if new is None or old is None or new.VariantType != old.VariantType:
        return new is not old
    a, b = new.Value, old.Value
    if isinstance(a, list | tuple) or isinstance(b, list | tuple):
        if not isinstance(a, list | tuple) or not isinstance(b, list | tuple) or len(a) != len(b):
            return True
        return any(_number_exceeds(x, y, deadband) for x, y in zip(a, b, strict=True))
    return _number_exceeds(a, b, deadband)


def _number_exceeds(a: Any, b: Any, deadband: float) -> bool:
    try:
        return not abs(a - b) <= deadband  # a NaN on either side is a change
    except TypeError:
        return a != b


def queued(queue: Any, dv: ua.DataValue, size: int, discard_oldest: bool) -> Any:
    """Add `dv` to a queue kept as None (empty), a DataValue (queue size 1) or a deque of [dv, bits]."""
    if size == 1:
        return dv
    if queue is None:
        queue = deque()
    if len(queue) >= size:
        if discard_oldest:
            queue.popleft()
            queue[0][1] = OVERFLOW
            queue.append([dv, 0])
        else:
            queue[-1] = [dv, OVERFLOW]
    else:
        queue.append([dv, 0])
    return queue



class EventItem:
    """A monitored item on an object's EventNotifier; the event service decides what reaches it."""

    __slots__ = (
        "__weakref__",  # the event service caches compiled where clauses per item
        "client_handle",
        "discard_oldest",
        "filter",
        "mode",
        "monitored_item_id",
        "queue_size",
        "read_value_id",
        "sub",
    )

    def __init__(self, sub: Subscription, monitored_item_id: int, request: ua.MonitoredItemCreateRequest,
                 queue_size: int) -> None:
        self.sub = sub
        self.monitored_item_id = monitored_item_id
        self.read_value_id = request.ItemToMonitor
        self.mode = request.MonitoringMode
        self.configure(request.RequestedParameters, queue_size)

    def configure(self, params: ua.MonitoringParameters, queue_size: int) -> None:
        if not isinstance(params.Filter, ua.EventFilter):
            raise FilterRefused(ua.StatusCodes.BadEventFilterInvalid, "an event item needs an EventFilter")
        self.filter = params.Filter
        self.client_handle = params.ClientHandle
        self.discard_oldest = params.DiscardOldest
        self.queue_size = queue_size

    @property
    def node(self) -> ua.NodeId:
        return self.read_value_id.NodeId


Item = DataItem | EventItem
