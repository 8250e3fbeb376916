"""Events in the history store: how an event is kept (one row, its fields as OPC UA binary, and one index
row per notifier it was reported on) and how HistoryReadEvents pages through them.

An event's fields are stored by browse path with their Variants in OPC UA binary, so a read applies the
same event filter as a live subscription. NodeIds inside events keep their namespace index: the site's
nodesets load in RequiredModel order, so the indexes are the same after a restart of the same site.
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import variant_from_binary, variant_to_binary

from gateway.events.event import EVENT_TYPE, TIME, GatewayEvent, Path

_MAGIC = b"GE1"
_U16 = struct.Struct("<H")
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


def encode(event: GatewayEvent) -> bytes:
    parts = [_MAGIC, _U16.pack(len(event.fields) + (event.condition is not None))]
    for p, variant in event.fields.items():
        name = _path_text(p).encode()
        parts += [_U16.pack(len(name)), name, variant_to_binary(variant)]
    if event.condition is not None:
        parts += [_U16.pack(0), variant_to_binary(ua.Variant(event.condition, ua.VariantType.NodeId))]
    return b"".join(parts)


def decode(body: bytes) -> GatewayEvent:
    if body[:3] != _MAGIC:
        raise ValueError("not a stored event")
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


def event_time_us(event: GatewayEvent, to_us: Callable[[Any], int]) -> int:
    return to_us(event.fields[TIME].Value)
