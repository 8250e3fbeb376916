"""The YAML site's `state_machines:` section, compiled to Part 16 FiniteStateMachineType subtypes and instances.

    state_machines:
      types:
        - name: PumpStateMachineType
          states:       [{name: Off, number: 0, initial: true}, {name: Running, number: 1, display: Running}]
          transitions:  [{from: Off, to: Running, number: 1, method: GoToState_Running}]   # name: OffToRunning
          methods:      [{name: GoToState_Running, role: operator}]   # optional: role (default operator)
      instances:
        - {name: PumpState, type: PumpStateMachineType, parent: Pump1}   # parent: a device; default the site

A type becomes an ObjectType under FiniteStateMachineType with its states (StateType, InitialStateType
for the initial one, StateNumber), transitions (TransitionType, TransitionNumber, FromState, ToState,
HasEffect TransitionEventType, HasCause to its method) and methods (with the gateway's Role property).
An instance gets CurrentState (Id, Number), LastTransition (Id, Number, TransitionTime), AvailableStates,
AvailableTransitions and its own copy of each method. Numbers default to the position in the list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

TYPE_KEYS = {"name", "description", "states", "transitions", "methods"}
STATE_KEYS = {"name", "number", "display", "initial", "description"}
TRANSITION_KEYS = {"name", "number", "from", "to", "method", "description"}
METHOD_KEYS = {"name", "role", "description"}
INSTANCE_KEYS = {"name", "type", "parent", "initial", "description"}
SECTION_KEYS = {"types", "instances"}
ROLES = ("operator", "admin")  # a viewer never fires a transition
_UINT32_MAX = 2**32 - 1


@dataclass
class MachineState:
    name: str
    number: int
    display: str
    initial: bool
    description: str | None


@dataclass
class MachineTransition:
    name: str
    number: int
    source: str
    target: str
    method: str | None
    description: str | None


@dataclass
class MachineMethod:
    name: str
    role: str
    description: str | None


@dataclass
class MachineTypeSpec:
    name: str
    description: str | None
    states: list[MachineState] = field(default_factory=list)
    transitions: list[MachineTransition] = field(default_factory=list)
    methods: list[MachineMethod] = field(default_factory=list)


@dataclass
class MachineInstance:
    name: str
    mtype: MachineTypeSpec
    parent: str | None  # a device, or None for the site root
    initial: str | None  # a state that overrides the type's initial one
    description: str | None


@dataclass
class StateMachines:
    types: list[MachineTypeSpec] = field(default_factory=list)
    instances: list[MachineInstance] = field(default_factory=list)


def _number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _UINT32_MAX


def check_state_machines(b: Any, doc: Any, taken: dict[str | None, set[str]]) -> StateMachines:
    """Check the section (reporting through the builder `b`). `taken` holds, per device (None: the site root),
    the names already used below it, which an instance must not reuse."""
    out = StateMachines()
    section = doc.get("state_machines") if isinstance(doc, dict) else None
    if section is None:
        return out
    if not b.check_keys(section, SECTION_KEYS, "state_machines", "state_machines"):
        return out
    types: dict[str, MachineTypeSpec | None] = {}  # None: a type with problems (reported once, on the type)
    for spec in b.sequence(section, "state_machines", "types"):
        mtype = _check_type(b, spec, types)
        if mtype is not None:
            out.types.append(mtype)
    for spec in b.sequence(section, "state_machines", "instances"):
        instance = _check_instance(b, spec, types, taken)
        if instance is not None:
            out.instances.append(instance)
    return out


def _scalar_value(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _check_type(b: Any, spec: Any, types: dict[str, MachineTypeSpec | None]) -> MachineTypeSpec | None:
    where = "state_machines.types"
    if not b.check_keys(spec, TYPE_KEYS, where, "a state machine type"):
        return None
    name = b.check_name(spec, where, "a state machine type")
    if name is None:
        return None
    if name in types:
        b.problem(spec, name, f"state machine type {name!r} is defined twice", "name")
        return None
    types[name] = None
    ok = True
    if "description" in spec:
        ok &= b.text(spec, name, "description")
    mtype = MachineTypeSpec(name, spec.get("description"))
    children: set[str] = set()  # states, transitions and methods are all components of the type
    state_numbers: dict[int, str] = {}
    named: set[Any] = set()  # every state name given, with problems or not: a transition to one is no new problem
    for i, s in enumerate(b.sequence(spec, name, "states"), start=1):
        if not b.check_keys(s, STATE_KEYS, name, "a state"):
            ok = False
            continue
        if _scalar_value(s.get("name")):
            named.update({s.get("name"), getattr(s, "raw", {}).get("name")})
        if isinstance(s.get("name"), bool):
            written = getattr(s, "raw", {}).get("name", s["name"])
            b.problem(s, name, f"YAML reads the state name {written} as {s['name']!r}: quote it, "
                               f"name: \"{written}\"", "name")
            ok = False
            continue
        s_name = b.check_name(s, name, "a state")
        if s_name is None:
            ok = False
            continue
        path = f"{name}.{s_name}"
        number = s.get("number", i)
        if not _number(number):
            b.problem(s, path, f"number must be an integer 0..{_UINT32_MAX}, got {number!r}", "number")
            ok = False
            continue
        if s_name in children:
            b.problem(s, path, f"{s_name!r} names two states, transitions or methods of {name}", "name")
            ok = False
            continue
        if number in state_numbers:
            b.problem(s, path, f"StateNumber {number} is also the number of state {state_numbers[number]}",
                      "number" if "number" in s else "name")
            ok = False
            continue
        for key in ("display", "description"):
            if key in s and not b.text(s, path, key):
                ok = False
        if "initial" in s and not isinstance(s["initial"], bool):
            b.problem(s, path, "initial must be true or false", "initial")
            ok = False
        children.add(s_name)
        state_numbers[number] = s_name
        mtype.states.append(MachineState(s_name, number, s.get("display", s_name), s.get("initial") is True,
                                         s.get("description")))
    if not mtype.states and ok:
        b.problem(spec, name, "a state machine type needs states", "states" if "states" in spec else "name")
        ok = False
    initial = [s.name for s in mtype.states if s.initial]
    if len(initial) > 1:
        b.problem(spec, name, f"{len(initial)} initial states ({', '.join(initial)}); a machine starts in one",
                  "states")
        ok = False
    states = {s.name for s in mtype.states}
    declared: dict[str, MachineMethod] = {}
    for m in b.sequence(spec, name, "methods"):
        if not b.check_keys(m, METHOD_KEYS, name, "a method"):
            ok = False
            continue
        m_name = b.check_name(m, name, "a method")
        if m_name is None:
            ok = False
            continue
        role = m.get("role", "operator")
        if role not in ROLES:
            b.problem(m, f"{name}.{m_name}", f"role must be operator or admin (a method here fires a transition), "
                                             f"got {role!r}", "role")
            ok = False
        if "description" in m and not b.text(m, f"{name}.{m_name}", "description"):
            ok = False
        if m_name in declared or m_name in children:
            b.problem(m, f"{name}.{m_name}", f"{m_name!r} names two states, transitions or methods of {name}",
                      "name")
            ok = False
            continue
        declared[m_name] = MachineMethod(m_name, role, m.get("description"))
    used: set[str] = set()
    numbers: dict[int, str] = {}
    for i, t in enumerate(b.sequence(spec, name, "transitions"), start=1):
        if not b.check_keys(t, TRANSITION_KEYS, name, "a transition"):
            ok = False
            continue
        if isinstance(t.get("method"), str):
            used.add(t["method"])  # used even if this transition has problems: no second, misleading message
        source, target = t.get("from"), t.get("to")
        source, target = (v if _scalar_value(v) else repr(v) for v in (source, target))  # a list is no state
        for key, state in (("from", source), ("to", target)):
            if state in named and state not in states:
                ok = False  # the state's own problem is reported
            elif isinstance(state, bool):
                written = getattr(t, "raw", {}).get(key, state)
                b.problem(t, f"{name}.transitions", f"YAML reads {key}: {written} as {state!r}: quote it, "
                                                    f"{key}: \"{written}\"", key)
                ok = False
            elif state not in states:
                b.problem(t, f"{name}.transitions", f"{key}: {state!r} is not a state of {name} "
                                                    f"(states: {', '.join(sorted(states)) or 'none'})", key)
                ok = False
        if source not in states or target not in states:
            continue
        t_name = t.get("name", f"{source}To{target}")
        path = f"{name}.{t_name}"
        if "name" in t and b.check_name(t, name, "a transition") is None:
            ok = False
            continue
        number = t.get("number", i)
        if not _number(number):
            b.problem(t, path, f"number must be an integer 0..{_UINT32_MAX}, got {number!r}", "number")
            ok = False
            continue
        if number in numbers:
            b.problem(t, path, f"TransitionNumber {number} is also the number of transition {numbers[number]}",
                      "number" if "number" in t else None)
            ok = False
            continue
        if t_name in children or t_name in declared:
            b.problem(t, path, f"{t_name!r} names two states, transitions or methods of {name}",
                      "name" if "name" in t else None)
            ok = False
            continue
        method = t.get("method")
        if method is not None:
            if not isinstance(method, str) or not method.isidentifier():
                b.problem(t, path, f"method must be a name of letters, digits and _, got {method!r}", "method")
                ok = False
                continue
            if method in children:
                b.problem(t, path, f"method {method!r} has the name of a state or transition of {name}", "method")
                ok = False
                continue
            used.add(method)
            declared.setdefault(method, MachineMethod(method, "operator", None))
        if "description" in t and not b.text(t, path, "description"):
            ok = False
        children.add(t_name)
        numbers[number] = t_name
        mtype.transitions.append(MachineTransition(t_name, number, source, target, method, t.get("description")))
    for m_name in declared:
        if m_name not in used:
            b.problem(spec, f"{name}.{m_name}", f"method {m_name!r} causes no transition (name it in a "
                                                f"transition's method:)", "methods")
            ok = False
    mtype.methods = list(declared.values())
    if not ok:
        return None
    types[name] = mtype
    return mtype


def _check_instance(b: Any, spec: Any, types: dict[str, MachineTypeSpec | None],
                    taken: dict[str | None, set[str]]) -> MachineInstance | None:
    where = "state_machines.instances"
    if not b.check_keys(spec, INSTANCE_KEYS, where, "a state machine"):
        return None
    name = b.check_name(spec, where, "a state machine")
    if name is None:
        return None
    type_name = spec.get("type")
    mtype = types.get(type_name) if isinstance(type_name, str) else None
    if mtype is None and isinstance(type_name, str) and type_name in types:
        return None  # the type's problems are reported on the type
    if mtype is None:
        b.problem(spec, name, f"unknown state machine type {type_name!r} (types: {', '.join(types) or 'none'})",
                  "type")
        return None
    parent = spec.get("parent")
    if parent is not None and (not isinstance(parent, str) or parent not in taken):
        devices = ", ".join(sorted(d for d in taken if d is not None)) or "none"
        b.problem(spec, name, f"parent {parent!r} is not a device (devices: {devices}); leave it out for the site",
                  "parent")
        return None
    path = f"{parent}.{name}" if parent else name
    if name in taken[parent]:
        b.problem(spec, path, f"{name!r} is already used in {parent or 'the site'}", "name")
        return None
    initial = spec.get("initial")
    if initial is not None and (not isinstance(initial, str) or initial not in {s.name for s in mtype.states}):
        b.problem(spec, path, f"initial {initial!r} is not a state of {mtype.name}", "initial")
        return None
    if initial is None and not any(s.initial for s in mtype.states):
        b.problem(spec, path, f"{mtype.name} has no initial state: mark one (initial: true) or give this machine "
                              "initial: <state>", "type")
        return None
    if "description" in spec and not b.text(spec, path, "description"):
        return None
    taken[parent].add(name)
    return MachineInstance(name, mtype, parent, initial, spec.get("description"))


def emit_state_machines(w: Any, machines: StateMachines, site_id: str, _property: Callable[..., None],
                        _scalar: Callable[[str, str], Any], _nodeid_value: Callable[[str], Any]) -> None:
    """Write the types and instances into the NodeSet2 being built (`w` and the XML helpers are yaml_build's)."""
    for mtype in machines.types:
        tid = type_id(mtype.name)
        w.node("UAObjectType", tid, f"1:{mtype.name}", mtype.name, mtype.description,
               [("i=45", "i=2771", False)])
        for m in mtype.methods:
            mid = f"{tid}/{m.name}"
            w.node("UAMethod", mid, f"1:{m.name}", m.name, m.description,
                   [("HasComponent", tid, False), ("i=37", "i=78", True)], parent=tid)
            _property(w, mid, "Role", "String", _scalar("String", m.role), gateway=True)
        for s in mtype.states:
            sid = f"{tid}/{s.name}"
            w.node("UAObject", sid, f"1:{s.name}", s.display, s.description,
                   [("HasTypeDefinition", "i=2309" if s.initial else "i=2307", True), ("HasComponent", tid, False)],
                   parent=tid)
            _property(w, sid, "StateNumber", "i=7", _scalar("UInt32", str(s.number)), gateway=False)
        for t in mtype.transitions:
            trid = f"{tid}/{t.name}"
            refs = [("HasTypeDefinition", "i=2310", True), ("HasComponent", tid, False),
                    ("i=51", f"{tid}/{t.source}", True), ("i=52", f"{tid}/{t.target}", True), ("i=54", "i=2311", True)]
            if t.method:
                refs.append(("i=53", f"{tid}/{t.method}", True))
            w.node("UAObject", trid, f"1:{t.name}", t.name, t.description, refs, parent=tid)
            _property(w, trid, "TransitionNumber", "i=7", _scalar("UInt32", str(t.number)), gateway=False)
    for inst in machines.instances:
        parent_id = f"ns=1;s={inst.parent}" if inst.parent else site_id
        iid = f"ns=1;s={inst.parent}.{inst.name}" if inst.parent else f"ns=1;s={inst.name}"
        tid = type_id(inst.mtype.name)
        w.node("UAObject", iid, f"1:{inst.name}", inst.name, inst.description,
               [("HasTypeDefinition", tid, True), ("HasComponent", parent_id, False)], parent=parent_id)
        for var, typedef, props in (("CurrentState", "i=2760", (("Id", "i=17"), ("Number", "i=7"))),
                                    ("LastTransition", "i=2767",
                                     (("Id", "i=17"), ("Number", "i=7"), ("TransitionTime", "i=294")))):
            vid = f"{iid}.{var}"
            w.node("UAVariable", vid, var, var, None,
                   [("HasTypeDefinition", typedef, True), ("HasComponent", iid, False)],
                   parent=iid, DataType="i=21", AccessLevel="1", UserAccessLevel="1")
            for prop, datatype in props:
                value = None
                if var == "CurrentState" and prop == "Id" and inst.initial is not None:
                    value = _nodeid_value(f"{tid}/{inst.initial}")
                _optional_property(w, vid, prop, datatype, value)
        for var in ("AvailableStates", "AvailableTransitions"):
            w.node("UAVariable", f"{iid}.{var}", var, var, None,
                   [("HasTypeDefinition", "i=63", True), ("HasComponent", iid, False)], parent=iid,
                   DataType="i=17", ValueRank="1", ArrayDimensions="0", AccessLevel="1", UserAccessLevel="1")
        for m in inst.mtype.methods:
            w.node("UAMethod", f"{iid}.{m.name}", f"1:{m.name}", m.name, m.description,
                   [("HasComponent", iid, False)], parent=iid, MethodDeclarationId=f"{tid}/{m.name}")


def type_id(name: str) -> str:
    """The NodeId of a machine type: '/' keeps it apart from device and variable ids (Device.Variable)."""
    return f"ns=1;s=StateMachineTypes/{name}"


def _optional_property(w: Any, parent: str, name: str, datatype: str, value: Any) -> None:
    prop = w.node("UAVariable", f"{parent}.{name}", name, name, None,
                  [("HasTypeDefinition", "i=68", True), ("HasProperty", parent, False)], parent=parent,
                  DataType=datatype, AccessLevel="1", UserAccessLevel="1")
    if value is not None:
        w.value(prop, value)
