"""The on-disk point queue: one SQLite file (WAL) under the data dir, oldest point first.

A point is in the queue once its transaction committed, and leaves it only when the server
acknowledged it (`ack`) or a bound made room (`enforce_bounds`, counted). Series are stored once
(`series` table: target and escaped key) and points refer to them, so a queued point costs its
fields, its timestamp and two integers (measured in the benchmark), not its whole line.

Two threads of the writer process (see writer.py) use the queue, each with its own connection: the
spooler appends, the sender reads the head and deletes what was acknowledged. Row ids only grow while
rows exist, so "the oldest N rows" is the head in arrival order, and each series' points leave in the
order they came.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS series (id INTEGER PRIMARY KEY, target TEXT NOT NULL, key TEXT NOT NULL,
                                   UNIQUE (target, key));
CREATE TABLE IF NOT EXISTS points (id INTEGER PRIMARY KEY, series INTEGER NOT NULL, ts INTEGER NOT NULL,
                                   fields TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS marks (first_id INTEGER PRIMARY KEY, queued_ns INTEGER NOT NULL);
"""
# The age bound is the time a point has waited in the queue, not its source timestamp (a device's
# clock may be anywhere). A mark records when the points from `first_id` on were queued, at most one
# a minute: 16 bytes a minute instead of 8 bytes a point, with the age known to a minute.
MARK_EVERY_NS = 60 * 10**9
_BOUND_STEP = 10_000  # rows removed per statement when a bound is passed


QueuedPoint = tuple[int, str, str]  # id, target, line
Batch = tuple[str, list[int], str]  # target, ids in order, lines joined by newlines


