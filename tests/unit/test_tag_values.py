"""A tag's raw value to engineering value, its change check, and what the tag table stores for a reading."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from asyncua.server.address_space import AddressSpace, AttributeValue, NodeData

from gateway.bindings import BoundVariable
from gateway.clock import SteppableClock
from gateway.drivers.base import Binding, Reading
from gateway.history.store import HistoryStore
from gateway.values.feed import Change
from gateway.values.tags import ConversionError, NotFinite, Tag, TagTable

VT = ua.VariantType
SC = ua.StatusCodes


def _tag(vtype: ua.VariantType, scale: float = 1.0, offset: float = 0.0, deadband: float = 0.0,
         name: str = "V", historizing: bool = True) -> Tag:
    var = BoundVariable(ua.NodeId(name, 2), name, Binding("input/1", scale=scale, offset=offset, deadband=deadband),
                        "xsd:double", vtype, False, historizing)
    return Tag(var, ua.NodeId("Dev", 2))


@pytest.mark.parametrize(("vtype", "scale", "offset", "raw", "expected"), [
    (VT.Double, 1.0, 0.0, 2.5, 2.5),
    (VT.Double, 1.0, 0.0, 3, 3.0),
    (VT.Double, 1.0, 0.0, True, 1.0),
    (VT.Double, 0.1, 1.0, 123, 123 * 0.1 + 1.0),
    (VT.Double, 2.0, 0.0, 1e308, None),  # scaled past the largest double: not a number
    (VT.Double, 1.0, 0.0, -0.0, -0.0),
    (VT.Float, 1.0, 0.0, 1.5, 1.5),
    (VT.Float, 1.0, 0.0, 7, 7.0),
    (VT.Float, 1.0, 0.0, 3.5e38, ConversionError),
    (VT.Float, 1e30, 0.0, 1e10, ConversionError),
    (VT.Int16, 1.0, 0.0, 12.6, 13),
    (VT.Int16, 1.0, 0.0, 2.5, 2),  # rounds half to even, as round() does
    (VT.Int16, 0.5, 0.0, 5, 2),
    (VT.Int16, 1.0, 0.0, 32767, 32767),
    (VT.Int16, 1.0, 0.0, 32768, ConversionError),
    (VT.Int16, 1.0, 0.0, True, 1),
    (VT.UInt16, 1.0, 0.0, -1, ConversionError),
    (VT.Byte, 1.0, 0.0, 255, 255),
    (VT.Int32, 10.0, 0.0, 3, 30),
    (VT.Int64, 1.0, 0.0, 2**63, ConversionError),
    (VT.UInt64, 1.0, 0.0, 2**64 - 1, 2**64 - 1),
    (VT.Int32, 1.0, 0.0, math.nan, None),
    (VT.Int32, 1.0, 0.0, math.inf, None),
    (VT.Double, 1.0, 0.0, math.nan, None),
    (VT.Double, 1.0, 0.0, -math.inf, None),
    (VT.Boolean, 1.0, 0.0, 0, False),
    (VT.Boolean, 1.0, 0.0, "x", True),
    (VT.Boolean, 2.0, 0.0, 1, True),
    (VT.String, 1.0, 0.0, 5, "5"),
    (VT.String, 1.0, 0.0, 1.5, "1.5"),
    (VT.Double, 1.0, 0.0, "1.5", ConversionError),
    (VT.Double, 1.0, 0.0, None, ConversionError),
    (VT.Int32, 1.0, 0.0, None, ConversionError),
    (VT.DateTime, 1.0, 0.0, 5, ConversionError),
    (VT.DateTime, 1.0, 0.0, datetime(2026, 1, 1, tzinfo=UTC), ConversionError),
])
def test_raw_values_become_values_of_the_variables_type(vtype: ua.VariantType, scale: float, offset: float,
                                                        raw: Any, expected: Any) -> None:
    tag = _tag(vtype, scale, offset)
    if expected is None:
        with pytest.raises(NotFinite):
            tag.to_engineering(raw)
    elif expected is ConversionError:
        with pytest.raises(ConversionError) as info:
            tag.to_engineering(raw)
        assert not isinstance(info.value, NotFinite)
    else:
        got = tag.to_engineering(raw)
        assert got == expected and type(got) is type(expected)
        if isinstance(expected, float):
            assert math.copysign(1.0, got) == math.copysign(1.0, expected)


def test_a_change_is_a_new_status_or_a_value_outside_the_deadband() -> None:
    tag = _tag(VT.Double, deadband=0.5)
    tag.value, tag.status = 10.0, SC.Good
    assert not tag.changed(10.0, SC.Good)
    assert not tag.changed(10.5, SC.Good)  # on the deadband's edge: not a change
    assert tag.changed(10.6, SC.Good)
    assert tag.changed(9.4, SC.Good)
    assert tag.changed(10.0, SC.UncertainLastUsableValue)
    assert tag.changed(math.nan, SC.Good)  # a NaN is always a change, never inside a deadband
    assert tag.changed(None, SC.Good)
    exact = _tag(VT.Double)
    exact.value, exact.status = 1.0, SC.Good
    assert not exact.changed(1.0, SC.Good) and exact.changed(1.0000000001, SC.Good)
    flag = _tag(VT.Boolean, deadband=0.5)
    flag.value, flag.status = False, SC.Good
    assert flag.changed(True, SC.Good) and not flag.changed(False, SC.Good)
    waiting = _tag(VT.Double, deadband=0.5)  # no value yet
    assert waiting.changed(1.0, SC.BadWaitingForInitialData)


class _History:
    def __init__(self) -> None:
        self.rows: list[tuple[ua.NodeId, ua.DataValue]] = []

    def append(self, node_id: ua.NodeId, dv: ua.DataValue) -> None:
        self.rows.append((node_id, dv))


def _table(*tags: Tag) -> tuple[TagTable, _History, SteppableClock]:
    aspace = AddressSpace()
    for tag in tags:
        node = NodeData(tag.nodeid)
        node.attributes[ua.AttributeIds.Value] = AttributeValue(ua.DataValue())
        aspace[tag.nodeid] = node
    history, clock = _History(), SteppableClock()
    table = TagTable(aspace, history, clock)
    for tag in tags:
        table.tags[tag.nodeid] = tag
    return table, history, clock


def _stored(table: TagTable, tag: Tag) -> ua.DataValue:
    return table.aspace[tag.nodeid].attributes[ua.AttributeIds.Value].value


async def test_publish_raw_stores_changes_with_both_timestamps_and_historizes_them() -> None:
    tag = _tag(VT.Double, scale=0.5, deadband=0.2)
    table, history, clock = _table(tag)
    source = datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert await table.publish_raw(tag, 10, SC.Good, source)
    dv = _stored(table, tag)
    assert dv == ua.DataValue(ua.Variant(5.0, VT.Double), StatusCode=ua.StatusCode(SC.Good),
                              SourceTimestamp=source, ServerTimestamp=clock.now())
    assert history.rows == [(tag.nodeid, dv)] and history.rows[0][1] is dv
    assert (tag.value, tag.status, tag.source_time) == (5.0, SC.Good, source)
    assert not await table.publish_raw(tag, 10.2, SC.Good, source)  # 5.1: inside the deadband
    clock.step(1)
    assert await table.publish_raw(tag, 11, SC.Good)  # no source time: the server's
    assert _stored(table, tag).SourceTimestamp == clock.now() == _stored(table, tag).ServerTimestamp
    assert table.stored == 2 and len(history.rows) == 2


async def test_publish_raw_turns_bad_values_into_statuses_and_keeps_the_last_value() -> None:
    tag = _tag(VT.Int16)
    table, history, clock = _table(tag)
    source = datetime(2026, 1, 1, tzinfo=UTC)
    assert await table.publish_raw(tag, 7, SC.Good, source)
    clock.step(1)
    assert await table.publish_raw(tag, 40000, SC.Good, source + timedelta(seconds=1))  # out of range
    dv = _stored(table, tag)
    assert dv.StatusCode.value == SC.BadTypeMismatch and dv.Value == ua.Variant(7, VT.Int16)
    assert dv.SourceTimestamp == source and dv.ServerTimestamp == clock.now()
    assert await table.publish_raw(tag, math.nan)
    assert _stored(table, tag).StatusCode.value == SC.BadSensorFailure
    assert not await table.publish_raw(tag, math.inf)  # the same status again: nothing stored
    assert await table.publish_raw(tag, None, SC.BadCommunicationError)  # a lost device: only the status
    assert _stored(table, tag).Value == ua.Variant(7, VT.Int16)
    assert await table.publish_raw(tag, 8, SC.UncertainLastUsableValue, source)  # a value with a status
    assert _stored(table, tag).Value == ua.Variant(8, VT.Int16)
    assert _stored(table, tag).StatusCode.value == SC.UncertainLastUsableValue
    assert [row[1].StatusCode.value for row in history.rows] == [
        SC.Good, SC.BadTypeMismatch, SC.BadSensorFailure, SC.BadCommunicationError, SC.UncertainLastUsableValue]


async def test_mark_waiting_stores_a_null_value_not_historized() -> None:
    tag = _tag(VT.String)
    table, history, _ = _table(tag)
    await table.mark_waiting(tag)
    dv = _stored(table, tag)
    assert dv.Value == ua.Variant() and dv.Value.VariantType == VT.Null
    assert dv.StatusCode.value == SC.BadWaitingForInitialData and history.rows == []
    assert await table.publish_raw(tag, 12, SC.Good)
    assert _stored(table, tag).Value == ua.Variant("12", VT.String)


def test_no_history_for_a_variable_that_is_not_historizing() -> None:
    tag = _tag(VT.Double, historizing=False)
    table, history, _ = _table(tag)
    table.publish_readings({0: tag}, {0: Reading(1.0)})
    assert table.stored == 1 and history.rows == []


def test_the_readings_of_one_scan_are_stored_at_one_server_time() -> None:
    tags = [_tag(VT.Double, name="A"), _tag(VT.Int32, name="B"), _tag(VT.Boolean, name="C"),
            _tag(VT.Float, name="D", deadband=1.0), _tag(VT.String, name="E")]
    table, history, clock = _table(*tags)
    source = datetime(2026, 1, 1, tzinfo=UTC)
    readings = {0: Reading(1.5, SC.Good, source), 1: Reading(2.7, SC.Good, source), 2: Reading(1),
                3: Reading(math.nan), 4: Reading(None, SC.BadCommunicationError)}
    assert table.publish_readings(dict(enumerate(tags)), readings) == 5
    now = clock.now()
    expected = [ua.DataValue(ua.Variant(1.5, VT.Double), ua.StatusCode(SC.Good), source, now),
                ua.DataValue(ua.Variant(3, VT.Int32), ua.StatusCode(SC.Good), source, now),
                ua.DataValue(ua.Variant(True, VT.Boolean), ua.StatusCode(SC.Good), now, now),
                ua.DataValue(ua.Variant(), ua.StatusCode(SC.BadSensorFailure), None, now),
                ua.DataValue(ua.Variant(), ua.StatusCode(SC.BadCommunicationError), None, now)]
    assert [_stored(table, t) for t in tags] == expected
    assert [dv for _, dv in history.rows] == expected
    clock.step(1)
    readings[3] = Reading(5.0)
    assert table.publish_readings(dict(enumerate(tags)), readings) == 1  # only D changed (status)
    readings[3] = Reading(5.9)
    assert table.publish_readings(dict(enumerate(tags)), readings) == 0  # inside D's deadband


async def test_a_scan_reaches_the_history_store_and_listeners_that_came_after_the_tag(tmp_path: Path) -> None:
    tags = [_tag(VT.Double, name="A"), _tag(VT.Int32, name="B", historizing=False)]
    aspace = _table(*tags)[0].aspace
    clock = SteppableClock()
    history = HistoryStore(tmp_path / "h.sqlite3", retention=None, clock=clock)
    await history.start()
    try:
        table = TagTable(aspace, history, clock)
        added = {k: table.add(t.var, t.device) for k, t in enumerate(tags)}
        heard: list[Change] = []
        sub = table.feed.listen(heard.append, [tags[0].nodeid], name="after the tags")
        source = datetime(2026, 1, 1, tzinfo=UTC)
        for i in range(3):
            clock.step(1)
            table.publish_readings(added, {0: Reading(1.5 + i, SC.Good, source + timedelta(seconds=i)),
                                           1: Reading(i)})
            if i == 1:
                sub.close()
        await history.flush()
        values, _ = await history.read_raw(tags[0].nodeid, source, source + timedelta(hours=1), 0)
        assert [(v.Value.Value, v.SourceTimestamp) for v in values] == [
            (1.5 + i, source + timedelta(seconds=i)) for i in range(3)]
        assert (await history.read_raw(tags[1].nodeid, source, clock.now() + timedelta(hours=1), 0))[0] == []
        assert [c.value for c in heard] == [1.5, 2.5]  # until it closed
    finally:
        await history.stop()
