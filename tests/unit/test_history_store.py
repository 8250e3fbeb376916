"""The history store on its own: types, restart, order, bounds, paging, retention, encoding."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import struct_from_binary, struct_to_binary

from gateway.clock import SteppableClock
from gateway.history.store import ContinuationPointError, HistoryStore, namespace_key

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NODE = ua.NodeId("Pump.Speed", 2)
SAMPLES = [
    (1.5, ua.VariantType.Double), (2.5, ua.VariantType.Float), (-7, ua.VariantType.Int32),
    (2**63 - 1, ua.VariantType.Int64), (2**64 - 1, ua.VariantType.UInt64), (True, ua.VariantType.Boolean),
    (False, ua.VariantType.Boolean), (200, ua.VariantType.Byte), (-3, ua.VariantType.SByte),
    (60_000, ua.VariantType.UInt16), ("text ü", ua.VariantType.String), ("", ua.VariantType.String),
    (None, ua.VariantType.String), ([1.0, 2.0], ua.VariantType.Double), ([1, -2, 3], ua.VariantType.Int32),
    ([True, False], ua.VariantType.Boolean), (["a", "b"], ua.VariantType.String),
    (b"\x00\x01", ua.VariantType.ByteString), (T0, ua.VariantType.DateTime), (None, ua.VariantType.Null),
    (ua.LocalizedText("Ein", "de"), ua.VariantType.LocalizedText),
]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def dv(value: object, vt: ua.VariantType, seconds: float, status: int = ua.StatusCodes.Good) -> ua.DataValue:
    return ua.DataValue(ua.Variant(value, vt), ua.StatusCode(status), SourceTimestamp=at(seconds),
                        ServerTimestamp=T0 + timedelta(seconds=seconds, milliseconds=5))


def numbers(values: list[ua.DataValue]) -> list[object]:
    return [v.Value.Value if v.StatusCode.is_good() else v.StatusCode.name for v in values]


@pytest.fixture
async def store(tmp_path: Path):
    s = HistoryStore(tmp_path / "deep" / "dir" / "h.sqlite3", retention=None)
    await s.start()
    yield s
    await s.stop()


async def _fill(store: HistoryStore, n: int, step: float = 1.0) -> None:
    for i in range(n):
        store.append(NODE, dv(float(i), ua.VariantType.Double, i * step))
    await store.flush()


async def test_every_type_round_trips(store: HistoryStore) -> None:
    for i, (value, vt) in enumerate(SAMPLES):
        store.append(ua.NodeId(i, 3), dv(value, vt, i, ua.StatusCodes.UncertainLastUsableValue))
    await store.flush()
    assert store.written == len(SAMPLES) and store.queued == 0
    for i, (value, vt) in enumerate(SAMPLES):
        values, cp = await store.read_raw(ua.NodeId(i, 3), T0, T0 + timedelta(hours=1), 0)
        assert cp is None and len(values) == 1
        got = values[0]
        assert got.Value.Value == value and got.Value.VariantType == vt, (value, vt)
        assert got.StatusCode.value == ua.StatusCodes.UncertainLastUsableValue
        assert got.SourceTimestamp == at(i)
        assert got.ServerTimestamp == T0 + timedelta(seconds=i, milliseconds=5)


async def test_encoded_answer_is_what_asyncua_would_encode(store: HistoryStore) -> None:
    """read_raw_encoded builds HistoryData bytes itself; they must equal asyncua's encoding of read_raw."""
    for i, (value, vt) in enumerate(SAMPLES):
        store.append(NODE, dv(value, vt, i, ua.StatusCodes.Good if i % 2 else ua.StatusCodes.BadCommunicationError))
    await store.flush()
    for which in (ua.TimestampsToReturn.Both, ua.TimestampsToReturn.Source, ua.TimestampsToReturn.Server):
        for bounds in (False, True):
            values, cp = await store.read_raw(NODE, at(-1), at(100), 0, return_bounds=bounds)
            count, body, cp2 = await store.read_raw_encoded(NODE, at(-1), at(100), 0, return_bounds=bounds,
                                                            timestamps=which)
            for v in values:
                if which == ua.TimestampsToReturn.Source:
                    v.ServerTimestamp = None
                if which == ua.TimestampsToReturn.Server:
                    v.SourceTimestamp = None
            assert count == len(values) == len(SAMPLES) + 2 * bounds and cp is cp2 is None
            assert body == struct_to_binary(ua.HistoryData(DataValues=values)), (which, bounds)
            decoded = struct_from_binary(ua.HistoryData, Buffer(body))
            assert [d.Value.Value for d in decoded.DataValues] == [v.Value.Value for v in values]


