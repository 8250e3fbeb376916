"""The gateway names itself and its version: `--version`, BuildInfo, and the ApplicationDescription
a client sees in GetEndpoints and FindServers (not asyncua's FreeOpcUa defaults)."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asyncua import Client, ua

from gateway.server import Gateway, GatewayConfig

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "sim_site.xml"
VERSION = importlib.metadata.version("opcua-gateway")


def test_version_option() -> None:
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "--version"], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"gateway (opcua-gateway) {VERSION}"


@pytest.mark.integration
async def test_build_info_and_application_description(tmp_path: Path, free_port: int) -> None:
    gw = Gateway(GatewayConfig(nodesets=[FIXTURE], endpoint=f"opc.tcp://127.0.0.1:{free_port}",
                               data_dir=tmp_path / "data", insecure=True))
    await gw.load()
    await gw.start()
    try:
        async with Client(gw.config.endpoint, timeout=5) as client:
            build = await client.get_node(ua.ObjectIds.Server_ServerStatus_BuildInfo).read_value()
            status = await client.get_node(ua.ObjectIds.Server_ServerStatus).read_value()
            software_version = await client.get_node(
                ua.ObjectIds.Server_ServerStatus_BuildInfo_SoftwareVersion).read_value()
            endpoints = await client.get_endpoints()
            servers = await client.find_servers()
        for info in (build, status.BuildInfo):
            assert info.ProductUri == "urn:opcua-gateway"
            assert info.ManufacturerName == "opcua-gateway project"
            assert info.ProductName == "OPC UA Gateway"
            assert info.SoftwareVersion == VERSION
            assert info.BuildNumber not in ("", "0")
            assert abs(info.BuildDate.replace(tzinfo=UTC) - datetime.now(UTC)) < timedelta(days=3650)
        assert software_version == VERSION
        descriptions = [e.Server for e in endpoints] + servers
        assert descriptions
        for app in descriptions:
            assert app.ApplicationUri == "urn:opcua-gateway:server"
            assert app.ProductUri == "urn:opcua-gateway"
            assert app.ApplicationName.Text == "OPC UA Gateway"
            assert "freeopcua" not in repr(app).lower()
    finally:
        await gw.stop()
