"""The embedded history store: one SQLite file under the data dir, written off the event loop.

asyncua's HistorySQLite makes a table and a commit per node and runs an unindexed DELETE per
insert (measured on asyncua 2.1.0: 47 s to enable 5k nodes, 1.6 s event-loop stalls). Here every value goes into
one table indexed by (node, time); the event loop only appends to a bounded in-memory queue; a
writer thread with its own connection commits the queue in batches (WAL mode, one transaction per
batch) and applies retention node by node. Each value is stored as its OPC UA binary DataValue
(both timestamps), encoded by the writer thread: a HistoryRead answer is then the stored bytes
joined, not 10,000 DataValue objects built and encoded (the difference between about 40 ms and a
few ms for 10,000 values). Every Variant round-trips; the status is also a column, for SQL use.

Nodes are keyed by namespace URI, not index ("nsu=urn:site;s=Pump1.Speed"), when the gateway passes
`namespace_key`, so history survives a restart that loads the nodesets in another order. Node keys
live in a small `nodes` table and samples carry its integer id: 2 bytes per row instead of a
string, and the (node, ts) index stays compact.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import struct_from_binary, variant_to_binary

from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.events.event import GatewayEvent
from gateway.history import events as event_rows

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BINARY = -1  # vtype of values stored as OPC UA binary
# VariantTypes as plain ints: an enum member looked up on its class costs 0.1-0.2 us, per stored value.
_NULL = int(ua.VariantType.Null)
_BOOLEAN = int(ua.VariantType.Boolean)
_STRING = int(ua.VariantType.String)
_NATIVE = {
    ua.VariantType.Boolean, ua.VariantType.SByte, ua.VariantType.Byte, ua.VariantType.Int16, ua.VariantType.UInt16,
    ua.VariantType.Int32, ua.VariantType.UInt32, ua.VariantType.Int64, ua.VariantType.Float, ua.VariantType.Double,
    ua.VariantType.String,
}
_CP = struct.Struct("<4sqqqb")  # magic, node id, time, rowid, direction
_CP_MAGIC = b"GWH1"
_ROWID_MAX = 2**63 - 1
RETENTION_EVERY_S = 600.0
RETENTION_NODES_PER_STEP = 500  # nodes purged per writer cycle, so batches keep flowing during a pass
# Transactions are bounded: a backlog is written in slices, and after a failed commit (disk full,
# I/O error) the slice shrinks to MIN_ROWS_PER_TRANSACTION, so a little freed space lets writing
# resume at once. (One 50,000-row transaction retried on a full disk never fit into the 1 MB freed
# and writing did not resume at all.)
MAX_ROWS_PER_TRANSACTION = 5_000
MIN_ROWS_PER_TRANSACTION = 100
RETRY_AFTER_S = 1.0  # a failed commit or open is retried after this pause
FAILURE_LOG_EVERY_S = 60.0


class HistoryUnavailable(RuntimeError):
    """The database cannot be opened (disk full, permissions): reads cannot be answered now."""


class ContinuationPointError(ValueError):
    """The continuation point is not one this store issued for this read."""


def to_us(t: datetime) -> int:
    """Microseconds since 1970 (UTC; naive datetimes are taken as UTC, as asyncua decodes them)."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    delta = t - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def namespace_key(namespaces: Sequence[str]) -> Callable[[ua.NodeId], str]:
    """A key function naming nodes by namespace URI (stable across restarts) instead of index."""

    def key(node_id: ua.NodeId) -> str:
        text = node_id.to_string()
        if node_id.NamespaceIndex == 0 or node_id.NamespaceIndex >= len(namespaces):
            return text
        return f"nsu={namespaces[node_id.NamespaceIndex]};{text.split(';', 1)[1]}"

    return key


@dataclass(slots=True)
class _FlushMarker:
    done: threading.Event = field(default_factory=threading.Event)


@dataclass(slots=True)
class _RetentionRequest:
    done: threading.Event = field(default_factory=threading.Event)
    deleted: int = 0