class DiskQueue:
    def __init__(self, path: Path, max_bytes: int = 10**9, max_age_ns: int = 7 * 86400 * 10**9) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_age_ns = max_age_ns
        self.appended = 0  # spooler thread
        self.acked = 0  # sender thread
        self.dropped = 0  # spooler thread: removed by a bound
        self._initial = 0
        self._series_ids: dict[tuple[str, str], int] = {}  # spooler's
        self._local = threading.local()
        self._page_size = 4096
        self._last_mark_ns = 0

    # -- both threads ------------------------------------------------------------------------------
    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        conn = self._conn()
        conn.executescript(_SCHEMA)
        self._initial = conn.execute("SELECT count(*) FROM points").fetchone()[0]
        self._last_mark_ns = conn.execute("SELECT coalesce(max(queued_ns), 0) FROM marks").fetchone()[0]
        self._page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        self._series_ids = {(t, k): i for i, t, k in conn.execute("SELECT id, target, key FROM series")}

    @property
    def depth(self) -> int:
        return self._initial + self.appended - self.acked - self.dropped

    def bytes_used(self) -> int:
        """Pages in use (the file less its free list; the WAL is checkpointed into it)."""
        conn = self._conn()
        pages = conn.execute("PRAGMA page_count").fetchone()[0] - conn.execute("PRAGMA freelist_count").fetchone()[0]
        return pages * self._page_size

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            # A committed transaction survives the process being killed (the WAL is written at commit);
            # `normal` only risks the last transactions on a power cut, and costs no fsync per batch.
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    # -- spooler thread ----------------------------------------------------------------------------
    def series_id(self, target: str, key: str) -> int:
        """The series' id in the queue (added on first use; a series row is never removed)."""
        return self.series_ids([(target, key)])[0]

    def series_ids(self, series: Sequence[tuple[str, str]]) -> list[int]:
        """The ids of (target, key) series; the new ones are added in one transaction."""
        ids = self._series_ids
        new = [s for s in series if s not in ids]
        if new:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                for target, key in new:
                    conn.execute("INSERT OR IGNORE INTO series (target, key) VALUES (?, ?)", (target, key))
                    ids[(target, key)] = conn.execute("SELECT id FROM series WHERE target = ? AND key = ?",
                                                      (target, key)).fetchone()[0]
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                self._series_ids = {(t, k): i for i, t, k in conn.execute("SELECT id, target, key FROM series")}
                raise
        return [ids[s] for s in series]

    def append(self, rows: Iterable[tuple[str, str, int, str]], now_ns: int | None = None) -> int:
        """Queue points (target, series key, timestamp ns, fields) in one transaction; returns how many."""
        rows = list(rows)
        ids = self.series_ids([(target, key) for target, key, _, _ in rows])
        return self.append_ids([(sid, ts, fields) for sid, (_, _, ts, fields) in zip(ids, rows, strict=True)], now_ns)

    def append_ids(self, out: list[tuple[int, int, str]], now_ns: int | None = None) -> int:
        """Queue points (series id, timestamp ns, fields) in one transaction; returns how many."""
        conn = self._conn()
        now_ns = time.time_ns() if now_ns is None else now_ns
        conn.execute("BEGIN IMMEDIATE")
        try:
            if now_ns - self._last_mark_ns >= MARK_EVERY_NS:
                first = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM points").fetchone()[0]
                conn.execute("INSERT OR REPLACE INTO marks VALUES (?, ?)", (first, now_ns))
                self._last_mark_ns = now_ns
            conn.executemany("INSERT INTO points (series, ts, fields) VALUES (?, ?, ?)", out)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self.appended += len(out)
        return len(out)

    def enforce_bounds(self, now_ns: int) -> int:
        """Remove the oldest points past the age bound, then while the file is over its size; returns how many."""
        conn = self._conn()
        removed = 0
        cutoff = now_ns - self.max_age_ns
        oldest = conn.execute("SELECT min(queued_ns) FROM marks").fetchone()[0]
        if oldest is not None and oldest < cutoff:
            # Points before the first mark younger than the cutoff have waited longer than the bound.
            keep_from = conn.execute("SELECT min(first_id) FROM marks WHERE queued_ns >= ?", (cutoff,)).fetchone()[0]
            if keep_from is None:  # every mark is older: keep only the last one, for points queued after it
                keep_from = conn.execute("SELECT max(first_id) FROM marks").fetchone()[0]
                if now_ns - self._last_mark_ns >= MARK_EVERY_NS + self.max_age_ns:
                    keep_from = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM points").fetchone()[0]
            while True:
                n = conn.execute("DELETE FROM points WHERE id IN (SELECT id FROM points WHERE id < ? ORDER BY id "
                                 "LIMIT ?)", (keep_from, _BOUND_STEP)).rowcount
                removed += n
                if n < _BOUND_STEP:
                    break
            conn.execute("DELETE FROM marks WHERE first_id < ?", (keep_from,))
        while self.bytes_used() > self.max_bytes and self.depth - removed > 0:
            # Make room for a tenth of the bound at once, so a full queue is not trimmed on every batch.
            per_point = max(self.bytes_used() / max(self.depth - removed, 1), 1.0)
            n_rows = max(int(self.max_bytes * 0.1 / per_point), 1)
            n = conn.execute("DELETE FROM points WHERE id IN (SELECT id FROM points ORDER BY id LIMIT ?)",
                             (n_rows,)).rowcount
            removed += n
            if n == 0:
                break
        self.dropped += removed
        return removed

    def oldest_queued_ns(self) -> int | None:
        """When the oldest point still queued was queued (to a minute), or None for an empty queue."""
        return self._conn().execute(
            "SELECT max(queued_ns) FROM marks WHERE first_id <= (SELECT min(id) FROM points)").fetchone()[0]

    # -- sender thread -----------------------------------------------------------------------------
    def head(self, limit: int) -> list[QueuedPoint]:
        """The oldest `limit` points as (id, target, line), oldest first. SQLite joins each line itself:
        a Python object and an f-string per point cost more than the rest of sending it."""
        return self._conn().execute(
            "SELECT p.id, s.target, s.key || ' ' || p.fields || ' ' || p.ts FROM points AS p "
            "JOIN series AS s ON s.id = p.series ORDER BY p.id LIMIT ?", (limit,)).fetchall()

    def head_batches(self, limit: int) -> list[Batch] | None:
        """The oldest `limit` points as one batch per target: (target, ids, lines joined by newlines), each
        in the points' order. SQLite joins the lines of a batch itself, so a batch is read in a few
        statements, not a row at a time: each row fetched lets the GIL go, and with the event loop's
        thread busy the sender waited a switch interval (5 ms) to get it back, for every row (measured:
        3,830 points/s acknowledged while 58,000 changes/s were offered). None if SQLite did not
        aggregate in order (the ids tell; then the caller reads row by row with `head`)."""
        conn = self._conn()
        last = conn.execute("SELECT max(id) FROM (SELECT id FROM points ORDER BY id LIMIT ?)", (limit,)).fetchone()[0]
        if last is None:
            return []
        out: list[Batch] = []
        targets = conn.execute("SELECT DISTINCT s.target FROM points AS p CROSS JOIN series AS s ON s.id = p.series "
                               "WHERE p.id <= ?", (last,)).fetchall()
        for (target,) in targets:
            # CROSS JOIN: points first, in id order (SQLite keeps a CROSS JOIN's order of tables).
            ids_text, body = conn.execute(
                "SELECT group_concat(id), group_concat(line, char(10)) FROM (SELECT p.id AS id, s.key || ' ' || "
                "p.fields || ' ' || p.ts AS line FROM points AS p CROSS JOIN series AS s ON s.id = p.series "
                "WHERE p.id <= ? AND s.target = ? ORDER BY p.id)", (last, target)).fetchone()
            if ids_text is None:  # a bound removed them meanwhile (the spooler's thread)
                continue
            ids = list(map(int, ids_text.split(",")))
            if ids != sorted(ids):
                return None
            out.append((target, ids, body))
        return out

    def points(self, ids: Sequence[int]) -> list[QueuedPoint]:
        """These points as (id, target, line), in id order (a batch read row by row to find a refused point)."""
        return self._conn().execute(
            "SELECT p.id, s.target, s.key || ' ' || p.fields || ' ' || p.ts FROM points AS p "
            "JOIN series AS s ON s.id = p.series WHERE p.id IN (SELECT value FROM json_each(?)) ORDER BY p.id",
            (json.dumps(list(ids)),)).fetchall()

    def ack(self, ids: Sequence[int]) -> None:
        """The server has these points: remove them."""
        if not ids:
            return
        conn = self._conn()
        lo, hi = min(ids), max(ids)
        conn.execute("BEGIN IMMEDIATE")
        try:
            if hi - lo + 1 == len(ids):  # one contiguous run: the usual case
                n = conn.execute("DELETE FROM points WHERE id BETWEEN ? AND ?", (lo, hi)).rowcount
            else:  # one statement, not one per id (see head_batches)
                n = conn.execute("DELETE FROM points WHERE id IN (SELECT value FROM json_each(?))",
                                 (json.dumps(list(ids)),)).rowcount
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self.acked += n