async def test_history_survives_a_restart(tmp_path: Path) -> None:
    first = HistoryStore(tmp_path / "h.sqlite3", retention=None)
    await first.start()
    await _fill(first, 10)
    first.append(NODE, dv(10.0, ua.VariantType.Double, 10))  # appended, not flushed: stop() writes it
    await first.stop()
    second = HistoryStore(tmp_path / "h.sqlite3", retention=None)
    await second.start()
    try:
        values, _ = await second.read_raw(NODE, T0, at(60), 0)
        assert numbers(values) == [float(i) for i in range(11)]
        second.append(NODE, dv(11.0, ua.VariantType.Double, 11))  # the same node keeps its id
        await second.flush()
        values, _ = await second.read_raw(NODE, at(10), at(60), 0)
        assert numbers(values) == [10.0, 11.0]
    finally:
        await second.stop()


async def test_part11_directions(store: HistoryStore) -> None:
    await _fill(store, 10)
    forward, _ = await store.read_raw(NODE, at(2), at(5), 0)
    assert numbers(forward) == [2.0, 3.0, 4.0]  # end excluded
    backward, _ = await store.read_raw(NODE, at(5), at(2), 0)
    assert numbers(backward) == [5.0, 4.0, 3.0]  # reverse time order, start included, end excluded
    from_start, _ = await store.read_raw(NODE, at(7), None, 2)
    assert numbers(from_start) == [7.0, 8.0]
    before_end, _ = await store.read_raw(NODE, None, at(7), 2)
    assert numbers(before_end) == [7.0, 6.0]
    exact, _ = await store.read_raw(NODE, at(4), at(4), 0)
    assert numbers(exact) == [4.0]
    none, cp = await store.read_raw(NODE, at(100), at(200), 0)
    assert none == [] and cp is None
    unknown, _ = await store.read_raw(ua.NodeId("Never", 2), T0, at(200), 0)
    assert unknown == []
    with pytest.raises(ValueError):
        await store.read_raw(NODE, None, None, 5)


async def test_bounds(store: HistoryStore) -> None:
    await _fill(store, 5, step=10.0)  # values 0..4 at 0 s, 10 s, ... 40 s
    inside, _ = await store.read_raw(NODE, at(15), at(25), 0, return_bounds=True)
    assert numbers(inside) == [1.0, 2.0, 3.0]  # value before start, the range, value after end
    exact, _ = await store.read_raw(NODE, at(10), at(30), 0, return_bounds=True)
    assert numbers(exact) == [1.0, 2.0, 3.0]  # a value at a boundary is its own bound
    outside, _ = await store.read_raw(NODE, at(-5), at(45), 0, return_bounds=True)
    assert numbers(outside) == ["BadBoundNotFound", 0.0, 1.0, 2.0, 3.0, 4.0, "BadBoundNotFound"]
    assert outside[0].SourceTimestamp == at(-5) and outside[-1].SourceTimestamp == at(45)
    backward, _ = await store.read_raw(NODE, at(25), at(15), 0, return_bounds=True)
    assert numbers(backward) == [3.0, 2.0, 1.0]
    back_out, _ = await store.read_raw(NODE, at(45), at(-5), 0, return_bounds=True)
    assert numbers(back_out) == ["BadBoundNotFound", 4.0, 3.0, 2.0, 1.0, 0.0, "BadBoundNotFound"]
    # Paging over bounds: every item exactly once, in order.
    got: list[object] = []
    cp = None
    while True:
        page, cp = await store.read_raw(NODE, at(-5), at(45), 2, cp, return_bounds=True)
        got += numbers(page)
        if cp is None:
            break
    assert got == numbers(outside)


