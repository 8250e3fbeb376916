"""The tag table: bound variables, their last values, and the value path into the address space.

Drivers deliver raw field values; a Tag scales them to engineering units, casts them to the
variable's type, drops what did not change (or stayed within the deadband), and stores the rest
in the address space and the history store. A device that stops answering changes only the
status: the last value and its source timestamp stay. A NaN or an infinity from a device is no
value: the tag turns BadSensorFailure and keeps its last good value, as for a lost device.

The other way, a written engineering value becomes a raw value only if the field type holds it
exactly: a whole number in range for an integer field (12.34 at scale 0.1 is refused, not rounded
to 123), a finite number in range for a float field.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from asyncua import ua
from asyncua.server.address_space import AddressSpace, AttributeValue

from gateway.bindings import DEFAULT_FIELD_TYPE, BoundVariable
from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.drivers.base import Reading
from gateway.nodeset.values import INT_RANGE_OF
from gateway.values.aspace_io import status_code, stored_datavalue, value_attribute
from gateway.values.feed import ChangeFeed, Subscription

_INT_RANGE = INT_RANGE_OF
# VariantType members as module constants: `ua.VariantType.Double` is an enum class attribute lookup
# (EnumType.__getattr__), 0.2 us each, several per value in the value path.
_BOOLEAN = ua.VariantType.Boolean
_STRING = ua.VariantType.String
_FLOAT = ua.VariantType.Float
_DOUBLE = ua.VariantType.Double
_FLOATS = (_FLOAT, _DOUBLE)
_GOOD = ua.StatusCodes.Good
_GOOD_CODE = status_code(_GOOD)
_BAD_SENSOR = ua.StatusCodes.BadSensorFailure
_BAD_TYPE = ua.StatusCodes.BadTypeMismatch
_WAITING = ua.StatusCodes.BadWaitingForInitialData
_QUALITY_MASK = 3 << 30  # StatusCode.is_good(): the top two bits 00
_FLOAT32_MAX = 3.4028234663852886e38
_isfinite = math.isfinite
# Integer field types (xsd:short ...) take the range of the VariantType they default to.
_FIELD_INT_RANGE = {xsd: INT_RANGE_OF[vt] for vt, xsd in DEFAULT_FIELD_TYPE.items() if vt in INT_RANGE_OF}
_FIELD_FLOAT_MAX = {"xsd:float": _FLOAT32_MAX, "xsd:double": float("inf")}
# Relative precision of an engineering value of each type. An integer field takes a scaled value when
# it lands within a few of these of a whole number: 12.3 / 0.1 is 123.00000000000001 in doubles, and a
# Float 12.3 arrives as 12.300000190734863.
_EPSILON = {_FLOAT: 2.0**-23}
_DOUBLE_EPSILON = 2.0**-52
_ULPS = 8


class HistorySink(Protocol):
    def append(self, node_id: ua.NodeId, dv: ua.DataValue) -> None: ...


@runtime_checkable
class KeyedHistorySink(HistorySink, Protocol):
    """A history that files values under a key per node, which the tag table keeps per tag (HistoryStore)."""

    def key(self, node_id: ua.NodeId) -> str: ...

    def append_keyed(self, key: str, dv: ua.DataValue) -> None: ...


class ConversionError(ValueError):
    pass


class NotFinite(ConversionError):
    """A device sent NaN or an infinity: no value at all."""


@dataclass(slots=True)
class Tag:
    var: BoundVariable
    device: ua.NodeId
    value: Any = None
    status: int = ua.StatusCodes.BadWaitingForInitialData
    source_time: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # What the value path reads of the variable for every value, taken once (a binding never changes).
    nodeid: ua.NodeId = field(init=False, repr=False, compare=False)
    vtype: ua.VariantType = field(init=False, repr=False, compare=False)
    historizing: bool = field(init=False, repr=False, compare=False)
    _deadband: float = field(init=False, repr=False, compare=False)
    _scaled: bool = field(init=False, repr=False, compare=False)
    _scale: float = field(init=False, repr=False, compare=False)
    _offset: float = field(init=False, repr=False, compare=False)
    _float_max: float | None = field(init=False, repr=False, compare=False)  # None: not a Float or Double
    # Where its values go, bound by the tag table on the first store: the node's listeners in the change feed,
    # and the history's append for the node (None: not historized).
    listeners: list[Subscription] | None = field(default=None, init=False, repr=False, compare=False)
    attval: AttributeValue | None = field(default=None, init=False, repr=False, compare=False)
    historize: Callable[[ua.DataValue], None] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        b = self.var.binding
        self.nodeid, self.vtype, self.historizing = self.var.nodeid, self.var.vtype, self.var.historizing
        self._deadband, self._scale, self._offset = b.deadband, b.scale, b.offset
        self._scaled = b.scale != 1.0 or b.offset != 0.0
        self._float_max = {_FLOAT: _FLOAT32_MAX, _DOUBLE: math.inf}.get(self.vtype)

    def to_engineering(self, raw: Any) -> Any:
        """Raw field value -> value of the variable's type (scale and offset applied)."""
        if raw.__class__ is float and self._float_max is not None:  # most readings: a float for a float variable
            eng = raw * self._scale + self._offset if self._scaled else raw
            if not _isfinite(eng):
                raise NotFinite(f"{raw!r} is not a number")
            if abs(eng) > self._float_max:
                raise ConversionError(f"{eng} is out of range for Float")
            return eng
        vt = self.vtype
        if vt == _BOOLEAN:
            return bool(raw)
        if vt == _STRING:
            return str(raw)
        if isinstance(raw, bool | int | float):
            eng = raw * self._scale + self._offset if self._scaled else raw
            if isinstance(eng, float) and not _isfinite(eng):
                raise NotFinite(f"{raw!r} is not a number")
            if vt in _FLOATS:
                if vt == _FLOAT and abs(eng) > _FLOAT32_MAX:
                    raise ConversionError(f"{eng} is out of range for Float")
                return float(eng)
            if vt in _INT_RANGE:
                i = round(eng)
                lo, hi = _INT_RANGE[vt]
                if not lo <= i <= hi:
                    raise ConversionError(f"{i} is out of range for {vt.name}")
                return i
        raise ConversionError(f"cannot turn {raw!r} into a {vt.name}")

    def to_raw(self, eng: Any) -> Any:
        """Engineering value -> raw field value (inverse scaling); ConversionError if the field cannot
        hold it exactly: not a whole number for an integer field, out of the field type's range, not finite."""
        b = self.var.binding
        if isinstance(eng, bool) or not isinstance(eng, int | float):
            return eng
        if isinstance(eng, float) and not math.isfinite(eng):
            raise ConversionError(f"{eng} cannot be written to a device")
        scaled = b.scale != 1.0 or b.offset != 0.0
        raw = (eng - b.offset) / b.scale if scaled else eng
        field_type = self.var.field_type
        if field_type in _FIELD_INT_RANGE:
            whole = round(raw)
            if isinstance(raw, float):
                # How far float arithmetic may have moved a value that was meant to be whole.
                magnitude = max(abs(eng), abs(b.offset)) / abs(b.scale)
                tolerance = _ULPS * _EPSILON.get(self.var.vtype, _DOUBLE_EPSILON) * max(magnitude, 1.0)
                if abs(raw - whole) > tolerance:
                    raise ConversionError(f"{eng} is {raw:.6g} in the field, not a whole number for {field_type}")
            lo, hi = _FIELD_INT_RANGE[field_type]
            if not lo <= whole <= hi:
                raise ConversionError(f"{eng} is {whole} in the field, out of range for {field_type}")
            return whole
        limit = _FIELD_FLOAT_MAX.get(field_type)
        if limit is not None:
            if not math.isfinite(raw) or abs(raw) > limit:
                raise ConversionError(f"{eng} is out of range for {field_type}")
            return float(raw)
        return raw

    def changed(self, value: Any, status: int) -> bool:
        if status != self.status:
            return True
        old = self.value
        if old is None or value is None:
            return value != old
        db = self._deadband
        if db > 0 and isinstance(value, int | float) and not isinstance(value, bool):
            difference = abs(value - old)
            return not difference <= db  # a NaN on either side is a change, never a frozen deadband
        return value != old


