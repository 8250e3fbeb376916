"""The gateway used by an independent client, node-opcua: browse, read, write, subscribe,
HistoryRead, a secured username session, and an unknown certificate refused then trusted."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asyncua import ua

from gateway.security.roles import Role
from gateway.security.users import UserStore
from gateway.server import Gateway, GatewayConfig

from .nodeua import node_client_available, run_node_client

pytestmark = [pytest.mark.interop, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "sim_site.xml"
GOOD, BAD_USER_ACCESS_DENIED = 0, ua.StatusCodes.BadUserAccessDenied


@pytest.fixture
async def gateway(tmp_path: Path, free_port: int):
    node_client_available()
    UserStore(tmp_path / "data" / "users.yaml").add("operator1", "op-secret-1", Role.operator)
    gw = Gateway(GatewayConfig(nodesets=[FIXTURE], endpoint=f"opc.tcp://127.0.0.1:{free_port}",
                               data_dir=tmp_path / "data", insecure=True))
    await gw.load()
    await gw.start()
    yield gw
    await gw.stop()


def _ns(gw: Gateway) -> int:
    return gw.site.namespaces["urn:test:sim-site"]


def _op(result: dict, i: int) -> dict:
    op = result["ops"][i]
    assert "error" not in op, op
    return op


async def test_anonymous_viewer_browses_reads_subscribes_reads_history_and_cannot_write(
        gateway: Gateway, tmp_path: Path) -> None:
    ns = _ns(gateway)
    await asyncio.sleep(1.0)  # ~10 HighSpeed scans of the historized sine
    await gateway.history.flush()
    now = datetime.now(UTC)
    result = await run_node_client({
        "endpoint": gateway.config.endpoint, "pkiDir": str(tmp_path / "node-pki"), "securityMode": "None",
        "securityPolicy": "None", "ops": [
            {"op": "browse", "nodeId": f"ns={ns};s=Sim1"},
            {"op": "read", "nodeId": f"ns={ns};s=Sim1.Scaled"},
            {"op": "write", "nodeId": f"ns={ns};s=Sim1.Setpoint", "dataType": "Double", "value": 1.0},
            {"op": "subscribe", "nodeId": f"ns={ns};s=Sim1.Sine", "count": 3, "publishingInterval": 10,
             "timeoutMs": 5000},
            {"op": "historyRead", "nodeId": f"ns={ns};s=Sim1.Sine", "start": (now - timedelta(minutes=1)).isoformat(),
             "end": (now + timedelta(seconds=1)).isoformat()},
        ]})
    assert result.get("session"), result
    names = {r["browseName"].split(":")[-1] for r in _op(result, 0)["references"]}
    assert {"Sine", "Setpoint", "Scaled", "Counter", "Flag", "Connection", "Diagnostics"} <= names
    scaled = _op(result, 1)
    assert scaled["status"]["value"] == GOOD and scaled["value"] == pytest.approx(13.3)
    assert scaled["dataType"] == "Double" and scaled["sourceTimestamp"]
    assert _op(result, 2)["status"]["value"] == BAD_USER_ACCESS_DENIED
    sub = _op(result, 3)
    assert len(sub["changes"]) >= 3 and sub["revisedPublishingInterval"] >= 50  # floor, not the 10 ms asked
    history = _op(result, 4)
    assert history["status"]["value"] & 0xC0000000 == 0, history["status"]  # Good or GoodMoreData
    times = [v["sourceTimestamp"] for v in history["values"]]
    assert len(times) >= 5 and times == sorted(times)


async def test_unknown_certificate_refused_then_trusted_operator_writes(gateway: Gateway, tmp_path: Path) -> None:
    ns = _ns(gateway)
    pki = gateway.config.data_dir / "pki"
    script = {
        "endpoint": gateway.config.endpoint, "pkiDir": str(tmp_path / "node-pki"), "securityMode": "SignAndEncrypt",
        "securityPolicy": "Basic256Sha256", "user": "operator1", "password": "op-secret-1",
        "ops": [
            {"op": "write", "nodeId": f"ns={ns};s=Sim1.Setpoint", "dataType": "Double", "value": 42.0},
            {"op": "read", "nodeId": f"ns={ns};s=Sim1.Setpoint"},
            {"op": "write", "nodeId": f"ns={ns};s=Sim1.Setpoint", "dataType": "Double", "value": 500.0},
            {"op": "write", "nodeId": f"ns={ns};s=Sim1.Setpoint", "dataType": "String", "value": "x"},
            {"op": "read", "nodeId": f"ns={ns};s=Sim1.Setpoint"},
        ]}
    refused = await run_node_client(script)
    assert not refused.get("session"), refused
    rejected = list((pki / "rejected").glob("*.der"))
    assert len(rejected) == 1, "the refused certificate is kept for the administrator"
    shutil.move(rejected[0], pki / "trusted" / rejected[0].name)  # what an administrator does to trust it

    result = await run_node_client(script)
    assert result.get("session"), result
    assert _op(result, 0)["status"]["value"] == GOOD
    assert _op(result, 1)["value"] == 42.0
    assert _op(result, 2)["status"]["value"] == ua.StatusCodes.BadOutOfRange
    assert _op(result, 3)["status"]["value"] == ua.StatusCodes.BadTypeMismatch
    assert _op(result, 4)["value"] == 42.0  # rejected writes leave no trace

    wrong = await run_node_client({**script, "password": "wrong-password", "ops": []})
    assert not wrong.get("session") and "sessionError" in wrong, wrong


async def test_deadbands_sampling_and_split_messages_as_node_opcua_subscribes(gateway: Gateway, tmp_path: Path) -> None:
    ns = _ns(gateway)
    setpoint, sine = f"ns={ns};s=Sim1.Setpoint", f"ns={ns};s=Sim1.Sine"
    result = await run_node_client({
        "endpoint": gateway.config.endpoint, "pkiDir": str(tmp_path / "node-pki"), "securityMode": "None",
        "securityPolicy": "None", "user": "operator1", "password": "op-secret-1", "ops": [
            {"op": "subscribeMany", "maxNotificationsPerPublish": 2, "items": [
                # Setpoint has EURange -100..100: 10 % is 20
                {"nodeId": setpoint, "deadbandType": "Percent", "deadbandValue": 10},
                {"nodeId": setpoint, "deadbandType": "Absolute", "deadbandValue": 10},
                {"nodeId": sine, "deadbandType": "Percent", "deadbandValue": 10},  # no EURange: refused
                {"nodeId": sine},
                {"nodeId": sine, "samplingInterval": 500},
            ], "writes": [{"nodeId": setpoint, "dataType": "Double", "value": v} for v in (5, 15, 25, 30, 44, 46)]},
        ]})
    percent, absolute, refused, sampled_fast, sampled_slow = _op(result, 0)["items"]
    # Each deadband is measured from the value it last reported.
    assert percent["values"] == [0, 25, 46]
    assert absolute["values"] == [0, 15, 30, 44]
    assert "BadMonitoredItemFilterUnsupported" in refused["status"]["name"]
    # Asked for 0 ms on a HighSpeed (100 ms) variable: revised to the scan period; 500 ms is granted and kept.
    assert sampled_fast["revisedSamplingInterval"] == 100
    assert sampled_slow["revisedSamplingInterval"] == 500
    # The sine runs for the ~3.5 s of the op: every scan reported to one, about one in five to the other
    # (the initial values arrived two per message, MaxNotificationsPerPublish, and all of them arrived).
    assert len(sampled_fast["values"]) > 2 * len(sampled_slow["values"]) > 0
