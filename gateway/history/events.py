"""Events in the history store: how an event is kept (one row, its fields as OPC UA binary, and one index
row per notifier it was reported on) and how HistoryReadEvents pages through them.

An event's fields are stored by browse path with their Variants in OPC UA binary, so a read applies the
same event filter as a live subscription. NodeIds inside events keep their namespace index: the site's
nodesets load in RequiredModel order, so the indexes are the same after a restart of the same site.
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import variant_from_binary, variant_to_binary

from gateway.events.event import EVENT_TYPE, GatewayEvent, Path, SharedVariant

_MAGIC = b"GE2"  # each field's Variant preceded by its length, so a read decodes only the fields it uses
_MAGIC_WHOLE = b"GE1"  # rows written before that: decoded whole
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_CP = struct.Struct("<4sqqqb")  # magic, notifier, time, event id, direction
_CP_MAGIC = b"GWE1"
_CONDITION = ""  # the path under which the ConditionId is kept

SCHEMA = """
    CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, body BLOB NOT NULL);
    CREATE INDEX IF NOT EXISTS events_time ON events (ts);
    CREATE TABLE IF NOT EXISTS event_notifiers (
        notifier INTEGER NOT NULL, ts INTEGER NOT NULL, event INTEGER NOT NULL);
    CREATE INDEX IF NOT EXISTS event_notifiers_time ON event_notifiers (notifier, ts, event);
