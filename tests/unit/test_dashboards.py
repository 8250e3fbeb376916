"""`gateway dashboards`: the generated dashboards parse as grafana-foundation-sdk's Dashboard model, and
every query of every panel and annotation reads a series the series writer produces for the site
(measurement, device tag, variable tag, field and bucket/retention policy as the writer names them; for
alarm annotations: the `alarms` measurement, site and source tags and field of the site's conditions'
events as the writer renders them)."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncua import Server, ua
from grafana_foundation_sdk.cog import plugins
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

from gateway.alarms.condition import Condition
from gateway.alarms.service import AlarmService
from gateway.cli import main
from gateway.diagnostics import FIELDS, ensure_diagnostics
from gateway.events.service import EventService
from gateway.influx.alarms import MEASUREMENT as ALARMS
from gateway.influx.alarms import AlarmSeries, alarm_fields
from gateway.influx.config import config_from_dict
from gateway.influx.dashboards import queries
from gateway.influx.dashboards.cli import generate
from gateway.influx.dashboards.site import variant_type
from gateway.influx.lineproto import fields
from gateway.influx.series import SeriesCatalog
from gateway.methods import MethodRegistry
from gateway.nodesets import GATEWAY_NAMESPACE
from gateway.site import load_site
from gateway.values.feed import ChangeFeed
from gateway.values.tags import TagTable

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "nodesets" / "demo" / "demo-site.xml"
DEPLOY_INFLUX = ROOT / "deploy" / "gateway" / "influx.yaml"
V1 = """server: {version: 1, url: "http://influx1:8086", database: plant, username: grafana, password_env: INFLUX_PW}
site: Demo
targets:
  HighSpeed: {retention_policy: rp_high, retention: 1d}
  MediumSpeed: {retention_policy: rp_medium, retention: 7d}
  LowSpeed: {retention_policy: rp_low, retention: 28d}
"""

Key = tuple[str, str, str, str, str]  # target, measurement, device, variable, field
_FLUX = re.compile(r'from\(bucket: "(?P<target>[^"]*)"\).*?r\._measurement == "(?P<measurement>[^"]*)" and '
                   r'r\.device == "(?P<device>[^"]*)" and r\._field == "(?P<field>[^"]*)"\)\n'
                   r"  \|> filter\(fn: \(r\) => (?P<variables>[^\n]*)\)", re.S)
_IQL = re.compile(r'FROM "(?P<target>[^"]*)"\."(?P<measurement>[^"]*)" WHERE "device" = \'(?P<device>[^\']*)\' '
                  r"AND \((?P<variables>.*?)\) AND \$timeFilter")
_IQL_FIELD = re.compile(r'SELECT \w+\("(?P<field>\w+)"\)')
AlarmKey = tuple[str, str, str, str, str]  # target, measurement, site, source ("" for any), field
_FLUX_ALARMS = re.compile(r'from\(bucket: "(?P<target>[^"]*)"\).*?r\._measurement == "(?P<measurement>alarms)" and '
                          r'r\.site == "(?P<site>[^"]*)" and r\._field == "(?P<field>[^"]*)"\)'
                          r'(?:\n  \|> filter\(fn: \(r\) => r\.source == "(?P<source>[^"]*)"\))?', re.S)
_IQL_ALARMS = re.compile(r'SELECT "(?P<field>\w+)" AS "text" FROM "(?P<target>[^"]*)"\."(?P<measurement>alarms)" WHERE '
                         r'"site" = \'(?P<site>[^\']*)\'(?: AND "source" = \'(?P<source>[^\']*)\')? AND \$timeFilter')
# One value of each type the site's variables hold, to ask the writer's line protocol which field it fills.
_SAMPLES = {ua.VariantType.Boolean: True, ua.VariantType.String: "x", ua.VariantType.DateTime: datetime.now(UTC),
            ua.VariantType.UInt16: 1, ua.VariantType.UInt32: 1, ua.VariantType.UInt64: 1, ua.VariantType.Double: 1.5,
            ua.VariantType.LocalizedText: ua.LocalizedText("x"), ua.VariantType.NodeId: ua.NodeId(1)}


def alarm_series_of(query: str) -> AlarmKey | None:
    m = _FLUX_ALARMS.search(query) or _IQL_ALARMS.search(query)
    if m is None:
        return None
    return (m["target"], m["measurement"], m["site"], m["source"] or "", m["field"])


def series_of(query: str) -> list[Key]:
    m = _FLUX.search(query)
    if m:
        return [(m["target"], m["measurement"], m["device"], v, m["field"])
                for v in re.findall(r'r\.variable == "([^"]*)"', m["variables"])]
    m, f = _IQL.search(query), _IQL_FIELD.search(query)
    assert m and f, f"not a query of the writer's series: {query!r}"
    return [(m["target"], m["measurement"], m["device"], v, f["field"])
            for v in re.findall(r'"variable" = \'([^\']*)\'', m["variables"])]


async def written_series(config_text: str, site_tag: str) -> tuple[set[Key], set[AlarmKey]]:
    """What the writer produces for the demo site: its SeriesCatalog over the loaded site, and the field
    its line protocol fills for each variable's data type; and the alarm series of the site's conditions
    and of the devices' communication alarms, from an event of each as the writer renders it."""
    config = config_from_dict(yaml.safe_load(config_text), "test", {"INFLUX_PW": "p"}, read_secrets=False)
    server = Server()
    await server.init()
    site, bindings = await load_site(server, [DEMO])
    gw_ns = site.namespaces[GATEWAY_NAMESPACE]
    aspace = server.iserver.aspace
    feed = ChangeFeed(aspace)
    tags = TagTable(aspace, None, feed=feed)
    nodes: list[tuple[ua.NodeId, ua.VariantType]] = []
    alarm_service = AlarmService(server.iserver, feed, EventService(server.iserver), MethodRegistry(aspace))
    conditions = [Condition(cfg, ()) for cfg in bindings.alarms]
    for dev in bindings.devices:
        for var in dev.variables:
            tags.add(var, dev.nodeid)
            nodes.append((var.nodeid, var.vtype))
        diag = await ensure_diagnostics(server, dev.nodeid, gw_ns, feed)
        nodes += [(node, FIELDS[name]) for name, node in diag.nodes.items()]
        conditions.append(Condition(alarm_service.add_communication_alarm(
            dev.nodeid, dev.name, diag.nodes["ConnectionState"], gw_ns), (), system=True))
    for machine in bindings.state_machines:  # what the state machine service stores, under its device
        for node in machine.nodes.values():
            nodes.append((node, variant_type(aspace, node)))
    catalog = SeriesCatalog(config, config.site or site_tag, aspace, tags, {gw_ns})
    out: set[Key] = set()
    for node, vtype in nodes:
        s = catalog.get(node)
        assert s is not None
        field = fields(_SAMPLES[vtype], 0).split("=", 1)[0]
        out.add((s.target, s.measurement, s.device, s.variable, field))
    alarm_series = AlarmSeries(config, config.site or site_tag, aspace)
    alarms: set[AlarmKey] = set()
    for cond in conditions:
        event = cond.event("a message", datetime.now(UTC))
        key = alarm_series.key(event)
        assert key is not None and key.startswith(f"{ALARMS},")
        tags = alarm_series.tags(event)
        for part in alarm_fields(event).split(","):
            alarms.add((alarm_series.target, ALARMS, tags["site"], tags["source"], part.split("=", 1)[0]))
    assert {a[3] for a in alarms} >= {d.name for d in bindings.devices}
    return out, alarms


