"""The on-disk point queue: order, acknowledgement, reopening, and the size and age bounds."""

from __future__ import annotations

from pathlib import Path

from gateway.influx.diskqueue import MARK_EVERY_NS, DiskQueue

DAY = 86400 * 10**9


def rows(start: int, n: int, target: str = "ls") -> list[tuple[str, str, int, str]]:
    return [(target, f"Pump1,variable=V{k % 3}", k, f"value={float(k)},quality=0i") for k in range(start, start + n)]


def test_head_is_oldest_first_across_targets_and_ack_removes(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path / "q.sqlite3")
    q.open()
    q.append(rows(0, 5, "hs") + rows(5, 5, "ls"))
    head = q.head(7)
    assert [p[2] for p in head[:2]] == ["Pump1,variable=V0 value=0.0,quality=0i 0",
                                          "Pump1,variable=V1 value=1.0,quality=0i 1"]
    assert [p[1] for p in head] == ["hs"] * 5 + ["ls"] * 2
    q.ack([p[0] for p in head[:3]] + [head[5][0]])  # not contiguous: acknowledged one by one
    assert [p[2].split()[-1] for p in q.head(100)] == ["3", "4", "6", "7", "8", "9"]
    assert q.depth == 6


def test_reopened_queue_keeps_points_and_series(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path / "q.sqlite3")
    q.open()
    q.append(rows(0, 10))
    q.ack([p[0] for p in q.head(4)])
    q.close()
    again = DiskQueue(tmp_path / "q.sqlite3")
    again.open()
    assert again.depth == 6
    again.append(rows(10, 2))
    assert [int(p[2].split()[-1]) for p in again.head(100)] == list(range(4, 12))


def test_age_bound_counts_time_in_queue_not_source_time(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path / "q.sqlite3", max_age_ns=7 * DAY)
    q.open()
    q.append(rows(0, 10), now_ns=1 * DAY)  # old source timestamps (0..9 ns) do not matter
    q.append(rows(10, 10), now_ns=5 * DAY)
    assert q.enforce_bounds(now_ns=7 * DAY) == 0
    assert q.enforce_bounds(now_ns=8 * DAY + MARK_EVERY_NS) == 10  # the first 10 waited over 7 days
    assert q.dropped == 10 and q.depth == 10
    assert int(q.head(1)[0][2].split()[-1]) == 10


def test_size_bound_drops_the_oldest(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path / "q.sqlite3", max_bytes=1_000_000)
    q.open()
    for k in range(50):
        q.append(rows(k * 1000, 1000))
    assert q.bytes_used() > 1_000_000
    removed = q.enforce_bounds(now_ns=0)
    assert removed > 0 and q.bytes_used() <= 1_000_000
    assert q.dropped == removed and q.depth == 50_000 - removed
    assert int(q.head(1)[0][2].split()[-1]) == removed  # the oldest went, in order


def test_oldest_queued_follows_the_head(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path / "q.sqlite3")
    q.open()
    assert q.oldest_queued_ns() is None
    q.append(rows(0, 3), now_ns=DAY)
    q.append(rows(3, 3), now_ns=DAY + 2 * MARK_EVERY_NS)
    assert q.oldest_queued_ns() == DAY
    q.ack([p[0] for p in q.head(3)])  # the first minute's points are gone: the head was queued later
    assert q.oldest_queued_ns() == DAY + 2 * MARK_EVERY_NS
    q.ack([p[0] for p in q.head(3)])
    assert q.oldest_queued_ns() is None


def test_head_batches_are_the_head_per_target_in_order(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path / "q.sqlite3")
    q.open()
    q.append([(("hs", "ls", "ms")[k % 3 // 2], f"Pump1,variable=V{k % 5}", k, f"value={float(k)},quality=0i")
              for k in range(3000)])
    q.ack([p[0] for p in q.head(10)][::3])  # gaps in the ids
    head = q.head(1000)
    batches = q.head_batches(1000)
    assert batches is not None and sorted(t for t, _, _ in batches) == ["hs", "ls"]
    for target, ids, body in batches:
        rows = [p for p in head if p[1] == target]
        assert ids == [p[0] for p in rows]
        assert body == "\n".join(p[2] for p in rows)
        assert q.points(ids[:3][::-1]) == rows[:3]
    q.ack(batches[0][1])  # not contiguous: one statement
    assert q.depth == 3000 - 4 - len(batches[0][1])
    empty = DiskQueue(tmp_path / "empty.sqlite3")
    empty.open()
    assert empty.head_batches(10) == []
