"""Device diagnostics have NodeIds that depend on the site only, not on the order its nodesets load in.

Two independent nodesets (neither requires the other) get their namespace indexes in the order
they are given; a client browsing each device's Diagnostics sees the same (namespace URI,
identifier) pairs either way, readable ones, and a ResponseTime with its unit.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from asyncua import Client, ua

from gateway.diagnostics import FIELDS
from gateway.nodeset.units import eu_information, unit_id
from gateway.nodeset.yaml_build import compile_text
from gateway.nodesets import GATEWAY_NAMESPACE
from gateway.server import Gateway, GatewayConfig

SITE_A = """
site: {namespace: "urn:test:stable-a", name: SiteA}
devices:
  - name: Battery1
    connection: sim://battery1
    variables: [{name: Power, address: "constant?value=1"}]
"""
SITE_B = """
site: {namespace: "urn:test:stable-b", name: PlantB}
devices:
  - name: Meter1
    connection: sim://meter1
    variables: [{name: Power, address: "constant?value=2"}]
"""


@pytest.fixture
def sites(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a.xml", tmp_path / "b.xml"
    a.write_bytes(compile_text(SITE_A, "a.yaml"))
    # Meter1 with a numeric NodeId: its diagnostics go in the gateway's namespace, under its browse path.
    xml = compile_text(SITE_B, "b.yaml").decode()
    xml = xml.replace('"ns=1;s=Meter1"', '"ns=1;i=5000"').replace(">ns=1;s=Meter1<", ">ns=1;i=5000<")
    assert "ns=1;i=5000" in xml
    b.write_text(xml)
    return a, b


async def _diagnostics_ids(nodesets: list[Path], port: int, data_dir: Path
                           ) -> tuple[dict[str, set[tuple[str, str]]], list[tuple[ua.EUInformation, str]]]:
    """(namespace URI, identifier) of every Diagnostics node of each device, as a client browses them;
    and each ResponseTime's unit and description."""
    gw = Gateway(GatewayConfig(nodesets=nodesets, endpoint=f"opc.tcp://127.0.0.1:{port}", data_dir=data_dir,
                               insecure=True))
    await gw.load()
    await gw.start()
    try:
        async with Client(f"opc.tcp://127.0.0.1:{port}", timeout=10) as client:
            uris = await client.get_namespace_array()
            gw_ns = uris.index(GATEWAY_NAMESPACE)
            out: dict[str, set[tuple[str, str]]] = {}
            units: list[tuple[ua.EUInformation, str]] = []
            for site in ("SiteA", "PlantB"):
                root = await client.nodes.objects.get_child(f"{uris.index(_uri(site))}:{site}")
                for device in await root.get_children(refs=ua.ObjectIds.HasComponent):
                    diag = await device.get_child(f"{gw_ns}:Diagnostics")
                    nodes = [diag, *await diag.get_children(refs=ua.ObjectIds.HasComponent)]
                    response_time = await diag.get_child(f"{gw_ns}:ResponseTime")
                    for prop in await response_time.get_properties():
                        nodes.append(prop)
                        if (await prop.read_browse_name()).Name == "EngineeringUnits":
                            units.append((await prop.read_value(), (await response_time.read_description()).Text))
                    name = (await device.read_browse_name()).Name
                    out[name] = {(uris[n.nodeid.NamespaceIndex], str(n.nodeid.Identifier)) for n in nodes}
            return out, units
    finally:
        await gw.stop()


def _uri(site: str) -> str:
    return "urn:test:stable-a" if site == "SiteA" else "urn:test:stable-b"


@pytest.mark.integration
async def test_diagnostics_nodeids_do_not_depend_on_nodeset_order(sites: tuple[Path, Path], free_port: int,
                                                                  tmp_path: Path) -> None:
    a, b = sites
    first, units = await _diagnostics_ids([a, b], free_port, tmp_path / "d1")
    second, _ = await _diagnostics_ids([b, a], free_port, tmp_path / "d2")
    assert first == second
    names = ["Diagnostics", *(f"Diagnostics.{f}" for f in FIELDS), "Diagnostics.ResponseTime.EngineeringUnits"]
    # A String NodeId: the device's own namespace and id. A numeric one: the gateway's namespace, browse path.
    assert first["Battery1"] == {("urn:test:stable-a", f"Battery1.{n}") for n in names}
    assert first["Meter1"] == {(GATEWAY_NAMESPACE, f"PlantB.Meter1.{n}") for n in names}
    # ResponseTime in milliseconds (UNECE C26), as EngineeringUnits of every device, and described.
    assert units == [(eu_information("ms"), "Duration of the last successful request, in milliseconds.")] * 2
    assert units[0][0].UnitId == unit_id("C26")
