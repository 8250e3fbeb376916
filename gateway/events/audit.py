"""The audit trail: who wrote what, who called what, and what became of it.

Every write and method call, accepted or refused, goes through `AuditTrail.record_write` /
`record_call` with a structured record. The trail writes one INFO line per record on the
`gateway.audit` logger (the record itself rides along as `extra={"audit": record}` for a handler
that wants the fields); the records carry what OPC UA's AuditWriteUpdateEventType and
AuditUpdateMethodEventType need; the event service, added as a sink, emits them as audit events.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from asyncua import ua

from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.security.roles import Role, ServiceRole

log = logging.getLogger("gateway.audit")

_MAX_SHOWN = 200  # characters of a value in a log line; the record keeps the whole value


@dataclass(frozen=True, slots=True)
class Writer:
    """Who changes something: an OPC UA user now; later `control:<mode>` or `facade:<client>`."""

    name: str  # the user name ("anonymous" for an anonymous session) or the internal writer's name
    role: Role | ServiceRole
    reason: str = ""  # why, when a program writes (a control mode's cause); empty for a client's write
    client: str = ""  # where from: the client's address and session, for a person reading the trail


@dataclass(frozen=True, slots=True)
class AuditRecord:
    writer: Writer
    node: ua.NodeId  # the written node, or the object a method was called on (the event's SourceNode)
    status: ua.StatusCode
    time: datetime

    @property
    def accepted(self) -> bool:
        return self.status.is_good()


@dataclass(frozen=True, slots=True)
class WriteRecord(AuditRecord):
    attribute: int = ua.AttributeIds.Value
    old: Any = None
    new: Any = None
    index_range: str = ""


@dataclass(frozen=True, slots=True)
class CallRecord(AuditRecord):
    method: ua.NodeId = field(default_factory=ua.NodeId)
    inputs: list[Any] = field(default_factory=list)
    outputs: list[Any] = field(default_factory=list)


class AuditSink(Protocol):
    def audit(self, record: AuditRecord) -> None: ...


class AuditTrail:
    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self.sinks: list[AuditSink] = []  # the event service, once it runs: audit records as audit events

    def now(self) -> datetime:
        return self.clock.now()

    def record_write(self, record: WriteRecord) -> None:
        log.info("%s write %s %s%s by %s: %s -> %s: %s", _verdict(record), record.node.to_string(),
                 _attribute(record.attribute), f"[{record.index_range}]" if record.index_range else "",
                 _who(record.writer), _shown(record.old), _shown(record.new), _status(record.status),
                 extra={"audit": record})
        self._forward(record)

    def record_call(self, record: CallRecord) -> None:
        log.info("%s call %s on %s by %s: (%s) -> (%s): %s", _verdict(record), record.method.to_string(),
                 record.node.to_string(), _who(record.writer), _shown_list(record.inputs),
                 _shown_list(record.outputs), _status(record.status), extra={"audit": record})
        self._forward(record)

    def _forward(self, record: AuditRecord) -> None:
        for sink in self.sinks:
            try:
                sink.audit(record)
            except Exception:  # the log line above is the record of last resort; a sink's bug must not lose it
                log.exception("forwarding an audit record failed")


def _verdict(record: AuditRecord) -> str:
    return "accepted" if record.accepted else "refused"


def _who(writer: Writer) -> str:
    text = f"{writer.name} ({writer.role.name})"
    if writer.client:
        text += f" from {writer.client}"
    if writer.reason:
        text += f" because {writer.reason!r}"
    return text


def _status(status: ua.StatusCode) -> str:
    return status.name


def _attribute(aid: int) -> str:
    try:
        return ua.AttributeIds(aid).name
    except ValueError:  # a client may send any number
        return f"attribute {aid}"


def _shown(value: Any) -> str:
    # repr, not str: a string value with a line break must not forge a second log line.
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."


def _shown_list(values: list[Any]) -> str:
    return ", ".join(_shown(v) for v in values)