"""


class EventContinuationError(ValueError):
    pass


@dataclass(slots=True)
class EventItem:
    """A queued event: what the writer thread stores."""

    event: GatewayEvent
    notifier_keys: tuple[str, ...]


def _path_text(p: Path) -> str:
    return "/".join(f"{ns}:{name}" for ns, name in p)


def _text_path(text: str) -> Path:
    return tuple((int(ns), name) for ns, name in (part.split(":", 1) for part in text.split("/")))


_PATHS: dict[bytes, Path] = {}  # a stored field name -> its path; an event type has a few dozen fields
_PATHS_CACHED = 10_000


def _stored_path(name: bytes) -> Path:
    p = _PATHS.get(name)
    if p is None:
        p = _text_path(name.decode())
        if len(_PATHS) < _PATHS_CACHED:
            _PATHS[name] = p
    return p


# The encoding of each field's path, kept by the writer thread (a few dozen paths).
_PATH_BYTES: dict[Path, bytes] = {}


def _variant_bytes(variant: ua.Variant) -> bytes:
    return variant.encoded if isinstance(variant, SharedVariant) else variant_to_binary(variant)


def encode(event: GatewayEvent) -> bytes:
    parts = [_MAGIC, _U16.pack(len(event.fields) + (event.condition is not None))]
    for p, variant in event.fields.items():
        name = _PATH_BYTES.get(p)
        if name is None:
            name = _PATH_BYTES[p] = _path_text(p).encode()
        data = _variant_bytes(variant)
        parts += [_U16.pack(len(name)), name, _U32.pack(len(data)), data]
    if event.condition is not None:
        data = variant_to_binary(ua.Variant(event.condition, ua.VariantType.NodeId))
        parts += [_U16.pack(0), _U32.pack(len(data)), data]
    return b"".join(parts)


class StoredFields(Mapping[Path, ua.Variant]):
    """A stored event's fields, each decoded from OPC UA binary the first time it is asked for.

    A read uses a handful of an event's fields (its select clauses, its where clause); an alarm's event
    has about 40. Decoding them all took most of the time of HistoryReadEvents: 1.2 ms an event, 12 s
    for 10,000 (tests/benchmarks/bench_alarms.py).
    """

    __slots__ = ("_body", "_decoded", "_spans")

    def __init__(self, body: bytes, spans: dict[Path, tuple[int, int]]) -> None:
        self._body = body
        self._spans = spans  # path -> (offset, length) of its Variant in body
        self._decoded: dict[Path, ua.Variant] = {}

    def __getitem__(self, p: Path) -> ua.Variant:
        variant = self._decoded.get(p)
        if variant is None:
            start, size = self._spans[p]
            variant = self._decoded[p] = variant_from_binary(Buffer(self._body, start, size))
        return variant

    def __iter__(self) -> Iterator[Path]:
        return iter(self._spans)

    def __len__(self) -> int:
        return len(self._spans)


def decode(body: bytes) -> GatewayEvent:
    if body[:3] == _MAGIC_WHOLE:
        return _decode_whole(body)
    if body[:3] != _MAGIC:
        raise ValueError("not a stored event")
    (count,) = _U16.unpack_from(body, 3)
    pos = 5
    spans: dict[Path, tuple[int, int]] = {}
    condition = None
    for _ in range(count):
        (n,) = _U16.unpack_from(body, pos)
        name = body[pos + 2:pos + 2 + n]
        pos += 2 + n
        (size,) = _U32.unpack_from(body, pos)
        pos += 4
        if pos + size > len(body):
            raise ValueError("stored event is cut short")
        if n:
            spans[_stored_path(name)] = (pos, size)
        else:
            condition = variant_from_binary(Buffer(body, pos, size)).Value
        pos += size
    fields = StoredFields(body, spans)
    return GatewayEvent(fields[EVENT_TYPE].Value, fields, (), condition=condition)


def _decode_whole(body: bytes) -> GatewayEvent:
    buf = Buffer(body[3:])
    (count,) = _U16.unpack(buf.read(2))
    fields: dict[Path, ua.Variant] = {}
    condition = None
    for _ in range(count):
        (n,) = _U16.unpack(buf.read(2))
        name = bytes(buf.read(n)).decode() if n else _CONDITION
        variant = variant_from_binary(buf)
        if name == _CONDITION:
            condition = variant.Value
        else:
            fields[_text_path(name)] = variant
    return GatewayEvent(fields[EVENT_TYPE].Value, fields, (), condition=condition)


def insert(conn: sqlite3.Connection, item: EventItem, notifier_id: Callable[[str], int], ts_us: int) -> None:
    """Store one event (inside the writer's transaction)."""
    cur = conn.execute("INSERT INTO events (ts, body) VALUES (?, ?)", (ts_us, encode(item.event)))
    event = cur.lastrowid
    conn.executemany("INSERT INTO event_notifiers (notifier, ts, event) VALUES (?, ?, ?)",
                     [(notifier_id(k), ts_us, event) for k in item.notifier_keys])


def delete_before(conn: sqlite3.Connection, cutoff_us: int) -> int:
    conn.execute("DELETE FROM event_notifiers WHERE ts < ?", (cutoff_us,))
    return conn.execute("DELETE FROM events WHERE ts < ?", (cutoff_us,)).rowcount


def query(reader: sqlite3.Connection, notifier: int | None, begin_us: int, finish_us: int | None, backward: bool,
          limit: int, continuation: bytes | None, keep: Callable[[GatewayEvent], bool],
          page: int = 1000) -> tuple[list[GatewayEvent], bytes | None]:
    """Events on a notifier in read order that `keep` accepts, at most `limit`; and the next continuation point.

    Forward reads [begin, finish), backward reads (finish, begin] (finish None: open). Rows are read a
    page at a time, so a selective filter over a long range does not load the range at once. A
    continuation point is returned when more rows follow the last event returned.
    """
    if notifier is None:
        if continuation:
            raise EventContinuationError("continuation point for a node without event history")
        return [], None
    pos: tuple[int, int] | None = None
    if continuation:
        if len(continuation) != _CP.size:
            raise EventContinuationError("not a continuation point of this server")
        magic, cp_notifier, ts, event, direction = _CP.unpack(continuation)
        if magic != _CP_MAGIC or cp_notifier != notifier or direction != int(backward):
            raise EventContinuationError("continuation point belongs to another read")
        pos = (ts, event)
    order = "DESC" if backward else "ASC"

    def after(position: tuple[int, int] | None) -> tuple[str, list[Any]]:
        where, args = ["n.notifier = ?"], [notifier]
        if backward:
            where.append("n.ts <= ?")
            args.append(begin_us)
            if finish_us is not None:
                where.append("n.ts > ?")
                args.append(finish_us)
        else:
            where.append("n.ts >= ?")
            args.append(begin_us)
            if finish_us is not None:
                where.append("n.ts < ?")
                args.append(finish_us)
        if position is not None:
            op = "<" if backward else ">"
            where.append(f"(n.ts {op} ? OR (n.ts = ? AND n.event {op} ?))")
            args += [position[0], position[0], position[1]]
        return " AND ".join(where), args

    out: list[GatewayEvent] = []
    while True:
        where, args = after(pos)
        rows = reader.execute(
            f"SELECT n.ts, n.event, e.body FROM event_notifiers n JOIN events e ON e.id = n.event "
            f"WHERE {where} ORDER BY n.ts {order}, n.event {order} LIMIT ?", (*args, page)).fetchall()
        for ts, event_id, body in rows:
            pos = (ts, event_id)
            event = decode(body)
            if keep(event):
                out.append(event)
                if len(out) >= limit:
                    where, args = after(pos)
                    more = reader.execute(f"SELECT 1 FROM event_notifiers n WHERE {where} LIMIT 1", args).fetchone()
                    return out, _CP.pack(_CP_MAGIC, notifier, ts, event_id, int(backward)) if more else None
        if len(rows) < page:
            return out, None
