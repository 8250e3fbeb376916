"""An event as the gateway emits it: its type, its fields by browse path, and where it is reported.

Fields are keyed by browse path (a tuple of qualified names) as clients select them, so a select
clause is one dictionary look-up whatever the event's type. A condition event also carries its
ConditionId (the condition's node), which a select clause asks for with an empty browse path.
"""

from __future__ import annotations

import functools
import itertools
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asyncua import ua
from asyncua.ua.ua_binary import variant_to_binary

Path = tuple[tuple[int, str], ...]


@functools.cache  # a few dozen distinct paths, asked for on every event
def path(*names: str, ns: int = 0) -> Path:
    """The browse path of a standard field: path("ActiveState", "Id")."""
    return tuple((ns, n) for n in names)


def path_of(browse_path: list[ua.QualifiedName] | None) -> Path:
    return tuple((q.NamespaceIndex, q.Name) for q in browse_path or ())


EVENT_ID = path("EventId")
EVENT_TYPE = path("EventType")
SOURCE_NODE = path("SourceNode")
SOURCE_NAME = path("SourceName")
TIME = path("Time")
RECEIVE_TIME = path("ReceiveTime")
MESSAGE = path("Message")
SEVERITY = path("Severity")

_prefix = os.urandom(8)
_counter = itertools.count(1)


def new_event_id() -> bytes:
    """Unique across restarts: a random per-process prefix and a counter (16 bytes)."""
    return _prefix + next(_counter).to_bytes(8, "big")


class SharedVariant(ua.Variant):
    """A Variant built once and put into many events (a condition's name, a state text, True). Nobody
    mutates it, so it carries its OPC UA binary encoding for the history writer. (A cache beside it was
    a tuple per Variant: 70,000 objects for 10,000 alarms, walked by every full garbage collection.)"""

    __slots__ = ("encoded",)

    def __init__(self, value: Any, vtype: ua.VariantType) -> None:
        super().__init__(value, vtype)
        self.encoded = variant_to_binary(self)


def shared(value: Any, vtype: ua.VariantType) -> SharedVariant:
    return SharedVariant(value, vtype)


@dataclass(slots=True)
class GatewayEvent:
    event_type: ua.NodeId
    fields: dict[Path, ua.Variant]
    notifiers: tuple[ua.NodeId, ...]  # the source's notifier chain up to the Server object
    condition: ua.NodeId | None = None  # the ConditionId of a condition's event

    @property
    def event_id(self) -> bytes:
        return self.fields[EVENT_ID].Value

    @property
    def time(self) -> datetime:
        return self.fields[TIME].Value

    def value(self, p: Path) -> Any:
        v = self.fields.get(p)
        return v.Value if v is not None else None


def base_fields(event_type: ua.NodeId, source: ua.NodeId, source_name: str, message: str, severity: int,
                time: datetime, receive_time: datetime | None = None,
                event_id: bytes | None = None) -> dict[Path, ua.Variant]:
    return {
        EVENT_ID: ua.Variant(event_id or new_event_id(), ua.VariantType.ByteString),
        EVENT_TYPE: ua.Variant(event_type, ua.VariantType.NodeId),
        SOURCE_NODE: ua.Variant(source, ua.VariantType.NodeId),
        SOURCE_NAME: ua.Variant(source_name, ua.VariantType.String),
        TIME: ua.Variant(time, ua.VariantType.DateTime),
        RECEIVE_TIME: ua.Variant(receive_time or time, ua.VariantType.DateTime),
        MESSAGE: ua.Variant(ua.LocalizedText(message), ua.VariantType.LocalizedText),
        SEVERITY: ua.Variant(severity, ua.VariantType.UInt16),
    }
