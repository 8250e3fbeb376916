"""Nodes that share their attribute values in memory stay independent: a write to one changes no other.

The loader lets nodes alike share their attributes' DataValues, names and ReferenceDescriptions.
A real gateway on loopback serves two sibling variables with identical attributes (the same
DisplayName, WriteMask, AccessLevel, DataType ...); an admin over a SignAndEncrypt channel writes
one's value and renames it, and the sibling reads, browses and notifies as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from asyncua import Client, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from cryptography.x509.oid import ExtendedKeyUsageOID
from raw_attributes import read_attribute, write_attribute

from gateway.security.roles import Role
from gateway.security.users import UserStore
from gateway.server import Gateway, GatewayConfig

SITE = "urn:test:shared-attributes"
ADMIN = ("admin1", "admin-secret-1")
SIBLINGS = ("A", "B", "C")
_VARIABLES = "\n".join(f"""
  <UAVariable NodeId="ns=1;s=Plant.{name}" BrowseName="1:{name}" ParentNodeId="ns=1;s=Plant" DataType="Double"
              AccessLevel="3" WriteMask="64">
    <DisplayName>Setpoint</DisplayName>
    <Description>A setpoint</Description>
    <References>
      <Reference ReferenceType="HasTypeDefinition">i=63</Reference>
      <Reference ReferenceType="HasComponent" IsForward="false">ns=1;s=Plant</Reference>
    </References>
    <Value><Double xmlns="http://opcfoundation.org/UA/2008/02/Types.xsd">1.5</Double></Value>
  </UAVariable>""" for name in SIBLINGS)
NODESET = f"""<?xml version="1.0" encoding="utf-8"?>
<UANodeSet xmlns="http://opcfoundation.org/UA/2011/03/UANodeSet.xsd">
  <NamespaceUris><Uri>{SITE}</Uri></NamespaceUris>
  <Aliases>
    <Alias Alias="Double">i=11</Alias><Alias Alias="HasTypeDefinition">i=40</Alias>
    <Alias Alias="Organizes">i=35</Alias><Alias Alias="HasComponent">i=47</Alias>
  </Aliases>
  <UAObject NodeId="ns=1;s=Plant" BrowseName="1:Plant">
    <DisplayName>Plant</DisplayName>
    <References>
      <Reference ReferenceType="HasTypeDefinition">i=58</Reference>
      <Reference ReferenceType="Organizes" IsForward="false">i=85</Reference>
    </References>
  </UAObject>{_VARIABLES}
</UANodeSet>
"""


@pytest.fixture
async def admin(tmp_path: Path, free_port: int) -> AsyncIterator[tuple[Client, int]]:
    site = tmp_path / "site.xml"
    site.write_text(NODESET)
    data = tmp_path / "data"
    UserStore(data / "users.yaml").add(*ADMIN, Role.admin)
    gw = Gateway(GatewayConfig(nodesets=[site], endpoint=f"opc.tcp://127.0.0.1:{free_port}", data_dir=data,
                               insecure=True))
    await gw.load()
    await gw.start()
    try:
        cert, key = tmp_path / "client.der", tmp_path / "client.pem"
        await setup_self_signed_certificate(key, cert, "urn:shared-attributes-client", "localhost",
                                            [ExtendedKeyUsageOID.CLIENT_AUTH], {"commonName": "shared-attributes"})
        trusted = data / "pki" / "trusted"
        trusted.mkdir(parents=True, exist_ok=True)
        (trusted / cert.name).write_bytes(cert.read_bytes())
        client = Client(gw.config.endpoint, timeout=10)
        client.application_uri = "urn:shared-attributes-client"
        await client.set_security_string(f"Basic256Sha256,SignAndEncrypt,{cert},{key}")
        client.set_user(ADMIN[0])
        client.set_password(ADMIN[1])
        async with client:
            yield client, await client.get_namespace_index(SITE)
    finally:
        await gw.stop()


_SHARED = (ua.AttributeIds.DisplayName, ua.AttributeIds.Description, ua.AttributeIds.WriteMask,
           ua.AttributeIds.AccessLevel, ua.AttributeIds.DataType, ua.AttributeIds.ValueRank,
           ua.AttributeIds.Historizing, ua.AttributeIds.MinimumSamplingInterval, ua.AttributeIds.Value)


@pytest.mark.integration
async def test_a_write_to_one_node_leaves_its_siblings_unchanged(admin: tuple[Client, int]) -> None:
    client, ns = admin
    a, b, c = (ua.NodeId(f"Plant.{name}", ns) for name in SIBLINGS)
    before = {aid: await read_attribute(client, b, aid) for aid in _SHARED}
    assert before[ua.AttributeIds.DisplayName] == ua.LocalizedText("Setpoint")
    assert [await read_attribute(client, a, aid) for aid in _SHARED] == list(before.values())

    # C's DisplayName watched before A is renamed: it must not report A's new name.
    seen: list[object] = []
    first = asyncio.Event()

    class Handler:
        def datachange_notification(self, node: object, val: object, data: object) -> None:
            seen.append(val)
            first.set()

    sub = await client.create_subscription(100, Handler())
    await sub.subscribe_data_change(client.get_node(c), ua.AttributeIds.DisplayName)
    async with asyncio.timeout(10):
        await first.wait()

    assert await write_attribute(client, a, ua.Variant(42.0)) == ua.StatusCodes.Good
    renamed = ua.LocalizedText("Renamed")
    assert await write_attribute(client, a, ua.Variant(renamed), ua.AttributeIds.DisplayName) == ua.StatusCodes.Good
    # WriteMask lets nobody write AccessLevel: refused, and nobody's changes
    assert await write_attribute(client, a, ua.Variant(1, ua.VariantType.Byte),
                                 ua.AttributeIds.AccessLevel) == ua.StatusCodes.BadNotWritable

    assert await read_attribute(client, a, ua.AttributeIds.Value) == 42.0
    assert await read_attribute(client, a, ua.AttributeIds.DisplayName) == renamed
    for sibling in (b, c):
        assert {aid: await read_attribute(client, sibling, aid) for aid in _SHARED} == before
    children = {ref.NodeId: ref.DisplayName
                for ref in await client.get_node(ua.NodeId("Plant", ns)).get_references(ua.ObjectIds.HasComponent)}
    assert children == {a: renamed, b: ua.LocalizedText("Setpoint"), c: ua.LocalizedText("Setpoint")}
    await asyncio.sleep(0.5)  # several publishing intervals: a notification for C would have come
    assert seen == [ua.LocalizedText("Setpoint")]
    await sub.delete()
