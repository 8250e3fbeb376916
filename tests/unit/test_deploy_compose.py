"""deploy/compose.yaml is valid against the Compose Specification's schema, and everything it mounts,
builds or reads from the repository exists (no Docker engine here to try it)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

from gateway.influx.config import load_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
SCHEMA = ROOT / "tests" / "schemas" / "compose-spec.json"


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_matches_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)  # the schema names draft-07 by an https URL jsonschema lacks
    jsonschema.Draft7Validator(schema).validate(_compose())


def test_a_broken_compose_file_is_refused_by_the_schema() -> None:
    # The check can fail: a misspelt key and a wrong type are errors.
    broken = _compose()
    broken["services"]["grafana"]["volume"] = broken["services"]["grafana"].pop("volumes")
    broken["services"]["gateway"]["ports"] = "4840:4840"
    errors = list(jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).iter_errors(broken))
    assert len(errors) >= 2


def test_every_bind_mount_build_and_secret_source_is_in_the_repository() -> None:
    compose = _compose()
    named = set(compose.get("volumes") or {})
    checked = 0
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source in named:
                continue
            assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
            checked += 1
        build = service.get("build")
        if build:
            context = DEPLOY / build["context"]
            assert (context / build["dockerfile"]).is_file(), f"{name}: no Dockerfile"
    assert checked >= 5
    # Secrets are created on the host (never committed): their folder exists and ignores them.
    for secret in compose["secrets"].values():
        folder = (DEPLOY / secret["file"]).parent
        assert (folder / ".gitignore").read_text().splitlines()[1:] == ["*", "!.gitignore"]


def test_the_gateway_config_in_the_stack_reads_and_names_existing_buckets(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t\n")
    text = (DEPLOY / "gateway" / "influx.yaml").read_text().replace("/run/secrets/influx-token", str(token))
    (tmp_path / "influx.yaml").write_text(text)
    config = load_config(tmp_path / "influx.yaml")
    init = (DEPLOY / "influxdb" / "init-buckets.sh").read_text()
    initial = _compose()["services"]["influxdb"]["environment"]["DOCKER_INFLUXDB_INIT_BUCKET"]
    for target in config.targets.values():
        assert target.name == initial or f"--name {target.name} " in init, target
    assert config.url == "http://influxdb:8086" and config.org == "plant"
