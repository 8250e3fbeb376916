"""The YAML site's `alarms:` sections, compiled to standard Part 9 alarm instances.

A device has `alarms:` (each naming its `input` variable) and a variable has `alarms:` (its own input).
Each alarm becomes an object of the standard type under its device, with the standard properties
(InputNode, the limits, NormalState, SetpointNode, Severity) and the gateway's (Deadband, OnDelay,
OffDelay, Confirm, NormalValue). A severity is a number 1-1000 or a class name from the site's
`severity_classes` (default Warning 300, Error 600, Critical 900).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

ALARM_KEYS = {"name", "type", "input", "high_high", "high", "low", "low_low", "normal", "normal_node", "setpoint",
              "severity", "deadband", "on_delay", "off_delay", "confirm", "message"}
DEFAULT_SEVERITY_CLASSES = {"Warning": 300, "Error": 600, "Critical": 900}
_TYPES = {  # YAML type -> (type NodeId, what it needs)
    "limit": ("i=9341", "limits"), "nonexclusive": ("i=9906", "limits"),
    "deviation": ("i=9764", "deviation"), "offnormal": ("i=10637", "normal"), "discrete": ("i=10523", "discrete"),
}
_LIMITS = (("high_high", "HighHighLimit"), ("high", "HighLimit"), ("low", "LowLimit"), ("low_low", "LowLowLimit"))
_SUFFIX = {"limit": "Limit", "nonexclusive": "Limit", "deviation": "Deviation", "offnormal": "OffNormal",
           "discrete": "Discrete"}


@dataclass
class Alarm:
    name: str
    device: str
    input: str  # variable name in the device
    type_id: str
    spec: Any
    severity: int
    props: list[tuple[str, str, str, Any]]  # (browse name, DataType, XML value tag, value); ns "2:" = gateway


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def check_alarm(b: Any, spec: Any, device: str, variables: dict[str, Any], input_name: str | None,
                classes: dict[str, int], taken: set[str]) -> Alarm | None:
    """Check one alarm spec (reporting through the builder `b`); the alarm to emit, or None."""
    where = f"{device}.alarms"
    if not b.check_keys(spec, ALARM_KEYS, where, "an alarm"):
        return None
    kind = spec.get("type", "limit")
    if kind not in _TYPES:
        b.problem(spec, where, f"unknown alarm type {kind!r} (known: {', '.join(_TYPES)})", "type")
        return None
    if input_name is None:
        input_name = spec.get("input")
        if not isinstance(input_name, str):
            b.problem(spec, where, "a device alarm needs 'input:', the variable it watches", "input")
            return None
    elif "input" in spec:
        b.problem(spec, where, "an alarm under a variable watches that variable: drop 'input:'", "input")
        return None
    if input_name not in variables:
        b.problem(spec, where, f"input {input_name!r} is not a variable of {device}", "input")
        return None
    name = spec.get("name", f"{input_name}{_SUFFIX[kind]}")
    if not isinstance(name, str) or not name.isidentifier() or name in variables:
        b.problem(spec, where, f"alarm name {name!r} must be letters, digits and _ and differ from the "
                               "device's variables", "name")
        return None
    if name in taken:
        b.problem(spec, where, f"alarm name {name!r} is used twice in {device}", "name")
        return None
    taken.add(name)
    path = f"{device}.{name}"
    ok = True
    severity = spec.get("severity", "Warning")
    if isinstance(severity, str):
        if severity not in classes:
            b.problem(spec, path, f"unknown severity class {severity!r} (known: {', '.join(classes)})", "severity")
            ok = False
        severity = classes.get(severity, 1)
    elif not isinstance(severity, int) or isinstance(severity, bool) or not 1 <= severity <= 1000:
        b.problem(spec, path, f"severity must be 1..1000 or a class name, got {severity!r}", "severity")
        ok = False
    props: list[tuple[str, str, str, Any]] = []
    needs = _TYPES[kind][1]
    if needs in ("limits", "deviation"):
        present = []
        for key, prop in _LIMITS:
            if key in spec:
                if not _number(spec[key]):
                    b.problem(spec, path, f"{key} must be a number, got {spec[key]!r}", key)
                    ok = False
                    continue
                present.append((key, float(spec[key])))
                props.append((prop, "Double", "Double", float(spec[key])))
        if not present and ok:
            b.problem(spec, path, "a limit alarm needs at least one of high_high, high, low, low_low")
            ok = False
        for (hi_key, hi), (lo_key, lo) in itertools.pairwise(present):
            if not hi > lo:
                b.problem(spec, path, f"limits out of order: {hi_key} {hi:g} must be above {lo_key} {lo:g}", lo_key)
                ok = False
        if variables[input_name].get("datatype", "Double") in ("Boolean", "String"):
            b.problem(spec, path, f"input {input_name!r} is not numeric (a limit alarm compares numbers)", "input")
            ok = False
        if needs == "deviation":
            sp = spec.get("setpoint")
            if sp not in variables:
                b.problem(spec, path, f"a deviation alarm needs 'setpoint:', a variable of {device}", "setpoint")
                ok = False
            else:
                props.append(("SetpointNode", "NodeId", "NodeId", f"{device}.{sp}"))
    elif needs == "normal":
        if "normal_node" in spec:
            if spec["normal_node"] not in variables:
                b.problem(spec, path, f"normal_node {spec['normal_node']!r} is not a variable of {device}",
                          "normal_node")
                ok = False
            else:
                props.append(("NormalState", "NodeId", "NodeId", f"{device}.{spec['normal_node']}"))
        elif "normal" in spec:
            props.append(_normal_value(spec["normal"]))
        else:
            b.problem(spec, path, "an off-normal alarm needs 'normal:' (the normal value) or 'normal_node:'")
            ok = False
    elif "normal" in spec:
        props.append(_normal_value(spec["normal"]))
    for key, prop in (("deadband", "Deadband"), ("on_delay", "OnDelay"), ("off_delay", "OffDelay")):
        if key in spec:
            if not _number(spec[key]) or spec[key] < 0:
                b.problem(spec, path, f"{key} must be a number >= 0, got {spec[key]!r}", key)
                ok = False
            else:
                props.append((f"2:{prop}", "Double", "Double", float(spec[key])))
    if "confirm" in spec:
        if not isinstance(spec["confirm"], bool):
            b.problem(spec, path, "confirm must be true or false", "confirm")
            ok = False
        elif spec["confirm"]:
            props.append(("2:Confirm", "Boolean", "Boolean", True))
    if "message" in spec and not b.text(spec, path, "message"):
        ok = False
    if not ok:
        return None
    return Alarm(name, device, input_name, _TYPES[kind][0], spec, int(severity), props)


def _normal_value(value: Any) -> tuple[str, str, str, Any]:
    if isinstance(value, bool):
        return ("2:NormalValue", "Boolean", "Boolean", value)
    if isinstance(value, int):
        return ("2:NormalValue", "Int64", "Int64", value)
    if isinstance(value, float):
        return ("2:NormalValue", "Double", "Double", value)
    return ("2:NormalValue", "String", "String", str(value))


def severity_classes(b: Any, doc: Any) -> dict[str, int]:
    classes = dict(DEFAULT_SEVERITY_CLASSES)
    given = doc.get("severity_classes") if isinstance(doc, dict) else None
    if given is None:
        return classes
    if not isinstance(given, dict):
        b.problem(doc, "severity_classes", "severity_classes must map class names to severities 1..1000",
                  "severity_classes")
        return classes
    for name, value in given.items():
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1000:
            b.problem(given, f"severity_classes.{name}", f"severity must be 1..1000, got {value!r}", name)
        else:
            classes[str(name)] = value
    return classes