async def test_paging_with_continuation_points(store: HistoryStore) -> None:
    await _fill(store, 25)
    store.append(NODE, dv(99.0, ua.VariantType.Double, 9))  # two values with one timestamp
    await store.flush()
    end = at(60)
    got: list[object] = []
    cp = None
    pages = 0
    while True:
        values, cp = await store.read_raw(NODE, T0, end, 10, cp)
        got += numbers(values)
        pages += 1
        if cp is None:
            break
    assert got == [float(i) for i in range(10)] + [99.0] + [float(i) for i in range(10, 25)] and pages == 3
    back: list[object] = []
    while True:
        values, cp = await store.read_raw(NODE, end, T0, 7, cp)
        back += numbers(values)
        if cp is None:
            break
    assert back == list(reversed(got))[:-1]  # backward reads (start, end]: the value at T0 is the excluded end
    _, cp = await store.read_raw(NODE, end, T0, 10)  # backward paging has its own points
    assert cp is not None
    with pytest.raises(ContinuationPointError):
        await store.read_raw(NODE, T0, end, 10, cp)
    with pytest.raises(ContinuationPointError):
        await store.read_raw(NODE, T0, end, 10, b"garbage")
    with pytest.raises(ContinuationPointError):
        await store.read_raw(ua.NodeId("Other", 2), T0, end, 10, cp)


async def test_server_cap_pages_even_when_all_values_are_asked(store: HistoryStore) -> None:
    store.max_values_per_read = 4
    await _fill(store, 6)
    values, cp = await store.read_raw(NODE, T0, at(60), 0)
    assert len(values) == 4 and cp is not None
    rest, cp = await store.read_raw(NODE, T0, at(60), 0, cp)
    assert numbers(rest) == [4.0, 5.0] and cp is None


async def test_missing_timestamps_are_filled(store: HistoryStore) -> None:
    store.append(NODE, ua.DataValue(ua.Variant(1.0, ua.VariantType.Double)))
    await store.flush()
    values, _ = await store.read_raw(NODE, datetime.now(UTC) - timedelta(minutes=1), datetime.now(UTC), 0)
    assert len(values) == 1 and values[0].SourceTimestamp is not None
    assert values[0].ServerTimestamp == values[0].SourceTimestamp


async def test_retention_deletes_old_values(tmp_path: Path) -> None:
    clock = SteppableClock(T0 + timedelta(days=40))
    s = HistoryStore(tmp_path / "h.sqlite3", retention=timedelta(days=30), clock=clock)
    await s.start()
    try:
        assert await s.apply_retention() == 0  # the pass every store runs when it starts
        s.append(NODE, dv(1.0, ua.VariantType.Double, 0))  # 40 days old
        s.append(NODE, dv(2.0, ua.VariantType.Double, 20 * 86_400))  # 20 days old
        s.append(ua.NodeId("B", 2), dv(3.0, ua.VariantType.Double, 1))  # 40 days old, another node
        await s.flush()
        assert await s.apply_retention() == 2
        values, _ = await s.read_raw(NODE, T0, T0 + timedelta(days=41), 0)
        assert numbers(values) == [2.0]
        clock.step(15 * 86_400)  # now the 20-day-old value is 35 days old
        assert await s.apply_retention() == 1
        assert s.retention_deleted == 3
        await asyncio.sleep(3 * s.batch_interval)  # idle writer cycles must not count a pass again
        assert s.retention_deleted == 3
    finally:
        await s.stop()


async def test_a_full_queue_drops_and_counts(tmp_path: Path) -> None:
    s = HistoryStore(tmp_path / "h.sqlite3", retention=None, max_queue=3)  # writer not started: queue fills
    for i in range(5):
        s.append(NODE, dv(float(i), ua.VariantType.Double, i))
    assert s.queued == 3 and s.dropped == 2
    await s.start()  # the queued values are written once the writer runs
    try:
        await s.flush()
        values, _ = await s.read_raw(NODE, T0, at(60), 0)
        # The values dropped show as one BadDataLost entry at the first one lost, not as a silent gap.
        assert numbers(values) == [0.0, 1.0, 2.0, "BadDataLost"]
        assert values[-1].SourceTimestamp == at(3)
        assert s.written == 3
    finally:
        await s.stop()


def test_keys_name_the_namespace_not_its_index() -> None:
    key = namespace_key(["http://opcfoundation.org/UA/", "urn:server", "urn:site"])
    assert key(ua.NodeId("Pump.Speed", 2)) == "nsu=urn:site;s=Pump.Speed"
    assert key(ua.NodeId(2258, 0)) == "i=2258"
