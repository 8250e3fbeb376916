"""The example site of an SCPI supply and an Opto 22 controller under --simulate: the simulators the drivers
start are read and written through an OPC UA client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from field_client import UaView

from gateway.drivers.optommp.simulator import MmpSimulation
from gateway.drivers.scpi.simulator import ScpiSimulation
from gateway.nodeset.yaml_build import compile_text

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "nodesets" / "examples" / "instruments-lab.xml"
pytestmark = pytest.mark.integration


def test_the_example_site_is_built_from_its_yaml() -> None:
    yaml_text = (ROOT / "nodesets/examples/instruments-lab.yaml").read_text(encoding="utf-8")
    assert compile_text(yaml_text, "instruments-lab.yaml") == EXAMPLE.read_bytes()


async def test_the_example_site_under_simulate_reads_and_writes_both_instruments(simulated_gateway: Any) -> None:
    gw = await simulated_gateway(EXAMPLE)
    psu = next(s for s in gw.simulations if isinstance(s, ScpiSimulation)).instruments["StackSupply"]
    epic = next(s for s in gw.simulations if isinstance(s, MmpSimulation)).controllers["PlantController"]
    url = gw.config.endpoint.replace("opc.tcp://", "opc.tcp://operator1:op-secret-1@")
    async with Client(url) as client:
        view = UaView(client, await client.get_namespace_index("urn:opcua-gateway:examples:instruments-lab"))
        identity = await view.wait("StackSupply.Identity", lambda d: d.StatusCode.is_good())
        assert identity.Value.Value.startswith("OPCUA-GATEWAY,SIM-DCS60-100,")
        await view.wait("StackSupply.Voltage", lambda d: d.StatusCode.is_good() and d.Value.Value == 0.0)
        await view.write("StackSupply.VoltageSetpoint", 24.0, ua.VariantType.Double)
        await view.write("StackSupply.CurrentLimit", 60.0, ua.VariantType.Double)
        await view.write("StackSupply.Output", True, ua.VariantType.Boolean)
        assert (psu.voltage_set, psu.current_set, psu.output) == (24.0, 60.0, True)
        await view.wait("StackSupply.Current", lambda d: d.Value.Value == 48.0, "24 V into the 0.5 ohm stack")

        temperature = await view.wait("PlantController.StackTemperature", lambda d: d.StatusCode.is_good())
        assert 600 <= temperature.Value.Value <= 900  # moved inside its EURange by the simulation
        await view.write("PlantController.HeaterPower", 55.5, ua.VariantType.Double)
        await view.wait("PlantController.HeaterPower", lambda d: d.Value.Value == 55.5, "read back")
        await view.write("PlantController.VentilationFan", True, ua.VariantType.Boolean)
        await view.write("PlantController.HeatUpStep", 3, ua.VariantType.Int32)
        assert epic.get_int(0xF0D81000) == 3
        assert (await view.dv("PlantController.EStopHealthy")()).StatusCode.is_good()
