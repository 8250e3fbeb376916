"""Arbitration of one setpoint, as tables: constraints in -> target, bounds, dropped conflicts out."""

from __future__ import annotations

import math

import pytest

from gateway.control.arbitration import Constraint, arbitrate


def c(op: str, value: float, priority: int, source: str = "") -> Constraint:
    return Constraint("p", op, value, priority, source or f"c{priority}")


CASES = [
    # constraints, present output, target, low, high, dropped sources
    ([], 5.0, None, -math.inf, math.inf, []),
    ([c("=", 30, 100)], None, 30.0, -math.inf, math.inf, []),
    # a higher bound holds; the dropped target is brought inside it
    ([c("<=", 20, 800), c("=", 30, 100)], 0.0, 20.0, -math.inf, 20, ["c100"]),
    ([c("<=", 20, 800), c(">=", -10, 800), c("=", 15, 100)], None, 15.0, -10, 20, []),
    # safety = 0 beats a limit that conflicts (low/high: the kept <= / >= only)
    ([c("=", 0, 1000), c("<=", -5, 800)], None, 0.0, -math.inf, math.inf, ["c800"]),
    ([c("=", 10, 100, "a"), c("=", 20, 100, "b")], None, 10.0, -math.inf, math.inf, ["b"]),  # equal: first kept
    ([c("<=", 20, 800)], 35.0, 20.0, -math.inf, 20, []),  # bounds only: the present output kept inside them
    ([c(">=", -20, 800), c("<=", 20, 800)], 5.0, 5.0, -20, 20, []),
    ([c(">=", 10, 500), c("<=", 5, 100)], None, 10.0, 10, math.inf, ["c100"]),
]


@pytest.mark.parametrize(("constraints", "present", "target", "low", "high", "dropped"), CASES)
def test_arbitration_table(constraints, present, target, low, high, dropped) -> None:
    d = arbitrate("p", constraints, present)
    assert d.target == target
    assert (d.low, d.high) == (low, high)
    assert [x.source for x, _bound in d.dropped] == dropped


def test_dropped_conflict_names_the_bound_it_broke() -> None:
    d = arbitrate("p", [c("<=", 20, 800, "ChargeLimiter"), c("=", 30, 100, "PeakShaving")], None)
    dropped, bound = d.dropped[0]
    assert dropped.source == "PeakShaving" and bound is not None and bound.source == "ChargeLimiter"
    assert d.target == 20.0 and d.decided_by == "PeakShaving"


def test_a_constraint_must_be_finite_and_known() -> None:
    with pytest.raises(ValueError, match="finite"):
        Constraint("p", "=", math.nan, 1, "x")
    with pytest.raises(ValueError, match="operator"):
        Constraint("p", "<", 1.0, 1, "x")
