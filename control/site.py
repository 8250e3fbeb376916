"""The control configuration in the site, and starting the engine in the gateway.

A YAML site's `control:` section (README, Control) compiles to a `Control` object below the site root with
a `ControlConfiguration` property (gateway namespace) holding the section as JSON, and one writable,
persisted variable per mode parameter (`Control.Modes.PeakShaving.import_limit`, with unit and range).
At load the configuration is read back from the address space and checked against it: a setpoint that is
missing or not writable, an input that is missing, an unknown mode or interlock kind is a problem of the
site (the start is refused, `nodeset check` reports it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from asyncua import ua
from asyncua.server.address_space import AddressSpace

from gateway.control.config import EXTERNAL_CONTROL, LOCAL_CONTROL, ControlConfig, SetpointSpec
from gateway.control.grid_support import load_services, make_service
from gateway.control.modes import load_modes
from gateway.control.safety.interlock import InterlockSpec, spec_problems
from gateway.control.schedule.entries import parse_entry

CONFIG_PROPERTY = "ControlConfiguration"
SECTION_KEYS = {"period_ms", "max_input_age_s", "stall_periods", "mode", "setpoints", "signals", "charge_limiter",
                "modes", "interlocks", "fallback", "grid_support", "schedule", "state_machine"}
SETPOINT_KEYS = {"node", "safe", "ramp", "resolution"}
INTERLOCK_KEYS = {"name", "kind", "inputs", "severity", "params"}
_CURRENT_WRITE = ua.AccessLevel.CurrentWrite.mask
_HAS_PROPERTY = ua.NodeId(ua.ObjectIds.HasProperty)

# name -> (exists, writable, VariantType) of a site variable, or None when there is none
Lookup = Callable[[str], tuple[bool, ua.VariantType] | None]


def parse_section(section: Any, lookup: Lookup, to_node: Callable[[str], ua.NodeId]) -> tuple[ControlConfig, list[str]]:
    """The `control:` section -> ControlConfig, with every problem (empty list: valid)."""
    problems: list[str] = []
    config = ControlConfig()
    if not isinstance(section, dict):
        return config, [f"control must be a mapping, not {type(section).__name__}"]
    for key in section:
        if key not in SECTION_KEYS:
            problems.append(f"unknown key '{key}' in control (known: {', '.join(sorted(SECTION_KEYS))})")
    config.period_s = _num(section, "period_ms", 1000.0, problems) / 1000.0
    config.max_age_s = _num(section, "max_input_age_s", config.max_age_s, problems)
    config.stall_periods = int(_num(section, "stall_periods", config.stall_periods, problems))
    problems += config.problems()
    modes = load_modes()
    config.mode = str(section.get("mode", "Passive"))
    if config.mode not in modes:
        problems.append(f"unknown mode {config.mode!r} (known: {', '.join(sorted(modes))})")
    setpoints = section.get("setpoints") or {}
    if not isinstance(setpoints, dict) or not setpoints:
        problems.append("control needs setpoints: {role: {node: Device.Variable, safe: value}}")
        setpoints = {}
    for role, spec in setpoints.items():
        if not isinstance(spec, dict) or "node" not in spec or "safe" not in spec:
            problems.append(f"setpoint {role}: needs node and safe")
            continue
        problems += [f"setpoint {role}: unknown key '{k}'" for k in spec if k not in SETPOINT_KEYS]
        found = lookup(str(spec["node"]))
        if found is None:
            problems.append(f"setpoint {role}: {spec['node']} is no variable of the site")
            continue
        writable, vtype = found
        if not writable:
            problems.append(f"setpoint {role}: {spec['node']} is not writable")
        safe = _num(spec, "safe", 0.0, problems, f"setpoint {role}")
        ramp = _num(spec, "ramp", 0.0, problems, f"setpoint {role}")
        resolution = _num(spec, "resolution", 0.0, problems, f"setpoint {role}")
        config.setpoints[str(role)] = SetpointSpec(str(role), to_node(str(spec["node"])), safe, ramp, resolution,
                                                   vtype)
    signals = section.get("signals") or {}
    if not isinstance(signals, dict):
        problems.append("control signals must map roles to variables")
        signals = {}
    for role, name in signals.items():
        if lookup(str(name)) is None:
            problems.append(f"signal {role}: {name} is no variable of the site")
        else:
            config.signals[str(role)] = to_node(str(name))
    fallback = section.get("fallback")
    if fallback is not None:
        if not isinstance(fallback, dict) or "mode" not in fallback or not set(fallback) <= {"signal", "mode"}:
            problems.append("fallback must be {mode: <a mode>, signal: <a signal role, optional>}")
        elif "signal" in fallback and fallback["signal"] not in config.signals:
            problems.append(f"fallback: signal {fallback['signal']!r} is not one of the signals")
        elif fallback["mode"] not in modes or fallback["mode"] in (EXTERNAL_CONTROL, LOCAL_CONTROL):
            problems.append(f"fallback: {fallback['mode']!r} is not a mode a supervised mode can fall back to")
        else:
            signal = fallback.get("signal")
            config.fallback = (str(signal) if signal is not None else None, str(fallback["mode"]))
    limiter = section.get("charge_limiter")
    if limiter is not None and not isinstance(limiter, dict):
        problems.append("charge_limiter must be a mapping of its parameters")
    config.charge_limiter = dict(limiter) if isinstance(limiter, dict) else None
    problems += _grid_support(section.get("grid_support"), config)
    problems += _schedule(section.get("schedule"), config, lookup)
    machine = section.get("state_machine")
    if machine is not None and not (isinstance(machine, str) and machine):
        problems.append(f"state_machine must name a state machine of the site (Device/Machine), not {machine!r}")
    elif machine is not None:
        config.state_machine = machine
    mode_params = section.get("modes") or {}
    for mode_name, params in (mode_params.items() if isinstance(mode_params, dict) else ()):
        if mode_name not in modes:
            problems.append(f"modes: unknown mode {mode_name!r}")
        elif not isinstance(params, dict):
            problems.append(f"modes.{mode_name} must map parameters to values")
        else:
            known = {p.name for p in modes[mode_name].PARAMETERS}
            problems += [f"modes.{mode_name}: unknown parameter '{k}' (known: {', '.join(sorted(known))})"
                         for k in params if k not in known]
            config.modes[mode_name] = dict(params)
    for i, spec in enumerate(section.get("interlocks") or []):
        if not isinstance(spec, dict):
            problems.append(f"interlocks[{i}] must be a mapping")
            continue
        name = str(spec.get("name", f"interlocks[{i}]"))
        problems += [f"interlock {name}: unknown key '{k}'" for k in spec if k not in INTERLOCK_KEYS]
        inputs = spec.get("inputs") or {}
        if isinstance(inputs, list):  # comm_loss: a plain list of the variables watched
            inputs = {f"input{j}": v for j, v in enumerate(inputs)}
        nodes: dict[str, ua.NodeId] = {}
        for role, var in inputs.items():
            if lookup(str(var)) is None:
                problems.append(f"interlock {name}: input {role}: {var} is no variable of the site")
            else:
                nodes[str(role)] = to_node(str(var))
        ispec = InterlockSpec(name, str(spec.get("kind", "")), nodes, dict(spec.get("params") or {}),
                              int(spec.get("severity", 900)))
        problems += [f"interlock {name}: {p}" for p in spec_problems(ispec)]
        config.interlocks.append(ispec)
    return config, problems


def _grid_support(section: Any, config: ControlConfig) -> list[str]:
    """The `grid_support:` mapping (service -> parameters) into the config, with its problems."""
    if section is None:
        return []
    if not isinstance(section, dict):
        return ["grid_support must map services to their parameters"]
    problems = []
    for name, params in section.items():
        if not isinstance(params, dict):
            problems.append(f"grid_support.{name} must map parameters to values")
            continue
        try:
            service = make_service(str(name), params)
        except (ValueError, TypeError) as exc:
            problems.append(str(exc))
            continue
        problems += [f"grid support {name} needs signal '{role}'" for role in service.inputs[:1]
                     if role not in config.signals]
        problems += [f"grid support {name} needs setpoint '{sp}'" for sp in service.setpoints
                     if sp not in config.setpoints]
        config.grid_support[str(name)] = dict(params)
    return problems


def _schedule(section: Any, config: ControlConfig, lookup: Lookup) -> list[str]:
    """The `schedule:` list into the config, with its problems."""
    if section is None:
        return []
    if not isinstance(section, list):
        return ["schedule must be a list of entries"]
    problems: list[str] = []

    def writable(name: str) -> bool | None:
        found = lookup(name)
        return None if found is None else found[0]

    for raw in section:
        entry, why = parse_entry(raw, writable)
        problems += why
        if entry is None:
            continue
        if any(e.name == entry.name for e in config.schedule):
            problems.append(f"schedule entry {entry.name!r}: the name is used twice")
        config.schedule.append(entry)
    return problems


def _num(m: Mapping[str, Any], key: str, default: float, problems: list[str], where: str = "control") -> float:
    value = m.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        problems.append(f"{where}: {key} must be a number, got {value!r}")
        return default
    return float(value)


# -- reading it back from a loaded site ------------------------------------------------------
def find_control(aspace: AddressSpace, nodes: list[ua.NodeId], gw_ns: int) -> tuple[ua.NodeId, dict] | None:
    """The site's Control object and its parsed section, or None when the site has no control."""
    for nodeid in nodes:
        nd = aspace.get(nodeid)
        if nd is None:
            continue
        for ref in nd.references:
            if (ref.IsForward and ref.ReferenceTypeId == _HAS_PROPERTY and ref.BrowseName.Name == CONFIG_PROPERTY
                    and ref.BrowseName.NamespaceIndex == gw_ns):
                text = aspace[ref.NodeId].attributes[ua.AttributeIds.Value].value.Value.Value
                try:
                    return nodeid, json.loads(text or "{}")
                except json.JSONDecodeError as exc:
                    return nodeid, {"__error__": f"{CONFIG_PROPERTY} is not JSON: {exc}"}
    return None


