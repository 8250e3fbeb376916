"""Whether an alarm's input is in alarm: limit, deviation and off-normal rules with hysteresis.

Pure functions of the value and the present state, so a table of cases tests them. A limit is crossed
when the value goes beyond it (above a high limit, below a low limit); an active limit clears only once
the value is back inside by the deadband, so a value dithering on the limit raises one alarm, not many.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gateway.alarms.config import AlarmConfig

_HIGH = (("HighHigh", "HighHighLimit"), ("High", "HighLimit"))
_LOW = (("LowLow", "LowLowLimit"), ("Low", "LowLimit"))
_IMPLIED = {"HighHigh": ("High",), "LowLow": ("Low",)}
_INTERNED: dict[frozenset[str], frozenset[str]] = {}


def states(names: Iterable[str] = ()) -> frozenset[str]:
    """One shared frozenset per combination of limit states (at most 16): a condition keeps its states
    for its lifetime, and 10,000 conditions each keeping a set of their own were 10,000 more objects for
    every full garbage collection to walk."""
    fs = frozenset(names)
    return _INTERNED.setdefault(fs, fs)


def limit_states(cfg: AlarmConfig, value: float, active: frozenset[str]) -> frozenset[str]:
    """Every limit state the value is in (non-exclusive), keeping an active one until past its deadband."""
    db = cfg.deadband
    out = set()
    for state, key in _HIGH:
        limit = cfg.limits.get(key)
        if limit is not None and (value > limit or (state in active and value > limit - db)):
            out.add(state)
    for state, key in _LOW:
        limit = cfg.limits.get(key)
        if limit is not None and (value < limit or (state in active and value < limit + db)):
            out.add(state)
    return states(out)


def exclusive_state(cfg: AlarmConfig, value: float, current: str | None) -> str | None:
    """The one most severe limit state (HighHigh over High, LowLow over Low), or None.

    The same rule as `limit_states` (beyond the high-high limit the value is beyond the high limit too,
    so both hold their deadband), without building sets: it runs on every change of every limit alarm.
    """
    limits, db = cfg.limits, cfg.deadband
    high = current in ("HighHigh", "High")
    low = current in ("LowLow", "Low")
    for state, key, held in (("HighHigh", "HighHighLimit", current == "HighHigh"), ("High", "HighLimit", high)):
        limit = limits.get(key)
        if limit is not None and (value > limit or (held and value > limit - db)):
            return state
    for state, key, held in (("LowLow", "LowLowLimit", current == "LowLow"), ("Low", "LowLimit", low)):
        limit = limits.get(key)
        if limit is not None and (value < limit or (held and value < limit + db)):
            return state
    return None


def off_normal(cfg: AlarmConfig, value: Any, normal: Any) -> bool:
    if cfg.active_value is not None:
        return bool(value == cfg.active_value)
    return bool(value != normal)


def describe_limit(state: str, cfg: AlarmConfig) -> tuple[str, float]:
    """('above high limit', 55.0) for a limit state."""
    key = f"{state}Limit"
    words = {"HighHigh": "above high-high limit", "High": "above high limit",
             "Low": "below low limit", "LowLow": "below low-low limit"}[state]
    return words, cfg.limits[key]
