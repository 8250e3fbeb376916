"""One interlock: a condition on a few inputs, latched when it trips.

Kinds (the `kind:` of an interlock in the site's `control:` section), each with its inputs and limits:

- estop: `signal` (Boolean); trips while it equals `active` (default true).
- over_temperature: `signal` > `limit`.
- over_current: |`signal`| > `limit`.
- low_cell_voltage: `signal` < `limit`.
- cell_imbalance: `max` - `min` > `limit` (or a single `signal` > `limit`).
- fault_code: `signal` not in `allowed` (default [0]).
- comm_loss: any input Bad or stale (the rule every interlock applies to its inputs, here on its own).
- grid_loss: `frequency` outside [`f_min`, `f_max`] or `voltage` outside [`v_min`, `v_max`], unless
  `island_allowed` (then a backup mode handles the grid loss and this interlock never trips).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from asyncua import ua

from gateway.control.image import ProcessImage

log = logging.getLogger(__name__)

DEFAULT_SEVERITY = 900  # Part 9 severity 1..1000 of the alarm a trip raises


@dataclass
class InterlockSpec:
    name: str
    kind: str
    inputs: dict[str, ua.NodeId]  # role inside the interlock ("signal", "max", ...) -> node
    params: dict[str, Any] = field(default_factory=dict)
    severity: int = DEFAULT_SEVERITY


Condition = Callable[[Mapping[str, Any], Mapping[str, Any]], str]  # (values, params) -> cause or ""


def _number(p: Mapping[str, Any], key: str) -> float:
    return float(p[key])


def _estop(v: Mapping[str, Any], p: Mapping[str, Any]) -> str:
    active = bool(p.get("active", True))
    return "emergency stop pressed" if bool(v["signal"]) == active else ""


def _over_temperature(v: Mapping[str, Any], p: Mapping[str, Any]) -> str:
    t, limit = float(v["signal"]), _number(p, "limit")
    return f"temperature {t:g} above {limit:g}" if t > limit else ""


def _over_current(v: Mapping[str, Any], p: Mapping[str, Any]) -> str:
    i, limit = float(v["signal"]), _number(p, "limit")
    return f"current {i:g} beyond +/-{limit:g}" if abs(i) > limit else ""


def _low_cell_voltage(v: Mapping[str, Any], p: Mapping[str, Any]) -> str:
    u, limit = float(v["signal"]), _number(p, "limit")
    return f"cell voltage {u:g} below {limit:g}" if u < limit else ""


def _cell_imbalance(v: Mapping[str, Any], p: Mapping[str, Any]) -> str:
    spread = float(v["max"]) - float(v["min"]) if "max" in v else float(v["signal"])
    limit = _number(p, "limit")
    return f"cell imbalance {spread:g} above {limit:g}" if spread > limit else ""


def _fault_code(v: Mapping[str, Any], p: Mapping[str, Any]) -> str:
    code = v["signal"]
    allowed = p.get("allowed", [0])
    return f"fault code {code}" if code not in allowed else ""


def _comm_loss(v: Mapping[str, Any], p: Mapping[str, Any]) -> str:
    return ""  # every interlock trips on a Bad or stale input; this one has no other condition


def _grid_loss(v: Mapping[str, Any], p: Mapping[str, Any]) -> str:
    if p.get("island_allowed", False):
        return ""
    if "frequency" in v:
        f = float(v["frequency"])
        if not float(p.get("f_min", 47.5)) <= f <= float(p.get("f_max", 51.5)):
            return f"grid frequency {f:g} Hz outside {p.get('f_min', 47.5)}..{p.get('f_max', 51.5)} Hz"
    if "voltage" in v:
        u = float(v["voltage"])
        if not float(p.get("v_min", 0.0)) <= u <= float(p.get("v_max", 1e12)):
            return f"grid voltage {u:g} V outside {p.get('v_min', 0.0)}..{p.get('v_max', 'any')} V"
    return ""


# kind -> (condition, input roles required, parameters required)
KINDS: dict[str, tuple[Condition, tuple[str, ...], tuple[str, ...]]] = {
    "estop": (_estop, ("signal",), ()),
    "over_temperature": (_over_temperature, ("signal",), ("limit",)),
    "over_current": (_over_current, ("signal",), ("limit",)),
    "low_cell_voltage": (_low_cell_voltage, ("signal",), ("limit",)),
    "cell_imbalance": (_cell_imbalance, (), ("limit",)),
    "fault_code": (_fault_code, ("signal",), ()),
    "comm_loss": (_comm_loss, (), ()),
    "grid_loss": (_grid_loss, (), ()),
}


def spec_problems(spec: InterlockSpec) -> list[str]:
    """What is wrong with an interlock's configuration (empty when nothing)."""
    if spec.kind not in KINDS:
        return [f"unknown interlock kind {spec.kind!r} (known: {', '.join(KINDS)})"]
    _cond, roles, params = KINDS[spec.kind]
    problems = [f"needs input '{r}'" for r in roles if r not in spec.inputs]
    problems += [f"needs parameter '{p}'" for p in params if p not in spec.params]
    if spec.kind == "cell_imbalance" and not ({"max", "min"} <= spec.inputs.keys() or "signal" in spec.inputs):
        problems.append("needs inputs 'max' and 'min', or 'signal' (the spread itself)")
    if spec.kind == "grid_loss" and not ({"frequency", "voltage"} & spec.inputs.keys()):
        problems.append("needs input 'frequency' or 'voltage'")
    if not spec.inputs:
        problems.append("needs at least one input")
    if not 1 <= spec.severity <= 1000:
        problems.append(f"severity must be 1..1000, got {spec.severity}")
    return problems


class Interlock:
    def __init__(self, spec: InterlockSpec, max_age: float) -> None:
        self.spec = spec
        self.name = spec.name
        self.max_age = max_age
        self.condition = KINDS[spec.kind][0]
        self.tripped = False
        self.cause = ""  # why it tripped (kept while latched)
        self.trips = 0

    @property
    def nodes(self) -> list[ua.NodeId]:
        return list(self.spec.inputs.values())

    def present_cause(self, image: ProcessImage) -> str:
        """Why it would trip now ("" when healthy): a Bad or stale input, or the condition."""
        values: dict[str, Any] = {}
        for role, node in self.spec.inputs.items():
            inp = image.get(node)
            why = inp.why_not(self.max_age)
            if why:
                return f"{role} {why}"
            values[role] = inp.value
        try:
            return self.condition(values, self.spec.params)
        except (TypeError, ValueError) as exc:  # a value of the wrong kind cannot show the plant is safe
            return f"cannot evaluate: {exc}"

    def evaluate(self, image: ProcessImage) -> bool:
        """Check now; returns True when this call tripped it (a latched interlock stays tripped)."""
        if self.tripped:
            return False
        cause = self.present_cause(image)
        if not cause:
            return False
        self.tripped, self.cause = True, cause
        self.trips += 1
        log.error("interlock %s tripped: %s", self.name, cause)
        return True

    def reset(self, image: ProcessImage) -> str:
        """Unlatch if the cause is gone; returns why not ("" when reset or not tripped)."""
        if not self.tripped:
            return ""
        cause = self.present_cause(image)
        if cause:
            return f"interlock {self.name} cannot be reset: {cause}"
        self.tripped, self.cause = False, ""
        return ""


def make_interlock(spec: InterlockSpec, max_age: float) -> Interlock:
    problems = spec_problems(spec)
    if problems:
        raise ValueError(f"interlock {spec.name}: {'; '.join(problems)}")
    return Interlock(spec, max_age)