def site_variables(aspace: AddressSpace, ns: int) -> tuple[Lookup, Callable[[str], ua.NodeId]]:
    """(lookup, to_node) of a loaded site's variables by name, as the control section names them."""

    def to_node(name: str) -> ua.NodeId:
        return ua.NodeId(name, ns)

    def lookup(name: str) -> tuple[bool, ua.VariantType] | None:
        nd = aspace.get(to_node(name))
        if nd is None or ua.AttributeIds.AccessLevel not in nd.attributes:
            return None
        level = nd.attributes[ua.AttributeIds.AccessLevel].value.Value.Value or 0
        dt = nd.attributes[ua.AttributeIds.DataType].value.Value.Value
        vtype = ua.VariantType(dt.Identifier) if dt.NamespaceIndex == 0 and 1 <= dt.Identifier <= 11 \
            else ua.VariantType.Double
        return bool(level & _CURRENT_WRITE), vtype

    return lookup, to_node


def read_control(aspace: AddressSpace, nodes: list[ua.NodeId], gw_ns: int
                 ) -> tuple[ua.NodeId | None, ControlConfig | None, list[str]]:
    found = find_control(aspace, nodes, gw_ns)
    if found is None:
        return None, None, []
    control_id, section = found
    if "__error__" in section:
        return control_id, None, [section["__error__"]]
    lookup, to_node = site_variables(aspace, control_id.NamespaceIndex)
    config, problems = parse_section(section, lookup, to_node)
    ns = control_id.NamespaceIndex
    prefix = f"{control_id.Identifier}.Modes"
    for mode_name, cls in load_modes().items():
        for p in cls.PARAMETERS:
            nid = ua.NodeId(f"{prefix}.{mode_name}.{p.name}", ns)
            if aspace.get(nid) is not None:
                config.mode_parameters.setdefault(mode_name, {})[p.name] = nid
    for name in config.grid_support:
        for p in cls_params(name):
            nid = ua.NodeId(f"{control_id.Identifier}.GridSupport.{name}.{p}", ns)
            if aspace.get(nid) is not None:
                config.service_parameters.setdefault(name, {})[p] = nid
    return control_id, config, problems


def cls_params(service: str) -> list[str]:
    return [p.name for p in load_services()[service].PARAMETERS]
