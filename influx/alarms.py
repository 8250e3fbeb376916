"""Alarm states as series: every event of a condition (raised, cleared, acknowledged, confirmed, shelved,
a quality change) becomes one point of the measurement `alarms`.

Tags: `site`, `source` (the alarm's SourceName: the device, or the gateway part for its own alarms),
`condition` (ConditionName), `type` (the event type's browse name, e.g. ExclusiveLevelAlarmType) and
`severity_class` (the band of OPC UA Part 9's severity ranges the condition's severity falls in).
Fields: `active`, `acked`, `retain` (booleans), `confirmed` (only for conditions that are confirmed),
`severity` (integer) and `message` (string). The point's time is the event's Time. Alarm states go to
the default scan class's bucket or retention policy: they are few and trended over the longest time.
"""

from __future__ import annotations

from asyncua import ua
from asyncua.server.address_space import AddressSpace

from gateway.events.event import MESSAGE, SEVERITY, SOURCE_NAME, GatewayEvent, path
from gateway.influx.config import InfluxConfig
from gateway.influx.lineproto import series_key, text_field

MEASUREMENT = "alarms"
TAGS = ("site", "source", "condition", "type", "severity_class")
FIELDS = ("active", "acked", "confirmed", "retain", "severity", "message")
_CONDITION_NAME = path("ConditionName")
_ACTIVE = path("ActiveState", "Id")
_ACKED = path("AckedState", "Id")
_CONFIRMED = path("ConfirmedState", "Id")
_RETAIN = path("Retain")
# OPC UA Part 9, severity ranges (1-1000) and the names it gives them.
_SEVERITY_CLASSES = ((801, "High"), (601, "MediumHigh"), (401, "Medium"), (201, "MediumLow"), (0, "Low"))


def severity_class(severity: int) -> str:
    return next(name for floor, name in _SEVERITY_CLASSES if severity >= floor)


class AlarmSeries:
    """Condition -> (target, escaped series key), made at its first event; a point's fields from its event."""

    def __init__(self, config: InfluxConfig, site: str, aspace: AddressSpace) -> None:
        self.site = site
        self.aspace = aspace
        self.target = config.target_for(config.default_scan_class).name
        self._keys: dict[tuple[ua.NodeId, int], str] = {}
        self._type_names: dict[ua.NodeId, str] = {}

    def key(self, event: GatewayEvent) -> str | None:
        """The series of a condition's event, or None for an event that is not a condition's."""
        if event.condition is None:
            return None
        severity = event.value(SEVERITY) or 0
        try:
            return self._keys[(event.condition, severity)]
        except KeyError:
            key = self._keys[(event.condition, severity)] = series_key(MEASUREMENT, self.tags(event))
            return key

    def tags(self, event: GatewayEvent) -> dict[str, str]:
        severity = event.value(SEVERITY) or 0
        return {"site": self.site, "source": event.value(SOURCE_NAME) or "",
                "condition": event.value(_CONDITION_NAME) or "", "type": self.type_name(event.event_type),
                "severity_class": severity_class(severity)}

    def type_name(self, type_id: ua.NodeId) -> str:
        name = self._type_names.get(type_id)
        if name is None:
            nd = self.aspace.get(type_id)
            av = nd.attributes.get(ua.AttributeIds.BrowseName) if nd is not None else None
            name = av.value.Value.Value.Name if av is not None else type_id.to_string()
            self._type_names[type_id] = name
        return name


def alarm_fields(event: GatewayEvent) -> str:
    """The field set of an alarm point (rendered by the spooler thread; the event is never changed)."""
    flag = {True: "true", False: "false"}
    parts = [f"active={flag[bool(event.value(_ACTIVE))]}", f"acked={flag[bool(event.value(_ACKED))]}"]
    if _CONFIRMED in event.fields:
        parts.append(f"confirmed={flag[bool(event.value(_CONFIRMED))]}")
    parts.append(f"retain={flag[bool(event.value(_RETAIN))]}")
    parts.append(f"severity={int(event.value(SEVERITY) or 0)}i")
    message = event.value(MESSAGE)
    text = message.Text if isinstance(message, ua.LocalizedText) else message
    parts.append(f"message={text_field(text or '')}")
    return ",".join(parts)
