"""`gateway dashboards SITE.xml... -o DIR [--influx CONFIG]`: Grafana provisioning and dashboards.

DIR receives `provisioning/datasources/influxdb.yaml`, `provisioning/dashboards/gateway.yaml` and
`dashboards/*.json` (the layout deploy/compose.yaml mounts). Without `--influx` the compose stack's
configuration is assumed (InfluxDB 2 at http://influxdb:8086, org `plant`, buckets site_high,
site_medium and site_low, the token in /run/secrets/influx-token).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from gateway.influx.config import InfluxConfig, InfluxConfigError, config_from_dict, load_config
from gateway.nodeset.model import NodesetError

COMPOSE_DEFAULT: dict[str, Any] = {
    "server": {"version": 2, "url": "http://influxdb:8086", "org": "plant", "token_file": "/run/secrets/influx-token"},
    "targets": {"HighSpeed": {"bucket": "site_high", "retention": "1d"},
                "MediumSpeed": {"bucket": "site_medium", "retention": "7d"},
                "LowSpeed": {"bucket": "site_low", "retention": "28d"}},
}
_HEADER = "# Written by `gateway dashboards`; regenerate rather than edit.\n"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboards", help="write Grafana provisioning and dashboards for a site's InfluxDB series")
    p.add_argument("nodesets", nargs="+", metavar="SITE.xml", help="the site's NodeSet2 XML files")
    p.add_argument("-o", "--output", required=True, metavar="DIR",
                   help="writes DIR/provisioning/{datasources,dashboards}/*.yaml and DIR/dashboards/*.json")
    p.add_argument("--influx", metavar="CONFIG", help="the series writer's configuration (as for `gateway --influx`)")
    p.set_defaults(func=_run)


def _config(path: str | None) -> tuple[InfluxConfig, dict[str, Any]]:
    if path is None:
        return config_from_dict(COMPOSE_DEFAULT, "<compose default>", {}, read_secrets=False), \
            COMPOSE_DEFAULT["server"]
    config = load_config(Path(path), read_secrets=False)
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return config, raw["server"]


def generate(nodesets: list[Path], output: Path, influx: str | None = None) -> list[Path]:
    """Write the files; return their paths. Raises InfluxConfigError or NodesetError before writing anything."""
    from gateway.influx.dashboards.build import dashboards
    from gateway.influx.dashboards.provisioning import datasource, provider, write_yaml
    from gateway.influx.dashboards.site import load_site_model

    config, server = _config(influx)
    site = asyncio.run(load_site_model(nodesets, config))
    boards = dashboards(site)
    written = [output / "provisioning" / "datasources" / "influxdb.yaml",
               output / "provisioning" / "dashboards" / "gateway.yaml"]
    write_yaml(written[0], _HEADER, datasource(config, server))
    write_yaml(written[1], _HEADER, provider(site.name))
    (output / "dashboards").mkdir(parents=True, exist_ok=True)
    for name, board in boards.items():
        path = output / "dashboards" / name
        path.write_text(json.dumps(board, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(path)
    return written


def _run(args: argparse.Namespace) -> int:
    try:
        written = generate([Path(f) for f in args.nodesets], Path(args.output), args.influx)
    except InfluxConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except NodesetError as exc:
        for p in exc.problems:
            print(p, file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0
