"""InfluxDB queries of the writer's series: Flux (v2) or InfluxQL (v1), and the panel target carrying them.

grafana-foundation-sdk ships no InfluxDB query type, so `InfluxQuery` implements its Dataquery
extension point (to_json/from_json) and is registered for the `influxdb` datasource type: the SDK then
builds and parses InfluxDB targets like its own. Each query selects one measurement, one device and a
list of variables of one target (bucket or retention policy), always in the form
`r.variable == "A" or r.variable == "B"` (Flux) / `"variable" = 'A' OR "variable" = 'B'` (InfluxQL),
which the tests read back to check that a dashboard only asks for series the writer produces. Alarm
annotations read the writer's `alarms` measurement (see alarm_query).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard

from gateway.influx.alarms import MEASUREMENT as ALARM_MEASUREMENT
from gateway.influx.dashboards.site import Variable

DATASOURCE_TYPE = "influxdb"
DATASOURCE_UID = "gateway-influxdb"
DATASOURCE = dashboard.DataSourceRef(type_val=DATASOURCE_TYPE, uid=DATASOURCE_UID)


class InfluxQuery(cogvariants.Dataquery):
    """A panel target of Grafana's InfluxDB datasource: `query` is Flux, or raw InfluxQL (`rawQuery`)."""

    def __init__(self, query: str = "", ref_id: str = "", raw_query: bool | None = None,
                 result_format: str | None = None, datasource: dashboard.DataSourceRef | None = None) -> None:
        self.query = query
        self.ref_id = ref_id
        self.raw_query = raw_query
        self.result_format = result_format
        self.datasource = datasource

    def to_json(self) -> dict[str, object]:
        payload: dict[str, object] = {"refId": self.ref_id, "query": self.query}
        if self.raw_query is not None:
            payload["rawQuery"] = self.raw_query
        if self.result_format is not None:
            payload["resultFormat"] = self.result_format
        if self.datasource is not None:
            payload["datasource"] = self.datasource
        return payload

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(query=data.get("query", ""), ref_id=data.get("refId", ""), raw_query=data.get("rawQuery"),
                   result_format=data.get("resultFormat"),
                   datasource=dashboard.DataSourceRef.from_json(data["datasource"]) if "datasource" in data else None)


class InfluxQueryBuilder(cogbuilder.Builder[InfluxQuery]):
    def __init__(self, query: InfluxQuery) -> None:
        self._internal = query

    def build(self) -> InfluxQuery:
        return self._internal


def register() -> None:
    """Let the SDK parse `influxdb` targets (Dashboard.from_json) into InfluxQuery."""
    cogruntime.register_dataquery_variant(cogruntime.DataqueryConfig(identifier=DATASOURCE_TYPE,
                                                                     from_json_hook=InfluxQuery.from_json))


def _flux_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _iql_str(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _iql_ident(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def series_query(version: int, variables: Sequence[Variable], field: str, ref_id: str, device: str | None = None,
                 last: bool = False) -> InfluxQueryBuilder:
    """One target for variables of one device, measurement and bucket/retention policy.

    `device` replaces the device (tag and, when measurements are per device, measurement) by a
    dashboard variable such as `${device}`. `last` asks for the latest value (tables, stats) instead of
    the values in the time range averaged per interval."""
    first = variables[0].series
    assert all((v.series.target, v.series.measurement, v.series.device) == (first.target, first.measurement,
                                                                             first.device) for v in variables)
    dev = device or first.device
    measurement = dev if device and first.measurement == first.device else first.measurement
    names = [v.series.variable for v in variables]
    if version == 2:
        chosen = " or ".join(f"r.variable == {_flux_str(n)}" for n in names)
        lines = [f"from(bucket: {_flux_str(first.target)})",
                 "  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)",
                 f"  |> filter(fn: (r) => r._measurement == {_flux_str(measurement)} and "
                 f"r.device == {_flux_str(dev)} and r._field == {_flux_str(field)})",
                 f"  |> filter(fn: (r) => {chosen})"]
        if last:
            lines += ["  |> last()", '  |> keep(columns: ["_time", "_value", "device", "variable"])']
        else:
            lines += ['  |> keep(columns: ["_time", "_value", "device", "variable"])',
                      "  |> aggregateWindow(every: v.windowPeriod, fn: "
                      f"{'last' if field == 'text' else 'mean'}, createEmpty: false)"]
        return InfluxQueryBuilder(InfluxQuery("\n".join(lines), ref_id, datasource=DATASOURCE))
    chosen = " OR ".join(f'"variable" = {_iql_str(n)}' for n in names)
    source = f"{_iql_ident(first.target)}.{_iql_ident(measurement)}"
    where = f'"device" = {_iql_str(dev)} AND ({chosen})'
    if last:
        query = f'SELECT last({_iql_ident(field)}) FROM {source} WHERE {where} AND $timeFilter GROUP BY "variable"'
        return InfluxQueryBuilder(InfluxQuery(query, ref_id, raw_query=True, result_format="table",
                                              datasource=DATASOURCE))
    agg = "last" if field == "text" else "mean"
    query = (f'SELECT {agg}({_iql_ident(field)}) FROM {source} WHERE {where} AND $timeFilter '
             f'GROUP BY time($__interval), "variable" fill(none)')
    return InfluxQueryBuilder(InfluxQuery(query, ref_id, raw_query=True, result_format="time_series",
                                          datasource=DATASOURCE))



def alarm_query(version: int, target: str, site: str, source: str | None = None) -> InfluxQuery:
    """The alarm states of a site (or of one source) as annotations: the time of each state change, its
    message as the text, the condition and its source as tags; the query names measurement, site tag,
    source tag (when given) and field always in this form, which the tests read back."""
    if version == 2:
        lines = [f"from(bucket: {_flux_str(target)})",
                 "  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)",
                 f"  |> filter(fn: (r) => r._measurement == {_flux_str(ALARM_MEASUREMENT)} and "
                 f"r.site == {_flux_str(site)} and r._field == \"message\")"]
        if source is not None:
            lines.append(f"  |> filter(fn: (r) => r.source == {_flux_str(source)})")
        lines += ["  |> group()",
                  '  |> rename(columns: {_value: "text"})',
                  '  |> keep(columns: ["_time", "text", "source", "condition", "severity_class"])']
        return InfluxQuery("\n".join(lines), "Alarms", datasource=DATASOURCE)
    where = f'"site" = {_iql_str(site)}' + (f' AND "source" = {_iql_str(source)}' if source is not None else "")
    query = (f'SELECT "message" AS "text" FROM {_iql_ident(target)}.{_iql_ident(ALARM_MEASUREMENT)} WHERE {where} '
             'AND $timeFilter GROUP BY "source", "condition"')
    return InfluxQuery(query, "Alarms", raw_query=True, datasource=DATASOURCE)
