"""Stored events: every field of an alarm's event comes back as it was stored, decoded only when asked for;
rows of the earlier layout (fields without their length) still read; a damaged row is refused."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asyncua import ua
from asyncua.ua.ua_binary import variant_to_binary

from gateway.alarms.condition import Condition
from gateway.alarms.config import AlarmConfig
from gateway.events.event import EVENT_TYPE, MESSAGE, GatewayEvent, path
from gateway.history import events as rows
from gateway.history.store import HistoryStore

SERVER = ua.NodeId(ua.ObjectIds.Server)
DEVICE = ua.NodeId("Rack1", 2)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _alarm_event(i: int, active: bool) -> GatewayEvent:
    cfg = AlarmConfig(ua.NodeId(f"Rack1.T{i}High", 2), f"T{i}High", ua.NodeId(ua.ObjectIds.ExclusiveLimitAlarmType),
                      "exclusive", DEVICE, "Rack1", ua.NodeId(f"Rack1.T{i}", 2), f"T{i}", unit="°C",
                      limits={"HighLimit": 55.0, "LowLimit": 5.0}, confirm=True)
    cond = Condition(cfg, (DEVICE, SERVER))
    cond.active, cond.limit_state, cond.acked = active, "High" if active else None, not active
    return cond.event(f"Rack1 T{i} {56 + i} °C above high limit 55 °C", T0 + timedelta(seconds=i))


def _earlier_layout(event: GatewayEvent) -> bytes:
    """A row as the store wrote it before each field carried its length: b"GE1", count, (name, Variant)*."""
    parts = [b"GE1", struct.pack("<H", len(event.fields) + 1)]
    for p, variant in event.fields.items():
        name = "/".join(f"{ns}:{n}" for ns, n in p).encode()
        parts += [struct.pack("<H", len(name)), name, variant_to_binary(variant)]
    parts += [struct.pack("<H", 0), variant_to_binary(ua.Variant(event.condition, ua.VariantType.NodeId))]
    return b"".join(parts)


def test_every_field_of_an_alarm_event_comes_back_as_stored() -> None:
    event = _alarm_event(1, active=True)
    back = rows.decode(rows.encode(event))
    assert back.event_type == event.event_type and back.condition == event.condition
    assert list(back.fields) == list(event.fields) and len(back.fields) == len(event.fields)
    for p, variant in event.fields.items():
        assert back.fields[p] == variant, p
    assert back.event_id == event.event_id and back.time == event.time
    assert back.value(path("ActiveState", "Id")) is True
    assert back.fields.get(path("NoSuchField")) is None
    with pytest.raises(KeyError):
        back.fields[path("NoSuchField")]


def test_a_row_of_the_earlier_layout_still_reads() -> None:
    event = _alarm_event(2, active=False)
    back = rows.decode(_earlier_layout(event))
    assert back.condition == event.condition
    assert dict(back.fields) == dict(event.fields)


def test_a_damaged_row_is_refused() -> None:
    body = rows.encode(_alarm_event(3, active=True))
    with pytest.raises(ValueError):
        rows.decode(body[:-5])
    with pytest.raises(ValueError):
        rows.decode(b"XX" + body[2:])


async def test_history_read_events_filters_and_selects_on_stored_fields(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3", retention=None)
    await store.start()
    try:
        events = [_alarm_event(i, active=i % 2 == 0) for i in range(10)]
        for ev in events:
            store.append_event(ev)
        await store.flush()
        active = path("ActiveState", "Id")
        got, cp = await store.read_events(DEVICE, T0 - timedelta(seconds=1), T0 + timedelta(seconds=20), 0, None,
                                          lambda e: e.value(active) is True)
        assert cp is None
        assert [e.value(MESSAGE).Text for e in got] == [e.value(MESSAGE).Text for e in events[::2]]
        assert [e.condition for e in got] == [e.condition for e in events[::2]]
        page, cp = await store.read_events(SERVER, T0 - timedelta(seconds=1), T0 + timedelta(seconds=20), 4, None,
                                           lambda e: True)
        assert [e.event_id for e in page] == [e.event_id for e in events[:4]] and cp is not None
        assert all(e.fields[EVENT_TYPE] == ev.fields[EVENT_TYPE] for e, ev in zip(page, events[:4], strict=True))
    finally:
        await store.stop()
