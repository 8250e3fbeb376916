"""Line protocol made by hand for speed agrees with influxdb-client's Point, for any names and values."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from asyncua import ua
from hypothesis import given
from hypothesis import strategies as st
from influxdb_client import Point, WritePrecision

from gateway.events.event import GatewayEvent, base_fields, path
from gateway.influx.alarms import alarm_fields, severity_class
from gateway.influx.lineproto import MAX_TEXT_BYTES, fields, series_key, timestamp_ns

names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=20)
# influxdb-client leaves a tag value ending in a backslash unescaped (a known quirk); such names are rare.
tag_values = names.filter(lambda s: not s.endswith("\\") and s.strip() == s)


@given(measurement=names.filter(lambda s: not s.startswith("#") and s.strip() == s), device=tag_values,
       variable=tag_values, value=st.floats(allow_nan=False, allow_infinity=False),
       status=st.integers(0, 2**32 - 1))
def test_series_and_fields_match_influxdb_client(measurement: str, device: str, variable: str, value: float,
                                                 status: int) -> None:
    ts = 1_767_225_600_123_456_789
    key = series_key(measurement, {"device": device, "variable": variable, "unit": ""})
    point = (Point(measurement).tag("device", device).tag("variable", variable).field("value", value)
             .field("quality", status).time(ts, WritePrecision.NS))
    theirs_fields, theirs_ts = point.to_line_protocol()[len(key) + 1:].split(" ")
    assert point.to_line_protocol().startswith(key + " ")
    assert theirs_ts == str(ts)
    # Point sorts fields by name and may print 0.0 as 0: compare what the server would read.
    assert _parsed(fields(value, status)) == _parsed(theirs_fields)


@given(text=st.text(max_size=200))
def test_strings_match_influxdb_client(text: str) -> None:
    ours = fields(text, 0).removesuffix(",quality=0i")
    theirs = Point("m").field("text", text).field("quality", 0).to_line_protocol().split(" ", 1)[1]
    if any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        assert "\\ud" in ours  # a lone surrogate is written as its escape, not refused
    else:
        assert "quality=0i," + ours == theirs


def _parsed(field_set: str) -> dict[str, float]:
    out = {}
    for item in field_set.split(","):
        k, v = item.split("=")
        out[k] = float(v.removesuffix("i"))
    return out


def test_value_types() -> None:
    assert fields(True, 0) == "value=1.0,quality=0i"
    assert fields(7, 0) == "value=7.0,quality=0i"  # integers as floats: one type per field and measurement
    assert fields(None, 2150891520) == "quality=2150891520i"
    assert fields(math.nan, 0) == fields(math.inf, 0) == fields(-math.inf, 0) == "quality=0i"
    assert fields("x" * (MAX_TEXT_BYTES + 10), 0) == f'text="{"x" * MAX_TEXT_BYTES}",quality=0i'


def test_timestamps_are_nanoseconds_utc() -> None:
    t = datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)
    assert timestamp_ns(t) == 1_767_225_600_123_456_000
    assert timestamp_ns(t.replace(tzinfo=None)) == timestamp_ns(t)
    assert timestamp_ns(t.astimezone(UTC) + timedelta(hours=1)) - timestamp_ns(t) == 3600 * 10**9
    assert series_key("Pump 1", {"site": "A,B", "unit": "", "variable": "x=y"}) == r"Pump\ 1,site=A\,B,variable=x\=y"


@given(message=st.text(max_size=100), severity=st.integers(1, 1000), active=st.booleans(), acked=st.booleans())
def test_alarm_points_match_influxdb_client(message: str, severity: int, active: bool, acked: bool) -> None:
    """An alarm state's fields (alarms.py) read as influxdb-client's Point writes them."""
    event_type = ua.NodeId(ua.ObjectIds.ExclusiveLevelAlarmType)
    f = base_fields(event_type, ua.NodeId(1), "Rack1", message, severity, datetime.now(UTC))
    f.update({path("ActiveState", "Id"): ua.Variant(active), path("AckedState", "Id"): ua.Variant(acked),
              path("Retain"): ua.Variant(active or not acked)})
    event = GatewayEvent(event_type, f, (), condition=ua.NodeId(2))
    ours = alarm_fields(event)
    point = (Point("alarms").field("active", active).field("acked", acked).field("retain", active or not acked)
             .field("severity", severity).field("message", message.encode("utf-8", "backslashreplace")
                                                .decode("utf-8")))
    assert _typed(ours) == _typed(point.to_line_protocol().split(" ", 1)[1])
    assert _typed(ours)["message"] == message.encode("utf-8", "backslashreplace").decode("utf-8")


def _typed(field_set: str) -> dict[str, object]:
    """A field set as the server reads it: quoted strings unescaped, t/true/f/false, 1i, floats."""
    out: dict[str, object] = {}
    i = 0
    while i < len(field_set):
        eq = field_set.index("=", i)
        key, i = field_set[i:eq], eq + 1
        if field_set[i] == '"':
            chars, i = [], i + 1
            while field_set[i] != '"':
                if field_set[i] == "\\" and field_set[i + 1] in '"\\':
                    i += 1
                chars.append(field_set[i])
                i += 1
            out[key], i = "".join(chars), i + 2
            continue
        end = field_set.find(",", i)
        end = len(field_set) if end < 0 else end
        raw, i = field_set[i:end], end + 1
        out[key] = (raw in ("t", "true", "T", "True") if raw.lower() in ("t", "true", "f", "false")
                    else int(raw[:-1]) if raw.endswith("i") else float(raw))
    return out


def test_severity_classes_are_part_9_ranges() -> None:
    assert [severity_class(s) for s in (1, 200, 201, 400, 401, 600, 601, 800, 801, 1000)] == [
        "Low", "Low", "MediumLow", "MediumLow", "Medium", "Medium", "MediumHigh", "MediumHigh", "High", "High"]
