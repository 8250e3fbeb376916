"""The demo site under `--simulate`: typed devices over real Modbus, and the plant reacting to a setpoint."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from asyncua import Client, ua

from gateway.drivers.modbus.simulators.site import SiteSimulation
from gateway.events.audit import Writer
from gateway.security.roles import Role
from gateway.server import Gateway

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "nodesets" / "demo" / "demo-site.xml"
NS = "urn:opcua-gateway:demo"
pytestmark = pytest.mark.integration


@pytest.fixture
async def demo(simulated_gateway) -> Gateway:
    return await simulated_gateway(DEMO)


async def _good_value(node, within: float = 5.0) -> float:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        dv = await node.read_data_value(raise_on_bad_status=False)
        if dv.StatusCode.is_good():
            return dv.Value.Value
        assert asyncio.get_running_loop().time() < deadline, f"{node} not Good: {dv.StatusCode}"
        await asyncio.sleep(0.05)


async def test_demo_devices_are_typed_with_units_ranges_and_diagnostics(demo: Gateway) -> None:
    async with Client(demo.config.endpoint) as client:
        ns = await client.get_namespace_index(NS)
        soc = client.get_node(ua.NodeId("Battery1.StateOfCharge", ns))
        assert 0 < await _good_value(soc) <= 100
        assert await soc.read_data_type_as_variant_type() == ua.VariantType.Double
        eu = await (await soc.get_child(["0:EngineeringUnits"])).read_value()
        assert eu.DisplayName.Text == "%"
        rng = await (await soc.get_child(["0:EURange"])).read_value()
        assert (rng.Low, rng.High) == (0.0, 100.0)
        meter = client.get_node(ua.NodeId("GridMeter", ns))
        diag = await meter.get_child(["2:Diagnostics"])
        assert await (await diag.get_child(["2:ConnectionState"])).read_value() == "Connected"
        assert await (await diag.get_child(["2:RequestCount"])).read_value() > 0
        running = client.get_node(ua.NodeId("PvInverter1.Running", ns))  # a bit of a status word
        assert await _good_value(running) is True


async def test_battery_setpoint_moves_the_grid_meter(demo: Gateway) -> None:
    sim = demo.simulations[0]
    assert isinstance(sim, SiteSimulation)
    url = demo.config.endpoint.replace("opc.tcp://", "opc.tcp://operator1:op-secret-1@")
    async with Client(url) as client:
        ns = await client.get_namespace_index(NS)
        grid = client.get_node(ua.NodeId("GridMeter.ActivePower", ns))
        setpoint = client.get_node(ua.NodeId("Battery1.ActivePowerSetpoint", ns))
        battery = client.get_node(ua.NodeId("Battery1.ActivePower", ns))
        await _good_value(grid)
        # The demo runs self-consumption; in Manual no mode steers and an operator's setpoint stands.
        assert demo.control is not None
        assert demo.control.go_to_mode("Manual", Writer("operator1", Role.operator))[0].is_good()
        pv = sim.device("PvInverter1").model
        assert pv is not None
        pv.peak_kw = 0.0  # type: ignore[attr-defined]  # no sun, so the meter moves only with the battery and the (slow) load
        await asyncio.sleep(0.5)
        before = await _good_value(grid)
        await setpoint.write_value(ua.DataValue(ua.Variant(50.0, ua.VariantType.Double)))
        assert await setpoint.read_value() == pytest.approx(50.0)
        # The battery ramps to 50 kW discharge; the meter reads load - pv - battery.
        deadline = asyncio.get_running_loop().time() + 5.0
        while abs(await battery.read_value() - 50.0) > 0.2:
            assert asyncio.get_running_loop().time() < deadline, "battery did not follow its setpoint"
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.4)  # the meter's HighSpeed scan
        after = await grid.read_value()
        assert after - before == pytest.approx(-50.0, abs=8.0)
        assert sim.device("Battery1").get("ActivePowerSetpoint") == pytest.approx(50.0)
        with pytest.raises(ua.UaStatusCodeError) as err:
            await setpoint.write_value(ua.DataValue(ua.Variant(150.0, ua.VariantType.Double)))
        assert err.value.code == ua.StatusCodes.BadOutOfRange


async def test_a_fault_trips_the_battery_and_the_gateway_sees_it(demo: Gateway) -> None:
    sim = demo.simulations[0]
    assert isinstance(sim, SiteSimulation)
    battery = sim.device("Battery1")
    assert battery.model is not None
    battery.model.inject_fault(1)  # type: ignore[attr-defined]
    async with Client(demo.config.endpoint) as client:
        ns = await client.get_namespace_index(NS)
        code = client.get_node(ua.NodeId("Battery1.FaultCode", ns))
        deadline = asyncio.get_running_loop().time() + 5.0
        while await _good_value(code) != 1:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.1)
        assert await _good_value(client.get_node(ua.NodeId("Battery1.Running", ns))) is False
        sim.device("Battery1").memory.offline = True  # then the battery stops answering
        node = client.get_node(ua.NodeId("Battery1.StateOfCharge", ns))
        while (await node.read_data_value(raise_on_bad_status=False)).StatusCode.value != \
                ua.StatusCodes.BadCommunicationError:
            assert asyncio.get_running_loop().time() < deadline + 5.0
            await asyncio.sleep(0.1)
        dv = await node.read_data_value(raise_on_bad_status=False)
        assert dv.Value.Value is not None  # the last value is kept
