"""State machines end to end: an operator's method call fires a transition; an asyncua client subscribed
with an OfType(TransitionEventType) filter gets the TransitionEvent with its fields, reads CurrentState and
LastTransition, and a transition the machine does not have from its state is refused."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asyncua import Client, ua
from asyncua.common.events import get_filter_from_event_type

from gateway.events.audit import Writer
from gateway.nodeset.yaml_build import compile_text
from gateway.security.roles import Role

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "state_machine_site.yaml"
TRANSITION_EVENT = ua.NodeId(ua.ObjectIds.TransitionEventType)
TYPE = "StateMachineTypes/PumpStateMachineType"




async def transition_filter(client: Client) -> ua.EventFilter:
    """asyncua's filter for TransitionEventType (OfType, the type's mandatory fields), plus the optional
    Number and TransitionTime fields the gateway fills in."""
    evfilter = await get_filter_from_event_type([client.get_node(TRANSITION_EVENT)])
    for field, prop in (("Transition", "Number"), ("Transition", "TransitionTime"), ("FromState", "Number"),
                        ("ToState", "Number")):
        clause = ua.SimpleAttributeOperand()
        clause.TypeDefinitionId = TRANSITION_EVENT
        clause.BrowsePath = [ua.QualifiedName(field, 0), ua.QualifiedName(prop, 0)]
        clause.AttributeId = ua.AttributeIds.Value
        evfilter.SelectClauses.append(clause)
    return evfilter


@pytest.fixture
async def machine_gateway(simulated_gateway, tmp_path: Path):
    site = tmp_path / "machine-site.xml"
    site.write_bytes(compile_text(FIXTURE.read_text(encoding="utf-8"), str(FIXTURE)))
    return await simulated_gateway(site)


async def _operator(gw) -> Client:
    client = Client(gw.config.endpoint)
    client.set_user("operator1")
    client.set_password("op-secret-1")
    await client.connect()
    return client


async def test_a_method_call_fires_a_transition_that_a_subscribed_client_sees_and_reads(
        machine_gateway, event_collector) -> None:
    gw = machine_gateway
    ns = gw.site.namespaces["urn:test:state-machine-site"]

    def node(client: Client, name: str):
        return client.get_node(ua.NodeId(name, ns))

    client = await _operator(gw)
    try:
        events, on_device = event_collector(), event_collector()
        sub = await client.create_subscription(50, events)
        await sub.subscribe_events(client.get_node(ua.ObjectIds.Server), client.get_node(TRANSITION_EVENT),
                                   evfilter=await transition_filter(client))
        device_sub = await client.create_subscription(50, on_device)
        await device_sub.subscribe_events(node(client, "Pump1"), client.get_node(TRANSITION_EVENT))

        await node(client, "Pump1.PumpState").call_method(node(client, "Pump1.PumpState.Start"))
        event = await events.next()
        assert event.EventType == TRANSITION_EVENT
        assert event.SourceNode == ua.NodeId("Pump1.PumpState", ns) and event.SourceName == "Pump1/PumpState"
        assert event.Message.Text == "Pump1/PumpState: Stopped -> Starting (StoppedToStarting) by operator1"
        assert event.Transition.Text == "StoppedToStarting"
        assert getattr(event, "Transition/Id") == ua.NodeId(f"{TYPE}/StoppedToStarting", ns)
        assert getattr(event, "FromState/Id") == ua.NodeId(f"{TYPE}/Stopped", ns)
        assert getattr(event, "ToState/Id") == ua.NodeId(f"{TYPE}/Starting", ns)
        assert event.ToState.Text == "Starting"
        assert (getattr(event, "Transition/Number"), getattr(event, "FromState/Number"),
                getattr(event, "ToState/Number")) == (1, 0, 1)
        assert (await on_device.next()).EventId == event.EventId  # the device is on the notifier chain too
        # EventNotifier as Part 3 defines its bits: SubscribeToEvents (bit 0) and HistoryRead (bit 2).
        for notifier in ("Pump1.PumpState", "Pump1", "MachineSite"):
            assert await node(client, notifier).read_event_notifier() == \
                {ua.EventNotifier.SubscribeToEvents, ua.EventNotifier.HistoryRead}

        assert await node(client, "Pump1.PumpState.CurrentState").read_value() == ua.LocalizedText("Starting")
        assert await node(client, "Pump1.PumpState.CurrentState.Id").read_value() == \
            ua.NodeId(f"{TYPE}/Starting", ns)
        assert await node(client, "Pump1.PumpState.CurrentState.Number").read_value() == 1
        assert await node(client, "Pump1.PumpState.LastTransition").read_value() == \
            ua.LocalizedText("StoppedToStarting")
        assert await node(client, "Pump1.PumpState.LastTransition.Id").read_value() == \
            ua.NodeId(f"{TYPE}/StoppedToStarting", ns)
        assert await node(client, "Pump1.PumpState.LastTransition.Number").read_value() == 1
        assert await node(client, "Pump1.PumpState.LastTransition.TransitionTime").read_value() == \
            getattr(event, "Transition/TransitionTime")

        # Start again: there is no transition from Starting that Start causes.
        with pytest.raises(ua.uaerrors.BadInvalidState):
            await node(client, "Pump1.PumpState").call_method(node(client, "Pump1.PumpState.Start"))
        # The type's method with the machine as object (the other form clients use): Stop fires from Starting.
        await node(client, "Pump1.PumpState").call_method(node(client, f"{TYPE}/Stop"))
        stopped = await events.next()
        assert getattr(stopped, "Transition/Id") == ua.NodeId(f"{TYPE}/StartingToStopped", ns)
        assert getattr(stopped, "Transition/Number") == 4

        # A program drives the machine through the Python API; clients see it the same way.
        machine = gw.state_machines.machine("Pump1/PumpState")
        await machine.go_to("Starting", Writer("control:sequence", Role.operator, reason="demand"))
        await machine.go_to("Running", Writer("control:sequence", Role.operator))
        by_program = [await events.next(), await events.next()]
        assert [getattr(e, "ToState/Number") for e in by_program] == [1, 2]
        assert by_program[0].Message.Text.endswith("by control:sequence: demand")
        assert await node(client, "Pump1.PumpState.CurrentState").read_value() == ua.LocalizedText("Running")
        # Only transitions came through the OfType filter (the device's communication alarm is another type).
        await asyncio.sleep(0.3)
        assert events.got == []

        # The transitions are in the event history of the machine (one of their notifiers), in order.
        await gw.history.flush()
        evfilter = await transition_filter(client)
        details = ua.ReadEventDetails(StartTime=event.Time - timedelta(seconds=1),
                                      EndTime=datetime.now(UTC) + timedelta(seconds=1), NumValuesPerNode=0,
                                      Filter=evfilter)
        params = ua.HistoryReadParameters(HistoryReadDetails=details, TimestampsToReturn=ua.TimestampsToReturn.Both,
                                          ReleaseContinuationPoints=False,
                                          NodesToRead=[ua.HistoryReadValueId(NodeId=ua.NodeId("Pump1.PumpState", ns))])
        stored = (await client.uaclient.history_read(params))[0]
        assert stored.StatusCode.is_good(), stored.StatusCode
        to_state = len(evfilter.SelectClauses) - 1  # ToState/Number, the last clause
        assert [e.EventFields[to_state].Value for e in stored.HistoryData.Events] == [1, 0, 1, 2]
    finally:
        await client.disconnect()


async def test_refused_calls_change_nothing(machine_gateway) -> None:
    gw = machine_gateway
    ns = gw.site.namespaces["urn:test:state-machine-site"]
    operator = await _operator(gw)
    viewer = Client(gw.config.endpoint)
    await viewer.connect()
    try:
        machine = operator.get_node(ua.NodeId("Pump1.PumpState", ns))
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):  # a viewer drives nothing
            await viewer.get_node(ua.NodeId("Pump1.PumpState", ns)).call_method(
                viewer.get_node(ua.NodeId("Pump1.PumpState.Start", ns)))
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):  # Reset is for admins
            await machine.call_method(operator.get_node(ua.NodeId("Pump1.PumpState.Reset", ns)))
        with pytest.raises(ua.uaerrors.BadInvalidState):  # Stop causes no transition from Stopped
            await machine.call_method(operator.get_node(ua.NodeId("Pump1.PumpState.Stop", ns)))
        with pytest.raises(ua.uaerrors.BadTooManyArguments):
            await machine.call_method(operator.get_node(ua.NodeId("Pump1.PumpState.Start", ns)), 1.0)
        with pytest.raises(ua.uaerrors.BadMethodInvalid):  # the type's method on an object that is no machine
            await operator.get_node(ua.NodeId("Pump1", ns)).call_method(
                operator.get_node(ua.NodeId(f"{TYPE}/Start", ns)))
        assert await operator.get_node(ua.NodeId("Pump1.PumpState.CurrentState", ns)).read_value() == \
            ua.LocalizedText("Stopped")
        assert gw.state_machines.machine("Pump1/PumpState").transitions == 0
    finally:
        await viewer.disconnect()
        await operator.disconnect()
