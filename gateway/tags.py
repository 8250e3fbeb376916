"""The tag table: bound variables, their last values, and the value path into the address space.

Drivers deliver raw field values; a Tag scales them to engineering units, casts them to the
variable's type, drops what did not change (or stayed within the deadband), and stores the rest
in the address space and the history store. A device that stops answering changes only the
status: the last value and its source timestamp stay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from asyncua import ua
from asyncua.server.address_space import AddressSpace

from gateway.aspace_io import StoredDataValue, store_value
from gateway.bindings import BoundVariable
from gateway.clock import SYSTEM_CLOCK, Clock

_INT_RANGE = {
    ua.VariantType.SByte: (-(2**7), 2**7 - 1), ua.VariantType.Byte: (0, 2**8 - 1),
    ua.VariantType.Int16: (-(2**15), 2**15 - 1), ua.VariantType.UInt16: (0, 2**16 - 1),
    ua.VariantType.Int32: (-(2**31), 2**31 - 1), ua.VariantType.UInt32: (0, 2**32 - 1),
    ua.VariantType.Int64: (-(2**63), 2**63 - 1), ua.VariantType.UInt64: (0, 2**64 - 1),
}
_FLOATS = (ua.VariantType.Float, ua.VariantType.Double)


class HistorySink(Protocol):
    def append(self, node_id: ua.NodeId, dv: ua.DataValue) -> None: ...


class ConversionError(ValueError):
    pass


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
            if vt in _FLOATS:
                return float(eng)
            if vt in _INT_RANGE:
                if isinstance(eng, float) and not math.isfinite(eng):
                    raise ConversionError(f"{eng} cannot be a {vt.name}")
                i = round(eng)
                lo, hi = _INT_RANGE[vt]
                if not lo <= i <= hi:
                    raise ConversionError(f"{i} is out of range for {vt.name}")
                return i
        raise ConversionError(f"cannot turn {raw!r} into a {vt.name}")

    def to_raw(self, eng: Any) -> Any:
        """Engineering value -> raw field value (inverse scaling; integers rounded for integer fields)."""
        b = self.var.binding
        if isinstance(eng, bool) or not isinstance(eng, int | float) or (b.scale == 1.0 and b.offset == 0.0):
            return eng
        raw = (eng - b.offset) / b.scale
        if self.var.field_type not in ("xsd:float", "xsd:double"):
            return round(raw)
        return raw

    def changed(self, value: Any, status: int) -> bool:
        if status != self.status:
            return True
        if self.value is None or value is None:
            return value != self.value
        db = self.var.binding.deadband
        if db > 0 and isinstance(value, int | float) and not isinstance(value, bool):
            return abs(value - self.value) > db
        return value != self.value


class TagTable:
    def __init__(self, aspace: AddressSpace, history: HistorySink | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        self.aspace = aspace
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
        if not ua.StatusCode(status).is_good() and raw is None:
            return await self.set_status(tag, status)
        try:
            value = tag.to_engineering(raw)
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
        dv = StoredDataValue(variant, StatusCode=ua.StatusCode(tag.status), SourceTimestamp=tag.source_time,
                          ServerTimestamp=now)
        await store_value(self.aspace, tag.nodeid, dv)
        self.stored += 1
        if historize and self.history is not None and tag.var.historizing:
            self.history.append(tag.nodeid, dv)
