"""The control engine operated by an OPC UA client on the demo site: modes switched by GoToMode_*
methods, an E-stop raising its interlock alarm, a reset refused while the cause is there, the schedule
listed and edited through its methods."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asyncua import Client, ua

from gateway.control.state import SystemState

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "nodesets" / "demo" / "demo-site.xml"
NS = "urn:opcua-gateway:demo"
GW = "urn:opcua-gateway:types"




async def _until(predicate, within_s: float = 10.0) -> None:
    async with asyncio.timeout(within_s):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.05)


async def test_modes_by_method_and_an_estop_alarm_that_an_operator_resets(simulated_gateway, event_collector,
                                                                          caplog) -> None:
    gw = await simulated_gateway(DEMO)
    url = gw.config.endpoint
    operator = Client(url.replace("opc.tcp://", "opc.tcp://operator1:op-secret-1@"))
    viewer = Client(url)
    async with operator, viewer:
        ns, gw_ns = await operator.get_namespace_index(NS), await operator.get_namespace_index(GW)
        control = operator.get_node(ua.NodeId("DemoSite.Control", ns))
        peak = await control.get_child(f"{gw_ns}:GoToMode_PeakShaving")
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await viewer.get_node(control.nodeid).call_method(peak.nodeid)
        await control.call_method(peak.nodeid)
        assert gw.control.mode == "PeakShaving"
        mode = operator.get_node(ua.NodeId("DemoSite.Control.Mode", ns))
        await _until(lambda: gw.control.mode == "PeakShaving")

        events = event_collector()
        sub = await operator.create_subscription(50, events)
        await sub.subscribe_events(operator.get_node(ua.ObjectIds.Server),
                                   operator.get_node(ua.NodeId(ua.ObjectIds.OffNormalAlarmType)))
        # Battery1/SystemState (Part 16) shows the engine's system state: Run since its first cycle.
        machine = operator.get_node(ua.NodeId("Battery1.SystemState", ns))
        current = await machine.get_child("0:CurrentState")
        last = await machine.get_child("0:LastTransition")

        async def shown() -> tuple[str, str]:
            return (await current.read_value()).Text, (await last.read_value()).Text

        await _until(lambda: gw.control.state.state is SystemState.Run)
        await gw.control_state.settled()
        assert await shown() == ("Run", "InitToRun")
        gw.simulations[0].device("Battery1").set("EStop", True)
        await _until(lambda: any("interlock EStop tripped" in e.Message.Text for e in events.got))
        await gw.control_state.settled()
        assert await shown() == ("Error", "RunToError")
        machine_reset = await machine.get_child(f"{ns}:Reset")
        with pytest.raises(ua.uaerrors.BadInvalidState):  # the engine refuses: the E-stop is still pressed
            await machine.call_method(machine_reset.nodeid)
        assert await shown() == ("Error", "RunToError")
        trip = next(e for e in events.got if "interlock EStop tripped" in e.Message.Text)
        assert trip.Severity == 1000
        reset = await control.get_child(f"{gw_ns}:ResetInterlock")
        with pytest.raises(ua.uaerrors.UaStatusCodeError):  # the E-stop is still pressed
            await control.call_method(reset.nodeid, ua.Variant("EStop", ua.VariantType.String))
        gw.simulations[0].device("Battery1").set("EStop", False)
        await asyncio.sleep(0.5)
        await control.call_method(reset.nodeid, ua.Variant("EStop", ua.VariantType.String))
        await _until(lambda: any("interlock EStop reset" in e.Message.Text for e in events.got))
        assert await mode.read_value() == "PeakShaving"
        await gw.control_state.settled()
        assert await shown() == ("Run", "ErrorToRun")
        # The machine's methods go to the engine, which moves the machine: Sleep, a Restart the engine has no
        # state for (refused), Run again.
        await machine.call_method(await machine.get_child(f"{ns}:GoToState_Sleep"))
        assert gw.control.state.state is SystemState.Sleep and await shown() == ("Sleep", "RunToSleep")
        with pytest.raises(ua.uaerrors.BadNotSupported):
            await machine.call_method(await machine.get_child(f"{ns}:GoToState_Restart"))
        assert await shown() == ("Sleep", "RunToSleep")
        await machine.call_method(await machine.get_child(f"{ns}:GoToState_Run"))
        assert gw.control.state.state is SystemState.Run and await shown() == ("Run", "SleepToRun")

        # The schedule: the demo's tariff windows listed, an entry added (a one-shot already due fires at
        # once and is gone), one removed; a viewer may read but not edit; a bad entry is refused, named.
        get = await control.get_child(f"{gw_ns}:GetSchedule")
        put = await control.get_child(f"{gw_ns}:SetScheduleEntry")
        remove = await control.get_child(f"{gw_ns}:RemoveScheduleEntry")
        listed = json.loads(await viewer.get_node(control.nodeid).call_method(get.nodeid))
        assert {e["name"] for e in listed} == {"day-tariff", "night-tariff"} and all(e["next"] for e in listed)
        due = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
        entry = ua.Variant(json.dumps({"name": "now", "at": due, "mode": "Passive"}), ua.VariantType.String)
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await viewer.get_node(control.nodeid).call_method(put.nodeid, entry)
        await control.call_method(put.nodeid, entry)
        await _until(lambda: gw.control.mode == "Passive")
        with caplog.at_level(logging.INFO, "gateway.audit"), pytest.raises(ua.uaerrors.BadInvalidArgument):
            await control.call_method(put.nodeid, ua.Variant('{"name": "x", "cron": "0 7 * *", "mode": "Passive"}',
                                                             ua.VariantType.String))
        assert any("refused schedule entry by operator1" in r.message and "needs 5 fields" in r.message
                   for r in caplog.records)
        await control.call_method(remove.nodeid, ua.Variant("day-tariff", ua.VariantType.String))
        await gw.schedule.saved()
        assert [e["name"] for e in json.loads(await control.call_method(get.nodeid))] == ["night-tariff"]
        kept = json.loads((gw.config.data_dir / "control" / "schedule.json").read_text(encoding="utf-8"))
        assert [e["name"] for e in kept] == ["night-tariff"]
