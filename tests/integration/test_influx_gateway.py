"""`gateway --influx CONFIG`: the running gateway writes its site's values and alarm states to
VictoriaMetrics, shows the writer under Gateway/Diagnostics/Influx to an OPC UA client, raises its
QueueFullAlarm while a full queue drops points, and a bad configuration stops the start."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from asyncua import Client, ua
from influx_servers import VictoriaMetrics

from gateway.events.event import GatewayEvent, path
from gateway.influx import service
from gateway.influx.config import InfluxConfigError
from gateway.nodeset.yaml_build import compile_text
from gateway.nodesets import GATEWAY_NAMESPACE
from gateway.security.roles import Role
from gateway.security.users import UserStore
from gateway.server import Gateway, GatewayConfig

pytestmark = pytest.mark.integration
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "sim_site.xml"
ALARM_SITE = Path(__file__).resolve().parents[1] / "fixtures" / "alarm_site.yaml"


def _config(tmp_path: Path, url: str, extra: str = "") -> Path:
    (tmp_path / "token").write_text("t0ken\n")
    path = tmp_path / "influx.yaml"
    path.write_text(f"""
server: {{version: 2, url: "{url}", org: plant, token_file: token}}
targets:
  HighSpeed: {{bucket: hs, retention: 1d}}
  MediumSpeed: {{bucket: ms, retention: 7d}}
  LowSpeed: {{bucket: ls, retention: 28d}}
batch: {{size: 500, flush_interval: 200ms}}
{extra}""")
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


async def _exported(vm: VictoriaMetrics, match: str, done: object, within_s: float = 15.0) -> list[dict]:
    """VictoriaMetrics' series matching `match` once `done(series)` holds (a new series takes a few seconds
    to become searchable), or what it has after `within_s`."""
    deadline = time.monotonic() + within_s
    series: list[dict] = []
    while time.monotonic() < deadline:
        series = await asyncio.to_thread(vm.export, match)
        if done(series):  # type: ignore[operator]
            break
        await asyncio.sleep(0.5)
    return series


async def test_alarm_states_are_series_and_a_full_queue_raises_its_alarm(tmp_path: Path, free_port: int,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """An operator's write crosses a limit: the alarm's states arrive in VictoriaMetrics as points of
    `alarms`. Then the server goes away and the queue (bounded at 256 KB) fills: the oldest points are
    dropped and QueueFullAlarm goes active through the alarm service; the server comes back, the queue
    drains under its bound and the alarm clears; both of its states are points too."""
    if not VictoriaMetrics.available():
        pytest.skip("victoria-metrics is not installed (tests/run.sh installs it)")
    monkeypatch.setattr(service, "REFRESH_S", 0.1)
    vm = VictoriaMetrics(tmp_path / "vm")
    vm.start()
    site = tmp_path / "alarm-site.xml"
    site.write_bytes(compile_text(ALARM_SITE.read_text(encoding="utf-8"), str(ALARM_SITE)))
    UserStore(tmp_path / "data" / "users.yaml").add("operator1", "op-secret-1", Role.operator)
    config = _config(tmp_path, vm.url, "queue: {max_size: 256KB}\nbackoff: {initial: 100ms, max: 500ms}\n")
    gw = Gateway(GatewayConfig(nodesets=[site], endpoint=f"opc.tcp://127.0.0.1:{free_port}",
                               data_dir=tmp_path / "data", insecure=True, simulate=True, influx=config))
    try:
        await gw.load()
        await gw.start()
        assert gw.events is not None and gw.alarms is not None and gw.influx is not None and gw.tags is not None
        seen: list[GatewayEvent] = []
        gw.events.listen(seen.append)
        ns = gw.site.namespaces["urn:test:alarm-site"]
        temperature = ua.NodeId("Rack1.Temperature", ns)
        client = Client(gw.config.endpoint)
        client.set_user("operator1")
        client.set_password("op-secret-1")
        async with client:
            await client.get_node(temperature).write_value(ua.DataValue(ua.Variant(57.5, ua.VariantType.Double)))
        raised = await _exported(vm, '{__name__=~"alarms_.*",condition="TemperatureHigh"}',
                                 lambda s: any(x["metric"]["__name__"] == "alarms_active" and 1 in x["values"]
                                               for x in s))
        by_name = {x["metric"]["__name__"]: x for x in raised}
        assert by_name["alarms_active"]["values"][-1] == 1
        assert by_name["alarms_severity"]["values"][-1] == 700
        metric = by_name["alarms_active"]["metric"]
        assert (metric["site"], metric["source"], metric["severity_class"]) == ("alarm-site", "Rack1", "MediumHigh")
        assert metric["type"].endswith("LimitAlarmType")

        # The server goes away; values keep coming until the queue is over its bound.
        port = vm.port
        vm.stop()
        writer = gw.influx.writer
        tag = gw.tags.tags[temperature]
        k = 0
        deadline = time.monotonic() + 30
        while not writer.queue_full and time.monotonic() < deadline:
            for _ in range(1000):
                k += 1
                await gw.tags.publish(tag, 20.0 + (k % 100) / 10)  # within the limits: no alarm of its own
            await asyncio.sleep(0.01)
        assert writer.queue_full and writer.stats.queue_dropped > 0
        gw_ns = gw.site.namespaces[GATEWAY_NAMESPACE]
        full_alarm = gw.alarms.conditions[ua.NodeId("5140.QueueFullAlarm", gw_ns)]
        for _ in range(100):
            if full_alarm.active:
                break
            await asyncio.sleep(0.05)
        assert full_alarm.active
        active_events = [e for e in seen if e.condition == full_alarm.nodeid and e.value(path("ActiveState", "Id"))]
        assert active_events and active_events[-1].value(path("Severity")) == 700
        assert "series queue is full" in active_events[-1].value(path("Message")).Text

        vm = VictoriaMetrics(tmp_path / "vm", port)
        vm.start()
        for _ in range(300):
            if not full_alarm.active:
                break
            await asyncio.sleep(0.1)
        assert not full_alarm.active and not writer.queue_full
        cleared = [e for e in seen if e.condition == full_alarm.nodeid and not e.value(path("ActiveState", "Id"))]
        assert cleared and "under its bounds again" in cleared[-1].value(path("Message")).Text
        states = await _exported(vm, '{__name__="alarms_active",condition="QueueFullAlarm"}',
                                 lambda s: len(s) == 1 and s[0]["values"][-2:] == [1, 0])
        assert len(states) == 1 and states[0]["values"][-2:] == [1, 0], states
        assert states[0]["metric"]["source"] == "Influx"
    finally:
        await gw.stop()
        vm.stop()
