"""State machine declarations: Part 16 FiniteStateMachineType subtypes and their instances in the site.

A type's states are its StateType (or InitialStateType) components with a StateNumber; its transitions
are its TransitionType components with a TransitionNumber and exactly one FromState and one ToState
reference to a state of the same machine, optionally HasCause references to methods of the type (a call
of such a method fires the transition) and a HasEffect reference to TransitionEventType or a subtype
(the event it raises; TransitionEventType when absent). States and transitions defined on a supertype
count too. A method's role is the gateway property Role (operator when absent; admin allowed; viewer
refused, a viewer never drives the plant).

An instance is an object whose type is such a subtype; it needs CurrentState with its Id property.
Number, Name and EffectiveDisplayName of CurrentState, LastTransition with Id, Number, Name,
TransitionTime and EffectiveTransitionTime, AvailableStates and AvailableTransitions are served when the
instance has them. It starts in the state its CurrentState/Id names, else in its type's initial state.
Instances of the standard machines (namespace 0 types: an alarm's ShelvingState) belong to what owns them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from asyncua import ua
from asyncua.server.address_space import AddressSpace

from gateway.alarms.config import display_path
from gateway.bindings import SiteView
from gateway.nodeset.loader import LoadedSite
from gateway.nodeset.model import Problem
from gateway.security.roles import Role
from gateway.statemachines.model import TRANSITION_EVENT, MachineType, MethodSpec, State, Transition

FINITE_STATE_MACHINE = ua.NodeId(ua.ObjectIds.FiniteStateMachineType)
STATE_TYPE = ua.NodeId(ua.ObjectIds.StateType)
INITIAL_STATE_TYPE = ua.NodeId(ua.ObjectIds.InitialStateType)
TRANSITION_TYPE = ua.NodeId(ua.ObjectIds.TransitionType)
_FROM_STATE = ua.NodeId(ua.ObjectIds.FromState)
_TO_STATE = ua.NodeId(ua.ObjectIds.ToState)
_HAS_CAUSE = ua.NodeId(ua.ObjectIds.HasCause)
_HAS_EFFECT = ua.NodeId(ua.ObjectIds.HasEffect)
_HAS_COMPONENT = ua.NodeId(ua.ObjectIds.HasComponent)
_UINT32_MAX = 2**32 - 1
# The instance's variables the gateway keeps, by browse path below the instance.
SERVED = (
    "CurrentState", "CurrentState/Id", "CurrentState/Number", "CurrentState/Name", "CurrentState/EffectiveDisplayName",
    "LastTransition", "LastTransition/Id", "LastTransition/Number", "LastTransition/Name",
    "LastTransition/TransitionTime", "LastTransition/EffectiveTransitionTime", "AvailableStates",
    "AvailableTransitions",
)


@dataclass(slots=True)
class MachineConfig:
    nodeid: ua.NodeId
    name: str  # the instance's BrowseName
    source_name: str  # Device/Machine, the SourceName of its events
    mtype: MachineType
    initial: State
    nodes: dict[str, ua.NodeId] = field(default_factory=dict)  # SERVED path -> the instance's variable
    method_copies: dict[ua.NodeId, ua.NodeId] = field(default_factory=dict)  # instance's method -> type's method


Report = Callable[[ua.NodeId, str], None]


class _View(SiteView):
    def __init__(self, aspace: AddressSpace, gw_ns: int, site: LoadedSite) -> None:
        super().__init__(aspace, gw_ns)
        self.site = site

    def written(self, nid: ua.NodeId) -> str:
        """A node as the site's file writes it (its namespace index there, not the server's) and its name."""
        origin = self.site.origins.get(nid)
        return f"{origin[2] if origin else nid.to_string()} ({self.name(nid)})"


def read_state_machines(aspace: AddressSpace, site: LoadedSite, gw_ns: int
                        ) -> tuple[list[MachineConfig], list[Problem]]:
    view = _View(aspace, gw_ns, site)
    problems: list[Problem] = []

    def problem(nid: ua.NodeId, message: str) -> None:
        path, line, written = site.origins.get(nid, ("<gateway>", 0, nid.to_string()))
        problems.append(Problem(path, line or None, written, message))

    types: dict[ua.NodeId, MachineType | None] = {}
    # Every machine type of the site is checked, instantiated or not (a type is the site's model too).
    for nid in site.new_nodes:
        if view.nodeclass(nid) == ua.NodeClass.ObjectType and FINITE_STATE_MACHINE in view.supertypes(nid)[1:]:
            types[nid] = _read_type(view, nid, problem)
    machines: list[MachineConfig] = []
    for nid in site.new_nodes:
        if view.nodeclass(nid) != ua.NodeClass.Object or view.is_declaration(nid):
            continue
        typedef = view.typedef(nid)
        if typedef is None or typedef.NamespaceIndex == 0 or FINITE_STATE_MACHINE not in view.supertypes(typedef):
            continue
        if typedef not in types:  # a type from a nodeset loaded before the site's (not in new_nodes)
            types[typedef] = _read_type(view, typedef, problem)
        mtype = types[typedef]
        if mtype is None:
            continue  # its type's problems are reported on the type
        if not mtype.states:
            problem(nid, f"state machine of type {mtype.name}, which defines no states")
            continue
        cfg = _read_instance(view, nid, mtype, problem)
        if cfg is not None:
            machines.append(cfg)
    return machines, problems


def _chain(view: _View, type_id: ua.NodeId) -> list[ua.NodeId]:
    """The type and its supertypes below FiniteStateMachineType, where states and transitions are defined."""
    chain = view.supertypes(type_id)
    return chain[:chain.index(FINITE_STATE_MACHINE)] if FINITE_STATE_MACHINE in chain else chain


def _components(view: _View, type_id: ua.NodeId, nodeclass: ua.NodeClass) -> list[ua.NodeId]:
    out = []
    for t in reversed(_chain(view, type_id)):  # the supertype's first, as Part 16 numbers them
        for r in view.refs(t):
            if r.IsForward and r.ReferenceTypeId == _HAS_COMPONENT and view.nodeclass(r.NodeId) == nodeclass:
                out.append(r.NodeId)
    return out


def _is_a(view: _View, nid: ua.NodeId, base: ua.NodeId) -> bool:
    return base in view.supertypes(view.typedef(nid))


def _property(view: _View, nid: ua.NodeId, name: str) -> tuple[bool, Any]:
    for r in view.children(nid):
        if r.BrowseName.Name == name and r.BrowseName.NamespaceIndex == 0:
            return True, view.attr(r.NodeId, ua.AttributeIds.Value)
    return False, None


def _number(view: _View, nid: ua.NodeId, prop: str, what: str, problem: Report) -> int | None:
    present, value = _property(view, nid, prop)
    if not present:
        problem(nid, f"{what} {view.name(nid)} has no {prop}")
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _UINT32_MAX:
        problem(nid, f"{what} {view.name(nid)}: {prop} {value!r} is not a UInt32")
        return None
    return value


def _display(view: _View, nid: ua.NodeId) -> str:
    text = getattr(view.attr(nid, ua.AttributeIds.DisplayName), "Text", None)
    return text or view.name(nid)


def _read_type(view: _View, type_id: ua.NodeId, problem: Report) -> MachineType | None:
    """The machine type, or None when it has problems (each reported on the node to fix)."""
    name = view.name(type_id)
    ok = True
    states: list[State] = []
    initial: list[State] = []
    by_number: dict[int, State] = {}
    declared_states: set[ua.NodeId] = set()  # with problems or not: a transition to one is not a second problem
    for nid in _components(view, type_id, ua.NodeClass.Object):
        if not _is_a(view, nid, STATE_TYPE):
            continue
        declared_states.add(nid)
        number = _number(view, nid, "StateNumber", "state", problem)
        if number is None:
            ok = False
            continue
        state = State(nid, view.name(nid), _display(view, nid), number, _ns(view, nid))
        if number in by_number:
            problem(nid, f"StateNumber {number} of state {state.name} is also the number of state "
                         f"{by_number[number].name} in {name}")
            ok = False
            continue
        by_number[number] = state
        states.append(state)
        if _is_a(view, nid, INITIAL_STATE_TYPE):
            initial.append(state)
    if len(initial) > 1:
        problem(type_id, f"{name} has {len(initial)} initial states ({', '.join(s.name for s in initial)}); "
                         "a machine starts in one")
        ok = False
    methods: dict[ua.NodeId, MethodSpec] = {}
    method_nodes = _components(view, type_id, ua.NodeClass.Method)
    declared_methods = set(method_nodes)
    for nid in method_nodes:
        role = view.gw_props(nid).get("Role", Role.operator.name)
        try:
            parsed = Role.parse(role) if isinstance(role, str) else None
        except ValueError:
            parsed = None
        if parsed is None or parsed < Role.operator:
            problem(nid, f"method {view.name(nid)}: Role {role!r} must be operator or admin (a method that fires "
                         "a transition changes the plant)")
            ok = False
            continue
        methods[nid] = MethodSpec(nid, view.name(nid), parsed)
    by_id = {s.nodeid: s for s in states}
    transitions: list[Transition] = []
    numbers: dict[int, str] = {}
    for nid in _components(view, type_id, ua.NodeClass.Object):
        if not _is_a(view, nid, TRANSITION_TYPE):
            continue
        t_name = view.name(nid)
        number = _number(view, nid, "TransitionNumber", "transition", problem)
        ends: dict[str, State | None] = {}
        for ref_type, label in ((_FROM_STATE, "FromState"), (_TO_STATE, "ToState")):
            targets = [r.NodeId for r in view.refs(nid) if r.IsForward and r.ReferenceTypeId == ref_type]
            if len(targets) != 1:
                problem(nid, f"transition {t_name} needs exactly one {label} reference, has {len(targets)}")
                ends[label] = None
            elif targets[0] not in by_id:
                if targets[0] not in declared_states:
                    problem(nid, f"transition {t_name}: {label} {view.written(targets[0])} is not a state of {name}")
                ends[label] = None
            else:
                ends[label] = by_id[targets[0]]
        causes = []
        for r in view.refs(nid):
            if r.IsForward and r.ReferenceTypeId == _HAS_CAUSE:
                if r.NodeId not in methods:
                    if r.NodeId not in declared_methods:
                        problem(nid, f"transition {t_name}: HasCause {view.written(r.NodeId)} is not a method of "
                                     f"{name}")
                    number = None
                causes.append(r.NodeId)
        event_type = TRANSITION_EVENT
        effects = [r.NodeId for r in view.refs(nid) if r.IsForward and r.ReferenceTypeId == _HAS_EFFECT]
        for effect in effects:
            if view.nodeclass(effect) != ua.NodeClass.ObjectType or TRANSITION_EVENT not in view.supertypes(effect):
                problem(nid, f"transition {t_name}: HasEffect {view.written(effect)} is not TransitionEventType or "
                             "a subtype (the event the gateway raises for it)")
                number = None
            else:
                event_type = effect
        if number is not None and number in numbers:
            problem(nid, f"TransitionNumber {number} of transition {t_name} is also the number of transition "
                         f"{numbers[number]} in {name}")
            number = None
        source, target = ends.get("FromState"), ends.get("ToState")
        if number is None or source is None or target is None:
            ok = False
            continue
        numbers[number] = t_name
        transitions.append(Transition(nid, t_name, _display(view, nid), number, source, target, frozenset(causes),
                                      event_type, _ns(view, nid)))
    if not ok:
        return None
    return MachineType(type_id, name, states, transitions, initial[0] if initial else None, methods)


def _read_instance(view: _View, nid: ua.NodeId, mtype: MachineType, problem: Report) -> MachineConfig | None:
    nodes: dict[str, ua.NodeId] = {}
    for top in ("CurrentState", "LastTransition", "AvailableStates", "AvailableTransitions"):
        child = _child(view, nid, top, ua.NodeClass.Variable)
        if child is None:
            continue
        nodes[top] = child
        for prop in ("Id", "Number", "Name", "EffectiveDisplayName", "TransitionTime", "EffectiveTransitionTime"):
            sub = _child(view, child, prop, ua.NodeClass.Variable)
            if sub is not None and f"{top}/{prop}" in SERVED:
                nodes[f"{top}/{prop}"] = sub
    if "CurrentState/Id" not in nodes:
        problem(nid, "state machine has no CurrentState variable with an Id property")
        return None
    if "LastTransition" in nodes and "LastTransition/Id" not in nodes:
        problem(nid, "state machine's LastTransition has no Id property")
        return None
    for path, var in nodes.items():
        access = view.attr(var, ua.AttributeIds.AccessLevel) or 0
        if access & ua.AccessLevel.CurrentWrite.mask:
            problem(var, f"{path} is writable (AccessLevel {access}): a state machine's variables change only "
                         "through its transitions")
            return None
    initial = mtype.initial
    given = view.attr(nodes["CurrentState/Id"], ua.AttributeIds.Value)
    if isinstance(given, ua.NodeId) and not given.is_null():
        initial = next((s for s in mtype.states if s.nodeid == given), None)
        if initial is None:
            problem(nid, f"CurrentState/Id {view.written(given)} is not a state of {mtype.name}")
            return None
    if initial is None:
        problem(nid, f"state machine has no initial state: {mtype.name} has no InitialStateType state and "
                     "CurrentState/Id names none")
        return None
    by_name = {spec.name: method for method, spec in mtype.methods.items()}
    copies = {}
    for r in view.children(nid):
        if view.nodeclass(r.NodeId) == ua.NodeClass.Method and r.BrowseName.Name in by_name:
            copies[r.NodeId] = by_name[r.BrowseName.Name]
    return MachineConfig(nid, view.name(nid), display_path(view, nid), mtype, initial, nodes, copies)


def _ns(view: _View, nid: ua.NodeId) -> int:
    bn = view.attr(nid, ua.AttributeIds.BrowseName)
    return bn.NamespaceIndex if bn is not None else nid.NamespaceIndex


def _child(view: _View, nid: ua.NodeId, name: str, nodeclass: ua.NodeClass) -> ua.NodeId | None:
    for r in view.children(nid):
        if r.BrowseName.Name == name and r.BrowseName.NamespaceIndex == 0 and view.nodeclass(r.NodeId) == nodeclass:
            return r.NodeId
    return None
