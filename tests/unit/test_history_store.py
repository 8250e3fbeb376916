"""The history store on its own: types, restart, order, paging, retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asyncua import ua

from gateway.clock import SteppableClock
from gateway.history.store import ContinuationPointError, HistoryStore, namespace_key

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NODE = ua.NodeId("Pump.Speed", 2)


def dv(value: object, vt: ua.VariantType, seconds: float, status: int = ua.StatusCodes.Good) -> ua.DataValue:
    return ua.DataValue(ua.Variant(value, vt), ua.StatusCode(status), SourceTimestamp=T0 + timedelta(seconds=seconds),
                        ServerTimestamp=T0 + timedelta(seconds=seconds, milliseconds=5))


@pytest.fixture
async def store(tmp_path: Path):
    s = HistoryStore(tmp_path / "h.sqlite3", retention=None)
    await s.start()
    yield s
    await s.stop()


async def _fill(store: HistoryStore, n: int) -> None:
    for i in range(n):
        store.append(NODE, dv(float(i), ua.VariantType.Double, i))
    await store.flush()


async def test_every_type_round_trips(store: HistoryStore) -> None:
    samples = [
        (1.5, ua.VariantType.Double), (2.5, ua.VariantType.Float), (-7, ua.VariantType.Int32),
        (2**63 - 1, ua.VariantType.Int64), (2**64 - 1, ua.VariantType.UInt64), (True, ua.VariantType.Boolean),
        ("text", ua.VariantType.String), ([1.0, 2.0], ua.VariantType.Double), (b"\x00\x01", ua.VariantType.ByteString),
        (T0, ua.VariantType.DateTime), (None, ua.VariantType.Null),
    ]
    for i, (value, vt) in enumerate(samples):
        store.append(ua.NodeId(i, 3), dv(value, vt, i, ua.StatusCodes.UncertainLastUsableValue))
    await store.flush()
    for i, (value, vt) in enumerate(samples):
        values, cp = await store.read_raw(ua.NodeId(i, 3), T0, T0 + timedelta(hours=1), 0)
        assert cp is None and len(values) == 1
        got = values[0]
        assert got.Value.Value == value and got.Value.VariantType == vt
        assert got.StatusCode.value == ua.StatusCodes.UncertainLastUsableValue
        assert got.SourceTimestamp == T0 + timedelta(seconds=i)
        assert got.ServerTimestamp == T0 + timedelta(seconds=i, milliseconds=5)


async def test_history_survives_a_restart(tmp_path: Path) -> None:
    first = HistoryStore(tmp_path / "h.sqlite3", retention=None)
    await first.start()
    await _fill(first, 10)
    await first.stop()
    second = HistoryStore(tmp_path / "h.sqlite3", retention=None)
    await second.start()
    try:
        values, _ = await second.read_raw(NODE, T0, T0 + timedelta(minutes=1), 0)
        assert [v.Value.Value for v in values] == [float(i) for i in range(10)]
    finally:
        await second.stop()


async def test_part11_directions(store: HistoryStore) -> None:
    await _fill(store, 10)
    at = lambda s: T0 + timedelta(seconds=s)  # noqa: E731
    forward, _ = await store.read_raw(NODE, at(2), at(5), 0)
    assert [v.Value.Value for v in forward] == [2.0, 3.0, 4.0]  # end excluded
    backward, _ = await store.read_raw(NODE, at(5), at(2), 0)
    assert [v.Value.Value for v in backward] == [5.0, 4.0, 3.0]
    from_start, _ = await store.read_raw(NODE, at(7), None, 2)
    assert [v.Value.Value for v in from_start] == [7.0, 8.0]
    before_end, _ = await store.read_raw(NODE, None, at(7), 2)
    assert [v.Value.Value for v in before_end] == [7.0, 6.0]
    exact, _ = await store.read_raw(NODE, at(4), at(4), 0)
    assert [v.Value.Value for v in exact] == [4.0]
    with pytest.raises(ValueError):
        await store.read_raw(NODE, None, None, 5)


async def test_paging_with_continuation_points(store: HistoryStore) -> None:
    await _fill(store, 25)
    end = T0 + timedelta(minutes=1)
    got: list[float] = []
    cp = None
    pages = 0
    while True:
        values, cp = await store.read_raw(NODE, T0, end, 10, cp)
        got += [v.Value.Value for v in values]
        pages += 1
        if cp is None:
            break
    assert got == [float(i) for i in range(25)] and pages == 3
    _, cp = await store.read_raw(NODE, end, T0, 10)  # backward paging has its own points
    with pytest.raises(ContinuationPointError):
        await store.read_raw(NODE, T0, end, 10, cp)
    with pytest.raises(ContinuationPointError):
        await store.read_raw(NODE, T0, end, 10, b"garbage")
    with pytest.raises(ContinuationPointError):
        await store.read_raw(ua.NodeId("Other", 2), T0, end, 10, cp)


async def test_server_cap_pages_even_when_all_values_are_asked(store: HistoryStore) -> None:
    store.max_values_per_read = 4
    await _fill(store, 6)
    values, cp = await store.read_raw(NODE, T0, T0 + timedelta(minutes=1), 0)
    assert len(values) == 4 and cp is not None


async def test_retention_deletes_old_values(tmp_path: Path) -> None:
    clock = SteppableClock(T0 + timedelta(days=40))
    s = HistoryStore(tmp_path / "h.sqlite3", retention=timedelta(days=30), clock=clock)
    await s.start()
    try:
        s.append(NODE, dv(1.0, ua.VariantType.Double, 0))  # 40 days old
        s.append(NODE, dv(2.0, ua.VariantType.Double, 20 * 86_400))  # 20 days old
        await s.flush()
        s.apply_retention_now()
        await s.flush()
        values, _ = await s.read_raw(NODE, T0, T0 + timedelta(days=41), 0)
        assert [v.Value.Value for v in values] == [2.0]
    finally:
        await s.stop()


async def test_a_full_queue_drops_and_counts(tmp_path: Path) -> None:
    s = HistoryStore(tmp_path / "h.sqlite3", retention=None, max_queue=3)  # writer not started: queue fills
    for i in range(5):
        s.append(NODE, dv(float(i), ua.VariantType.Double, i))
    assert s.queued == 3 and s.dropped == 2


def test_keys_name_the_namespace_not_its_index() -> None:
    key = namespace_key(["http://opcfoundation.org/UA/", "urn:server", "urn:site"])
    assert key(ua.NodeId("Pump.Speed", 2)) == "nsu=urn:site;s=Pump.Speed"
    assert key(ua.NodeId(2258, 0)) == "i=2258"
