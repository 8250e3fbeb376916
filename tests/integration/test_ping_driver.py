"""The ping driver through the gateway and an OPC UA client: ICMP to this machine and to a host that is not
there, a TCP service that goes away and returns, and the example site under --simulate."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from field_client import wait_for

from gateway.drivers.ping.driver import icmp_allowed
from gateway.nodeset.yaml_build import compile_text
from gateway.server import Gateway, GatewayConfig

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "nodesets" / "examples" / "ping-site.xml"
NOWHERE = "198.51.100.7"  # TEST-NET-2 (RFC 5737): never assigned, so nothing answers
pytestmark = pytest.mark.integration

_SITE = """site: {{namespace: "urn:test:ping", name: Ping}}
profiles:
  Pinged:
    variables:
      - {{name: Reachable, datatype: Boolean, address: Reachable, scan: HighSpeed}}
      - {{name: RoundTrip, unit: ms, address: RoundTrip, scan: HighSpeed}}
devices:
  - {{name: Here, profile: Pinged, connection: "ping://127.0.0.1?mode=icmp"}}
  - {{name: Nowhere, profile: Pinged, connection: "ping://{nowhere}?mode=icmp&timeout_ms=300"}}
  - {{name: Service, profile: Pinged, connection: "ping://127.0.0.1?mode=tcp&port={port}&timeout_ms=300"}}
"""


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


@pytest.fixture
async def ping_gateway(tmp_path: Path, free_port: int) -> AsyncIterator[tuple[Gateway, int]]:
    service_port = _free_tcp_port()
    site = tmp_path / "ping.xml"
    site.write_bytes(compile_text(_SITE.format(nowhere=NOWHERE, port=service_port), "ping.yaml"))
    gw = Gateway(GatewayConfig(nodesets=[site], endpoint=f"opc.tcp://127.0.0.1:{free_port}",
                               data_dir=tmp_path / "data", insecure=True))
    await gw.load()
    await gw.start()
    try:
        yield gw, service_port
    finally:
        await gw.stop()


def test_icmp_is_allowed_here() -> None:
    assert icmp_allowed(), "ICMP echo needs root or net.ipv4.ping_group_range; the tests run as root"


async def test_reachable_unreachable_and_a_service_that_returns(ping_gateway: tuple[Gateway, int]) -> None:
    gw, port = ping_gateway
    async with Client(gw.config.endpoint) as client:
        ns = await client.get_namespace_index("urn:test:ping")

        def dv(name: str) -> Any:
            return lambda: client.get_node(ua.NodeId(name, ns)).read_data_value(raise_on_bad_status=False)

        here = await wait_for(dv("Here.Reachable"), lambda d: d.StatusCode.is_good(), what="ICMP to 127.0.0.1")
        assert here.Value.Value is True
        rtt = await wait_for(dv("Here.RoundTrip"), lambda d: d.StatusCode.is_good())
        assert 0 < rtt.Value.Value < 300
        gone = await wait_for(dv("Nowhere.Reachable"), lambda d: d.StatusCode.is_good(), what="ICMP to nowhere")
        assert gone.Value.Value is False
        assert (await dv("Nowhere.RoundTrip")()).StatusCode.value == ua.StatusCodes.BadNoCommunication
        state = client.get_node(ua.NodeId("Nowhere.Diagnostics.ConnectionState", ns))
        await wait_for(state.read_value, lambda s: s == "Connected")  # an unreachable host is a value
        errors = client.get_node(ua.NodeId("Nowhere.Diagnostics.ErrorCount", ns))
        await wait_for(errors.read_value, lambda n: n >= 1, what="probes not answered")

        down = await wait_for(dv("Service.Reachable"), lambda d: d.StatusCode.is_good(), what="TCP, no service")
        assert down.Value.Value is False
        server = await asyncio.start_server(_close_at_once, "127.0.0.1", port)
        try:
            await wait_for(dv("Service.Reachable"), lambda d: d.Value.Value is True, what="service up")
            up_rtt = await wait_for(dv("Service.RoundTrip"), lambda d: d.StatusCode.is_good())
            assert 0 < up_rtt.Value.Value < 300
        finally:
            server.close()
            await server.wait_closed()
        await wait_for(dv("Service.Reachable"), lambda d: d.Value.Value is False, what="service gone")
        gone_rtt = await dv("Service.RoundTrip")()
        assert gone_rtt.StatusCode.value == ua.StatusCodes.BadNoCommunication
        assert gone_rtt.Value.Value == up_rtt.Value.Value or gone_rtt.Value.Value > 0  # last value kept
        server = await asyncio.start_server(_close_at_once, "127.0.0.1", port)
        try:
            await wait_for(dv("Service.Reachable"), lambda d: d.Value.Value is True, what="service back")
        finally:
            server.close()
            await server.wait_closed()


async def test_the_example_site_under_simulate_reaches_every_host(simulated_gateway: Any) -> None:
    assert compile_text((ROOT / "nodesets/examples/ping-site.yaml").read_text(), "ping-site.yaml") == \
        EXAMPLE.read_bytes()
    gw = await simulated_gateway(EXAMPLE)
    async with Client(gw.config.endpoint) as client:
        ns = await client.get_namespace_index("urn:opcua-gateway:examples:ping-site")
        for device in ("Plc", "PowerSupply", "Router"):
            node = client.get_node(ua.NodeId(f"{device}.Reachable", ns))
            got = await wait_for(lambda n=node: n.read_data_value(raise_on_bad_status=False),
                                  lambda d: d.StatusCode.is_good() and d.Value.Value is True, what=device)
            assert got.Value.Value is True
