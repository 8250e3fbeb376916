"""The one write path for every writer: OPC UA clients now, control modes and the Modbus facade later.

A Value write is checked in this order, each with its own status: node and attribute; writable
(AccessLevel has CurrentWrite and the node is not in namespace 0: `BadNotWritable`); the writer's
UserAccessLevel (`BadUserAccessDenied`); data type (`BadTypeMismatch`); EURange and finiteness
(`BadOutOfRange`); then, for a bound variable, the device's runner: whether the field type holds the
raw value exactly (`BadOutOfRange`) and the field write through the driver. Only when the device accepted
the value does it reach the address space, so a rejected or failed write leaves no trace. A
variable the gateway holds itself (a parameter) is stored on disk first, then takes the value. A
variable a part of the gateway acts on (the control engine's `ModeCode`) has a `ValueHandler`: after
the same checks, the handler decides and shows the value, with the writer, instead of the store.

Any other attribute needs its bit in the node's WriteMask (`BadNotWritable`) and in the writer's
UserWriteMask (`BadUserAccessDenied`). Method calls need the writer's UserExecutable. What a
writer may do is decided by `access`, the same functions a session's Read answers from. Every
write and call, accepted or refused, is recorded in the audit trail with the writer.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from asyncua import ua
from asyncua.server.address_space import AddressSpace, NodeData

from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.events.audit import AuditTrail, CallRecord, Writer, WriteRecord
from gateway.methods import MethodRegistry
from gateway.nodeset.typecheck import TypeIndex
from gateway.parameters.store import ParameterStore
from gateway.security.roles import Role
from gateway.values.aspace_io import StoredDataValue
from gateway.values.runners import DeviceRunner
from gateway.values.tags import HistorySink, TagTable
from gateway.values.writepath import access

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
_CURRENT_WRITE = ua.AccessLevel.CurrentWrite.mask

MethodInvoker = Callable[[list[ua.CallMethodRequest]], Awaitable[list[ua.CallMethodResult]]]


class ValueHandler(Protocol):
    """Takes the writes of one variable that a part of the gateway acts on, once the write path's checks passed."""

    def check(self, value: ua.Variant, writer: Writer) -> ua.StatusCode | None:
        """Why the value would be refused (without acting), or None."""

    async def apply(self, value: ua.Variant, writer: Writer) -> ua.StatusCode:
        """Act on the value and show it in the variable; Good when done."""


def _bad(code: int) -> ua.StatusCode:
    return ua.StatusCode(code)


def _check_data_value(dv: ua.DataValue | None) -> ua.StatusCode | None:
    if dv is None or dv.Value is None:
        return _bad(ua.StatusCodes.BadTypeMismatch)
    if dv.StatusCode is not None and not dv.StatusCode.is_good():
        return _bad(ua.StatusCodes.BadWriteNotSupported)  # writing qualities is not supported
    return None


