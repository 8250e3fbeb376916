"""A real gateway on loopback, used by asyncua's client: browse, read, write, subscribe, HistoryRead."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asyncua import Client, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.drivers.sim import SimDriver
from gateway.security.roles import Role
from gateway.security.users import UserStore
from gateway.server import Gateway, GatewayConfig

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "sim_site.xml"
SITE = "urn:test:sim-site"


async def make_client_cert(folder: Path, name: str = "test-client") -> tuple[Path, Path]:
    cert, key = folder / f"{name}.der", folder / f"{name}.pem"
    await setup_self_signed_certificate(
        key, cert, f"urn:{name}", "localhost", [ExtendedKeyUsageOID.CLIENT_AUTH], {"commonName": name}
    )
    return cert, key


@pytest.fixture
async def gateway(tmp_path: Path, free_port: int):
    UserStore(tmp_path / "data" / "users.yaml").add("operator1", "op-secret-1", Role.operator)
    config = GatewayConfig(nodesets=[FIXTURE], endpoint=f"opc.tcp://127.0.0.1:{free_port}", data_dir=tmp_path / "data",
                           insecure=True)
    gw = Gateway(config)
    await gw.load()
    await gw.start()
    yield gw
    await gw.stop()


async def _ns(client: Client) -> int:
    return await client.get_namespace_index(SITE)


async def _wait_for(predicate, within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


@pytest.mark.integration
async def test_browse_read_and_diagnostics(gateway: Gateway) -> None:
    async with Client(gateway.config.endpoint) as client:
        ns = await _ns(client)
        sim1 = client.get_node(ua.NodeId("Sim1", ns))
        names = {(await c.read_browse_name()).Name for c in await sim1.get_children()}
        assert {"Sine", "Setpoint", "Scaled", "Counter", "Flag", "Connection", "Diagnostics"} <= names
        scaled = client.get_node(ua.NodeId("Sim1.Scaled", ns))
        await _wait_for(lambda: _good(scaled))
        dv = await scaled.read_data_value()
        assert dv.Value.Value == pytest.approx(13.3) and dv.Value.VariantType == ua.VariantType.Double
        assert dv.SourceTimestamp is not None
        counter = await client.get_node(ua.NodeId("Sim1.Counter", ns)).read_data_value()
        assert counter.Value.VariantType == ua.VariantType.Int32
        diag = await sim1.get_child(["2:Diagnostics"])
        assert await (await diag.get_child(["2:ConnectionState"])).read_value() == "Connected"
        assert await (await diag.get_child(["2:RequestCount"])).read_value() > 0
        address = await client.get_node(ua.NodeId("Sim1.Sine.FieldAddress", ns)).read_value()
        assert address == "sine?period=10&amplitude=10"  # bindings are visible to clients


async def _good(node) -> bool:
    dv = await node.read_data_value(raise_on_bad_status=False)
    return dv.StatusCode is not None and dv.StatusCode.is_good() and dv.Value.Value is not None


@pytest.mark.integration
async def test_subscription_sees_changes_and_device_loss(gateway: Gateway) -> None:
    class Handler:
        def __init__(self) -> None:
            self.values: list[ua.DataValue] = []

        def datachange_notification(self, node, val, data) -> None:
            self.values.append(data.monitored_item.Value)

    async with Client(gateway.config.endpoint) as client:
        ns = await _ns(client)
        handler = Handler()
        sub = await client.create_subscription(50, handler)
        await sub.subscribe_data_change(client.get_node(ua.NodeId("Sim1.Sine", ns)))
        await _wait_for(lambda: _count(handler.values, 3))
        SimDriver.instances["sim1"].offline = True
        await _wait_for(lambda: _any_status(handler.values, ua.StatusCodes.BadCommunicationError))
        bad = next(v for v in handler.values if v.StatusCode.value == ua.StatusCodes.BadCommunicationError)
        assert bad.Value.Value is not None  # the last value stays with the bad status
        SimDriver.instances["sim1"].offline = False
        n = len(handler.values)
        await _wait_for(lambda: _good_after(handler.values[n:]))
        await sub.delete()


async def _count(values: list, n: int) -> bool:
    return len(values) >= n


async def _any_status(values: list[ua.DataValue], code: int) -> bool:
    return any(v.StatusCode.value == code for v in values)


async def _good_after(values: list[ua.DataValue]) -> bool:
    return any(v.StatusCode.is_good() for v in values)


@pytest.mark.integration
async def test_write_path_statuses(gateway: Gateway, tmp_path: Path) -> None:
    cert, key = await make_client_cert(tmp_path)
    trusted = gateway.config.data_dir / "pki" / "trusted"
    trusted.mkdir(parents=True, exist_ok=True)
    (trusted / cert.name).write_bytes(cert.read_bytes())
    operator = Client(gateway.config.endpoint)
    operator.application_uri = "urn:test-client"  # must match the certificate's URI
    await operator.set_security_string(f"Basic256Sha256,SignAndEncrypt,{cert},{key}")
    operator.set_user("operator1")
    operator.set_password("op-secret-1")
    async with operator, Client(gateway.config.endpoint) as anonymous:
        ns = await _ns(operator)
        sp = ua.NodeId("Sim1.Setpoint", ns)

        async def write(client: Client, nodeid: ua.NodeId, variant: ua.Variant) -> int:
            params = ua.WriteParameters()
            params.NodesToWrite = [ua.WriteValue(NodeId=nodeid, AttributeId=ua.AttributeIds.Value,
                                                 Value=ua.DataValue(variant))]
            return (await client.uaclient.write(params))[0].value

        assert await write(operator, sp, ua.Variant(55.5, ua.VariantType.Double)) == ua.StatusCodes.Good
        assert await operator.get_node(sp).read_value() == 55.5
        assert await write(operator, sp, ua.Variant(500.0, ua.VariantType.Double)) == ua.StatusCodes.BadOutOfRange
        assert await write(operator, sp, ua.Variant("x", ua.VariantType.String)) == ua.StatusCodes.BadTypeMismatch
        assert await write(anonymous, sp, ua.Variant(1.0, ua.VariantType.Double)) == \
            ua.StatusCodes.BadUserAccessDenied
        assert await write(operator, ua.NodeId("Sim1.Scaled", ns), ua.Variant(1.0, ua.VariantType.Double)) == \
            ua.StatusCodes.BadNotWritable
        SimDriver.instances["sim1"].offline = True
        assert await write(operator, sp, ua.Variant(7.0, ua.VariantType.Double)) == \
            ua.StatusCodes.BadCommunicationError
        SimDriver.instances["sim1"].offline = False
        assert await operator.get_node(sp).read_value() == 55.5  # a failed write leaves no trace
        # One request, several items, one status each.
        params = ua.WriteParameters()
        params.NodesToWrite = [
            ua.WriteValue(NodeId=sp, AttributeId=ua.AttributeIds.Value,
                          Value=ua.DataValue(ua.Variant(v, ua.VariantType.Double))) for v in (1.0, 1000.0)
        ]
        assert [s.value for s in await operator.uaclient.write(params)] == \
            [ua.StatusCodes.Good, ua.StatusCodes.BadOutOfRange]
        # An unbound parameter held by the gateway.
        param = ua.NodeId("Parameter", ns)
        assert await write(operator, param, ua.Variant(2.5, ua.VariantType.Double)) == ua.StatusCodes.Good
        assert await operator.get_node(param).read_value() == 2.5


@pytest.mark.integration
async def test_history_read_raw(gateway: Gateway) -> None:
    async with Client(gateway.config.endpoint) as client:
        ns = await _ns(client)
        sine = client.get_node(ua.NodeId("Sim1.Sine", ns))
        start = datetime.now(UTC) - timedelta(seconds=5)
        await asyncio.sleep(1.0)  # ~10 HighSpeed scans
        await gateway.history.flush()
        values = await sine.read_raw_history(start, datetime.now(UTC) + timedelta(seconds=1))
        assert len(values) >= 5
        times = [v.SourceTimestamp for v in values]
        assert times == sorted(times)
        page = await sine.read_raw_history(start, datetime.now(UTC) + timedelta(seconds=1), numvalues=3)
        assert len(page) == 3


@pytest.mark.integration
def test_gateway_refuses_a_broken_site_with_the_check_message(tmp_path: Path) -> None:
    case = ROOT / "tests" / "cases" / "nodeset" / "unknown-datatype" / "site.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "--nodeset", str(case), "--endpoint", "opc.tcp://127.0.0.1:0",
         "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60, env={**os.environ},
    )
    assert proc.returncode == 2
    assert "ns=1;s=Sim1.Counter: unknown data type 'ns=1;i=4242'" in proc.stderr
    assert not (tmp_path / "pki").exists()  # nothing was started
