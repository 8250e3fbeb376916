"""The shipped device profiles: a site of the seeds' devices builds, checks, and runs on the generic simulator."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from asyncua import Client, ua

from gateway.cli import main
from gateway.drivers.modbus.simulators.site import SiteSimulation
from gateway.nodeset.yaml_build import shipped_profiles
from gateway.server import Gateway

ROOT = Path(__file__).resolve().parents[2]
SITE_YAML = ROOT / "nodesets" / "examples" / "profiles-site.yaml"
SITE_XML = ROOT / "nodesets" / "examples" / "profiles-site.xml"
NS = "urn:opcua-gateway:examples:profiles-site"


def test_every_profile_names_its_source() -> None:
    profiles = shipped_profiles()
    assert {"ConextXWPlus", "ConextMPPT60", "CarloGavazziEM24", "DeltaVFD", "AlicatFlowController"} <= set(profiles)
    for name, profile in profiles.items():
        assert profile.get("source"), f"profile {name} does not say where its register map came from"


def test_the_example_site_is_built_from_the_profiles(tmp_path: Path) -> None:
    out = tmp_path / "site.xml"
    assert main(["nodeset", "build", str(SITE_YAML), "-o", str(out)]) == 0
    assert out.read_bytes() == SITE_XML.read_bytes(), "nodesets/examples/profiles-site.xml is stale: rebuild it"
    assert main(["nodeset", "check", str(out)]) == 0


@pytest.fixture
async def site(simulated_gateway) -> Gateway:
    return await simulated_gateway(SITE_XML)


@pytest.mark.integration
async def test_profiles_site_runs_on_the_generic_simulator(site: Gateway) -> None:
    sim = site.simulations[0]
    assert isinstance(sim, SiteSimulation)
    assert len(sim.servers) == 4  # the XW+ and the MPPT60 share the ComBox's link
    assert site.bindings is not None
    bound = [v.nodeid for d in site.bindings.devices for v in d.variables]
    url = site.config.endpoint.replace("opc.tcp://", "opc.tcp://operator1:op-secret-1@")
    async with Client(url) as client:
        deadline = asyncio.get_running_loop().time() + 8.0
        while True:
            values = await client.read_attributes([client.get_node(n) for n in bound])
            bad = [str(n) for n, dv in zip(bound, values, strict=True) if not dv.StatusCode.is_good()]
            if not bad:
                break
            assert asyncio.get_running_loop().time() < deadline, f"not Good: {bad}"
            await asyncio.sleep(0.2)
        ns = await client.get_namespace_index(NS)
        setpoint = client.get_node(ua.NodeId("Pump.FrequencySetpoint", ns))
        await setpoint.write_value(ua.DataValue(ua.Variant(42.5, ua.VariantType.Double)))
        assert await setpoint.read_value() == pytest.approx(42.5)
        assert sim.device("Pump").memory.get("holding", 0x2001, 1) == [4250]  # scale 0.01, as the drive holds it
        name = await client.get_node(ua.NodeId("Inverter.DeviceName", ns)).read_value()
        assert name == "Inverter"  # the simulator fills strings with the device name (little byte order)