class HistoryStore:
    """Raw history of variables in one SQLite file; see the module docstring.

    `append` is the only method the value path calls; everything else is start-up, shutdown, reads.
    """

    def __init__(self, path: Path, retention: timedelta | None = timedelta(days=30), clock: Clock = SYSTEM_CLOCK,
                 max_queue: int = 1_000_000, batch_interval: float = 0.2,
                 key_of: Callable[[ua.NodeId], str] | None = None) -> None:
        self.path = Path(path)
        self.retention = retention
        self.clock = clock
        self.max_queue = max_queue
        self.batch_interval = batch_interval
        self.key_of: Callable[[ua.NodeId], str] = key_of or ua.NodeId.to_string
        self.max_values_per_read = 10_000  # server cap per HistoryRead page; more comes with a continuation point
        self.retention_every_s = RETENTION_EVERY_S
        # Statistics, written by the writer thread and read anywhere (int updates are atomic under the GIL).
        self.written = 0
        self.events_written = 0
        self.dropped = 0
        self.batches = 0
        self.max_batch_s = 0.0
        self.retention_deleted = 0
        self._queue: collections.deque[Any] = collections.deque()
        self._keys: dict[ua.NodeId, str] = {}
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._reader: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()
        self._node_ids: dict[str, int] = {}
        self._dropping = False
        self._gaps: collections.deque[tuple[str, datetime]] = collections.deque()  # (node, first value lost)
        self._gap_marked: set[str] = set()
        self.last_error = ""  # the last write or open failure, shown on the Gateway diagnostics object
        # Writer-thread state.
        self._writer_conn: sqlite3.Connection | None = None
        self._pending: list[tuple[Any, ...]] = []  # rows whose commit failed, retried first
        self._pending_events: list[event_rows.EventItem] = []
        self._pending_markers: list[_FlushMarker] = []
        self._failing = False
        self._chunk = MAX_ROWS_PER_TRANSACTION
        self._failure_logged = float("-inf")
        self._failure_reported = False
        self._abandon = False  # stop() gave up waiting: write nothing more, count the rest as lost
        self._last_retention = float("-inf")  # so a pass runs right after start
        self._retention_todo: list[int] = []
        self._retention_cutoff = 0
        self._retention_requests: list[_RetentionRequest] = []
        self._retention_waiters: list[_RetentionRequest] = []
        self._retention_pass_deleted = 0
        self._last_source: tuple[datetime | None, int] = (None, 0)  # the last timestamps converted, and to what
        self._last_server: tuple[datetime | None, int] = (None, 0)

    @property
    def queued(self) -> int:
        """Values appended and not yet committed (flush markers included)."""
        return len(self._queue) + len(self._pending) + len(self._pending_events)

    @property
    def state(self) -> str:
        """Stopped, Unavailable (cannot open), Failing (commits fail: values wait in memory), Writing, or Dead."""
        if self._thread is None:
            return "Stopped"
        if not self._thread.is_alive():
            return "Dead"
        if self._writer_conn is None:
            return "Unavailable"
        return "Failing" if self._failing else "Writing"

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Create the directory and the schema, then start the writer thread.

        A database that cannot be opened (full disk, permissions) does not stop the gateway: history
        starts degraded, values wait in the bounded queue, and the writer retries opening it.
        """
        self._stopping = self._abandon = False
        try:
            await asyncio.to_thread(self._open)
        except (sqlite3.Error, OSError) as exc:
            self.last_error = f"cannot open {self.path}: {exc}"
            log.warning("history unavailable (%s); serving live values, retrying every %.0f s",
                        self.last_error, RETRY_AFTER_S)
        self._thread = threading.Thread(target=self._run, name="history-writer", daemon=True)
        self._thread.start()

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        writer = self._connect()
        try:
            self._create_schema(writer)
            reader = self._connect()
        except BaseException:
            writer.close()
            raise
        self._node_ids = dict(writer.execute("SELECT key, id FROM nodes"))
        with self._read_lock:
            self._reader = reader
        self._writer_conn = writer

    def _create_schema(self, writer: sqlite3.Connection) -> None:
        writer.executescript("""
            CREATE TABLE IF NOT EXISTS nodes (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE);
        """)
        columns = {row[1] for row in writer.execute("PRAGMA table_info(samples)")}
        if "vtype" in columns:  # the first format (native value columns): kept aside, not served
            writer.execute("ALTER TABLE samples RENAME TO samples_v1")
            log.warning("history: values of an earlier store format are kept in table samples_v1 of %s and are "
                        "not served", self.path)
        writer.executescript("""
            CREATE TABLE IF NOT EXISTS samples (
                node INTEGER NOT NULL, ts INTEGER NOT NULL, status INTEGER NOT NULL, dv BLOB NOT NULL);
            CREATE INDEX IF NOT EXISTS samples_node_time ON samples (node, ts);
        """)
        writer.executescript(event_rows.SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        # check_same_thread off: connections are opened here and then used by one thread at a time
        # (the writer thread, or a reader under _read_lock).
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a power cut loses at most the last batches
        return conn

    async def flush(self, within_s: float = 30.0) -> None:
        """Return when every value appended before this call is committed."""
        if self._thread is None or not self._thread.is_alive():
            return
        marker = _FlushMarker()
        self._queue.append(marker)
        self._wake.set()
        if not await asyncio.to_thread(marker.done.wait, within_s):
            raise TimeoutError(f"history flush did not finish in {within_s} s ({self.queued} values queued)")

    async def stop(self, within_s: float = 30.0) -> None:
        """Flush, stop the writer thread, close the database; all within `within_s`.

        What cannot be written in time (a full disk, a backlog bigger than the deadline allows) is
        counted in `dropped` and logged, never silently lost.
        """
        if self._thread is None:
            return
        deadline = time.monotonic() + within_s
        if not self._failing and self._writer_conn is not None:
            try:
                await self.flush(within_s * 0.8)
            except TimeoutError:
                pass
        self._stopping = True
        self._wake.set()
        await asyncio.to_thread(self._thread.join, max(0.05, deadline - time.monotonic()))
        if self._thread.is_alive():
            self._abandon = True  # the writer ends after its current transaction and counts the rest
            self._wake.set()
            await asyncio.to_thread(self._thread.join, 1.0)
        if self._thread.is_alive():
            log.error("history writer still busy after the stop deadline; left behind")
        self._thread = None
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
            self._reader = None
        log.info("history stopped: %d values written, %d dropped", self.written, self.dropped)

    # -- the event loop's side ---------------------------------------------------------------
    def append(self, node_id: ua.NodeId, dv: ua.DataValue) -> None:
        """Queue one value for the writer thread. O(1), never blocks, never raises."""
        self.append_keyed(self.key(node_id), dv)

    def key(self, node_id: ua.NodeId) -> str:
        """What the node's values are stored under."""
        key = self._keys.get(node_id)
        if key is None:
            key = self._keys[node_id] = self.key_of(node_id)
        return key

    def append_keyed(self, key: str, dv: ua.DataValue) -> None:
        """`append` of a node whose `key` the caller keeps: the tag table, for every value of every scan
        (looking the key up by NodeId, whose hash is a Python function, was a twentieth of a value's cost)."""
        if len(self._queue) >= self.max_queue:
            self.dropped += 1
            if not self._dropping:
                self._dropping = True
                log.error("history queue full (%d values): dropping values until the writer catches up",
                          self.max_queue)
            if key not in self._gap_marked:
                # The node's history will show where values are missing (a BadDataLost entry at the first
                # one lost) instead of a silent gap that reads as "no data".
                self._gap_marked.add(key)
                self._gaps.append((key, dv.SourceTimestamp or dv.ServerTimestamp or self.clock.now()))
            return
        if self._dropping:
            self._dropping = False
            self._gap_marked.clear()
            log.warning("history queue below its limit again; %d values dropped in total", self.dropped)
        # A value without a server timestamp gets the time it reached the gateway (Part 11 reads return both).
        self._queue.append((key, dv, None if dv.ServerTimestamp is not None else self.clock.now()))

    def append_event(self, event: GatewayEvent) -> None:
        """Queue one event for the writer thread, indexed under each notifier it was reported on."""
        if len(self._queue) >= self.max_queue:
            self.dropped += 1
            return
        keys = []
        for node in event.notifiers:
            key = self._keys.get(node)
            if key is None:
                key = self._keys[node] = self.key_of(node)
            keys.append(key)
        self._queue.append(event_rows.EventItem(event, tuple(keys)))

    # -- the writer thread -------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                busy = len(self._queue) >= self._chunk or bool(self._retention_todo)
                idle = self._failing or self._writer_conn is None
                self._wake.wait(RETRY_AFTER_S if idle else (0 if busy else self.batch_interval))
                self._wake.clear()
                if self._abandon or (self._stopping and (self._failing or self._writer_conn is None)):
                    self._lose_the_rest()
                    break
                conn = self._writer_conn or self._reopen()
                if conn is None:
                    continue
                for m in self._write_batch(conn):
                    m.done.set()
                if not self._failing:
                    self._retention_step(conn)
                if self._stopping and not self._queue and not self._pending and not self._pending_events:
                    break
        except Exception:  # a bug, not an I/O error (those are retried): say so loudly
            self.last_error = "history writer crashed (see the log)"
            log.exception("history writer failed; values are no longer stored")
        finally:
            if self._writer_conn is not None:
                self._writer_conn.close()
                self._writer_conn = None

    def _reopen(self) -> sqlite3.Connection | None:
        try:
            self._open()
        except (sqlite3.Error, OSError) as exc:
            self.last_error = f"cannot open {self.path}: {exc}"
            return None
        log.warning("history: %s opened; writing %d queued values", self.path, self.queued)
        return self._writer_conn

    def _lose_the_rest(self) -> None:
        """At a stop that cannot write any more: count what is left as dropped, and say so."""
        lost = len(self._pending)
        self._pending = []
        while self._queue:
            item = self._queue.popleft()
            if isinstance(item, _FlushMarker):
                item.done.set()
            else:
                lost += 1
        for m in self._pending_markers:
            m.done.set()
        self._pending_markers = []
        if lost:
            self.dropped += lost
            log.error("history: %d values could not be written before the stop and are lost (%s)", lost,
                      self.last_error or "stop deadline")

    def _write_batch(self, conn: sqlite3.Connection) -> list[_FlushMarker]:
        """Commit queued values; returns the flush markers that are now satisfied."""
        rows = self._pending
        markers = self._pending_markers
        events = self._pending_events
        self._pending, self._pending_markers, self._pending_events = [], [], []
        while self._gaps:
            key, at = self._gaps.popleft()
            try:
                rows.append(self._row(conn, key, _lost_marker(at), None))
            except sqlite3.Error as e:
                self._gaps.appendleft((key, at))
                return self._commit_failed(e, rows, markers)
        queue = self._queue
        while queue and len(rows) + len(events) < self._chunk:
            item = queue.popleft()
            if isinstance(item, _FlushMarker):
                markers.append(item)
                continue
            if isinstance(item, event_rows.EventItem):
                events.append(item)
                continue
            try:
                rows.append(self._row(conn, *item))
            except sqlite3.Error as e:  # the nodes table could not grow (disk full): retried with the rows
                queue.appendleft(item)
                if not rows:
                    return self._commit_failed(e, rows, markers)
                break
            except Exception as e:  # a value we cannot encode: drop it, keep the rest
                self.dropped += 1
                log.warning("history: cannot store %r for %s: %s", item[1], item[0], e)
        if not rows and not events:
            return markers
        t0 = time.perf_counter()
        try:
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO samples (node, ts, status, dv) VALUES (?,?,?,?)", rows[:self._chunk])
            for item in events:
                event_rows.insert(conn, item, lambda key: self._node_id(conn, key), to_us(item.event.time))
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._pending_events = events
            return self._commit_failed(e, rows, markers)
        except Exception as e:  # an event we cannot encode: the values go, the events are counted and dropped
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            log.warning("history: cannot store %d event(s): %s", len(events), e)
            self.dropped += len(events)
            self._pending, self._pending_markers = rows, markers
            return []
        self.events_written += len(events)
        done, self._pending = rows[:self._chunk], rows[self._chunk:]
        if self._pending:  # a shrunken slice: the rest waits, with the flush markers, for the next one
            self._pending_markers = markers
            markers = []
        if self._failing:
            if self._failure_reported:
                log.warning("history: writing works again (%d values waiting)", self.queued)
            self._failing = False
            self.last_error = ""
        self._chunk = min(MAX_ROWS_PER_TRANSACTION, self._chunk * 2)
        elapsed = time.perf_counter() - t0
        self.max_batch_s = max(self.max_batch_s, elapsed)
        self.batches += 1
        self.written += sum(1 for row in done if row[2] != _DATA_LOST)  # gap markers are not values
        return markers

    def _commit_failed(self, e: sqlite3.Error, rows: list[tuple[Any, ...]], markers: list[_FlushMarker]
                       ) -> list[_FlushMarker]:
        self.last_error = f"writing failed: {e}"
        if not self._failing:
            # A new failure, said once a minute at most (a disk that refills at once would flood the log),
            # and its recovery said only when the failure was.
            self._failure_reported = time.monotonic() - self._failure_logged >= FAILURE_LOG_EVERY_S
            if self._failure_reported:
                self._failure_logged = time.monotonic()
                log.error("history: writing %d values failed (%s); values wait in memory (at most %d) and "
                          "writing is retried every %.0f s", len(rows), e, self.max_queue, RETRY_AFTER_S)
        self._failing = True
        # Retry with a small slice: it fits as soon as a little space is free again.
        self._chunk = MIN_ROWS_PER_TRANSACTION
        self._pending, self._pending_markers = rows, markers
        return []

    def _node_id(self, conn: sqlite3.Connection, key: str) -> int:
        node = self._node_ids.get(key)
        if node is None:
            node = conn.execute("INSERT INTO nodes (key) VALUES (?) ON CONFLICT(key) DO UPDATE SET key=key "
                                "RETURNING id", (key,)).fetchone()[0]
            self._node_ids[key] = node
        return node

    def _row(self, conn: sqlite3.Connection, key: str, dv: ua.DataValue, arrived: datetime | None) -> tuple[Any, ...]:
        node = self._node_id(conn, key)
        server_ts = dv.ServerTimestamp or arrived
        ts = dv.SourceTimestamp or server_ts
        variant = dv.Value
        if variant is None or (variant.Value is None and variant.VariantType == _NULL):
            vtype, value = _NULL, None
        elif (variant.VariantType in _NATIVE and variant.Value is not None and not variant.is_array
              and variant.Dimensions is None):
            vtype, value = int(variant.VariantType), variant.Value
            if vtype == _BOOLEAN:
                value = int(value)
        else:
            vtype, value = _BINARY, variant_to_binary(variant)
        status = dv.StatusCode.value if dv.StatusCode is not None else 0
        # The values of one scan share their timestamps (one server time per scan, one source time per read):
        # each is converted once, not once per value.
        last = self._last_source
        if ts is last[0]:
            ts_us = last[1]
        else:
            ts_us = to_us(ts)
            self._last_source = (ts, ts_us)
        last = self._last_server
        if server_ts is last[0]:
            server_us = last[1]
        else:
            server_us = to_us(server_ts)
            self._last_server = (server_ts, server_us)
        return node, ts_us, status, _encode_datavalue(vtype, value, status, ts_us, server_us)

    def _retention_step(self, conn: sqlite3.Connection) -> None:
        """Delete values older than now - retention, a slice of nodes per call (index (node, ts) is used)."""
        if not self._retention_todo:
            due = self.clock.monotonic() - self._last_retention >= self.retention_every_s
            if self._retention_requests or (due and self.retention is not None):
                self._last_retention = self.clock.monotonic()
                self._retention_waiters, self._retention_requests = self._retention_requests, []
                self._retention_pass_deleted = 0
                if self.retention is not None:
                    self._retention_cutoff = to_us(self.clock.now() - self.retention)
                    self._retention_todo = [r[0] for r in conn.execute("SELECT id FROM nodes")]
                    try:
                        conn.execute("BEGIN")
                        self._retention_pass_deleted += event_rows.delete_before(conn, self._retention_cutoff)
                        conn.execute("COMMIT")
                    except sqlite3.Error as e:
                        if conn.in_transaction:
                            conn.execute("ROLLBACK")
                        log.error("history retention of events failed (%s); retried at the next pass", e)
            if not self._retention_todo:
                self._finish_retention()
                return
        step, self._retention_todo = (self._retention_todo[:RETENTION_NODES_PER_STEP],
                                      self._retention_todo[RETENTION_NODES_PER_STEP:])
        try:
            conn.execute("BEGIN")
            for node in step:
                self._retention_pass_deleted += conn.execute(
                    "DELETE FROM samples WHERE node = ? AND ts < ?", (node, self._retention_cutoff)).rowcount
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            log.error("history retention failed (%s); retried at the next pass", e)
            self._retention_todo = []
        if not self._retention_todo:
            self._finish_retention()

    def _finish_retention(self) -> None:
        deleted, self._retention_pass_deleted = self._retention_pass_deleted, 0
        self.retention_deleted += deleted
        if deleted:
            log.info("history retention: deleted %d values older than %s", deleted,
                     from_us(self._retention_cutoff).isoformat())
        for req in self._retention_waiters:
            req.deleted = deleted
            req.done.set()
        self._retention_waiters = []

    async def apply_retention(self, within_s: float = 60.0) -> int:
        """Run a retention pass now (tests, admin tools) and return how many values it deleted."""
        if self._thread is None or not self._thread.is_alive():
            return 0
        req = _RetentionRequest()
        self._retention_requests.append(req)
        self._wake.set()
        if not await asyncio.to_thread(req.done.wait, within_s):
            raise TimeoutError(f"history retention did not finish in {within_s} s")
        return req.deleted

    # -- reads -------------------------------------------------------------------------------
    async def read_raw(self, node_id: ua.NodeId | str, start: datetime | None, end: datetime | None,
                       max_values: int, continuation: bytes | None = None,
                       return_bounds: bool = False) -> tuple[list[ua.DataValue], bytes | None]:
        """Raw values as OPC UA Part 11 (6.4.3) reads them; returns (values, continuation point or None).

        start < end reads forward [start, end); start > end reads backward (end, start]; an open end
        reads forward from start and an open start backward from end (both need max_values);
        start == end reads the values stamped exactly then. max_values 0 means all, capped at
        `max_values_per_read` per call, the rest following with continuation points. With
        return_bounds the nearest value at or outside each given boundary is included, or a value
        with BadBoundNotFound stamped at the boundary when there is none.
        Raises ContinuationPointError for a continuation point this store did not issue for this read.
        """
        key = self._key(node_id, start, end)
        keyed, cp = await asyncio.to_thread(self._query, key, start, end, max_values, continuation, return_bounds)
        return [_bound_not_found(k) if isinstance(k, int) else _datavalue(k) for k in keyed], cp

    async def read_raw_encoded(self, node_id: ua.NodeId | str, start: datetime | None, end: datetime | None,
                               max_values: int, continuation: bytes | None = None, return_bounds: bool = False,
                               timestamps: ua.TimestampsToReturn = ua.TimestampsToReturn.Both,
                               ) -> tuple[int, bytes, bytes | None]:
        """`read_raw`, answered as the OPC UA binary body of a HistoryData: (count, body, continuation point).

        The query and the encoding both run in a worker thread, so a HistoryRead of 10,000 values costs
        the event loop only the sending; without it asyncua would build 10,000 DataValue objects and
        encode them on the loop. `timestamps` leaves out the timestamps a client did not ask for.
        """
        key = self._key(node_id, start, end)

        def work() -> tuple[int, bytes, bytes | None]:
            keyed, cp = self._query(key, start, end, max_values, continuation, return_bounds)
            return len(keyed), _encode_history_data(keyed, timestamps), cp

        return await asyncio.to_thread(work)

    async def read_events(self, notifier: ua.NodeId, start: datetime | None, end: datetime | None, max_events: int,
                          continuation: bytes | None, keep: Callable[[GatewayEvent], bool]
                          ) -> tuple[list[GatewayEvent], bytes | None]:
        """Events reported on `notifier`, in the order and range raw reads use (see `read_raw`)."""
        key = self._key(notifier, start, end)
        backward = start is None or (end is not None and start > end)
        begin, finish = (end, None) if start is None else (start, end)
        assert begin is not None
        limit = min(max_events or self.max_values_per_read, self.max_values_per_read)

        def work() -> tuple[list[GatewayEvent], bytes | None]:
            with self._read_lock:
                reader = self._reader
                if reader is None:
                    raise HistoryUnavailable(self.last_error or "history store is not started")
                row = reader.execute("SELECT id FROM nodes WHERE key = ?", (key,)).fetchone()
                reader.execute("BEGIN")
                try:
                    return event_rows.query(reader, row[0] if row else None, to_us(begin),
                                            to_us(finish) if finish is not None else None, backward, limit,
                                            continuation, keep)
                finally:
                    reader.execute("COMMIT")

        return await asyncio.to_thread(work)

    def _key(self, node_id: ua.NodeId | str, start: datetime | None, end: datetime | None) -> str:
        if start is None and end is None:
            raise ValueError("give a start time, an end time, or both")
        if isinstance(node_id, str):
            return node_id
        return self._keys.get(node_id) or self.key_of(node_id)

    def _query(self, key: str, start: datetime | None, end: datetime | None, max_values: int,
               continuation: bytes | None, return_bounds: bool) -> tuple[list[Any], bytes | None]:
        """Values in read order, each the stored DataValue bytes or, for a bound not found, its time (us);
        and the next continuation point."""
        backward = start is None or (end is not None and start > end)
        # The read runs from `begin` towards `finish` (None: open).
        begin, finish = (end, None) if start is None else (start, end)
        assert begin is not None
        limit = min(max_values or self.max_values_per_read, self.max_values_per_read)
        with self._read_lock:
            reader = self._reader
            if reader is None:
                raise HistoryUnavailable(self.last_error or "history store is not started")
            row = reader.execute("SELECT id FROM nodes WHERE key = ?", (key,)).fetchone()
            if row is None:
                if continuation:
                    raise ContinuationPointError("continuation point for a node without history")
                node = -1  # no values; bounds may still be reported as not found
            else:
                node = row[0]
            cp = None
            if continuation:
                cp_node, cp_ts, cp_rowid, cp_dir = _decode_cp(continuation)
                if cp_node != node or cp_dir != int(backward):
                    raise ContinuationPointError("continuation point belongs to another read")
                cp = (cp_ts, cp_rowid)
            reader.execute("BEGIN")  # one snapshot for every select of this read
            try:
                where, args, dummies = self._where(reader, node, begin, finish, backward, return_bounds, cp)
                order = "DESC" if backward else "ASC"
                tail = f"FROM samples WHERE {where} ORDER BY ts {order}, rowid {order}"
                if dummies:
                    keyed = reader.execute(f"SELECT ts, rowid, dv {tail} LIMIT ?", (*args, limit + 1)).fetchall()
                    # Bound-not-found placeholders sit before or after every row in read order.
                    keyed += [d for d in dummies if cp is None or (d[:2] < cp if backward else d[:2] > cp)]
                    keyed.sort(key=lambda k: (k[0], k[1]), reverse=backward)
                    more = len(keyed) > limit
                    keyed = keyed[:limit]
                    items: list[Any] = [k[2] if k[2] is not None else k[0] for k in keyed]
                    last = keyed[-1][:2] if more else None
                else:
                    # The common read: only the stored bytes, and the position of the last one when more follow.
                    items = [r[0] for r in reader.execute(f"SELECT dv {tail} LIMIT ?", (*args, limit + 1))]
                    more = len(items) > limit
                    del items[limit:]
                    last = reader.execute(f"SELECT ts, rowid {tail} LIMIT 1 OFFSET ?",
                                          (*args, limit - 1)).fetchone() if more else None
            finally:
                reader.execute("COMMIT")
        next_cp = _CP.pack(_CP_MAGIC, node, last[0], last[1], int(backward)) if last is not None else None
        return items, next_cp

    @staticmethod
    def _where(reader: sqlite3.Connection, node: int, begin: datetime, finish: datetime | None, backward: bool,
               bounds: bool, cp: tuple[int, int] | None) -> tuple[str, list[Any], list[Any]]:
        """The WHERE clause and its arguments of a read, and the bound-not-found placeholders it needs."""
        b_us = to_us(begin)
        f_us = to_us(finish) if finish is not None else None
        dummies: list[Any] = []
        where, args = ["node = ?"], [node]
        if f_us is not None and f_us == b_us:
            where.append("ts = ?")  # Part 11: equal times return the values at exactly that time
            args.append(b_us)
        else:
            lo_op, hi_op = (">", "<=") if backward else (">=", "<")
            lo, hi = (f_us, b_us) if backward else (b_us, f_us)
            if bounds:
                # The bound at each boundary: the value there, else the nearest one outside the range.
                first, last = ("MIN", "MAX") if backward else ("MAX", "MIN")
                cmp_b, cmp_f = (">=", "<=") if backward else ("<=", ">=")
                found_b = reader.execute(f"SELECT {first}(ts) FROM samples WHERE node = ? AND ts {cmp_b} ?",
                                         (node, b_us)).fetchone()[0]
                if found_b is None:
                    dummies.append((b_us, _ROWID_MAX if backward else -1, None))
                elif backward:
                    hi = found_b
                else:
                    lo = found_b
                if f_us is not None:
                    found_f = reader.execute(f"SELECT {last}(ts) FROM samples WHERE node = ? AND ts {cmp_f} ?",
                                             (node, f_us)).fetchone()[0]
                    if found_f is None:
                        dummies.append((f_us, -1 if backward else _ROWID_MAX, None))
                    elif backward:
                        lo, lo_op = found_f, ">="
                    else:
                        hi, hi_op = found_f, "<="
            if lo is not None:
                where.append(f"ts {lo_op} ?")
                args.append(lo)
            if hi is not None:
                where.append(f"ts {hi_op} ?")
                args.append(hi)
        if cp is not None:
            where.append("(ts, rowid) < (?, ?)" if backward else "(ts, rowid) > (?, ?)")
            args += list(cp)
        return " AND ".join(where), args, dummies


