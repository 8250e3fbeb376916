"""Event filters against the real type tree of asyncua's standard address space."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from asyncua import Server, ua

from gateway.events.event import GatewayEvent, base_fields, path
from gateway.events.filter import FilterError, TypeTree, compile_where, select

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SERVER = ua.NodeId(ua.ObjectIds.Server)


@pytest.fixture(scope="module")
def types() -> TypeTree:
    async def standard_address_space() -> Server:
        server = Server()
        await server.init()
        return server

    return TypeTree(asyncio.run(standard_address_space()).iserver.aspace)


def _event(type_id: int, severity: int = 500, **extra: ua.Variant) -> GatewayEvent:
    fields = base_fields(ua.NodeId(type_id), SERVER, "Server", "hello", severity, NOW)
    for name, v in extra.items():
        fields[path(*name.split("__"))] = v
    return GatewayEvent(ua.NodeId(type_id), fields, (SERVER,), condition=ua.NodeId("c", 1))


def _attr(*names: str, type_id: int = ua.ObjectIds.BaseEventType, attribute: int = ua.AttributeIds.Value):
    op = ua.SimpleAttributeOperand()
    op.TypeDefinitionId = ua.NodeId(type_id)
    op.BrowsePath = [ua.QualifiedName(n, 0) for n in names]
    op.AttributeId = attribute
    return op


def _lit(value: object, vt: ua.VariantType | None = None) -> ua.LiteralOperand:
    return ua.LiteralOperand(Value=ua.Variant(value, vt) if vt else ua.Variant(value))


def _where(*elements: tuple[int, list[object]]) -> ua.ContentFilter:
    cf = ua.ContentFilter()
    cf.Elements = [ua.ContentFilterElement(FilterOperator=op, FilterOperands=ops) for op, ops in elements]
    return cf


def _el(i: int) -> ua.ElementOperand:
    return ua.ElementOperand(Index=i)


def test_of_type_matches_subtypes_not_supertypes(types) -> None:
    alarm = _where((ua.FilterOperator.OfType, [_lit(ua.NodeId(ua.ObjectIds.AlarmConditionType))]))
    where = compile_where(alarm, types)
    assert where(_event(ua.ObjectIds.ExclusiveLimitAlarmType))
    assert where(_event(ua.ObjectIds.OffNormalAlarmType))
    assert not where(_event(ua.ObjectIds.ConditionType))
    assert not where(_event(ua.ObjectIds.AuditWriteUpdateEventType))


@pytest.mark.parametrize(("op", "value", "expected"), [
    (ua.FilterOperator.Equals, 500, True), (ua.FilterOperator.Equals, 501, False),
    (ua.FilterOperator.GreaterThan, 400, True), (ua.FilterOperator.GreaterThan, 500, False),
    (ua.FilterOperator.GreaterThanOrEqual, 500, True), (ua.FilterOperator.LessThan, 600, True),
    (ua.FilterOperator.LessThanOrEqual, 499, False),
])
def test_comparisons_on_a_selected_field(types, op, value, expected) -> None:
    where = compile_where(_where((op, [_attr("Severity"), _lit(value, ua.VariantType.UInt16)])), types)
    assert where(_event(ua.ObjectIds.BaseEventType, severity=500)) is expected


def test_and_or_not_in_list_compose(types) -> None:
    cf = _where(
        (ua.FilterOperator.And, [_el(1), _el(2)]),
        (ua.FilterOperator.OfType, [_lit(ua.NodeId(ua.ObjectIds.ConditionType))]),
        (ua.FilterOperator.Or, [_el(3), _el(4)]),
        (ua.FilterOperator.InList, [_attr("Severity"), _lit(100), _lit(900)]),
        (ua.FilterOperator.Not, [_el(5)]),
        (ua.FilterOperator.GreaterThan, [_attr("Severity"), _lit(200)]),
    )
    where = compile_where(cf, types)
    assert where(_event(ua.ObjectIds.OffNormalAlarmType, severity=900))  # in the list
    assert where(_event(ua.ObjectIds.OffNormalAlarmType, severity=150))  # not > 200
    assert not where(_event(ua.ObjectIds.OffNormalAlarmType, severity=500))
    assert not where(_event(ua.ObjectIds.BaseEventType, severity=900))  # not a condition


def test_a_missing_field_compares_false_and_is_null(types) -> None:
    cf = _where((ua.FilterOperator.Equals, [_attr("ActiveState", "Id"), _lit(True)]))
    assert not compile_where(cf, types)(_event(ua.ObjectIds.BaseEventType))
    nul = compile_where(_where((ua.FilterOperator.IsNull, [_attr("ActiveState", "Id")])), types)
    assert nul(_event(ua.ObjectIds.BaseEventType))


def test_unsupported_operators_and_bad_operands_are_refused(types) -> None:
    with pytest.raises(FilterError) as exc:
        compile_where(_where((ua.FilterOperator.Like, [_attr("Message"), _lit("x%")])), types)
    assert exc.value.status == ua.StatusCodes.BadFilterOperatorUnsupported
    with pytest.raises(FilterError):
        compile_where(_where((ua.FilterOperator.And, [_el(7), _el(1)])), types)
    with pytest.raises(FilterError):
        compile_where(_where((ua.FilterOperator.Equals, [_attr("Severity")])), types)


def test_select_resolves_paths_in_order_nulls_and_the_condition_id(types) -> None:
    ev = _event(ua.ObjectIds.ExclusiveLimitAlarmType, **{"ActiveState__Id": ua.Variant(True)})
    condition_id = _attr(type_id=ua.ObjectIds.ConditionType, attribute=ua.AttributeIds.NodeId)
    condition_id.BrowsePath = []
    got = select(ev, [_attr("Severity"), _attr("ActiveState", "Id"), _attr("NoSuchField"), condition_id,
                      _attr("Severity", type_id=ua.ObjectIds.AuditEventType)], types)
    assert [v.Value for v in got] == [500, True, None, ua.NodeId("c", 1), None]
    assert got[0].VariantType == ua.VariantType.UInt16 and got[3].VariantType == ua.VariantType.NodeId