class TagTable:
    """The bound variables' values. The `put` methods store synchronously, for the value path, which stores
    thousands of values a scan (a coroutine per value was a fifth of its cost); the async ones are the same
    for callers that await."""

    def __init__(self, aspace: AddressSpace, history: HistorySink | None = None, clock: Clock = SYSTEM_CLOCK,
                 feed: ChangeFeed | None = None) -> None:
        self.aspace = aspace
        self.feed = feed if feed is not None else ChangeFeed(aspace)
        self.history = history
        self.clock = clock
        self.tags: dict[ua.NodeId, Tag] = {}
        self.stored = 0  # values that reached the address space

    def add(self, var: BoundVariable, device: ua.NodeId) -> Tag:
        tag = Tag(var, device)
        self.tags[var.nodeid] = tag
        self._bind(tag)
        return tag

    def _bind(self, tag: Tag) -> None:
        """Bind the tag to this table's feed and history (`history` is not meant to change afterwards)."""
        tag.listeners = self.feed.listeners_of(tag.nodeid)
        tag.attval = value_attribute(self.aspace, tag.nodeid)
        history = self.history
        if not tag.historizing or history is None:
            tag.historize = None
        elif isinstance(history, KeyedHistorySink):
            tag.historize = functools.partial(history.append_keyed, history.key(tag.nodeid))
        else:
            tag.historize = functools.partial(history.append, tag.nodeid)

    def publish_readings(self, tag_of: Mapping[int, Tag], readings: Mapping[int, Reading]) -> int:
        """The readings of one scan (or one push), keyed as `tag_of`, stored at one server timestamp;
        returns how many values were stored."""
        now = self.clock.now()
        put_raw = self.put_raw
        stored = 0
        for key, reading in readings.items():
            if put_raw(tag_of[key], reading.value, reading.status, reading.source_time, now):
                stored += 1
        return stored

    def put(self, tag: Tag, value: Any, status: int = _GOOD, source_time: datetime | None = None,
            force: bool = False, now: datetime | None = None) -> bool:
        """Store a new engineering value if it changed; returns whether it was stored. `now`: the server
        timestamp (the clock's now when None), and the source timestamp when `source_time` is None."""
        if not force and not tag.changed(value, status):
            return False
        if now is None:
            now = self.clock.now()
        tag.value = value
        tag.status = status
        tag.source_time = source_time or now
        self._put(tag, now)
        return True

    def put_raw(self, tag: Tag, raw: Any, status: int = _GOOD, source_time: datetime | None = None,
                now: datetime | None = None) -> bool:
        """A driver's raw value: scaled and cast (`Tag.to_engineering`), stored if it changed; a value that is
        no number turns the tag BadSensorFailure, one the variable's type cannot hold BadTypeMismatch."""
        if raw is None and status & _QUALITY_MASK:  # not Good and no value: only the status changes
            return self.put_status(tag, status, now)
        try:
            value = tag.to_engineering(raw)
        except NotFinite:
            return self.put_status(tag, _BAD_SENSOR, now)
        except (ConversionError, TypeError, ValueError):
            return self.put_status(tag, _BAD_TYPE, now)
        if not tag.changed(value, status):
            return False
        # put() and _put() written out: this runs for every value of every scan, and two calls fewer per
        # value were a tenth of its cost.
        if now is None:
            now = self.clock.now()
        tag.value = value
        tag.status = status
        tag.source_time = source_time = source_time or now
        dv = stored_datavalue(value, tag.vtype, _GOOD_CODE if status == _GOOD else status_code(status), source_time,
                              now)
        if tag.listeners is None:
            self._bind(tag)
        self.feed.put_to(tag.nodeid, dv, tag.listeners, tag.attval)
        self.stored += 1
        if tag.historize is not None:
            tag.historize(dv)
        return True

    def put_status(self, tag: Tag, status: int, now: datetime | None = None) -> bool:
        """Change only the quality (device lost or back): value and source timestamp stay."""
        if tag.status == status:
            return False
        tag.status = status
        self._put(tag, now if now is not None else self.clock.now())
        return True

    async def publish(self, tag: Tag, value: Any, status: int = _GOOD, source_time: datetime | None = None,
                      force: bool = False) -> bool:
        """`put` for callers that await."""
        return self.put(tag, value, status, source_time, force)

    async def publish_raw(self, tag: Tag, raw: Any, status: int = _GOOD, source_time: datetime | None = None) -> bool:
        """`put_raw` for callers that await."""
        return self.put_raw(tag, raw, status, source_time)

    async def set_status(self, tag: Tag, status: int) -> bool:
        """`put_status` for callers that await."""
        return self.put_status(tag, status)

    async def mark_waiting(self, tag: Tag) -> None:
        """Show BadWaitingForInitialData until the device first answers (not the nodeset's default value).

        Not historized: history holds what devices said, not gateway restarts.
        """
        tag.value, tag.status = None, _WAITING
        self._put(tag, self.clock.now(), historize=False)

    def _put(self, tag: Tag, now: datetime, historize: bool = True) -> None:
        status = tag.status
        dv = stored_datavalue(tag.value, tag.vtype, _GOOD_CODE if status == _GOOD else status_code(status),
                              tag.source_time, now)
        if tag.listeners is None:
            self._bind(tag)
        self.feed.put_to(tag.nodeid, dv, tag.listeners, tag.attval)
        self.stored += 1
        if historize and tag.historize is not None:
            tag.historize(dv)
