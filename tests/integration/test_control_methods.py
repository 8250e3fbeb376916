"""The control engine operated by an OPC UA client on the demo site: modes switched by GoToMode_*
methods, an E-stop raising its interlock alarm, a reset refused while the cause is there."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from asyncua import Client, ua

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


async def test_modes_by_method_and_an_estop_alarm_that_an_operator_resets(simulated_gateway, event_collector) -> None:
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
        gw.simulations[0].device("Battery1").set("EStop", True)
        await _until(lambda: any("interlock EStop tripped" in e.Message.Text for e in events.got))
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