_DATA_LOST = ua.StatusCodes.BadDataLost


def _lost_marker(at: datetime) -> ua.DataValue:
    return ua.DataValue(ua.Variant(), ua.StatusCode(ua.StatusCodes.BadDataLost), SourceTimestamp=at,
                        ServerTimestamp=at)


def _decode_cp(data: bytes) -> tuple[int, int, int, int]:
    if len(data) != _CP.size:
        raise ContinuationPointError("continuation point has the wrong length")
    magic, node, ts, rowid, direction = _CP.unpack(data)
    if magic != _CP_MAGIC:
        raise ContinuationPointError("not a continuation point of this server")
    return node, ts, rowid, direction


def _datavalue(stored: bytes) -> ua.DataValue:
    return struct_from_binary(ua.DataValue, Buffer(stored))


def _bound_not_found(us: int) -> ua.DataValue:
    t = from_us(us)
    return ua.DataValue(ua.Variant(), ua.StatusCode(ua.StatusCodes.BadBoundNotFound), SourceTimestamp=t,
                        ServerTimestamp=t)


# -- OPC UA binary encoding of HistoryData, straight from rows (Part 6, 5.2.2.17 DataValue) ---------
_TICKS_1970 = 116_444_736_000_000_000  # 100 ns ticks from 1601-01-01 to 1970-01-01
_PACK = {vt: struct.Struct("<B" + fmt) for vt, fmt in {
    ua.VariantType.Boolean: "?", ua.VariantType.SByte: "b", ua.VariantType.Byte: "B", ua.VariantType.Int16: "h",
    ua.VariantType.UInt16: "H", ua.VariantType.Int32: "i", ua.VariantType.UInt32: "I", ua.VariantType.Int64: "q",
    ua.VariantType.Float: "f", ua.VariantType.Double: "d"}.items()}
