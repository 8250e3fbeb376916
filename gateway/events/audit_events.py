"""Audit records as OPC UA audit events: AuditWriteUpdateEventType for writes, the Part 9 audit types for
condition methods, AuditUpdateMethodEventType for any other call. They are reported on the Server object
with the writer's name as ClientUserId, so a client subscribed there sees who did what."""

from __future__ import annotations

from typing import Any

from asyncua import ua

from gateway.events.audit import AuditRecord, CallRecord, WriteRecord
from gateway.events.event import GatewayEvent, base_fields, path

_M = ua.ObjectIds
_E = ua.ObjectIds
# Method -> the audit event type Part 9 gives it.
_CONDITION_AUDIT = {
    _M.AcknowledgeableConditionType_Acknowledge: _E.AuditConditionAcknowledgeEventType,
    _M.AcknowledgeableConditionType_Confirm: _E.AuditConditionConfirmEventType,
    _M.ConditionType_AddComment: _E.AuditConditionCommentEventType,
    _M.ConditionType_Enable: _E.AuditConditionEnableEventType,
    _M.ConditionType_Disable: _E.AuditConditionEnableEventType,
    _M.ShelvedStateMachineType_TimedShelve: _E.AuditConditionShelvingEventType,
    _M.ShelvedStateMachineType_OneShotShelve: _E.AuditConditionShelvingEventType,
    _M.ShelvedStateMachineType_Unshelve: _E.AuditConditionShelvingEventType,
    _M.AlarmConditionType_ShelvingState_TimedShelve: _E.AuditConditionShelvingEventType,
    _M.AlarmConditionType_ShelvingState_OneShotShelve: _E.AuditConditionShelvingEventType,
    _M.AlarmConditionType_ShelvingState_Unshelve: _E.AuditConditionShelvingEventType,
}
_SERVER = ua.NodeId(ua.ObjectIds.Server)
_AUDIT_SEVERITY = 100


def _variant(value: Any) -> ua.Variant:
    if isinstance(value, ua.Variant):
        return value
    try:
        return ua.Variant(value)
    except Exception:  # a value asyncua cannot guess a type for: its text
        return ua.Variant(repr(value), ua.VariantType.String)


def audit_event(record: AuditRecord, method_type: ua.NodeId | None = None) -> GatewayEvent:
    """The audit event of a record; `method_type` is the type's method a call resolved to (A&C copies)."""
    w = record.writer
    verdict = "accepted" if record.accepted else f"refused ({record.status.name})"
    if isinstance(record, WriteRecord):
        etype = ua.NodeId(_E.AuditWriteUpdateEventType)
        message = f"write {record.node.to_string()} by {w.name}: {verdict}"
    else:
        assert isinstance(record, CallRecord)
        method = method_type or record.method
        known = _CONDITION_AUDIT.get(method.Identifier) if method.NamespaceIndex == 0 else None
        etype = ua.NodeId(known or _E.AuditUpdateMethodEventType)
        message = f"call {record.method.to_string()} on {record.node.to_string()} by {w.name}: {verdict}"
    f = base_fields(etype, record.node, record.node.to_string(), message, _AUDIT_SEVERITY, record.time)
    f.update({
        path("ActionTimeStamp"): ua.Variant(record.time, ua.VariantType.DateTime),
        path("Status"): ua.Variant(record.accepted, ua.VariantType.Boolean),
        path("ServerId"): ua.Variant("", ua.VariantType.String),
        path("ClientAuditEntryId"): ua.Variant(w.client, ua.VariantType.String),
        path("ClientUserId"): ua.Variant(w.name, ua.VariantType.String),
        path("StatusCodeId"): ua.Variant(record.status, ua.VariantType.StatusCode),
    })
    if isinstance(record, WriteRecord):
        f.update({
            path("AttributeId"): ua.Variant(record.attribute, ua.VariantType.UInt32),
            path("IndexRange"): ua.Variant(record.index_range, ua.VariantType.String),
            path("OldValue"): _variant(record.old),
            path("NewValue"): _variant(record.new),
        })
    else:
        f.update({
            path("MethodId"): ua.Variant(record.method, ua.VariantType.NodeId),
            path("InputArguments"): ua.Variant([_variant(v) for v in record.inputs], ua.VariantType.Variant),
            path("OutputArguments"): ua.Variant([_variant(v) for v in record.outputs], ua.VariantType.Variant),
        })
        if etype.Identifier in (_E.AuditConditionAcknowledgeEventType, _E.AuditConditionConfirmEventType,
                                _E.AuditConditionCommentEventType):
            inputs = record.inputs
            event_id = inputs[0] if inputs and isinstance(inputs[0], bytes) else None
            comment = inputs[1] if len(inputs) > 1 else None
            f[path("ConditionEventId")] = ua.Variant(event_id, ua.VariantType.ByteString)
            f[path("Comment")] = ua.Variant(comment if isinstance(comment, ua.LocalizedText)
                                            else ua.LocalizedText(str(comment or "")), ua.VariantType.LocalizedText)
    return GatewayEvent(etype, f, (_SERVER,))
