"""What the field driver tests share: a gateway on a YAML site with an operator, and an OPC UA client that waits
for a node's value to become what a test expects (bounded)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

from asyncua import Client, ua

from gateway.nodeset.yaml_build import compile_text
from gateway.security.roles import Role
from gateway.security.users import UserStore
from gateway.server import Gateway, GatewayConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start_gateway(tmp: Path, site_yaml: str) -> Gateway:
    """A started gateway serving `site_yaml`, with operator1 / op-secret-1 (operator)."""
    site = tmp / "site.xml"
    site.write_bytes(compile_text(site_yaml, "site.yaml"))
    UserStore(tmp / "data" / "users.yaml").add("operator1", "op-secret-1", Role.operator)
    gw = Gateway(GatewayConfig(nodesets=[site], endpoint=f"opc.tcp://127.0.0.1:{free_port()}",
                               data_dir=tmp / "data", insecure=True))
    await gw.load()
    await gw.start()
    return gw


async def wait_for(read: Any, check: Any, within: float = 15.0, what: str = "") -> Any:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        got = await read()
        if check(got):
            return got
        assert asyncio.get_running_loop().time() < deadline, f"{what}: still {got!r} after {within} s"
        await asyncio.sleep(0.05)


class UaView:
    """Nodes of one namespace by String identifier, through a connected client."""

    def __init__(self, client: Client, ns: int) -> None:
        self.client, self.ns = client, ns

    def node(self, name: str) -> Any:
        return self.client.get_node(ua.NodeId(name, self.ns))

    def dv(self, name: str) -> Any:
        return lambda: self.node(name).read_data_value(raise_on_bad_status=False)

    async def wait(self, name: str, check: Any, what: str = "", within: float = 10.0) -> ua.DataValue:
        return await wait_for(self.dv(name), check, within, what or name)

    async def write(self, name: str, value: Any, vtype: ua.VariantType) -> None:
        await self.node(name).write_value(ua.DataValue(ua.Variant(value, vtype)))


async def connect(gw: Gateway, namespace: str, operator: bool = False) -> tuple[Client, UaView]:
    url = gw.config.endpoint.replace("opc.tcp://", "opc.tcp://operator1:op-secret-1@") if operator \
        else gw.config.endpoint
    client = Client(url)
    await client.connect()
    return client, UaView(client, await client.get_namespace_index(namespace))
