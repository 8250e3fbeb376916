"""The generated InfluxQL dashboards, run against what the running gateway wrote: the demo site under
--simulate writes to a real InfluxDB 1.x, and every panel's query returns the series written there."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest
from influx_servers import InfluxDB1

from gateway.influx.dashboards.cli import generate
from gateway.server import Gateway, GatewayConfig

pytestmark = pytest.mark.integration
DEMO = Path(__file__).resolve().parents[2] / "nodesets" / "demo" / "demo-site.xml"


def _config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "influx.yaml"
    path.write_text(f"""
server: {{version: 1, url: "{url}", database: plant}}
targets:
  HighSpeed: {{retention_policy: rp_high}}
  MediumSpeed: {{retention_policy: rp_medium}}
  LowSpeed: {{retention_policy: rp_low}}
batch: {{size: 500, flush_interval: 200ms}}
""")
    return path


def _written(db: InfluxDB1) -> set[tuple[str, str, str, str, str]]:
    """(retention policy, measurement, device, variable, field) of every series with a point in the database."""
    out = set()
    for rp in ("rp_high", "rp_medium", "rp_low"):
        for field in ("value", "text"):
            result = db.query(f'SELECT count("{field}") FROM "{rp}"./.*/ GROUP BY "device", "variable"', "plant")
            for series in result["results"][0].get("series", []):
                if series["values"][0][1]:
                    out.add((rp, series["name"], series["tags"]["device"], series["tags"]["variable"], field))
    return out


async def test_every_panel_query_returns_what_the_gateway_wrote(tmp_path: Path, free_port: int) -> None:
    if not InfluxDB1.available():
        pytest.skip("influxd (InfluxDB 1.x) is not installed (tests/run.sh installs it)")
    db = InfluxDB1(tmp_path / "influxdb")
    db.start()
    try:
        db.create("plant", {"rp_high": "1d", "rp_medium": "7d", "rp_low": "28d"})
        config = _config(tmp_path, db.url)
        gw = Gateway(GatewayConfig(nodesets=[DEMO], endpoint=f"opc.tcp://127.0.0.1:{free_port}",
                                   data_dir=tmp_path / "data", insecure=True, simulate=True, influx=config))
        try:
            await gw.load()
            await gw.start()
            await asyncio.sleep(3)  # every device polled, its values and diagnostics written
        finally:
            await gw.stop()
        assert gw.influx is not None and gw.influx.writer.depth == 0
        await asyncio.to_thread(generate, [DEMO], tmp_path / "grafana", str(config))
        written = await asyncio.to_thread(_written, db)
        assert len(written) > 30
        answered: set[tuple[str, str, str, str, str]] = set()
        annotations = alarm_annotations = 0
        started = time.monotonic()
        for path in sorted((tmp_path / "grafana" / "dashboards").glob("*.json")):
            board = json.loads(path.read_text())
            options = [v["query"].split(",") for v in board["templating"].get("list", []) if v["name"] == "device"]
            queries = [t["query"] for p in board["panels"] for t in p.get("targets") or []]
            queries += [a["target"]["query"] for a in board["annotations"]["list"]]
            for text in queries:
                for device in options[0] if options else [""]:
                    q = (text.replace("${device}", device).replace("$timeFilter", "time > now() - 1h")
                         .replace("$__interval", "1s"))
                    result = (await asyncio.to_thread(db.query, q, "plant"))["results"][0]
                    assert "error" not in result, (path.name, q, result)
                    if '."alarms" WHERE' in q:  # the alarm annotation: the demo raises no alarm in 3 s
                        alarm_annotations += 1
                        for series in result.get("series", []):
                            assert series["columns"] == ["time", "text"], q  # Grafana's annotation text
                        continue
                    if "Disconnected" in q:
                        annotations += 1
                        assert "series" not in result  # no device lost its connection
                        continue
                    m = re.search(r'SELECT \w+\("(\w+)"\) FROM "(\w+)"\."(\w+)" WHERE "device" = \'(\w+)\'', q)
                    assert m, q
                    for series in result.get("series", []):
                        assert series["values"], q
                        answered.add((m[2], m[3], m[4], series["tags"]["variable"], m[1]))
        assert annotations >= 8  # one per device on the site dashboard and one per device-type dashboard
        assert alarm_annotations == 1 + 4  # the site's, and each device's on its device type's dashboard
        # Every series of every device the gateway wrote is shown by some panel, and no panel shows anything
        # else. The site object's own series (control engine, facade) have no panel yet.
        assert answered <= written
        devices = {"Battery1", "PvInverter1", "GridMeter", "SiteLoad"}
        assert {k for k in written if k[2] in devices} == answered
        assert {k[2] for k in written - answered} <= {"DemoSite"}
        assert time.monotonic() - started < 60
    finally:
        db.stop()
