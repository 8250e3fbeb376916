"""The alarm service on a loaded site: inputs stored through the change feed drive conditions."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from asyncua import Server, ua

from gateway.alarms.service import AlarmService
from gateway.clock import SteppableClock
from gateway.events.audit import Writer
from gateway.events.event import GatewayEvent, path
from gateway.events.service import EventService
from gateway.methods import MethodRegistry
from gateway.nodeset.yaml_build import compile_text
from gateway.security.roles import Role
from gateway.site import load_site
from gateway.values.aspace_io import StoredDataValue
from gateway.values.feed import ChangeFeed

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "alarm_site.yaml"
ACK = ua.NodeId(ua.ObjectIds.AcknowledgeableConditionType_Acknowledge)
ONE_SHOT = ua.NodeId(ua.ObjectIds.ShelvedStateMachineType_OneShotShelve)
TIMED = ua.NodeId(ua.ObjectIds.ShelvedStateMachineType_TimedShelve)
UNSHELVE = ua.NodeId(ua.ObjectIds.ShelvedStateMachineType_Unshelve)
DISABLE = ua.NodeId(ua.ObjectIds.ConditionType_Disable)
OPERATOR = Writer("op", Role.operator)


class Recorded:
    def __init__(self) -> None:
        self.events: list[GatewayEvent] = []

    def append_event(self, event: GatewayEvent) -> None:
        self.events.append(event)


@pytest.fixture
async def alarms(tmp_path: Path):
    site_xml = tmp_path / "site.xml"
    site_xml.write_bytes(compile_text(FIXTURE.read_text(encoding="utf-8"), str(FIXTURE)))
    server = Server()
    await server.init()
    site, bindings = await load_site(server, [site_xml])
    ns = site.namespaces["urn:test:alarm-site"]
    clock = SteppableClock()
    feed = ChangeFeed(server.iserver.aspace)
    recorded = Recorded()
    events = EventService(server.iserver, clock, sink=recorded)
    methods = MethodRegistry(server.iserver.aspace)
    service = AlarmService(server.iserver, feed, events, methods, clock)
    service.start(bindings.alarms)
    yield service, feed, methods, recorded, ns
    service.stop()


async def _store(feed: ChangeFeed, node: ua.NodeId, value: float, status: int = ua.StatusCodes.Good) -> None:
    """Store an input as a driver's scan does, then let the alarm task evaluate it."""
    await feed.store(node, StoredDataValue(ua.Variant(value, ua.VariantType.Double), StatusCode=ua.StatusCode(status)))
    for sub in feed.subscriptions():
        owner = getattr(sub.callback, "__self__", None)
        if isinstance(owner, AlarmService):
            owner.drain()


async def _call(methods: MethodRegistry, method: ua.NodeId, obj: ua.NodeId, *args: ua.Variant,
                writer: Writer = OPERATOR) -> ua.CallMethodResult:
    return await methods.call(ua.CallMethodRequest(ObjectId=obj, MethodId=method, InputArguments=list(args)), writer)


async def test_a_bad_input_sets_quality_and_keeps_the_alarm_active(alarms) -> None:
    service, feed, _, recorded, ns = alarms
    temp, cond = ua.NodeId("Rack1.Temperature", ns), service.conditions[ua.NodeId("Rack1.TemperatureHigh", ns)]
    await _store(feed, temp, 58.2)
    assert cond.active and cond.limit_state == "High"
    assert recorded.events[-1].value(path("Message")).Text == "Rack1 cell temperature 58.2 °C above high limit 55 °C"
    await _store(feed, temp, 20.0, ua.StatusCodes.BadCommunicationError)
    assert cond.active, "a lost input must not clear the alarm"
    last = recorded.events[-1]
    assert last.value(path("Quality")).value == ua.StatusCodes.BadCommunicationError
    assert last.value(path("ActiveState", "Id")) is True
    await _store(feed, temp, 20.0)
    assert not cond.active and cond.quality.is_good()


