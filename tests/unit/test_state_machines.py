"""Part 16 state machines: the model's choices and refusals, and a machine driven on a real address space."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from asyncua import Server, ua

from gateway.events.audit import Writer
from gateway.events.event import GatewayEvent, path
from gateway.events.service import EventService
from gateway.methods import MethodRegistry
from gateway.nodeset.yaml_build import compile_text
from gateway.security.roles import Role
from gateway.site import load_site
from gateway.statemachines.model import (
    MachineType,
    State,
    StateMachineError,
    Transition,
    TransitionRefused,
    caused_by,
    check_fires,
    choose_to,
)
from gateway.statemachines.service import StateMachineService
from gateway.values.feed import ChangeFeed

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "state_machine_site.yaml"
OPERATOR = Writer("op1", Role.operator)


def _door() -> MachineType:
    closed, opening, open_ = (State(ua.NodeId(f"Door.{n}", 2), n, n, i) for i, n in
                              enumerate(("Closed", "Opening", "Open")))
    push, pull = ua.NodeId("Door.Push", 2), ua.NodeId("Door.Pull", 2)
    transitions = [
        Transition(ua.NodeId("Door.ClosedToOpening", 2), "ClosedToOpening", "ClosedToOpening", 1, closed, opening,
                   frozenset({push})),
        Transition(ua.NodeId("Door.OpeningToOpen", 2), "OpeningToOpen", "OpeningToOpen", 2, opening, open_),
        Transition(ua.NodeId("Door.OpenToClosed", 2), "OpenToClosed", "OpenToClosed", 3, open_, closed,
                   frozenset({pull})),
        Transition(ua.NodeId("Door.OpenToClosedFast", 2), "OpenToClosedFast", "OpenToClosedFast", 9, open_, closed),
    ]
    return MachineType(ua.NodeId("DoorType", 2), "DoorType", [closed, opening, open_], transitions, closed)


def test_states_and_transitions_are_found_by_name_number_and_nodeid() -> None:
    door = _door()
    assert door.state("Open") is door.states[2]
    assert door.state(1).name == "Opening"
    assert door.state(ua.NodeId("Door.Closed", 2)).number == 0
    assert door.transition(2).name == "OpeningToOpen"
    assert door.transition("OpenToClosed").number == 3
    with pytest.raises(StateMachineError) as err:
        door.state("Ajar")
    assert err.value.status == ua.StatusCodes.BadInvalidArgument
    assert "DoorType has no state 'Ajar' (states: Closed (0), Opening (1), Open (2))" in str(err.value)
    with pytest.raises(StateMachineError):
        door.state(True)  # a Boolean is not a StateNumber


def test_go_to_takes_the_lowest_numbered_transition_and_refuses_a_state_it_cannot_reach() -> None:
    door = _door()
    closed, opening, open_ = door.states
    assert choose_to(door, open_, closed).name == "OpenToClosed"  # 3 before 9
    with pytest.raises(TransitionRefused) as err:
        choose_to(door, closed, open_)
    assert err.value.status == ua.StatusCodes.BadInvalidState
    assert str(err.value) == "no transition from Closed to Open (from Closed: Opening)"
    with pytest.raises(TransitionRefused, match="no transition from Opening to Opening"):
        choose_to(door, opening, opening)  # no self-transition: going where it is is not a transition


def test_a_transition_fires_only_from_its_from_state_and_a_method_only_where_it_causes_one() -> None:
    door = _door()
    closed, opening, open_ = door.states
    assert check_fires(door, opening, door.transition("OpeningToOpen")).target is open_
    with pytest.raises(TransitionRefused, match="OpeningToOpen starts in Opening, the machine is in Closed"):
        check_fires(door, closed, door.transition("OpeningToOpen"))
    push = ua.NodeId("Door.Push", 2)
    assert caused_by(door, closed, push).name == "ClosedToOpening"
    with pytest.raises(TransitionRefused, match="causes no transition from Open"):
        caused_by(door, open_, push)


class RecordedEvents:
    """The event service's history sink: every emitted event, in order."""

    def __init__(self) -> None:
        self.events: list[GatewayEvent] = []

    def append_event(self, event: GatewayEvent) -> None:
        self.events.append(event)


