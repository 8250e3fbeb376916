"""The dashboards, built with grafana-foundation-sdk: one for the site, one per device type."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from typing import Any

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import stat, statetimeline, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

from gateway.influx.dashboards.queries import DATASOURCE, InfluxQueryBuilder, alarm_query, series_query
from gateway.influx.dashboards.site import Device, DeviceType, SiteModel, Variable

# EngineeringUnits display names (UNECE symbols as the nodesets give them) -> Grafana unit ids;
# anything else is shown as its own suffix.
GRAFANA_UNITS = {
    "W": "watt", "kW": "kwatt", "MW": "megwatt", "Wh": "watth", "kWh": "kwatth", "MWh": "mwatth",
    "var": "voltamp", "kvar": "kvoltamp", "VA": "voltamp", "kVA": "kvoltamp", "V": "volt", "kV": "kvolt",
    "mV": "mvolt", "A": "amp", "mA": "mamp", "Hz": "hertz", "%": "percent", "°C": "celsius", "°F": "fahrenheit",
    "K": "kelvin", "bar": "pressurebar", "mbar": "pressurembar", "Pa": "pressurepa", "kPa": "pressurekpa",
    "ms": "ms", "s": "s", "min": "m", "h": "h", "m3/h": "flowcmh", "l/min": "flowlpm", "rpm": "rotrpm",
}
_LIMIT_COLOURS = {"LowLowLimit": "red", "LowLimit": "orange", "HighLimit": "orange", "HighHighLimit": "red"}
_ROLE_TITLES = {"meter": "Grid", "pv": "PV", "battery": "Battery", "load": "Load"}
_FLOW_NOTE = "Signs as each device reports them (see the variables' descriptions in the site)."
_BY_VARIABLE = "${__field.labels.variable}"


def _legend() -> cb.VizLegendOptions:
    return (cb.VizLegendOptions().show_legend(True).display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM))


def grafana_unit(unit: str) -> str:
    return GRAFANA_UNITS.get(unit, f"suffix: {unit}" if unit else "none")


def uid(*parts: str) -> str:
    """A stable dashboard uid (Grafana allows 40 characters)."""
    slug = re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")
    if len(slug) <= 40:
        return slug
    return f"{slug[:31]}-{hashlib.sha1(slug.encode()).hexdigest()[:8]}"


class _RefIds:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> str:
        self.n += 1
        n, ref = self.n, ""
        while n:
            n, r = divmod(n - 1, 26)
            ref = chr(65 + r) + ref
        return ref


def _targets(version: int, variables: Sequence[Variable], field: str, refs: _RefIds, device: str | None = None,
             last: bool = False) -> list[InfluxQueryBuilder]:
    """One query per (measurement, device, bucket): the variables of a panel may go to different buckets."""
    groups: dict[tuple[str, str, str], list[Variable]] = {}
    for v in variables:
        groups.setdefault((v.series.target, v.series.measurement, v.series.device), []).append(v)
    return [series_query(version, group, field, refs(), device, last) for group in groups.values()]


def _limit_overrides(panel: Any, variables: Iterable[Variable]) -> None:
    for v in variables:
        if not v.limits:
            continue
        steps = [model.Threshold(None, "transparent")]
        steps += [model.Threshold(value, _LIMIT_COLOURS.get(name, "red"))
                  for name, value in sorted(v.limits.items(), key=lambda kv: kv[1])]
        panel.override_by_name(v.series.variable, [
            model.DynamicConfigValue("thresholds", model.ThresholdsConfig(model.ThresholdsMode.ABSOLUTE, steps)),
            model.DynamicConfigValue("custom.thresholdsStyle", {"mode": "dashed"}),
        ])


def _number_panel(version: int, unit: str, variables: list[Variable], device: str | None) -> timeseries.Panel:
    refs = _RefIds()
    title = ", ".join(v.series.variable for v in variables)
    panel = (timeseries.Panel().title(f"{title} ({unit})" if unit else title).datasource(DATASOURCE)
             .unit(grafana_unit(unit)).display_name(_BY_VARIABLE).span(12).height(8).legend(_legend())
             .fill_opacity(10)
             .description("\n".join(f"{v.series.variable}: {v.description}" for v in variables if v.description)))
    ranges = [v.eurange for v in variables]
    if ranges and all(r is not None for r in ranges):
        panel.axis_soft_min(min(r[0] for r in ranges if r)).axis_soft_max(max(r[1] for r in ranges if r))
    for target in _targets(version, variables, "value", refs, device):
        panel.with_target(target)
    _limit_overrides(panel, variables)
    return panel


def _state_panel(version: int, variables: list[Variable], device: str | None) -> statetimeline.Panel:
    refs = _RefIds()
    panel = (statetimeline.Panel().title("States").datasource(DATASOURCE).display_name(_BY_VARIABLE).span(24)
             .show_value(common.VisibilityMode.AUTO).legend(_legend()).line_width(0).fill_opacity(70)
             .height(max(4, 2 + 2 * len(variables)))
             .mappings([model.ValueMap(options={
                 "0": model.ValueMappingResult(text="false", color="text"),
                 "1": model.ValueMappingResult(text="true", color="green")})]))
    for target in _targets(version, variables, "value", refs, device):
        panel.with_target(target)
    return panel


def _text_panel(version: int, variables: list[Variable], device: str | None) -> table.Panel:
    refs = _RefIds()
    panel = table.Panel().title("Texts (latest)").datasource(DATASOURCE).span(24).height(6).show_header(True)
    for target in _targets(version, variables, "text", refs, device, last=True):
        panel.with_target(target)
    return panel.with_transformation(model.DataTransformerConfig(id_val="merge", options={}))


def _diagnostics_table(version: int, devices: Sequence[Device], device: str | None = None) -> table.Panel:
    refs = _RefIds()
    panel = (table.Panel().title("Device diagnostics").datasource(DATASOURCE).span(24).height(8).show_header(True)
             .description("The latest of each device's Diagnostics: ConnectionState, LastError, RequestCount, "
                          "ErrorCount, ResponseTime (ms), LastSuccess."))
    for dev in devices:
        for field in ("value", "text"):
            chosen = [v for v in dev.diagnostics if v.field == field]
            if chosen:
                for target in _targets(version, chosen, field, refs, device, last=True):
                    panel.with_target(target)
    return panel.with_transformation(model.DataTransformerConfig(id_val="merge", options={}))


def _machines_table(version: int, dev: Device, device: str | None = None) -> table.Panel:
    refs = _RefIds()
    panel = (table.Panel().title("State machines").datasource(DATASOURCE).span(24).height(6).show_header(True)
             .description("The latest of each state machine's CurrentState and LastTransition."))
    for field in ("value", "text"):
        chosen = [v for v in dev.machines if v.field == field]
        if chosen:
            for target in _targets(version, chosen, field, refs, device, last=True):
                panel.with_target(target)
    return panel.with_transformation(model.DataTransformerConfig(id_val="merge", options={}))


def _communication_annotations(version: int, devices: Sequence[Device], device: str | None = None) -> list[Any]:
    """Connection losses (each device's CommunicationAlarm watches its Diagnostics.ConnectionState)."""
    annotations = []
    for dev in devices if device is None else devices[:1]:
        state = next((v for v in dev.diagnostics if v.series.variable == "Diagnostics.ConnectionState"), None)
        if state is None:
            continue
        query = series_query(version, [state], "text", "Anno", device).build()
        if version == 2:
            query.query += '\n  |> filter(fn: (r) => r._value == "Disconnected")'
        else:
            query.query = query.query.replace(" AND $timeFilter", " AND $timeFilter AND \"text\" = 'Disconnected'")
        name = f"{device or dev.name} disconnected"
        annotations.append(db.AnnotationQuery().name(name).datasource(DATASOURCE).enable(True).icon_color("red")
                           .target(_AnnotationTargetBuilder(InfluxAnnotationTarget(query.query,
                                                                                   query.raw_query))))
    return annotations


def _alarm_annotation(site: SiteModel, device: str | None = None) -> Any:
    """Alarm state changes (raised, cleared, acknowledged, ...) from the writer's `alarms` measurement."""
    config = site.config
    query = alarm_query(config.version, config.target_for(config.default_scan_class).name, site.name, device)
    return (db.AnnotationQuery().name(f"{device} alarms" if device else "Alarms").datasource(DATASOURCE).enable(True)
            .icon_color("orange").target(_AnnotationTargetBuilder(InfluxAnnotationTarget(query.query,
                                                                                         query.raw_query))))


class InfluxAnnotationTarget(model.AnnotationTarget):
    """The SDK's AnnotationTarget knows only the built-in Grafana datasource's keys; Grafana's InfluxDB
    datasource reads its annotation query from `target.query`."""

    def __init__(self, query: str, raw_query: bool | None) -> None:
        super().__init__(limit=100, type_val="dashboard")
        self.query = query
        self.raw_query = raw_query

    def to_json(self) -> dict[str, object]:
        payload = super().to_json()
        payload.update({"query": self.query, "refId": "Anno"})
        if self.raw_query is not None:
            payload["rawQuery"] = self.raw_query
        return payload


class _AnnotationTargetBuilder(db.AnnotationTarget):
    def __init__(self, target: InfluxAnnotationTarget) -> None:
        self._internal = target


def _device_rows(version: int, variables: list[Variable], device: str | None) -> list[Any]:
    by_unit: dict[str, list[Variable]] = {}
    for v in variables:
        if v.kind == "number":
            by_unit.setdefault(v.series.unit, []).append(v)
    panels: list[Any] = [_number_panel(version, unit, group, device)
                         for unit, group in sorted(by_unit.items(), key=lambda kv: (kv[0] == "", kv[0]))]
    booleans = [v for v in variables if v.kind == "boolean"]
    texts = [v for v in variables if v.kind == "text"]
    if booleans:
        panels.append(_state_panel(version, booleans, device))
    if texts:
        panels.append(_text_panel(version, texts, device))
    return panels


def device_type_dashboard(site: SiteModel, dtype: DeviceType) -> db.Dashboard:
    version = site.config.version
    names = [d.name for d in dtype.devices]
    dash = (db.Dashboard(f"{site.name} · {dtype.label}").uid(uid(site.name, "type", dtype.label))
            .tags(["gateway", site.name, "device-type"]).time("now-6h", "now").refresh("30s").readonly()
            .description(f"Devices of one type at {site.name}: their variables grouped by unit, states, "
                         "diagnostics, connection losses and alarms.")
            .with_variable(db.CustomVariable("device").label("Device").values(",".join(names)).current(
                model.VariableOption(text=names[0], value=names[0], selected=True))))
    device = "${device}"
    for panel in _device_rows(version, dtype.variables, device):
        dash.with_panel(panel)
    dash.with_panel(_diagnostics_table(version, dtype.devices[:1], device))
    if dtype.devices[0].machines:
        dash.with_panel(_machines_table(version, dtype.devices[0], device))
    for annotation in _communication_annotations(version, dtype.devices, device):
        dash.annotation(annotation)
    dash.annotation(_alarm_annotation(site, device))
    return dash


def site_dashboard(site: SiteModel) -> db.Dashboard:
    version = site.config.version
    dash = (db.Dashboard(f"{site.name} · site").uid(uid(site.name, "site")).tags(["gateway", site.name, "site"])
            .time("now-6h", "now").refresh("30s").readonly()
            .description(f"{site.name}: power flow, device diagnostics, connection losses and alarms; one dashboard "
                         "per device type has the details."))
    flow = site.power_flow()
    if flow:
        refs = _RefIds()
        panel = (timeseries.Panel().title("Power flow").datasource(DATASOURCE).unit("kwatt").span(18).height(9)
                 .legend(_legend()).fill_opacity(10).description(_FLOW_NOTE))
        now = (stat.Panel().title("Power now").datasource(DATASOURCE).unit("kwatt").span(6).height(9)
               .graph_mode(common.BigValueGraphMode.NONE)
               .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
               .description(_FLOW_NOTE))
        for role in ("meter", "pv", "battery", "load"):
            for dev, power in flow.get(role, []):
                label = f"{_ROLE_TITLES[role]} ({dev.name})"
                for target in _targets(version, [power], "value", refs):
                    ref = target.build().ref_id
                    panel.with_target(target).override_by_query(ref, [model.DynamicConfigValue("displayName", label)])
                    unit = grafana_unit(power.series.unit)
                    if unit != "kwatt":
                        panel.override_by_query(ref, [model.DynamicConfigValue("unit", unit)])
                    now.with_target(series_query(version, [power], "value", ref, last=True)).override_by_query(
                        ref, [model.DynamicConfigValue("displayName", label)])
        dash.with_row(db.Row("Power flow")).with_panel(panel).with_panel(now)
    dash.with_row(db.Row("Devices")).with_panel(_diagnostics_table(version, site.devices))
    for annotation in _communication_annotations(version, site.devices):
        dash.annotation(annotation)
    dash.annotation(_alarm_annotation(site))
    return dash


def dashboards(site: SiteModel) -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON (as Grafana's file provider reads it)."""
    out = {f"{uid(site.name, 'site')}.json": to_json(site_dashboard(site).build())}
    for dtype in site.device_types():
        out[f"{uid(site.name, 'type', dtype.label)}.json"] = to_json(device_type_dashboard(site, dtype).build())
    return out


def to_json(dash: model.Dashboard) -> dict[str, Any]:
    import json

    return json.loads(json.dumps(dash, cls=JSONEncoder))