def queries_of(board: dict[str, Any]) -> list[str]:
    """Every query of the dashboard, with its `device` variable replaced by each of its options."""
    texts = [t["query"] for p in board["panels"] for t in p.get("targets") or []]
    texts += [a["target"]["query"] for a in board["annotations"]["list"]]
    devices = [v for v in board.get("templating", {}).get("list", []) if v["name"] == "device"]
    if not devices:
        return texts
    options = devices[0]["query"].split(",")
    return [t.replace("${device}", d) for t in texts for d in options]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    out = {}
    for version, config in ((2, DEPLOY_INFLUX), (1, None)):
        d = tmp_path_factory.mktemp(f"v{version}")
        if config is None:
            config = d / "influx.yaml"
            config.write_text(V1)
        generate([DEMO], d / "grafana", str(config))
        out[version] = d / "grafana"
    return out


@pytest.mark.parametrize("version", [2, 1])
def test_dashboards_parse_as_the_sdk_model_and_round_trip(generated: dict[int, Path], version: int) -> None:
    plugins.register_default_plugins()
    queries.register()
    boards = sorted((generated[version] / "dashboards").glob("*.json"))
    assert len(boards) == 5  # the site and its four device types
    for path in boards:
        data = json.loads(path.read_text())
        parsed = Dashboard.from_json(data)
        again = json.loads(json.dumps(parsed, cls=JSONEncoder))
        # The SDK's AnnotationTarget models only the built-in datasource's keys: InfluxDB's query is extra.
        for a in data["annotations"]["list"]:
            for key in ("query", "refId", "rawQuery"):
                a["target"].pop(key, None)
        assert again == data, path.name
        for panel in parsed.panels:
            for target in getattr(panel, "targets", None) or []:
                assert isinstance(target, queries.InfluxQuery)
                assert (target.raw_query is True) == (version == 1)