async def test_a_refresh_reports_each_retained_condition_as_its_latest_event(alarms) -> None:
    service, feed, _, recorded, ns = alarms
    temp, node = ua.NodeId("Rack1.Temperature", ns), ua.NodeId("Rack1.TemperatureHigh", ns)
    await _store(feed, temp, 58.2)
    await _store(feed, temp, 20.0)  # cleared, still unacknowledged: retained
    latest = recorded.events[-1]
    [again] = [e for e in service.retained() if e.condition == node]
    assert again.event_id == latest.event_id
    assert {p: v.Value for p, v in again.fields.items()} == {p: v.Value for p, v in latest.fields.items()}
    acked = await _call(service.methods, ACK, node, ua.Variant(again.event_id, ua.VariantType.ByteString),
                        ua.Variant(ua.LocalizedText("seen"), ua.VariantType.LocalizedText))
    assert acked.StatusCode.is_good()
    [after] = [e for e in service.retained() if e.condition == node]  # confirmed alarm: kept until confirmed
    assert after.event_id == recorded.events[-1].event_id != latest.event_id
    assert after.value(path("AckedState", "Id")) is True and after.value(path("Comment")).Text == "seen"


async def test_shelving_one_shot_ends_when_the_alarm_clears_and_timed_shelving_expires(alarms) -> None:
    service, feed, methods, recorded, ns = alarms
    temp, node = ua.NodeId("Rack1.Temperature", ns), ua.NodeId("Rack1.TemperatureHigh", ns)
    cond = service.conditions[node]
    assert (await _call(methods, ONE_SHOT, node)).StatusCode.is_good()
    assert cond.shelved
    n = len(recorded.events)
    await _store(feed, temp, 57.0)
    assert cond.active and len(recorded.events) == n + 1  # the state is kept ...
    assert recorded.events[-1].value(path("SuppressedOrShelved")) is True
    await _store(feed, temp, 40.0)
    assert not cond.shelved  # ... and a one-shot shelve ends when the alarm clears
    status = (await _call(methods, TIMED, node, ua.Variant(50.0, ua.VariantType.Double))).StatusCode
    assert status.is_good() and cond.shelving == "TimedShelved"
    await asyncio.sleep(0.05)
    for _ in range(200):  # the unshelve timer runs on the loop: give it up to 2 s on a loaded machine
        if not cond.shelved:
            break
        await asyncio.sleep(0.01)
    assert "shelving time over" in recorded.events[-1].value(path("Message")).Text
    assert (await _call(methods, UNSHELVE, node)).StatusCode.value == ua.StatusCodes.BadConditionNotShelved
    too_long = ua.Variant(10 * 24 * 3600 * 1000.0, ua.VariantType.Double)
    assert (await _call(methods, TIMED, node, too_long)).StatusCode.value == ua.StatusCodes.BadShelvingTimeOutOfRange


async def test_method_arguments_roles_and_disabled_conditions(alarms) -> None:
    service, feed, methods, recorded, ns = alarms
    node = ua.NodeId("Rack1.TemperatureHigh", ns)
    cond = service.conditions[node]
    assert (await _call(methods, ACK, node)).StatusCode.value == ua.StatusCodes.BadArgumentsMissing
    wrong = await _call(methods, ACK, node, ua.Variant("text"), ua.Variant(ua.LocalizedText("c")))
    assert wrong.StatusCode.value == ua.StatusCodes.BadInvalidArgument
    assert [r.value for r in wrong.InputArgumentResults] == [ua.StatusCodes.BadTypeMismatch, ua.StatusCodes.Good]
    extra = await _call(methods, ACK, node, ua.Variant(b"x"), ua.Variant(ua.LocalizedText("c")), ua.Variant(1))
    assert extra.StatusCode.value == ua.StatusCodes.BadTooManyArguments
    assert (await _call(methods, DISABLE, node)).StatusCode.value == ua.StatusCodes.BadUserAccessDenied
    assert (await _call(methods, DISABLE, node, writer=Writer("boss", Role.admin))).StatusCode.is_good()
    await _store(feed, ua.NodeId("Rack1.Temperature", ns), 70.0)
    assert not cond.active and not cond.retain  # a disabled alarm is not evaluated
    assert recorded.events[-1].value(path("EnabledState", "Id")) is False


async def test_the_soec_example_carries_its_alarm_personality() -> None:
    root = Path(__file__).resolve().parents[2]
    server = Server()
    await server.init()
    _, bindings = await load_site(server, [root / "nodesets" / "examples" / "soec-site.xml"])
    severity = {a.name: a.severity for a in bindings.alarms}
    assert severity == {"StackOverTemperature": 900, "SteamLoss": 900, "ProtectiveGasLow": 600,
                        "VentilationLoss": 900, "EmergencyStopPressed": 1000, "HydrogenFireDetected": 990}
    assert max(severity, key=severity.get) == "EmergencyStopPressed"
