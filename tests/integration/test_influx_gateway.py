"""`gateway --influx CONFIG`: the running gateway writes its site's values to VictoriaMetrics, shows the
writer under Gateway/Diagnostics/Influx to an OPC UA client, and a bad configuration stops the start."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from asyncua import Client
from influx_servers import VictoriaMetrics

from gateway.influx import service
from gateway.influx.config import InfluxConfigError
from gateway.nodesets import GATEWAY_NAMESPACE
from gateway.server import Gateway, GatewayConfig

pytestmark = pytest.mark.integration
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "sim_site.xml"


def _config(tmp_path: Path, url: str) -> Path:
    (tmp_path / "token").write_text("t0ken\n")
    path = tmp_path / "influx.yaml"
    path.write_text(f"""
server: {{version: 2, url: "{url}", org: plant, token_file: token}}
targets:
  HighSpeed: {{bucket: hs, retention: 1d}}
  MediumSpeed: {{bucket: ms, retention: 7d}}
  LowSpeed: {{bucket: ls, retention: 28d}}
batch: {{size: 500, flush_interval: 200ms}}
""")
    return path


async def test_gateway_writes_its_values_and_shows_the_writer(tmp_path: Path, free_port: int,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    if not VictoriaMetrics.available():
        pytest.skip("victoria-metrics is not installed (tests/run.sh installs it)")
    monkeypatch.setattr(service, "REFRESH_S", 0.1)
    vm = VictoriaMetrics(tmp_path / "vm")
    vm.start()
    gw = Gateway(GatewayConfig(nodesets=[FIXTURE], endpoint=f"opc.tcp://127.0.0.1:{free_port}",
                               data_dir=tmp_path / "data", insecure=True, simulate=True,
                               influx=_config(tmp_path, vm.url)))
    try:
        await gw.load()
        await gw.start()
        async with Client(gw.config.endpoint) as client:
            ns = await client.get_namespace_index(GATEWAY_NAMESPACE)
            influx = await client.nodes.objects.get_child([f"{ns}:Gateway", f"{ns}:Diagnostics", f"{ns}:Influx"])
            deadline = time.monotonic() + 15
            sent = 0
            while time.monotonic() < deadline:
                sent = await (await influx.get_child(f"{ns}:PointsSent")).read_value()
                if sent >= 20:
                    break
                await asyncio.sleep(0.2)
            assert sent >= 20
            assert await (await influx.get_child(f"{ns}:State")).read_value() == "Writing"
            assert await (await influx.get_child(f"{ns}:PointsDropped")).read_value() == 0
        stop_began = time.monotonic()
    finally:
        await gw.stop()
    assert time.monotonic() - stop_began < 5
    # VictoriaMetrics makes a new series searchable within a few seconds of its first sample.
    labels: dict[tuple[str, str], dict[str, str]] = {}
    for _ in range(30):
        labels = {(s["metric"]["__name__"], s["metric"]["variable"]): s["metric"]
                  for s in vm.export('{__name__=~"Sim1_.*"}')}
        if ("Sim1_value", "Sine") in labels and ("Sim1_value", "Diagnostics.RequestCount") in labels:
            break
        await asyncio.sleep(0.5)
    vm.stop()
    assert labels[("Sim1_value", "Sine")]["site"] == "sim_site"
    assert labels[("Sim1_value", "Sine")]["device"] == "Sim1"
    assert ("Sim1_value", "Diagnostics.RequestCount") in labels  # device diagnostics are series too
    assert not [k for k in labels if k[1].startswith("Influx")]  # the writer's own counters are not
    assert gw.influx is not None and gw.influx.writer.depth == 0


async def test_bad_influx_config_stops_the_start(tmp_path: Path, free_port: int) -> None:
    path = tmp_path / "influx.yaml"
    path.write_text("server: {url: 'http://127.0.0.1:1', org: o, token: inline}\n")
    gw = Gateway(GatewayConfig(nodesets=[FIXTURE], endpoint=f"opc.tcp://127.0.0.1:{free_port}",
                               data_dir=tmp_path / "data", insecure=True, simulate=True, influx=path))
    try:
        await gw.load()
        with pytest.raises(InfluxConfigError, match=r"server.token: secrets are not written"):
            await gw.start()
    finally:
        await gw.stop()
    assert gw.server.bserver is None  # nothing listens
