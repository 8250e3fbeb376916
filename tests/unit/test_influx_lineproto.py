"""Line protocol made by hand for speed agrees with influxdb-client's Point, for any names and values."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st
from influxdb_client import Point, WritePrecision

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