@pytest.fixture
async def served(tmp_path: Path):
    site_xml = tmp_path / "site.xml"
    site_xml.write_bytes(compile_text(FIXTURE.read_text(encoding="utf-8"), str(FIXTURE)))
    server = Server()
    await server.init()
    site, bindings = await load_site(server, [site_xml])
    recorded = RecordedEvents()
    events = EventService(server.iserver, sink=recorded)
    service = StateMachineService(server.iserver, ChangeFeed(server.iserver.aspace), events,
                                  MethodRegistry(server.iserver.aspace))
    await service.start(bindings.state_machines)
    ns = site.namespaces["urn:test:state-machine-site"]
    return server, service, recorded, ns


async def _read(server: Server, ns: int, name: str) -> object:
    return await server.get_node(ua.NodeId(f"Pump1.PumpState.{name}", ns)).read_value()


async def test_a_machine_starts_in_its_initial_state_and_lists_its_states_and_transitions(served) -> None:
    server, service, recorded, ns = served
    machine = service.machine("Pump1/PumpState")
    assert service.machine(ua.NodeId("Pump1.PumpState", ns)) is machine
    assert machine.state.name == "Stopped"
    assert await _read(server, ns, "CurrentState") == ua.LocalizedText("Stopped")
    assert await _read(server, ns, "CurrentState.Id") == machine.mtype.state("Stopped").nodeid
    assert await _read(server, ns, "CurrentState.Number") == 0
    assert await _read(server, ns, "AvailableStates") == [s.nodeid for s in machine.mtype.states]
    assert len(await _read(server, ns, "AvailableTransitions")) == 6
    assert await _read(server, ns, "LastTransition.Id") is None  # nothing happened yet
    assert recorded.events == []
    with pytest.raises(KeyError, match="no state machine 'Pump2/PumpState' \\(machines: Pump1/PumpState\\)"):
        service.machine("Pump2/PumpState")


async def test_go_to_and_fire_write_the_variables_and_raise_one_transition_event_each(served) -> None:
    server, service, recorded, ns = served
    machine = service.machine("Pump1/PumpState")
    first = await machine.go_to("Starting", OPERATOR)
    assert first.name == "StoppedToStarting"
    second = await machine.fire(2, Writer("control:sequence", Role.operator, reason="speed reached"))
    assert second.name == "StartingToRunning" and machine.state.name == "Running"
    assert await _read(server, ns, "CurrentState") == ua.LocalizedText("Running")
    assert await _read(server, ns, "CurrentState.Number") == 2
    assert await _read(server, ns, "LastTransition") == ua.LocalizedText("StartingToRunning")
    assert await _read(server, ns, "LastTransition.Id") == second.nodeid
    assert await _read(server, ns, "LastTransition.Number") == 2
    assert await _read(server, ns, "LastTransition.TransitionTime") == machine.last_time

    assert [e.event_type for e in recorded.events] == [ua.NodeId(ua.ObjectIds.TransitionEventType)] * 2
    event = recorded.events[1]
    assert event.value(path("Transition", "Id")) == second.nodeid
    assert event.value(path("FromState", "Id")) == machine.mtype.state("Starting").nodeid
    assert event.value(path("ToState", "Id")) == machine.mtype.state("Running").nodeid
    assert event.value(path("ToState", "Number")) == 2
    assert event.value(path("SourceNode")) == machine.nodeid
    assert event.value(path("Message")).Text == \
        "Pump1/PumpState: Starting -> Running (StartingToRunning) by control:sequence: speed reached"
    # Reported on the machine, its device, the site root and the Server object.
    assert event.notifiers == (machine.nodeid, ua.NodeId("Pump1", ns), ua.NodeId("MachineSite", ns),
                               ua.NodeId(ua.ObjectIds.Server))