@pytest.mark.parametrize("version", [2, 1])
def test_every_query_reads_a_series_the_writer_produces(generated: dict[int, Path], version: int) -> None:
    config = DEPLOY_INFLUX.read_text() if version == 2 else V1
    produced, alarms = asyncio.run(written_series(config, "demo-site"))
    read: set[Key] = set()
    alarm_queries = 0
    for path in (generated[version] / "dashboards").glob("*.json"):
        for query in queries_of(json.loads(path.read_text())):
            alarm = alarm_series_of(query)
            if alarm is not None:  # a site's alarms (source "") or one source's
                matching = [a for a in alarms if a[:3] == alarm[:3] and a[4] == alarm[4] and alarm[3] in ("", a[3])]
                assert matching, f"{path.name}: {alarm} is not written by the series writer"
                alarm_queries += 1
                continue
            keys = series_of(query)
            assert keys, query
            missing = [k for k in keys if k not in produced]
            assert not missing, f"{path.name}: {missing} is not written by the series writer"
            read.update(keys)
            lang = "from(bucket:" if version == 2 else "SELECT "
            assert query.startswith(lang), query
    # The dashboards show every bound variable and every diagnostic of every device.
    assert read == produced
    assert alarm_queries == 1 + 4  # the site's, and one per device on its device type's dashboard
    # The check can fail: a variable the writer does not produce is caught.
    wrong = ("site_high", "Battery1", "Battery1", "ActivePowr", "value")
    assert wrong not in produced


def test_demo_dashboards_have_power_flow_units_ranges_limits_and_annotations(generated: dict[int, Path]) -> None:
    boards = {p.stem: json.loads(p.read_text()) for p in (generated[2] / "dashboards").glob("*.json")}
    site = boards["demosite-site"]
    flow = next(p for p in site["panels"] if p["type"] == "timeseries" and p["title"] == "Power flow")
    labels = [o["properties"][0]["value"] for o in flow["fieldConfig"]["overrides"]]
    assert labels == ["Grid (GridMeter)", "PV (PvInverter1)", "Battery (Battery1)", "Load (SiteLoad)"]
    assert any(p.get("title") == "Device diagnostics" and len(p["targets"]) == 8 for p in site["panels"])
    assert [a["name"] for a in site["annotations"]["list"]] == [
        "Battery1 disconnected", "PvInverter1 disconnected", "GridMeter disconnected", "SiteLoad disconnected",
        "Alarms"]
    battery = boards["demosite-type-battery1"]
    by_title = {p["title"]: p for p in battery["panels"]}
    soc = by_title["StateOfCharge (%)"]
    assert soc["fieldConfig"]["defaults"]["unit"] == "percent"
    assert soc["fieldConfig"]["defaults"]["custom"]["axisSoftMin"] == 0
    assert soc["fieldConfig"]["defaults"]["custom"]["axisSoftMax"] == 100
    steps = soc["fieldConfig"]["overrides"][0]["properties"][0]["value"]["steps"]
    assert [s["value"] for s in steps] == [None, 5, 10, 95]  # the SocLimits alarm's LowLow, Low, High
    power = by_title["ActivePower, MaxChargePower, MaxDischargePower, ActivePowerSetpoint (kW)"]
    assert power["fieldConfig"]["defaults"]["unit"] == "kwatt"
    assert len(power["targets"]) == 2  # HighSpeed and MediumSpeed variables are in different buckets
    assert "States" in by_title and "Device diagnostics" in by_title


def test_provisioning_names_the_datasource_and_secrets_without_reading_them(generated: dict[int, Path]) -> None:
    v2 = yaml.safe_load((generated[2] / "provisioning" / "datasources" / "influxdb.yaml").read_text())
    ds = v2["datasources"][0]
    assert ds["uid"] == queries.DATASOURCE_UID and ds["jsonData"]["version"] == "Flux"
    assert ds["secureJsonData"] == {"token": "$__file{/run/secrets/influx-token}"}  # not on this machine
    v1 = yaml.safe_load((generated[1] / "provisioning" / "datasources" / "influxdb.yaml").read_text())
    ds = v1["datasources"][0]
    assert ds["jsonData"] == {"version": "InfluxQL", "dbName": "plant", "httpMode": "GET"}
    assert ds["user"] == "grafana" and ds["secureJsonData"] == {"password": "${INFLUX_PW}"}
    provider = yaml.safe_load((generated[2] / "provisioning" / "dashboards" / "gateway.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_deploy_grafana_is_what_the_command_writes_for_the_demo(generated: dict[int, Path]) -> None:
    deploy = ROOT / "deploy" / "grafana"
    for path in generated[2].rglob("*"):
        if path.is_file():
            rel = path.relative_to(generated[2])
            assert (deploy / rel).read_text() == path.read_text(), f"deploy/grafana/{rel} is stale: regenerate it"
    mounted = {v.split(":")[0] for v in yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
               ["services"]["grafana"]["volumes"]}
    assert {"./grafana/provisioning", "./grafana/dashboards"} <= mounted


def test_a_bad_influx_config_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "influx.yaml"
    bad.write_text("server: {url: 'http://x:8086', org: o, token: inline}\n")
    assert main(["dashboards", str(DEMO), "-o", str(tmp_path / "out"), "--influx", str(bad)]) == 2
    assert "server.token: secrets are not written" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
