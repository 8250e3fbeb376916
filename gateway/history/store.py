"""The embedded history store: one SQLite file under the data dir, written off the event loop.

asyncua's HistorySQLite makes a table and a commit per node and runs an unindexed DELETE per
insert (DESIGN.md: 47 s to enable 5k nodes, 1.6 s event-loop stalls). Here every value goes into
one table indexed by (node, time); the event loop only appends to a bounded in-memory queue; a
writer thread commits the queue in batches (WAL mode, one transaction per batch) and applies
retention. Values of common scalar types are stored as native SQLite values, anything else as
OPC UA binary, so every Variant round-trips.

Nodes are keyed by namespace URI, not index ("nsu=urn:site;s=Pump1.Speed"), so history survives
a restart that loads the nodesets in another order.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import sqlite3
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import variant_from_binary, variant_to_binary

from gateway.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BINARY = -1  # vtype of values stored as OPC UA binary
_NATIVE = {
    ua.VariantType.Boolean, ua.VariantType.SByte, ua.VariantType.Byte, ua.VariantType.Int16, ua.VariantType.UInt16,
    ua.VariantType.Int32, ua.VariantType.UInt32, ua.VariantType.Int64, ua.VariantType.Float, ua.VariantType.Double,
    ua.VariantType.String,
}
_CP = struct.Struct("<4sqqqb")  # magic, node id, time, rowid, direction
_CP_MAGIC = b"GWH1"
RETENTION_EVERY_S = 600.0


class ContinuationPointError(ValueError):
    pass


def to_us(t: datetime) -> int:
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
    done: threading.Event


class HistoryStore:
    def __init__(self, path: Path, retention: timedelta | None = timedelta(days=30), clock: Clock = SYSTEM_CLOCK,
                 max_queue: int = 1_000_000, batch_interval: float = 0.2,
                 key_of: Callable[[ua.NodeId], str] | None = None) -> None:
        self.path = Path(path)
        self.retention = retention
        self.clock = clock
        self.max_queue = max_queue
        self.batch_interval = batch_interval
        self.key_of: Callable[[ua.NodeId], str] = key_of or ua.NodeId.to_string
        self.max_values_per_read = 10_000
        self.written = 0
        self.dropped = 0
        self._queue: collections.deque = collections.deque()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._reader: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()
        self._node_ids: dict[str, int] = {}
        self._dropping = False
        self._last_retention = float("-inf")

    @property
    def queued(self) -> int:
        return len(self._queue)

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        writer = self._connect(check_same_thread=False)  # set up here, then used by the writer thread only
        writer.executescript("""
            CREATE TABLE IF NOT EXISTS nodes (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE);
            CREATE TABLE IF NOT EXISTS samples (
                node INTEGER NOT NULL, ts INTEGER NOT NULL, server_ts INTEGER, status INTEGER NOT NULL,
                vtype INTEGER NOT NULL, value);
            CREATE INDEX IF NOT EXISTS samples_node_ts ON samples (node, ts);
        """)
        self._node_ids = dict(writer.execute("SELECT key, id FROM nodes"))
        self._reader = self._connect(check_same_thread=False)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, args=(writer,), name="history-writer", daemon=True)
        self._thread.start()

    def _connect(self, check_same_thread: bool = True) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=check_same_thread, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a power cut loses at most the last batch
        return conn

    async def flush(self, within_s: float = 30.0) -> None:
        """Return when every value appended before this call is committed."""
        if self._thread is None or not self._thread.is_alive():
            return
        marker = _FlushMarker(threading.Event())
        self._queue.append(marker)
        self._wake.set()
        if not await asyncio.to_thread(marker.done.wait, within_s):
            raise TimeoutError(f"history flush did not finish in {within_s} s ({self.queued} values queued)")

    async def stop(self) -> None:
        if self._thread is None:
            return
        await self.flush()
        self._stopping = True
        self._wake.set()
        await asyncio.to_thread(self._thread.join, 30)
        self._thread = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        log.info("history stopped: %d values written, %d dropped", self.written, self.dropped)

    # -- the event loop's side ---------------------------------------------------------------
    def append(self, node_id: ua.NodeId, dv: ua.DataValue) -> None:
        """O(1) and never blocks: the writer thread does the rest."""
        if len(self._queue) >= self.max_queue:
            self.dropped += 1
            if not self._dropping:
                self._dropping = True
                log.error("history queue full (%d values): dropping values until the writer catches up",
                          self.max_queue)
            return
        if self._dropping:
            self._dropping = False
            log.warning("history queue below its limit again; %d values dropped in total", self.dropped)
        self._queue.append((self.key_of(node_id), dv))

    # -- the writer thread -------------------------------------------------------------------
    def _run(self, conn: sqlite3.Connection) -> None:
        try:
            while True:
                self._wake.wait(self.batch_interval)
                self._wake.clear()
                markers = self._write_batch(conn)
                self._apply_retention(conn)
                for m in markers:  # after retention too, so a flush also waits for a requested pass
                    m.done.set()
                if self._stopping and not self._queue:
                    break
        except Exception:
            log.exception("history writer failed; values are no longer stored")
        finally:
            conn.close()

    def _write_batch(self, conn: sqlite3.Connection) -> list[_FlushMarker]:
        rows = []
        markers = []
        queue = self._queue
        while queue:
            item = queue.popleft()
            if isinstance(item, _FlushMarker):
                markers.append(item)
                continue
            key, dv = item
            rows.append(self._row(conn, key, dv))
        if rows:
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO samples (node, ts, server_ts, status, vtype, value) VALUES (?,?,?,?,?,?)",
                             rows)
            conn.execute("COMMIT")
            self.written += len(rows)
        return markers

    def _row(self, conn: sqlite3.Connection, key: str, dv: ua.DataValue) -> tuple:
        node = self._node_ids.get(key)
        if node is None:
            node = conn.execute("INSERT INTO nodes (key) VALUES (?) ON CONFLICT(key) DO UPDATE SET key=key "
                                "RETURNING id", (key,)).fetchone()[0]
            self._node_ids[key] = node
        server_ts = dv.ServerTimestamp
        ts = dv.SourceTimestamp or server_ts or self.clock.now()
        variant = dv.Value
        if variant is None or variant.Value is None:
            vtype, value = int(ua.VariantType.Null), None
        elif variant.VariantType in _NATIVE and not variant.is_array and variant.Dimensions is None:
            vtype, value = int(variant.VariantType), variant.Value
            if vtype == ua.VariantType.Boolean:
                value = int(value)
        else:
            vtype, value = _BINARY, variant_to_binary(variant)
        status = dv.StatusCode.value if dv.StatusCode is not None else 0
        return node, to_us(ts), to_us(server_ts) if server_ts else None, status, vtype, value

    def _apply_retention(self, conn: sqlite3.Connection) -> None:
        if self.retention is None:
            return
        now = self.clock.monotonic()
        if now - self._last_retention < RETENTION_EVERY_S:
            return
        self._last_retention = now
        cutoff = to_us(self.clock.now() - self.retention)
        deleted = conn.execute("DELETE FROM samples WHERE ts < ?", (cutoff,)).rowcount
        if deleted:
            log.info("history retention: deleted %d values older than %s", deleted, from_us(cutoff).isoformat())

    def apply_retention_now(self) -> None:
        """Force a retention pass at the next batch (tests, admin tools)."""
        self._last_retention = float("-inf")
        self._wake.set()

    # -- reads -------------------------------------------------------------------------------
    async def read_raw(self, node: ua.NodeId | str, start: datetime | None, end: datetime | None, max_values: int,
                       continuation: bytes | None = None) -> tuple[list[ua.DataValue], bytes | None]:
        """Raw values as OPC UA Part 11 reads them (see `_query`); returns (values, continuation point)."""
        key = node if isinstance(node, str) else self.key_of(node)
        return await asyncio.to_thread(self._query, key, start, end, max_values, continuation)

    def _query(self, key: str, start: datetime | None, end: datetime | None, max_values: int,
               continuation: bytes | None) -> tuple[list[ua.DataValue], bytes | None]:
        # Part 11, 6.4.3: start < end reads forward [start, end); start > end reads backward
        # (start, end] from start; an open end reads forward from start; an open start reads
        # backward from end; start == end reads values at exactly that time.
        if start is None and end is None:
            raise ValueError("give a start time, an end time, or both")
        backward = (start is None) or (end is not None and start is not None and start > end)
        limit = min(max_values or self.max_values_per_read, self.max_values_per_read)
        assert self._reader is not None, "start() first"
        with self._read_lock:
            row = self._reader.execute("SELECT id FROM nodes WHERE key = ?", (key,)).fetchone()
            if row is None:
                if continuation:
                    raise ContinuationPointError("continuation point for a node without history")
                return [], None
            node = row[0]
            where, args = ["node = ?"], [node]
            if start is not None and end is not None and start == end:
                where.append("ts = ?")
                args.append(to_us(start))
            elif backward:
                if start is not None:
                    where.append("ts <= ?")
                    args.append(to_us(start))
                if end is not None:
                    where.append("ts > ?" if start is not None else "ts <= ?")
                    args.append(to_us(end))
            else:
                where.append("ts >= ?")
                args.append(to_us(start))
                if end is not None:
                    where.append("ts < ?")
                    args.append(to_us(end))
            if continuation:
                cp_node, cp_ts, cp_rowid, cp_dir = _decode_cp(continuation)
                if cp_node != node or cp_dir != int(backward):
                    raise ContinuationPointError("continuation point belongs to another read")
                where.append("(ts, rowid) < (?, ?)" if backward else "(ts, rowid) > (?, ?)")
                args += [cp_ts, cp_rowid]
            order = "DESC" if backward else "ASC"
            rows = self._reader.execute(
                f"SELECT ts, server_ts, status, vtype, value, rowid FROM samples WHERE {' AND '.join(where)} "
                f"ORDER BY ts {order}, rowid {order} LIMIT ?", (*args, limit + 1)).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        values = [_datavalue(r) for r in rows]
        cp = _CP.pack(_CP_MAGIC, node, rows[-1][0], rows[-1][5], int(backward)) if more else None
        return values, cp


def _decode_cp(data: bytes) -> tuple[int, int, int, int]:
    if len(data) != _CP.size:
        raise ContinuationPointError("continuation point has the wrong length")
    magic, node, ts, rowid, direction = _CP.unpack(data)
    if magic != _CP_MAGIC:
        raise ContinuationPointError("not a continuation point of this server")
    return node, ts, rowid, direction


def _datavalue(row: tuple) -> ua.DataValue:
    ts, server_ts, status, vtype, value, _ = row
    if vtype == _BINARY:
        variant = variant_from_binary(Buffer(value))
    elif vtype == ua.VariantType.Null:
        variant = ua.Variant()
    else:
        vt = ua.VariantType(vtype)
        variant = ua.Variant(bool(value) if vt == ua.VariantType.Boolean else value, vt)
    return ua.DataValue(variant, ua.StatusCode(status), SourceTimestamp=from_us(ts),
                        ServerTimestamp=from_us(server_ts) if server_ts is not None else None)
