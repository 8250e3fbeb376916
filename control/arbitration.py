"""Arbitration of one setpoint: constraints with priorities instead of last-write-wins.

Constraints are taken in priority order (highest first; equal priorities in the order they were added).
`<=` and `>=` narrow the bounds, `=` pins both; a constraint that cannot hold inside the bounds left by
the ones before it is dropped, so higher-priority bounds always hold. The target is the highest-priority
`=` kept; when every `=` was dropped, the highest-priority one brought inside the bounds (the nearest
the controller can get, its conflict still reported); with bounds only, the present output is kept
inside them; with no constraint at all the setpoint is left alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

OPERATORS = ("=", "<=", ">=")


@dataclass(frozen=True, slots=True)
class Constraint:
    setpoint: str
    op: str
    value: float
    priority: int
    source: str  # the controller that asked
    reason: str = ""

    def __post_init__(self) -> None:
        if self.op not in OPERATORS:
            raise ValueError(f"constraint operator must be one of {', '.join(OPERATORS)}, not {self.op!r}")
        if not math.isfinite(self.value):
            raise ValueError(f"{self.source}: constraint on {self.setpoint} is not a finite number: {self.value!r}")

    def __str__(self) -> str:
        return f"{self.source} {self.op} {self.value:g} (priority {self.priority})"


@dataclass(slots=True)
class Decision:
    setpoint: str
    target: float | None  # None: nobody constrains it, leave it alone
    low: float = -math.inf
    high: float = math.inf
    decided_by: str = ""  # the controller whose constraint set the target (or the bound that held it)
    kept: list[Constraint] = field(default_factory=list)
    dropped: list[tuple[Constraint, Constraint | None]] = field(default_factory=list)  # (dropped, the bound it broke)


def arbitrate(setpoint: str, constraints: list[Constraint], present: float | None) -> Decision:
    """Decide one setpoint from its constraints; `present` is its output now (kept when only bounded).

    The decision's `low`/`high` are the kept `<=`/`>=` bounds only (what the ramped output is clamped
    into); an `=` also pins the bounds for the constraints below it, so they cannot override it.
    """
    ordered = sorted(constraints, key=lambda c: -c.priority)  # sorted() is stable: equal priorities keep order
    low, high = -math.inf, math.inf  # pinned by `=` too: what a lower constraint must fit in
    low_by: Constraint | None = None
    high_by: Constraint | None = None
    target: Constraint | None = None
    decision = Decision(setpoint, None)
    for c in ordered:
        if c.op == "<=":
            if c.value < low:
                decision.dropped.append((c, low_by))
                continue
            if c.value < high:
                high, high_by = c.value, c
            decision.high = min(decision.high, c.value)
        elif c.op == ">=":
            if c.value > high:
                decision.dropped.append((c, high_by))
                continue
            if c.value > low:
                low, low_by = c.value, c
            decision.low = max(decision.low, c.value)
        else:
            if not low <= c.value <= high:
                decision.dropped.append((c, low_by if c.value < low else high_by))
                continue
            low, high, low_by, high_by = c.value, c.value, c, c
            if target is None:
                target = c
        decision.kept.append(c)
    if target is not None:
        decision.target, decision.decided_by = target.value, target.source
    elif any(c.op == "=" for c, _ in decision.dropped):
        wanted = next(c for c, _ in decision.dropped if c.op == "=")
        decision.target, decision.decided_by = min(max(wanted.value, low), high), wanted.source
    elif decision.kept:
        base = present if present is not None else 0.0
        decision.target = min(max(base, low), high)
        decision.decided_by = (low_by.source if low_by is not None and base < low else
                               high_by.source if high_by is not None and base > high else "")
    return decision


def drop_key(dropped: Constraint, bound: Constraint | None) -> tuple[str, str, str, str]:
    """What identifies a conflict whatever the values: reported again only when this changes."""
    return dropped.setpoint, dropped.source, dropped.op, bound.source if bound is not None else ""


def describe_drop(dropped: Constraint, bound: Constraint | None) -> str:
    against = f" against {bound}" if bound is not None else ""
    return f"{dropped.setpoint}: dropped {dropped}{against}"
