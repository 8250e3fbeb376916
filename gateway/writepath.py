"""The one write path for every writer: OPC UA clients now, control modes and the Modbus facade later.

Checks in this order, each with its own status: node and attribute, writable (AccessLevel), role
(operators and admins write values), data type, EURange; then the field write through the
device's driver. Only when the device accepted the value does it reach the address space, so a
rejected or failed write leaves no trace.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from asyncua import ua
from asyncua.server.address_space import AddressSpace

from gateway.aspace_io import StoredDataValue, store_value
from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.nodeset.typecheck import TypeIndex
from gateway.runtime import DeviceRunner
from gateway.security.roles import Role
from gateway.tags import HistorySink, TagTable

log = logging.getLogger(__name__)

_NUMERIC = {
    ua.VariantType.SByte, ua.VariantType.Byte, ua.VariantType.Int16, ua.VariantType.UInt16, ua.VariantType.Int32,
    ua.VariantType.UInt32, ua.VariantType.Int64, ua.VariantType.UInt64, ua.VariantType.Float, ua.VariantType.Double,
}
_SIGNED = {ua.VariantType.SByte, ua.VariantType.Int16, ua.VariantType.Int32, ua.VariantType.Int64}
_UNSIGNED = {ua.VariantType.Byte, ua.VariantType.UInt16, ua.VariantType.UInt32, ua.VariantType.UInt64}
_ABSTRACT_OK: dict[int, set[ua.VariantType] | None] = {24: None, 26: _NUMERIC, 27: _SIGNED, 28: _UNSIGNED,
                                                       29: {ua.VariantType.Int32},
                                                       22: {ua.VariantType.ExtensionObject}}
_HAS_PROPERTY = ua.NodeId(ua.ObjectIds.HasProperty)
_EURANGE = ua.QualifiedName("EURange", 0)


def _bad(code: int) -> ua.StatusCode:
    return ua.StatusCode(code)


class WritePath:
    def __init__(
        self, aspace: AddressSpace, tags: TagTable, runners: dict[ua.NodeId, DeviceRunner],
        history: HistorySink | None = None, clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.aspace = aspace
        self.tags = tags
        self.runners = runners
        self.history = history
        self.clock = clock
        self.types = TypeIndex(aspace, {})

    async def write(self, wv: ua.WriteValue, role: Role, who: str = "") -> ua.StatusCode:
        try:
            return await self._write(wv, role)
        except Exception:
            log.exception("write to %s by %s failed inside the gateway", wv.NodeId.to_string(), who)
            return _bad(ua.StatusCodes.BadInternalError)

    async def _write(self, wv: ua.WriteValue, role: Role) -> ua.StatusCode:
        nd = self.aspace.get(wv.NodeId)
        if nd is None:
            return _bad(ua.StatusCodes.BadNodeIdUnknown)
        if wv.AttributeId not in nd.attributes:
            return _bad(ua.StatusCodes.BadAttributeIdInvalid)
        if wv.AttributeId != ua.AttributeIds.Value:
            # Renaming or re-describing nodes is configuration: admins only, and only where WriteMask allows.
            if not role.allows(Role.admin):
                return _bad(ua.StatusCodes.BadUserAccessDenied)
            return await self.aspace.write_attribute_value(wv.NodeId, wv.AttributeId, wv.Value)
        if wv.IndexRange:
            return _bad(ua.StatusCodes.BadWriteNotSupported)
        access = nd.attributes.get(ua.AttributeIds.AccessLevel)
        level = access.value.Value.Value if access is not None and access.value is not None else 0
        if not level & ua.AccessLevel.CurrentWrite.mask:
            return _bad(ua.StatusCodes.BadNotWritable)
        if not role.allows(Role.operator):
            return _bad(ua.StatusCodes.BadUserAccessDenied)
        dv = wv.Value
        if dv is None or dv.Value is None:
            return _bad(ua.StatusCodes.BadTypeMismatch)
        if dv.StatusCode is not None and not dv.StatusCode.is_good():
            return _bad(ua.StatusCodes.BadWriteNotSupported)  # writing qualities is not supported
        status = self._check_type(nd, dv.Value)
        if status is not None:
            return status
        status = self._check_range(nd, dv.Value.Value)
        if status is not None:
            return status

        tag = self.tags.tags.get(wv.NodeId)
        if tag is not None:
            runner = self.runners[tag.device]
            code = await runner.write(wv.NodeId, dv.Value.Value)
            return ua.StatusCode(code)
        # An unbound variable (a parameter held by the gateway) takes the value directly.
        now = self.clock.now()
        stored = StoredDataValue(dv.Value, SourceTimestamp=now, ServerTimestamp=now)
        await store_value(self.aspace, wv.NodeId, stored)
        hist = nd.attributes.get(ua.AttributeIds.Historizing)
        if self.history is not None and hist is not None and hist.value.Value.Value:
            self.history.append(wv.NodeId, stored)
        return ua.StatusCode()

    def _check_type(self, nd: Any, variant: ua.Variant) -> ua.StatusCode | None:
        dt = nd.attributes.get(ua.AttributeIds.DataType)
        datatype = dt.value.Value.Value if dt is not None else None
        base = self.types.builtin_base(datatype) if datatype is not None else None
        if base is None:
            return None
        vt = variant.VariantType
        ok = (_ABSTRACT_OK[base] is None or vt in _ABSTRACT_OK[base]) if base in _ABSTRACT_OK else int(vt) == base
        if not ok:
            return _bad(ua.StatusCodes.BadTypeMismatch)
        rank = nd.attributes.get(ua.AttributeIds.ValueRank)
        value_rank = rank.value.Value.Value if rank is not None else -1
        if (value_rank == -1 and variant.is_array) or (value_rank >= 1 and not variant.is_array):
            return _bad(ua.StatusCodes.BadTypeMismatch)
        return None

    def _check_range(self, nd: Any, value: Any) -> ua.StatusCode | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if isinstance(value, float) and not math.isfinite(value):
            return _bad(ua.StatusCodes.BadOutOfRange)
        for ref in nd.references:
            if ref.IsForward and ref.ReferenceTypeId == _HAS_PROPERTY and ref.BrowseName == _EURANGE:
                rng = self.aspace[ref.NodeId].attributes[ua.AttributeIds.Value].value.Value.Value
                if isinstance(rng, ua.Range) and not rng.Low <= value <= rng.High:
                    return _bad(ua.StatusCodes.BadOutOfRange)
        return None