class WritePath:
    def __init__(
        self, aspace: AddressSpace, tags: TagTable, runners: dict[ua.NodeId, DeviceRunner],
        history: HistorySink | None = None, clock: Clock = SYSTEM_CLOCK, audit: AuditTrail | None = None,
        parameters: ParameterStore | None = None,
    ) -> None:
        self.aspace = aspace
        self.tags = tags
        self.runners = runners
        self.history = history
        self.clock = clock
        self.audit = audit or AuditTrail(clock)
        self.parameters = parameters
        self.types = TypeIndex(aspace, {})
        self.methods: MethodRegistry | None = None
        self.handlers: dict[ua.NodeId, ValueHandler] = {}

    async def write(self, wv: ua.WriteValue, writer: Writer) -> ua.StatusCode:
        old = self._current(wv)
        try:
            status = await self._write(wv, writer)
        except Exception:
            log.exception("write to %s by %s failed inside the gateway", wv.NodeId.to_string(), writer.name)
            status = _bad(ua.StatusCodes.BadInternalError)
        new = wv.Value.Value.Value if wv.Value is not None and wv.Value.Value is not None else None
        self.audit.record_write(WriteRecord(writer, wv.NodeId, status, self.audit.now(), attribute=wv.AttributeId,
                                            old=old, new=new, index_range=wv.IndexRange or ""))
        return status

    async def call(self, request: ua.CallMethodRequest, writer: Writer, invoke: MethodInvoker,
                   session: Any = None) -> ua.CallMethodResult:
        """Call one method: a bound one through the method registry (its own role and argument checks), any
        other if the writer may (UserExecutable), run by `invoke` (asyncua's method service)."""
        status = self._check_call(request, writer.role)
        if self.methods is not None and self.methods.bound(request.MethodId):
            try:
                result = await self.methods.call(request, writer, session)
            except Exception:
                log.exception("call of %s by %s failed inside the gateway", request.MethodId.to_string(), writer.name)
                result = ua.CallMethodResult(StatusCode=_bad(ua.StatusCodes.BadInternalError))
        elif status is not None:
            result = ua.CallMethodResult(StatusCode=status)
        else:
            try:
                result = (await invoke([request]))[0]
            except Exception:
                log.exception("call of %s by %s failed inside the gateway", request.MethodId.to_string(), writer.name)
                result = ua.CallMethodResult(StatusCode=_bad(ua.StatusCodes.BadInternalError))
        inputs = [v.Value for v in request.InputArguments or []]
        outputs = [v.Value for v in result.OutputArguments or []]
        self.audit.record_call(CallRecord(writer, request.ObjectId, result.StatusCode, self.audit.now(),
                                          method=request.MethodId, inputs=inputs, outputs=outputs))
        return result

    def _check_call(self, request: ua.CallMethodRequest, role: Role) -> ua.StatusCode | None:
        method = self.aspace.get(request.MethodId)
        if method is not None and access.attribute(method, ua.AttributeIds.NodeClass) == ua.NodeClass.Method:
            if not access.attribute(method, ua.AttributeIds.Executable, False):
                return _bad(ua.StatusCodes.BadNotExecutable)
            if not access.user_executable(method, role):
                return _bad(ua.StatusCodes.BadUserAccessDenied)
            return None
        if not access.writes_values(role):  # an unknown method: no hint to a viewer what exists
            return _bad(ua.StatusCodes.BadUserAccessDenied)
        return None  # asyncua answers BadMethodInvalid / BadNodeIdUnknown

    def _current(self, wv: ua.WriteValue) -> Any:
        """The attribute's value before the write, for the audit trail."""
        nd = self.aspace.get(wv.NodeId)
        av = nd.attributes.get(wv.AttributeId) if nd is not None else None
        dv = av.value if av is not None else None
        return dv.Value.Value if dv is not None and dv.Value is not None else None

    async def _write(self, wv: ua.WriteValue, writer: Writer) -> ua.StatusCode:
        role = writer.role
        nd = self.aspace.get(wv.NodeId)
        if nd is None:
            return _bad(ua.StatusCodes.BadNodeIdUnknown)
        if wv.AttributeId not in nd.attributes:
            return _bad(ua.StatusCodes.BadAttributeIdInvalid)
        bit = access.write_mask_bit(nd, ua.AttributeIds(wv.AttributeId))
        if wv.AttributeId != ua.AttributeIds.Value or bit is not None:
            return await self._write_attribute(nd, wv, bit, role)
        if wv.IndexRange:
            return _bad(ua.StatusCodes.BadWriteNotSupported)
        level = access.attribute(nd, ua.AttributeIds.AccessLevel, 0)
        if not level & _CURRENT_WRITE or access.in_server_namespace(nd):
            return _bad(ua.StatusCodes.BadNotWritable)
        if not access.user_access_level(nd, role) & _CURRENT_WRITE:
            return _bad(ua.StatusCodes.BadUserAccessDenied)
        dv = wv.Value
        status = _check_data_value(dv)
        if status is not None:
            return status
        status = self.check_type(nd, dv.Value)
        if status is not None:
            return status
        status = self._check_range(nd, dv.Value.Value)
        if status is not None:
            return status
        handler = self.handlers.get(wv.NodeId)
        if handler is not None:
            return handler.check(dv.Value, writer) or await handler.apply(dv.Value, writer)

        tag = self.tags.tags.get(wv.NodeId)
        if tag is not None:
            runner = self.runners[tag.device]
            code = await runner.write(wv.NodeId, dv.Value.Value)
            return ua.StatusCode(code)
        # An unbound variable (a parameter held by the gateway): on disk first, then in the address space,
        # so a value a client saw accepted survives a restart.
        if self.parameters is not None:
            try:
                await self.parameters.save(wv.NodeId, dv.Value)
            except (OSError, ValueError) as exc:
                log.error("parameter %s not written: storing it in %s failed: %s", wv.NodeId.to_string(),
                          self.parameters.path, exc)
                return _bad(ua.StatusCodes.BadResourceUnavailable)
        now = self.clock.now()
        stored = StoredDataValue(dv.Value, SourceTimestamp=now, ServerTimestamp=now)
        await self.tags.feed.store(wv.NodeId, stored)
        hist = nd.attributes.get(ua.AttributeIds.Historizing)
        if self.history is not None and hist is not None and hist.value.Value.Value:
            self.history.append(wv.NodeId, stored)
        return ua.StatusCode()

    async def _write_attribute(self, nd: NodeData, wv: ua.WriteValue, bit: int | None, role: Role) -> ua.StatusCode:
        """Renaming or re-describing a node is configuration: where WriteMask allows it, by admins."""
        allowed = bit is not None and access.attribute(nd, ua.AttributeIds.WriteMask, 0) & bit
        if not allowed or access.in_server_namespace(nd):
            return _bad(ua.StatusCodes.BadNotWritable)
        if not access.user_write_mask(nd, role) & bit:
            return _bad(ua.StatusCodes.BadUserAccessDenied)
        if wv.IndexRange:
            return _bad(ua.StatusCodes.BadWriteNotSupported)
        status = _check_data_value(wv.Value)
        if status is not None:
            return status
        return await self.aspace.write_attribute_value(wv.NodeId, wv.AttributeId, wv.Value)

    def restore_parameters(self, stored: Mapping[ua.NodeId, ua.Variant]) -> int:
        """Give variables the gateway holds their stored values (at start, before anything is served).

        A value whose node is no longer a writable unbound variable, or whose type no longer fits it,
        is skipped with a warning (and stays in the store, in case the site changes back).
        """
        restored = 0
        for nodeid, variant in stored.items():
            nd = self.aspace.get(nodeid)
            if nd is None or access.attribute(nd, ua.AttributeIds.NodeClass) != ua.NodeClass.Variable:
                log.warning("parameters: %s is no variable of this site; stored value %r not restored",
                            nodeid.to_string(), variant.Value)
                continue
            writable = access.attribute(nd, ua.AttributeIds.AccessLevel, 0) & _CURRENT_WRITE
            if not writable or access.in_server_namespace(nd) or nodeid in self.tags.tags:
                log.warning("parameters: %s is not a writable variable the gateway holds; stored value %r not "
                            "restored", nodeid.to_string(), variant.Value)
                continue
            if self.check_type(nd, variant) is not None:
                log.warning("parameters: stored value %r (%s) of %s does not match the variable's type; the nodeset "
                            "default is used", variant.Value, variant.VariantType.name, nodeid.to_string())
                continue
            now = self.clock.now()
            self._store_restored(nodeid, StoredDataValue(variant, SourceTimestamp=now, ServerTimestamp=now))
            restored += 1
        return restored

    def _store_restored(self, nodeid: ua.NodeId, dv: ua.DataValue) -> None:
        # Before the server serves anything there is no monitored item to notify.
        self.aspace[nodeid].attributes[ua.AttributeIds.Value].value = dv

    def check_type(self, nd: NodeData, variant: ua.Variant) -> ua.StatusCode | None:
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

    def _check_range(self, nd: NodeData, value: Any) -> ua.StatusCode | None:
        values = value if isinstance(value, list) else [value]
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        if not numbers:
            return None
        # NaN and infinities never reach a device nor a parameter, EURange or not.
        if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
            return _bad(ua.StatusCodes.BadOutOfRange)
        for ref in nd.references:
            if ref.IsForward and ref.ReferenceTypeId == _HAS_PROPERTY and ref.BrowseName == _EURANGE:
                rng = self.aspace[ref.NodeId].attributes[ua.AttributeIds.Value].value.Value.Value
                if isinstance(rng, ua.Range) and not all(rng.Low <= v <= rng.High for v in numbers):
                    return _bad(ua.StatusCodes.BadOutOfRange)
        return None

