"""The generated dashboards' Flux, checked by InfluxData's own Flux language service (the Flux parser and
type checker, as WebAssembly in @influxdata/flux-lsp-browser): every panel and annotation query of the
demo site's InfluxDB 2 dashboards parses and type-checks against the Flux standard library's function
signatures. No InfluxDB 2 runs here to execute them; the InfluxQL dashboards run against InfluxDB 1.x
(tests/integration/test_dashboards_influxdb1.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.influx.dashboards.cli import generate

pytestmark = pytest.mark.interop

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEMO = ROOT / "nodesets" / "demo" / "demo-site.xml"
# What Grafana's InfluxDB datasource defines before it runs a Flux query of a dashboard.
GRAFANA_V = "v = {timeRangeStart: 2026-01-01T00:00:00Z, timeRangeStop: 2026-01-02T00:00:00Z, windowPeriod: 10s}\n"


def check(scripts: list[str]) -> list[dict]:
    if shutil.which("node") is None:
        pytest.skip("node is not installed (tests/run.sh installs it)")
    if not (HERE / "node_modules" / "@influxdata" / "flux-lsp-browser").is_dir():
        pytest.skip("@influxdata/flux-lsp-browser is not installed: run `npm ci` in tests/interop (tests/run.sh does)")
    done = subprocess.run(["node", str(HERE / "flux_check.mjs")], input=json.dumps(scripts), capture_output=True,
                          text=True, timeout=120, cwd=HERE, check=True)
    return json.loads(done.stdout)


def flux_queries(board: dict) -> list[str]:
    texts = [t["query"] for p in board["panels"] for t in p.get("targets") or []]
    texts += [a["target"]["query"] for a in board["annotations"]["list"]]
    devices = [v for v in board.get("templating", {}).get("list", []) if v["name"] == "device"]
    options = devices[0]["query"].split(",") if devices else [""]
    return [t.replace("${device}", d) for t in texts for d in options]


def test_every_generated_flux_query_parses_and_type_checks(tmp_path: Path) -> None:
    generate([DEMO], tmp_path / "grafana", str(ROOT / "deploy" / "gateway" / "influx.yaml"))
    queries = [q for path in sorted((tmp_path / "grafana" / "dashboards").glob("*.json"))
               for q in flux_queries(json.loads(path.read_text()))]
    assert len(queries) > 40 and all(q.startswith("from(bucket:") for q in queries)
    assert any('r._measurement == "alarms"' in q for q in queries)  # the alarm annotations are among them
    # The check can fail: a misspelt argument, an unknown function, a missing parenthesis, and Grafana's
    # `v` left undefined are each refused.
    sample = next(q for q in queries if "createEmpty" in q)
    broken = [sample.replace("createEmpty", "createEmty"), sample + "\n  |> lastt()",
              sample.replace("range(start:", "range(start:("), sample]
    results = check([GRAFANA_V + q for q in queries] + [GRAFANA_V + q for q in broken[:3]] + [broken[3]])
    bad = [(q, r) for q, r in zip(queries, results, strict=False) if not r["valid"]]
    assert not bad, bad[:3]
    assert [r["valid"] for r in results[len(queries):]] == [False] * 4
    assert results[len(queries) + 2]["errors"]  # a syntax error comes with the parser's message
