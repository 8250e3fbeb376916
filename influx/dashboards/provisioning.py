"""Grafana provisioning for the writer's InfluxDB (a datasource) and the generated dashboards (a provider).

Provisioning files are Grafana's own YAML, outside the dashboard model of grafana-foundation-sdk, so
they are written from plain dictionaries. Secrets are never copied: the datasource names where Grafana
reads them (`$__file{...}` for the writer's token/password file, `${VAR}` for its environment variable).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gateway.influx.config import InfluxConfig
from gateway.influx.dashboards.queries import DATASOURCE_UID

DASHBOARDS_PATH = "/var/lib/grafana/dashboards"  # where deploy/compose.yaml mounts deploy/grafana/dashboards


def _secret_ref(server: dict[str, Any], name: str) -> str | None:
    if f"{name}_file" in server:
        return f"$__file{{{server[f'{name}_file']}}}"
    if f"{name}_env" in server:
        return f"${{{server[f'{name}_env']}}}"
    return None


def datasource(config: InfluxConfig, server: dict[str, Any]) -> dict[str, Any]:
    """The datasource file; `server` is the configuration's raw `server:` section (where the secrets are)."""
    json_data: dict[str, Any] = {}
    secure: dict[str, Any] = {}
    ds: dict[str, Any] = {"name": "InfluxDB (gateway)", "uid": DATASOURCE_UID, "type": "influxdb",
                          "access": "proxy", "url": config.url, "editable": False}
    if config.version == 2:
        json_data.update(version="Flux", organization=config.org,
                         defaultBucket=config.target_for(config.default_scan_class).name)
        if (token := _secret_ref(server, "token")) is not None:
            secure["token"] = token
    else:
        json_data.update(version="InfluxQL", dbName=config.database, httpMode="GET")
        if config.username:
            ds["user"] = config.username
        if (password := _secret_ref(server, "password")) is not None:
            secure["password"] = password
    if config.ca_file is not None:
        json_data["tlsAuthWithCACert"] = True
        secure["tlsCACert"] = f"$__file{{{server['ca_file']}}}"
    if not config.verify_tls:
        json_data["tlsSkipVerify"] = True
    ds["jsonData"] = json_data
    if secure:
        ds["secureJsonData"] = secure
    return {"apiVersion": 1, "datasources": [ds]}


def provider(site: str, path: str = DASHBOARDS_PATH) -> dict[str, Any]:
    return {"apiVersion": 1, "providers": [{
        "name": "gateway", "folder": f"Gateway {site}", "type": "file", "allowUiUpdates": False,
        "disableDeletion": True, "options": {"path": path, "foldersFromFilesStructure": False}}]}


def write_yaml(path: Path, header: str, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
