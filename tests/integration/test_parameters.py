"""Parameters the gateway holds survive a restart: written by an operator over OPC UA, read back from a new gateway."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import stat
from pathlib import Path

import pytest
from asyncua import Client, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.parameters.store import ParameterStore, decode, encode
from gateway.security.roles import Role
from gateway.security.users import UserStore
from gateway.server import Gateway, GatewayConfig

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "write_model_site.xml"
OTHER_SITE = ROOT / "tests" / "fixtures" / "sim_site.xml"
SITE = "urn:test:write-model"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _start(data: Path, nodesets: list[Path] | None = None) -> Gateway:
    gw = Gateway(GatewayConfig(nodesets=nodesets or [FIXTURE], endpoint=f"opc.tcp://127.0.0.1:{_port()}",
                               data_dir=data, insecure=True))
    await gw.load()
    await gw.start()
    return gw


async def _operator(gw: Gateway, folder: Path) -> Client:
    cert, key = folder / "client.der", folder / "client.pem"
    if not cert.exists():
        await setup_self_signed_certificate(key, cert, "urn:parameters-client", "localhost",
                                            [ExtendedKeyUsageOID.CLIENT_AUTH], {"commonName": "parameters-client"})
    trusted = gw.config.data_dir / "pki" / "trusted"
    trusted.mkdir(parents=True, exist_ok=True)
    (trusted / cert.name).write_bytes(cert.read_bytes())
    client = Client(gw.config.endpoint, timeout=10)
    client.application_uri = "urn:parameters-client"
    await client.set_security_string(f"Basic256Sha256,SignAndEncrypt,{cert},{key}")
    client.set_user("operator1")
    client.set_password("op-secret-1")
    return client


async def _write(client: Client, nodeid: ua.NodeId, variant: ua.Variant) -> int:
    params = ua.WriteParameters()
    params.NodesToWrite = [ua.WriteValue(NodeId=nodeid, AttributeId=ua.AttributeIds.Value,
                                         Value=ua.DataValue(variant))]
    return (await client.uaclient.write(params))[0].value


async def _read_site(gw: Gateway, *names: str) -> list[object]:
    async with Client(gw.config.endpoint, timeout=10) as client:
        ns = await client.get_namespace_index(SITE)
        return [await client.get_node(ua.NodeId(name, ns)).read_value() for name in names]


@pytest.mark.integration
async def test_a_written_parameter_survives_a_restart_whatever_the_namespace_order(tmp_path: Path) -> None:
    data = tmp_path / "data"
    UserStore(data / "users.yaml").add("operator1", "op-secret-1", Role.operator)
    gw = await _start(data)
    try:
        assert await _read_site(gw, "Site.ExportLimit", "Site.Mode", "Site.Note") == [100.0, 1, "commissioned"]
        async with await _operator(gw, tmp_path) as operator:
            ns = await operator.get_namespace_index(SITE)
            assert await _write(operator, ua.NodeId("Site.ExportLimit", ns), ua.Variant(250.0)) == ua.StatusCodes.Good
            assert await _write(operator, ua.NodeId("Site.Mode", ns), ua.Variant(3, ua.VariantType.Int32)) == \
                ua.StatusCodes.Good
            assert await _write(operator, ua.NodeId("Site.Note", ns), ua.Variant("re-tuned\nby op")) == \
                ua.StatusCodes.Good
            # A refused write stores nothing.
            assert await _write(operator, ua.NodeId("Site.Mode", ns), ua.Variant(2.0)) == \
                ua.StatusCodes.BadTypeMismatch
    finally:
        await gw.stop()
    stored = json.loads((data / "parameters.json").read_text())
    assert stored["parameters"][f"nsu={SITE};s=Site.ExportLimit"] == {"type": "Double", "value": 250.0}
    assert stat.S_IMODE(os.stat(data / "parameters.json").st_mode) == 0o600
    assert not (data / "parameters.json.tmp").exists()

    # Another nodeset loaded as well moves the site to another namespace index: the values still find it.
    gw = await _start(data, [OTHER_SITE, FIXTURE])
    try:
        assert (await gw.server.get_namespace_array()).index(SITE) != 3
        assert await _read_site(gw, "Site.ExportLimit", "Site.Mode", "Site.Note") == [250.0, 3, "re-tuned\nby op"]
    finally:
        await gw.stop()


@pytest.mark.integration
async def test_a_corrupt_store_is_reported_set_aside_and_the_defaults_used(tmp_path: Path,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "parameters.json").write_text('{"format": 1, "parameters": {"nsu=urn:test:write-model;s=Site.Exp')
    caplog.set_level(logging.INFO)
    gw = await _start(data)
    try:
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("gateway.param")]
        assert len(warnings) == 1
        message = warnings[0].getMessage()
        assert str(data / "parameters.json") in message and "is not valid" in message and "parameters.json.corrupt" \
            in message
        assert (data / "parameters.json.corrupt").read_text().startswith('{"format": 1')
        assert not (data / "parameters.json").exists()
        assert await _read_site(gw, "Site.ExportLimit", "Site.Mode") == [100.0, 1]
    finally:
        await gw.stop()


@pytest.mark.integration
async def test_a_stored_value_that_no_longer_fits_its_node_is_skipped(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    data.mkdir()
    entries = {
        f"nsu={SITE};s=Site.ExportLimit": {"type": "Double", "value": 7.5},
        f"nsu={SITE};s=Site.Mode": {"type": "String", "value": "auto"},  # Mode became an Int32
        f"nsu={SITE};s=Site.Note": {"type": "Int32", "value": "not a number"},
        f"nsu={SITE};s=Dev1.Tenths": {"type": "Double", "value": 1.0},  # bound to a device: not a parameter
        "nsu=urn:gone;s=Old": {"type": "Double", "value": 1.0},  # a nodeset no longer loaded: kept
    }
    (data / "parameters.json").write_text(json.dumps({"format": 1, "parameters": entries}))
    caplog.set_level(logging.INFO)
    gw = await _start(data)
    try:
        assert await _read_site(gw, "Site.ExportLimit", "Site.Mode", "Site.Note") == [7.5, 1, "commissioned"]
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                    and r.name.startswith("gateway")]
        assert any("Site.Mode" in w and "does not match" in w for w in warnings), warnings
        assert any("Site.Note" in w and "'not a number' is not a Int32" in w for w in warnings), warnings
        assert any("Dev1.Tenths" in w and "not a writable variable the gateway holds" in w for w in warnings), warnings
        assert not (data / "parameters.json.corrupt").exists()
    finally:
        await gw.stop()


async def test_saving_runs_off_the_event_loop_and_replaces_the_file_whole(tmp_path: Path) -> None:
    store = ParameterStore(tmp_path / "parameters.json", ["http://opcfoundation.org/UA/", "urn:s", SITE])
    nodes = [ua.NodeId(f"P{i}", 2) for i in range(20)]
    loop_thread = asyncio.get_running_loop()._thread_id  # type: ignore[attr-defined]
    seen: list[int | None] = []
    original = store._save

    def save(key: str, entry: dict) -> None:
        import threading
        seen.append(threading.get_ident())
        original(key, entry)

    store._save = save  # type: ignore[method-assign]
    await asyncio.gather(*(store.save(n, ua.Variant(float(i))) for i, n in enumerate(nodes)))
    assert seen and loop_thread not in seen
    document = json.loads((tmp_path / "parameters.json").read_text())
    assert len(document["parameters"]) == 20  # concurrent saves do not lose each other's values
    reloaded = ParameterStore(tmp_path / "parameters.json", ["http://opcfoundation.org/UA/", "x", "y", SITE])
    values = reloaded.load()
    assert values[ua.NodeId("P7", 3)] == ua.Variant(7.0, ua.VariantType.Double)
    store.close()
    reloaded.close()


def test_values_of_any_type_round_trip() -> None:
    for variant in (ua.Variant(True), ua.Variant(-5, ua.VariantType.Int16), ua.Variant(2**63, ua.VariantType.UInt64),
                    ua.Variant(0.1, ua.VariantType.Float), ua.Variant([1.5, 2.5], ua.VariantType.Double),
                    ua.Variant(None, ua.VariantType.String),
                    ua.Variant(ua.LocalizedText("Grenze", "de"), ua.VariantType.LocalizedText),
                    ua.Variant(ua.Range(0, 10), ua.VariantType.ExtensionObject)):
        entry = json.loads(json.dumps(encode(variant)))
        assert decode(entry) == variant, variant
    for bad in ({"type": "Int16", "value": 40000}, {"type": "Boolean", "value": 1}, {"type": "Nope", "value": 1},
                {"type": "LocalizedText", "binary": "%%%"}, {"type": "LocalizedText", "value": "x"}, ["x"]):
        with pytest.raises(ValueError):
            decode(bad)
