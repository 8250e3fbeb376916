"""History on a disk that fills up: it degrades and recovers, never breaks, and counts every value.

The disk is real: a small tmpfs mounted for the test (root only; tests/run.sh runs as root in CI).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asyncua import ua

from gateway.history.store import HistoryStore, HistoryUnavailable
from gateway.values.aspace_io import StoredDataValue

pytestmark = pytest.mark.integration


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(disk: Path) -> Path:
    """Take every free byte of the disk with a ballast file; deleting it frees the space again."""
    ballast = disk / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
    return ballast


class _Feed:
    """Values of 20 nodes with increasing timestamps, as a scan would append them."""

    def __init__(self, store: HistoryStore) -> None:
        self.store = store
        self.appended = 0
        self.t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def burst(self, n: int = 200) -> None:
        for _ in range(n):
            t = self.t0 + timedelta(milliseconds=self.appended)
            self.store.append(ua.NodeId(f"n{self.appended % 20}", 1),
                              StoredDataValue(ua.Variant(float(self.appended)), SourceTimestamp=t, ServerTimestamp=t))
            self.appended += 1


async def _until(predicate, within: float, feed: _Feed | None = None) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    async with asyncio.timeout(within):
        while not predicate():
            if feed is not None:
                feed.burst(50)
            await asyncio.sleep(0.02)
    return time.monotonic() - start


async def _stored(store: HistoryStore) -> int:
    end = datetime(2027, 1, 1, tzinfo=UTC)
    total = 0
    for i in range(20):
        values, _ = await store.read_raw(ua.NodeId(f"n{i}", 1), datetime(2025, 1, 1, tzinfo=UTC), end, 0)
        total += len(values)
        assert len(values) < store.max_values_per_read
    return total


async def test_writing_resumes_as_soon_as_space_returns_and_nothing_is_lost(small_disk: Path) -> None:
    store = HistoryStore(small_disk / "h.sqlite3", retention=None, batch_interval=0.05)
    await store.start()
    feed = _Feed(store)
    try:
        ballast = _fill(small_disk)
        await _until(lambda: store.state == "Failing", 20, feed)
        assert "full" in store.last_error
        feed.burst(2000)  # the outage goes on: these wait in memory
        waiting = store.queued
        assert waiting >= 2000
        ballast.unlink()
        resumed = await _until(lambda: store.state == "Writing" and store.queued == 0, 10)
        assert resumed < 3.0, f"writing resumed {resumed:.1f} s after space was freed"
        await store.flush(5)
        assert store.dropped == 0
        assert store.written == feed.appended == await _stored(store)
    finally:
        await store.stop(within_s=2)


async def test_stop_on_a_full_disk_is_bounded_and_counts_what_is_lost(small_disk: Path) -> None:
    store = HistoryStore(small_disk / "h.sqlite3", retention=None, batch_interval=0.05)
    await store.start()
    feed = _Feed(store)
    _fill(small_disk)
    await _until(lambda: store.state == "Failing", 20, feed)
    feed.burst(1000)
    started = time.monotonic()
    await store.stop(within_s=2)
    assert time.monotonic() - started < 3.0
    assert store.written + store.dropped == feed.appended
    assert store.dropped >= 1000


async def test_a_full_disk_at_start_degrades_history_instead_of_failing(small_disk: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    ballast = _fill(small_disk)
    store = HistoryStore(small_disk / "history" / "h.sqlite3", retention=None, batch_interval=0.05)
    with caplog.at_level(logging.WARNING, logger="gateway.history.store"):
        await store.start()
    try:
        assert store.state == "Unavailable"
        assert any("history unavailable" in r.message for r in caplog.records)
        with pytest.raises(HistoryUnavailable):
            await store.read_raw(ua.NodeId("n0", 1), datetime(2025, 1, 1, tzinfo=UTC), None, 10)
        feed = _Feed(store)
        feed.burst(500)
        ballast.unlink()
        await _until(lambda: store.state == "Writing", 10)
        await store.flush(5)
        assert store.written == feed.appended == await _stored(store)
    finally:
        await store.stop(within_s=2)


async def test_values_dropped_in_a_long_outage_leave_a_visible_gap(small_disk: Path) -> None:
    store = HistoryStore(small_disk / "h.sqlite3", retention=None, batch_interval=0.05, max_queue=500)
    await store.start()
    feed = _Feed(store)
    try:
        ballast = _fill(small_disk)
        await _until(lambda: store.state == "Failing", 20, feed)
        before = feed.appended
        feed.burst(3000)  # far more than the queue holds
        assert store.dropped > 0
        ballast.unlink()
        await _until(lambda: store.state == "Writing" and store.queued == 0, 10)
        await store.flush(5)
        assert store.written + store.dropped == feed.appended
        values, _ = await store.read_raw(ua.NodeId("n0", 1), datetime(2025, 1, 1, tzinfo=UTC),
                                         datetime(2027, 1, 1, tzinfo=UTC), 0)
        lost = [v for v in values if v.StatusCode.value == ua.StatusCodes.BadDataLost]
        assert len(lost) == 1, "one marker where node n0 lost values"
        first_lost = lost[0].SourceTimestamp
        assert feed.t0 + timedelta(milliseconds=before) <= first_lost
    finally:
        await store.stop(within_s=2)
