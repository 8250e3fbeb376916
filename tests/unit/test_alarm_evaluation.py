"""Alarm rules as tables: value sequences in, active state and limit state out."""

from __future__ import annotations

import pytest
from asyncua import ua

from gateway.alarms.config import AlarmConfig
from gateway.alarms.evaluate import exclusive_state, limit_states, off_normal


def _cfg(kind: str = "exclusive", deadband: float = 0.0, **limits: float) -> AlarmConfig:
    return AlarmConfig(ua.NodeId("a", 1), "A", ua.NodeId(ua.ObjectIds.ExclusiveLimitAlarmType), kind,
                       ua.NodeId("d", 1), "Dev", ua.NodeId("v", 1), "V", "°C", limits=limits, deadband=deadband)


@pytest.mark.parametrize(("values", "states"), [
    # deadband 2 on the way down
    ([50, 56, 61, 59, 57.5, 54, 52.9], [None, "High", "HighHigh", "HighHigh", "High", "High", None]),
    ([56, 53.5, 53], ["High", "High", None]),
    ([10, 4, -1, 1.5, 3, 12, 13.5], ["Low", "Low", "LowLow", "LowLow", "Low", "Low", None]),
])
def test_exclusive_limits_with_deadband(values, states) -> None:
    cfg = _cfg(deadband=2.0, HighHighLimit=60, HighLimit=55, LowLimit=5, LowLowLimit=0)
    cfg.limits["LowLimit"] = 11.0  # 10 is below it
    current = None
    got = []
    for v in values:
        current = exclusive_state(cfg, v, current)
        got.append(current)
    assert got == states


def test_non_exclusive_reports_every_limit_crossed() -> None:
    cfg = _cfg("nonexclusive", HighHighLimit=60, HighLimit=55)
    assert limit_states(cfg, 61, frozenset()) == {"HighHigh", "High"}
    assert limit_states(cfg, 57, frozenset({"HighHigh", "High"})) == {"High"}
    assert limit_states(cfg, 55, frozenset({"High"})) == set()  # no deadband: back at the limit clears


def test_off_normal_and_an_active_value() -> None:
    cfg = _cfg("offnormal")
    assert off_normal(cfg, 1, 0) and not off_normal(cfg, 0, 0)
    cfg.active_value = "Disconnected"
    assert off_normal(cfg, "Disconnected", None) and not off_normal(cfg, "Connecting", None)
