"""What a client reads of its rights is what the write path enforces, and every write and call is audited.

A real gateway on loopback and asyncua clients: anonymous (a viewer), an operator and an admin
over SignAndEncrypt channels.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from asyncua import Client, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from cryptography.x509.oid import ExtendedKeyUsageOID
from raw_attributes import read_attribute, write_attribute

from gateway.events.audit import CallRecord, WriteRecord
from gateway.security.roles import Role
from gateway.security.users import UserStore
from gateway.server import Gateway, GatewayConfig

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "write_model_site.xml"
SITE = "urn:test:write-model"
USERS = {"viewer": ("viewer1", "view-secret-1", Role.viewer), "operator": ("operator1", "op-secret-1", Role.operator),
         "admin": ("admin1", "admin-secret-1", Role.admin)}
ENABLED_FLAG = ua.NodeId(ua.ObjectIds.Server_ServerDiagnostics_EnabledFlag)
GET_MONITORED_ITEMS = ua.NodeId(ua.ObjectIds.Server_GetMonitoredItems)  # executable, unimplemented
CURRENT_WRITE = ua.AccessLevel.CurrentWrite.mask


@pytest.fixture
async def gateway(tmp_path: Path, free_port: int) -> AsyncIterator[Gateway]:
    users = UserStore(tmp_path / "data" / "users.yaml")
    for name, password, role in USERS.values():
        users.add(name, password, role)
    gw = Gateway(GatewayConfig(nodesets=[FIXTURE], endpoint=f"opc.tcp://127.0.0.1:{free_port}",
                               data_dir=tmp_path / "data", insecure=True))
    await gw.load()
    await gw.start()
    yield gw
    await gw.stop()


async def _clients(gw: Gateway, folder: Path, stack: AsyncExitStack) -> dict[str, Client]:
    """An anonymous client, and one per user over Basic256Sha256 SignAndEncrypt with a trusted certificate."""
    cert, key = folder / "client.der", folder / "client.pem"
    await setup_self_signed_certificate(key, cert, "urn:write-model-client", "localhost",
                                        [ExtendedKeyUsageOID.CLIENT_AUTH], {"commonName": "write-model-client"})
    trusted = gw.config.data_dir / "pki" / "trusted"
    trusted.mkdir(parents=True, exist_ok=True)
    (trusted / cert.name).write_bytes(cert.read_bytes())
    clients = {"anonymous": Client(gw.config.endpoint, timeout=10)}
    for role, (name, password, _) in USERS.items():
        client = Client(gw.config.endpoint, timeout=10)
        client.application_uri = "urn:write-model-client"
        await client.set_security_string(f"Basic256Sha256,SignAndEncrypt,{cert},{key}")
        client.set_user(name)
        client.set_password(password)
        clients[role] = client
    for client in clients.values():
        await stack.enter_async_context(client)
    return clients


@pytest.mark.integration
async def test_rights_a_client_reads_are_the_rights_the_write_path_enforces(gateway: Gateway, tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        clients = await _clients(gateway, tmp_path, stack)
        ns = await clients["anonymous"].get_namespace_index(SITE)
        limit, tenths = ua.NodeId("Site.ExportLimit", ns), ua.NodeId("Dev1.Tenths", ns)
        level = ua.NodeId("Dev1.Level", ns)
        writable = {"anonymous": False, "viewer": False, "operator": True, "admin": True}
        values = iter(range(1, 100))
        for who, client in clients.items():
            for nodeid in (limit, tenths, level, ENABLED_FLAG):
                user_level = await read_attribute(client, nodeid, ua.AttributeIds.UserAccessLevel)
                # The model's AccessLevel stays what the nodeset says, the same for everyone.
                model_level = await read_attribute(client, nodeid, ua.AttributeIds.AccessLevel)
                expected = writable[who] and nodeid in (limit, tenths)
                assert bool(user_level & CURRENT_WRITE) is expected, (who, nodeid, user_level)
                assert user_level & ~CURRENT_WRITE == model_level & ~CURRENT_WRITE & ~0x68
                variant = ua.Variant(True) if nodeid == ENABLED_FLAG else ua.Variant(float(next(values)))
                status = await write_attribute(client, nodeid, variant)
                assert (status == ua.StatusCodes.Good) is expected, (who, nodeid, ua.StatusCode(status).name)
            mask = await read_attribute(client, limit, ua.AttributeIds.UserWriteMask)
            assert mask == (ua.WriteMask.DisplayName.mask if who == "admin" else 0), (who, mask)
            status = await write_attribute(client, limit, ua.Variant(ua.LocalizedText(f"by {who}")),
                                           ua.AttributeIds.DisplayName)
            assert (status == ua.StatusCodes.Good) is (who == "admin"), (who, ua.StatusCode(status).name)
            executable = await read_attribute(client, GET_MONITORED_ITEMS, ua.AttributeIds.UserExecutable)
            assert executable is writable[who], (who, executable)
        # i=2294 has CurrentWrite in its AccessLevel, yet the server's variables are written by no one here.
        assert await read_attribute(clients["admin"], ENABLED_FLAG, ua.AttributeIds.AccessLevel) & CURRENT_WRITE
        assert await write_attribute(clients["admin"], ENABLED_FLAG, ua.Variant(True)) == ua.StatusCodes.BadNotWritable


@pytest.mark.integration
async def test_writes_and_calls_are_audited_with_who_and_what(gateway: Gateway, tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.audit")
    async with AsyncExitStack() as stack:
        clients = await _clients(gateway, tmp_path, stack)
        ns = await clients["anonymous"].get_namespace_index(SITE)
        limit, site = ua.NodeId("Site.ExportLimit", ns), ua.NodeId("Site", ns)
        double = await _add_double_method(gateway, ns)
        assert await write_attribute(clients["operator"], limit, ua.Variant(250.0)) == ua.StatusCodes.Good
        assert await write_attribute(clients["anonymous"], limit, ua.Variant(1.0)) == ua.StatusCodes.BadUserAccessDenied
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await clients["viewer"].get_node(site).call_method(double, 1.5)
        assert await clients["operator"].get_node(site).call_method(double, 2.5) == 5.0
    writes = [r for r in caplog.records if isinstance(getattr(r, "audit", None), WriteRecord)]
    calls = [r for r in caplog.records if isinstance(getattr(r, "audit", None), CallRecord)]
    assert [r.levelno for r in writes + calls] == [logging.INFO] * 4
    assert all(r.name == "gateway.audit" for r in writes + calls)
    accepted, refused = writes[0].audit, writes[1].audit
    assert (accepted.writer.name, accepted.writer.role, accepted.old, accepted.new, accepted.status.value) == \
        ("operator1", Role.operator, 100.0, 250.0, ua.StatusCodes.Good)
    assert accepted.writer.client.startswith("127.0.0.1:") and "session" in accepted.writer.client
    assert (refused.writer.name, refused.writer.role, refused.old, refused.new, refused.status.value) == \
        ("anonymous", Role.viewer, 250.0, 1.0, ua.StatusCodes.BadUserAccessDenied)
    assert f"ns={ns};s=Site.ExportLimit Value by operator1 (operator) from 127.0.0.1:" in writes[0].getMessage()
    assert writes[0].getMessage().endswith("100.0 -> 250.0: Good")
    assert [(c.audit.writer.name, c.audit.status.value) for c in calls] == [
        ("viewer1", ua.StatusCodes.BadUserAccessDenied), ("operator1", ua.StatusCodes.Good)]
    assert (calls[1].audit.method, calls[1].audit.node) == (double, site)
    assert (calls[1].audit.inputs, calls[1].audit.outputs) == ([2.5], [5.0])
    assert calls[1].getMessage().startswith(f"accepted call {double.to_string()} on ns={ns};s=Site by operator1")
    assert calls[1].getMessage().endswith(": (2.5) -> (5.0): Good")


async def _add_double_method(gw: Gateway, ns: int) -> ua.NodeId:
    """A method on the site (the fixture has none): returns twice its argument."""

    async def double(parent: ua.NodeId, value: ua.Variant) -> list[ua.Variant]:
        return [ua.Variant(value.Value * 2, ua.VariantType.Double)]

    site = gw.server.get_node(ua.NodeId("Site", ns))
    method = await site.add_method(ua.NodeId("Site.Double", ns), ua.QualifiedName("Double", ns), double,
                                   [ua.VariantType.Double], [ua.VariantType.Double])
    return method.nodeid
