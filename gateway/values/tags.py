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

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from asyncua import ua
from asyncua.server.address_space import AddressSpace

from gateway.bindings import DEFAULT_FIELD_TYPE, BoundVariable
from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.nodeset.values import INT_RANGE_OF
from gateway.values.aspace_io import StoredDataValue, status_code
from gateway.values.feed import ChangeFeed

_INT_RANGE = INT_RANGE_OF
_FLOATS = (ua.VariantType.Float, ua.VariantType.Double)
_FLOAT32_MAX = 3.4028234663852886e38
# Integer field types (xsd:short ...) take the range of the VariantType they default to.
_FIELD_INT_RANGE = {xsd: INT_RANGE_OF[vt] for vt, xsd in DEFAULT_FIELD_TYPE.items() if vt in INT_RANGE_OF}
_FIELD_FLOAT_MAX = {"xsd:float": _FLOAT32_MAX, "xsd:double": float("inf")}
# Relative precision of an engineering value of each type. An integer field takes a scaled value when
# it lands within a few of these of a whole number: 12.3 / 0.1 is 123.00000000000001 in doubles, and a
# Float 12.3 arrives as 12.300000190734863.
_EPSILON = {ua.VariantType.Float: 2.0**-23}
_DOUBLE_EPSILON = 2.0**-52
_ULPS = 8


class HistorySink(Protocol):
    def append(self, node_id: ua.NodeId, dv: ua.DataValue) -> None: ...


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

    @property
    def nodeid(self) -> ua.NodeId:
        return self.var.nodeid

    def to_engineering(self, raw: Any) -> Any:
        """Raw field value -> value of the variable's type (scale and offset applied)."""
        vt = self.var.vtype
        b = self.var.binding
        if vt == ua.VariantType.Boolean:
            return bool(raw)
        if vt == ua.VariantType.String:
            return str(raw)
        if isinstance(raw, bool | int | float):
            eng = raw * b.scale + b.offset if (b.scale != 1.0 or b.offset != 0.0) else raw
            if isinstance(eng, float) and not math.isfinite(eng):
                raise NotFinite(f"{raw!r} is not a number")
            if vt in _FLOATS:
                if vt == ua.VariantType.Float and abs(eng) > _FLOAT32_MAX:
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
        if self.value is None or value is None:
            return value != self.value
        db = self.var.binding.deadband
        if db > 0 and isinstance(value, int | float) and not isinstance(value, bool):
            difference = abs(value - self.value)
            return not difference <= db  # a NaN on either side is a change, never a frozen deadband
        return value != self.value


class TagTable:
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
        return tag

    async def publish(self, tag: Tag, value: Any, status: int = ua.StatusCodes.Good,
                      source_time: datetime | None = None, force: bool = False) -> bool:
        """Store a new engineering value if it changed; returns whether it was stored."""
        if not force and not tag.changed(value, status):
            return False
        tag.value, tag.status, tag.source_time = value, status, source_time or self.clock.now()
        await self._store(tag)
        return True

    async def publish_raw(self, tag: Tag, raw: Any, status: int = ua.StatusCodes.Good,
                          source_time: datetime | None = None) -> bool:
        if not status_code(status).is_good() and raw is None:
            return await self.set_status(tag, status)
        try:
            value = tag.to_engineering(raw)
        except NotFinite:
            return await self.set_status(tag, ua.StatusCodes.BadSensorFailure)
        except (ConversionError, TypeError, ValueError):
            return await self.set_status(tag, ua.StatusCodes.BadTypeMismatch)
        return await self.publish(tag, value, status, source_time)

    async def set_status(self, tag: Tag, status: int) -> bool:
        """Change only the quality (device lost or back): value and source timestamp stay."""
        if tag.status == status:
            return False
        tag.status = status
        await self._store(tag)
        return True

    async def mark_waiting(self, tag: Tag) -> None:
        """Show BadWaitingForInitialData until the device first answers (not the nodeset's default value).

        Not historized: history holds what devices said, not gateway restarts.
        """
        tag.value, tag.status = None, ua.StatusCodes.BadWaitingForInitialData
        await self._store(tag, historize=False)

    async def _store(self, tag: Tag, historize: bool = True) -> None:
        now = self.clock.now()
        variant = ua.Variant(tag.value, tag.var.vtype) if tag.value is not None else ua.Variant()
        dv = StoredDataValue(variant, StatusCode=status_code(tag.status), SourceTimestamp=tag.source_time,
                          ServerTimestamp=now)
        await self.feed.store(tag.nodeid, dv)
        self.stored += 1
        if historize and self.history is not None and tag.var.historizing:
            self.history.append(tag.nodeid, dv)