_STRING_HEAD = struct.Struct("<Bi")
_I32 = struct.Struct("<i")
_STATUS = struct.Struct("<I")
_TICKS = struct.Struct("<q")
_HAS_VALUE, _HAS_STATUS, _HAS_SOURCE, _HAS_SERVER = 0x01, 0x02, 0x04, 0x08


# A whole DataValue of a fixed-size type in one pack: mask, variant type, value, status, both timestamps
# (the same bytes as its parts joined; one call instead of five per stored value, in the writer thread).
_PACK_DATAVALUE = {vt: struct.Struct("<B" + packer.format[1:] + "Iqq") for vt, packer in _PACK.items()}
_ALL_FIELDS = _HAS_VALUE | _HAS_STATUS | _HAS_SOURCE | _HAS_SERVER


def _variant_bytes(vtype: int, value: Any) -> bytes:
    if vtype == _BINARY:
        return bytes(value)
    if vtype == _NULL:
        return b"\x00"
    if vtype == _STRING:
        data = value.encode("utf-8")
        return _STRING_HEAD.pack(vtype, len(data)) + data
    return _PACK[vtype].pack(vtype, value)  # an int finds its VariantType: IntEnum hashes and compares as int


def _encode_datavalue(vtype: int, value: Any, status: int, ts_us: int, server_us: int) -> bytes:
    """One DataValue with value, status and both timestamps, as OPC UA binary (what the store keeps)."""
    whole = _PACK_DATAVALUE.get(vtype)
    if whole is not None:
        return whole.pack(_ALL_FIELDS, vtype, value, status, ts_us * 10 + _TICKS_1970, server_us * 10 + _TICKS_1970)
    return b"".join((bytes((_ALL_FIELDS,)), _variant_bytes(vtype, value), _STATUS.pack(status),
                     _TICKS.pack(ts_us * 10 + _TICKS_1970), _TICKS.pack(server_us * 10 + _TICKS_1970)))


def _encode_history_data(keyed: list[Any], timestamps: ua.TimestampsToReturn) -> bytes:
    """The body of a HistoryData ExtensionObject: Int32 count, then each DataValue.

    Byte for byte what asyncua's struct_to_binary makes of the same DataValues (a unit test checks it).
    Stored DataValues end with the source and the server timestamp; a client that asked for one
    of them gets the other cut out and its mask bit cleared.
    """
    blobs = [_encode_datavalue(ua.VariantType.Null, None, ua.StatusCodes.BadBoundNotFound, k, k)
             if isinstance(k, int) else k for k in keyed]
    if timestamps == ua.TimestampsToReturn.Source:
        blobs = [bytes((b[0] & ~_HAS_SERVER,)) + b[1:-8] for b in blobs]
    elif timestamps == ua.TimestampsToReturn.Server:
        blobs = [bytes((b[0] & ~_HAS_SOURCE,)) + b[1:-16] + b[-8:] for b in blobs]
    return _I32.pack(len(blobs)) + b"".join(blobs)