async def test_a_refused_transition_changes_nothing_and_raises_no_event(served) -> None:
    server, service, recorded, ns = served
    machine = service.machine("Pump1/PumpState")
    with pytest.raises(TransitionRefused, match="no transition from Stopped to Running"):
        await machine.go_to("Running", OPERATOR)
    with pytest.raises(TransitionRefused, match="StartingToRunning starts in Starting"):
        await machine.fire("StartingToRunning", OPERATOR)
    with pytest.raises(StateMachineError, match="has no state 'Flying'"):
        await machine.go_to("Flying", OPERATOR)
    assert machine.state.name == "Stopped" and machine.transitions == 0
    assert await _read(server, ns, "CurrentState") == ua.LocalizedText("Stopped")
    assert recorded.events == []


async def test_concurrent_requests_run_one_after_the_other(served) -> None:
    _, service, recorded, _ = served
    machine = service.machine("Pump1/PumpState")
    results = await asyncio.gather(machine.go_to("Starting", OPERATOR), machine.go_to("Starting", OPERATOR),
                                   return_exceptions=True)
    assert sum(isinstance(r, Transition) for r in results) == 1
    assert sum(isinstance(r, TransitionRefused) for r in results) == 1
    assert len(recorded.events) == 1


EXAMPLES = Path(__file__).resolve().parents[2] / "nodesets"


@pytest.mark.parametrize("site", ["demo/demo-site", "examples/soec-site"])
def test_shipped_example_xml_is_what_the_yaml_builds(site: str) -> None:
    yaml_path = EXAMPLES / f"{site}.yaml"
    built = compile_text(yaml_path.read_text(encoding="utf-8"), str(yaml_path))
    assert built == (EXAMPLES / f"{site}.xml").read_bytes(), \
        f"rebuild: gateway nodeset build nodesets/{site}.yaml -o nodesets/{site}.xml"


async def _example_machines(site: str) -> dict[str, object]:
    server = Server()
    await server.init()
    _, bindings = await load_site(server, [EXAMPLES / f"{site}.xml"])
    return {cfg.source_name: cfg for cfg in bindings.state_machines}


async def test_the_demo_battery_system_machine() -> None:
    machines = await _example_machines("demo/demo-site")
    bess = machines["Battery1/SystemState"].mtype
    assert [s.name for s in bess.states] == ["Init", "Run", "Sleep", "Maintenance", "Error", "Reboot", "Restart"]
    assert [s.number for s in bess.states] == list(range(7)) and bess.initial.name == "Init"
    reachable = {s.name: sorted(t.target.name for t in bess.from_state(s)) for s in bess.states}
    assert reachable["Run"] == ["Error", "Maintenance", "Restart", "Sleep"]  # no reboot while running
    assert reachable["Error"] == ["Maintenance", "Reboot", "Restart", "Run"]
    assert reachable["Reboot"] == reachable["Restart"] == ["Error", "Init"]
    roles = {spec.name: spec.role for spec in bess.methods.values()}
    assert roles["GoToState_Reboot"] is Role.admin and roles["GoToState_Run"] is Role.operator
    # Entering Error is the control program's: no method causes it.
    assert all(not t.causes for t in bess.transitions if t.target.name == "Error")


async def test_the_soec_control_states() -> None:
    machines = await _example_machines("examples/soec-site")
    soec = machines["ControlState"].mtype
    assert [s.display for s in soec.states] == ["Heat-Up", "Hot Standby", "Ready-to-Start", "Running", "Shutdown"]
    assert soec.initial.name == "Shutdown"
    heat_up_done = soec.transition("HeatUpToHotStandby")
    assert not heat_up_done.causes  # fired by the control program when the stack is hot
    assert all(soec.state("Shutdown") in {t.target for t in soec.from_state(s)}
               for s in soec.states if s.name != "Shutdown")  # every state can be shut down
