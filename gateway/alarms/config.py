"""Alarm declarations: Part 9 instances in the site, read into what the evaluator needs.

A site declares an alarm as an object of a standard type (ExclusiveLimitAlarmType,
NonExclusiveLimitAlarmType, their Level/Deviation subtypes, OffNormalAlarmType, DiscreteAlarmType and
subtypes) with the standard properties InputNode, the limits, NormalState, SetpointNode and Severity,
plus optional properties in the gateway's namespace: Deadband (hysteresis, in the input's unit),
OnDelay and OffDelay (seconds), Confirm (Boolean: the alarm has a ConfirmedState). An alarm that has a
ConfirmedState child needs confirming too. The alarm's source is the node it is a component of.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from asyncua import ua
from asyncua.server.address_space import AddressSpace

from gateway.bindings import SiteView
from gateway.nodeset.loader import LoadedSite
from gateway.nodeset.model import Problem

ALARM_CONDITION = ua.NodeId(ua.ObjectIds.AlarmConditionType)
EXCLUSIVE_LIMIT = ua.NodeId(ua.ObjectIds.ExclusiveLimitAlarmType)
NON_EXCLUSIVE_LIMIT = ua.NodeId(ua.ObjectIds.NonExclusiveLimitAlarmType)
OFF_NORMAL = ua.NodeId(ua.ObjectIds.OffNormalAlarmType)
DISCRETE = ua.NodeId(ua.ObjectIds.DiscreteAlarmType)
EXCLUSIVE_DEVIATION = ua.NodeId(ua.ObjectIds.ExclusiveDeviationAlarmType)
NON_EXCLUSIVE_DEVIATION = ua.NodeId(ua.ObjectIds.NonExclusiveDeviationAlarmType)
LIMIT_NAMES = ("HighHighLimit", "HighLimit", "LowLimit", "LowLowLimit")
_HAS_COMPONENT = ua.NodeId(ua.ObjectIds.HasComponent)
_HAS_CONDITION = ua.NodeId(ua.ObjectIds.HasCondition)
_NUMERIC_TYPES = {ua.NodeId(i) for i in (ua.ObjectIds.SByte, ua.ObjectIds.Byte, ua.ObjectIds.Int16,
                                          ua.ObjectIds.UInt16, ua.ObjectIds.Int32, ua.ObjectIds.UInt32,
                                          ua.ObjectIds.Int64, ua.ObjectIds.UInt64, ua.ObjectIds.Float,
                                          ua.ObjectIds.Double, ua.ObjectIds.Number)}


@dataclass(slots=True)
class AlarmConfig:
    nodeid: ua.NodeId
    name: str  # the alarm's BrowseName
    type_id: ua.NodeId
    kind: str  # "exclusive" | "nonexclusive" | "offnormal" (OffNormal and Discrete: active away from normal)
    source: ua.NodeId
    source_name: str
    input: ua.NodeId
    input_name: str
    unit: str = ""
    severity: int = 500
    limits: dict[str, float] = field(default_factory=dict)  # HighHighLimit ... LowLowLimit present
    normal_state: ua.NodeId | None = None  # OffNormal: the variable holding the normal value
    normal_value: Any = None  # OffNormal without NormalState node: the constant normal value
    active_value: Any = None  # an alarm active while the input equals this (the gateway's own system alarms)
    texts: tuple[str, str] = ("", "")  # a system alarm's messages when active and when back to normal
    setpoint: ua.NodeId | None = None  # Deviation: limits are relative to this variable
    deadband: float = 0.0
    on_delay: float = 0.0
    off_delay: float = 0.0
    confirm: bool = False
    message: str = ""  # the alarm's Description, used as the message prefix when the site gives one


def read_alarms(aspace: AddressSpace, site: LoadedSite, gw_ns: int) -> tuple[list[AlarmConfig], list[Problem]]:
    view = SiteView(aspace, gw_ns)
    alarms: list[AlarmConfig] = []
    problems: list[Problem] = []

    def problem(nid: ua.NodeId, message: str) -> None:
        path, line, written = site.origins.get(nid, ("<gateway>", 0, nid.to_string()))
        problems.append(Problem(path, line or None, written, message))

    for nid in site.new_nodes:
        if view.nodeclass(nid) != ua.NodeClass.Object or view.is_declaration(nid):
            continue
        chain = view.supertypes(view.typedef(nid))
        if ALARM_CONDITION not in chain:
            continue
        cfg = _read_one(view, nid, chain, problem)
        if cfg is not None:
            alarms.append(cfg)
    return alarms, problems


def _props(view: SiteView, nid: ua.NodeId) -> dict[tuple[int, str], Any]:
    out: dict[tuple[int, str], Any] = {}
    for r in view.children(nid):
        if view.nodeclass(r.NodeId) == ua.NodeClass.Variable:
            out[(r.BrowseName.NamespaceIndex, r.BrowseName.Name)] = view.attr(r.NodeId, ua.AttributeIds.Value)
    return out


def _has_child(view: SiteView, nid: ua.NodeId, name: str) -> bool:
    return any(r.BrowseName.Name == name and r.BrowseName.NamespaceIndex == 0 for r in view.children(nid))


def _kind(chain: list[ua.NodeId]) -> str | None:
    if EXCLUSIVE_LIMIT in chain:
        return "exclusive"
    if NON_EXCLUSIVE_LIMIT in chain:
        return "nonexclusive"
    if OFF_NORMAL in chain or DISCRETE in chain:
        return "offnormal"
    return None


def _source(view: SiteView, nid: ua.NodeId) -> ua.NodeId | None:
    for r in view.refs(nid):
        if not r.IsForward and r.ReferenceTypeId in (_HAS_COMPONENT, _HAS_CONDITION):
            return r.NodeId
    return None


def display_path(view: SiteView, nid: ua.NodeId) -> str:
    """Device/Variable style name of a node: its browse names below the first object under Objects."""
    names = []
    current: ua.NodeId | None = nid
    objects = ua.NodeId(ua.ObjectIds.ObjectsFolder)
    while current is not None and current != objects and len(names) < 16:
        names.append(view.name(current))
        parent = next((r.NodeId for r in view.refs(current)
                       if not r.IsForward and r.ReferenceTypeId in _PARENT_REFS), None)
        if parent == objects:
            names.pop()  # the site root itself is not part of a device's name
            if not names:
                names.append(view.name(current))
            break
        current = parent
    return "/".join(reversed(names))


_PARENT_REFS = {ua.NodeId(ua.ObjectIds.HasComponent), ua.NodeId(ua.ObjectIds.Organizes),
                ua.NodeId(ua.ObjectIds.HasOrderedComponent), ua.NodeId(ua.ObjectIds.HasProperty)}


def _unit(view: SiteView, var: ua.NodeId) -> str:
    for r in view.children(var):
        if r.BrowseName.Name == "EngineeringUnits":
            eu = view.attr(r.NodeId, ua.AttributeIds.Value)
            text = getattr(getattr(eu, "DisplayName", None), "Text", None)
            return text or ""
    return ""


def _read_one(view: SiteView, nid: ua.NodeId, chain: list[ua.NodeId], problem: Any) -> AlarmConfig | None:
    kind = _kind(chain)
    name = view.name(nid)
    if kind is None:
        problem(nid, f"alarm type {chain[0].to_string()} is not one the gateway evaluates (limit, deviation, "
                     "off-normal or discrete alarms)")
        return None
    props = _props(view, nid)
    std = {n: v for (ns, n), v in props.items() if ns == 0}
    gw = {n: v for (ns, n), v in props.items() if ns == view.gw_ns}
    input_id = std.get("InputNode")
    if not isinstance(input_id, ua.NodeId) or input_id.is_null():
        problem(nid, "alarm has no InputNode (the variable it watches)")
        return None
    if view.nodeclass(input_id) != ua.NodeClass.Variable:
        problem(nid, f"InputNode {input_id.to_string()} is not a variable of the site")
        return None
    source = _source(view, nid)
    if source is None:
        problem(nid, "alarm is not a component of any node (its source)")
        return None
    datatype = view.attr(input_id, ua.AttributeIds.DataType)
    numeric = datatype in _NUMERIC_TYPES or (view.aspace.get(datatype) is not None and any(
        t in _NUMERIC_TYPES for t in view.supertypes(datatype)))
    cfg = AlarmConfig(nid, name, chain[0], kind, source, display_path(view, source), input_id,
                      view.name(input_id), _unit(view, input_id), confirm=_has_child(view, nid, "ConfirmedState"))
    severity = std.get("Severity")
    if severity is not None:
        if not isinstance(severity, int) or not 1 <= severity <= 1000:
            problem(nid, f"Severity {severity!r} is not 1..1000")
            return None
        cfg.severity = severity
    description = view.attr(nid, ua.AttributeIds.Description)
    cfg.message = getattr(description, "Text", None) or ""
    for key, attr in (("Deadband", "deadband"), ("OnDelay", "on_delay"), ("OffDelay", "off_delay")):
        value = gw.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                problem(nid, f"{key} {value!r} is not a number >= 0")
                return None
            setattr(cfg, attr, float(value))
    if gw.get("Confirm") is True:
        cfg.confirm = True
    if kind in ("exclusive", "nonexclusive"):
        if not numeric:
            problem(nid, f"InputNode {cfg.input_name} is not numeric (a limit alarm compares numbers)")
            return None
        for limit in LIMIT_NAMES:
            value = std.get(limit)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                problem(nid, f"{limit} {value!r} is not a number")
                return None
            cfg.limits[limit] = float(value)
        if not cfg.limits:
            problem(nid, "limit alarm has none of HighHighLimit, HighLimit, LowLimit, LowLowLimit")
            return None
        present = [(n, cfg.limits[n]) for n in LIMIT_NAMES if n in cfg.limits]
        for (hi_name, hi), (lo_name, lo) in itertools.pairwise(present):
            if not hi > lo:
                problem(nid, f"limits out of order: {hi_name} {hi:g} must be above {lo_name} {lo:g}")
                return None
        if EXCLUSIVE_DEVIATION in chain or NON_EXCLUSIVE_DEVIATION in chain:
            setpoint = std.get("SetpointNode")
            if not isinstance(setpoint, ua.NodeId) or view.nodeclass(setpoint) != ua.NodeClass.Variable:
                problem(nid, "deviation alarm has no SetpointNode variable")
                return None
            cfg.setpoint = setpoint
    else:
        normal = std.get("NormalState")
        if isinstance(normal, ua.NodeId) and not normal.is_null():
            if view.nodeclass(normal) != ua.NodeClass.Variable:
                problem(nid, f"NormalState {normal.to_string()} is not a variable")
                return None
            cfg.normal_state = normal
        elif "NormalValue" in gw:
            cfg.normal_value = gw["NormalValue"]
        elif DISCRETE in chain and OFF_NORMAL not in chain:
            cfg.normal_value = False  # a discrete alarm with no normal state is active while its input is true
        else:
            problem(nid, "off-normal alarm has no NormalState (or gateway NormalValue)")
            return None
    return cfg
