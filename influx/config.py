"""The series writer's configuration: one small YAML file given with `--influx CONFIG`.

Secrets never come from the site's nodeset (every OPC UA client can browse it): the token (v2) or
password (v1) is read from a file (a Docker/systemd secret) or an environment variable. Every
problem is reported as `FILE: key: problem`, all at once, and nothing is started with a half-read
configuration.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_TARGETS = {"HighSpeed": "1d", "MediumSpeed": "7d", "LowSpeed": "28d"}  # the heat-pump seed's retention
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_DURATION_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$", re.IGNORECASE)
_SIZE_BYTES = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


class InfluxConfigError(ValueError):
    def __init__(self, path: Path | str, problems: list[str]) -> None:
        self.path = str(path)
        self.problems = problems
        super().__init__("\n".join(f"{path}: {p}" for p in problems))


@dataclass(frozen=True)
class Target:
    """Where the values of one scan class go: a bucket (v2) or a retention policy of the database (v1)."""

    scan_class: str
    name: str
    retention_s: float | None  # what the bucket/policy should keep (provisioning and docs; not enforced here)


@dataclass
class InfluxConfig:
    url: str
    version: int = 2  # 2: InfluxDB 2.x/3.x and VictoriaMetrics (/api/v2/write); 1: InfluxDB 1.x (/write)
    org: str = ""
    token: str = field(default="", repr=False)
    database: str = ""
    username: str = ""
    password: str = field(default="", repr=False)
    ca_file: Path | None = None
    verify_tls: bool = True
    timeout_s: float = 10.0
    site: str = ""  # the `site` tag; the site nodeset's name when empty
    measurement: str = "device"  # "device": one measurement per device; anything else: that one name
    targets: dict[str, Target] = field(default_factory=dict)
    default_scan_class: str = "LowSpeed"  # for values without one: parameters, device diagnostics
    batch_size: int = 5_000
    flush_interval_s: float = 1.0
    queue_max_bytes: int = 10**9
    queue_max_age_s: float = 7 * 86400.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0

    def target_for(self, scan_class: str) -> Target:
        return self.targets.get(scan_class) or self.targets[self.default_scan_class]


def parse_duration(text: object) -> float:
    """'1d', '12h', '30m', '10s', '250ms', '2w' (or a number of seconds) -> seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        if text <= 0:
            raise ValueError(f"{text!r} is not a positive duration")
        return float(text)
    m = _DURATION.match(str(text))
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration like 7d, 12h, 30m, 10s")
    return float(m.group(1)) * _DURATION_S[m.group(2)]


def parse_size(text: object) -> int:
    """'1GB', '500MB', '2GiB' (or a number of bytes) -> bytes."""
    if isinstance(text, int) and not isinstance(text, bool) and text > 0:
        return text
    m = _SIZE.match(str(text))
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a size like 1GB, 500MB")
    return int(float(m.group(1)) * _SIZE_BYTES[(m.group(2) or "b").lower()])


def load_config(path: Path, environ: dict[str, str] | None = None, read_secrets: bool = True) -> InfluxConfig:
    """Read and check the file; raise InfluxConfigError listing every problem.

    `read_secrets=False` leaves the token/password empty and unread (for `gateway dashboards`, which
    only names where Grafana finds them, on a machine that may not hold them)."""
    env = os.environ if environ is None else environ
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InfluxConfigError(path, [f"cannot read: {exc.strerror or exc}"]) from exc
    except yaml.YAMLError as exc:
        raise InfluxConfigError(path, [f"not valid YAML: {exc}"]) from exc
    return config_from_dict(raw, path, env, base=path.parent, read_secrets=read_secrets)


def config_from_dict(raw: Any, path: Path | str, env: dict[str, str] | os._Environ[str],
                     base: Path = Path(), read_secrets: bool = True) -> InfluxConfig:
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise InfluxConfigError(path, ["the file must be a mapping (server:, targets:, ...)"])
    known = {"server", "site", "measurement", "targets", "default_scan_class", "batch", "queue", "backoff"}
    problems += [f"{k}: unknown key (known: {', '.join(sorted(known))})" for k in raw if k not in known]
    server = raw.get("server")
    if not isinstance(server, dict):
        raise InfluxConfigError(path, [*problems, "server: missing (url, version, and org/token or database)"])

    def get(section: dict[str, Any], where: str, key: str, kind: type, default: Any) -> Any:
        if key not in section:
            return default
        value = section[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            problems.append(f"{where}{key}: {value!r} is not a {_KIND_NAMES.get(kind, kind.__name__)}")
            return default
        return value

    def secret(section: dict[str, Any], where: str, name: str) -> str:
        file_key, env_key = f"{name}_file", f"{name}_env"
        if name in section:
            problems.append(f"{where}{name}: secrets are not written into the configuration; give {file_key} "
                            f"(a file only the gateway reads) or {env_key} (an environment variable)")
        if not read_secrets:
            return ""
        if file_key in section:
            p = Path(str(section[file_key]))
            p = p if p.is_absolute() else base / p
            try:
                return p.read_text(encoding="utf-8").strip()
            except OSError as exc:
                problems.append(f"{where}{file_key}: cannot read {p}: {exc.strerror or exc}")
                return ""
        if env_key in section:
            value = env.get(str(section[env_key]))
            if not value:
                problems.append(f"{where}{env_key}: the environment variable {section[env_key]} is not set")
            return value or ""
        return ""

    s_known = {"url", "version", "org", "token_file", "token_env", "token", "database", "username",
               "password_file", "password_env", "password", "ca_file", "verify_tls", "timeout"}
    problems += [f"server.{k}: unknown key" for k in server if k not in s_known]
    url = get(server, "server.", "url", str, "")
    if not re.match(r"^https?://[^/\s]+", url):
        problems.append(f"server.url: {url!r} is not an http:// or https:// URL")
    version = get(server, "server.", "version", int, 2)
    if version not in (1, 2):
        problems.append(f"server.version: {version!r}: 2 (InfluxDB 2.x/3.x, VictoriaMetrics) or 1 (InfluxDB 1.x)")
    cfg = InfluxConfig(url=url.rstrip("/"), version=version)
    if version == 2:
        cfg.org = get(server, "server.", "org", str, "")
        if not cfg.org:
            problems.append("server.org: missing (InfluxDB 2.x writes go to an organisation)")
        cfg.token = secret(server, "server.", "token")
    else:
        cfg.database = get(server, "server.", "database", str, "")
        if not cfg.database:
            problems.append("server.database: missing (InfluxDB 1.x writes go to a database)")
        cfg.username = get(server, "server.", "username", str, "")
        cfg.password = secret(server, "server.", "password")
    if "ca_file" in server:
        ca = Path(str(server["ca_file"]))
        cfg.ca_file = ca if ca.is_absolute() else base / ca
        if not cfg.ca_file.is_file():
            problems.append(f"server.ca_file: {cfg.ca_file} does not exist")
    cfg.verify_tls = get(server, "server.", "verify_tls", bool, True)
    if "timeout" in server:
        try:
            cfg.timeout_s = parse_duration(server["timeout"])
        except ValueError as exc:
            problems.append(f"server.timeout: {exc}")

    cfg.site = get(raw, "", "site", str, "")
    cfg.measurement = get(raw, "", "measurement", str, "device") or "device"
    cfg.default_scan_class = get(raw, "", "default_scan_class", str, "LowSpeed")
    targets = raw.get("targets", {name: {"retention": r} for name, r in DEFAULT_TARGETS.items()})
    name_key = "bucket" if version == 2 else "retention_policy"
    if not isinstance(targets, dict) or not targets:
        problems.append("targets: a mapping of scan class -> {" + name_key + ": NAME, retention: 7d}")
        targets = {}
    for scan_class, spec in targets.items():
        where = f"targets.{scan_class}."
        spec = spec if isinstance(spec, dict) else ({name_key: spec} if isinstance(spec, str) else None)
        if spec is None:
            problems.append(f"targets.{scan_class}: give {{{name_key}: NAME, retention: DURATION}}")
            continue
        other = "retention_policy" if version == 2 else "bucket"
        if other in spec:
            problems.append(f"{where}{other}: server.version is {version}; name a {name_key}")
        problems += [f"{where}{k}: unknown key" for k in spec if k not in (name_key, other, "retention")]
        name = spec.get(name_key) or (f"{scan_class.lower()}" if version == 1 else "")
        if version == 2 and not name:
            problems.append(f"{where}{name_key}: missing")
        retention = None
        if "retention" in spec:
            try:
                retention = parse_duration(spec["retention"])
            except ValueError as exc:
                problems.append(f"{where}retention: {exc}")
        cfg.targets[str(scan_class)] = Target(str(scan_class), str(name), retention)
    if cfg.targets and cfg.default_scan_class not in cfg.targets:
        problems.append(f"default_scan_class: {cfg.default_scan_class!r} has no entry under targets")

    batch = raw.get("batch", {})
    if isinstance(batch, dict):
        cfg.batch_size = get(batch, "batch.", "size", int, cfg.batch_size)
        if not 1 <= cfg.batch_size <= 100_000:
            problems.append(f"batch.size: {cfg.batch_size} is not between 1 and 100000")
        if "flush_interval" in batch:
            try:
                cfg.flush_interval_s = parse_duration(batch["flush_interval"])
            except ValueError as exc:
                problems.append(f"batch.flush_interval: {exc}")
    queue = raw.get("queue", {})
    if isinstance(queue, dict):
        if "max_size" in queue:
            try:
                cfg.queue_max_bytes = parse_size(queue["max_size"])
            except ValueError as exc:
                problems.append(f"queue.max_size: {exc}")
        if "max_age" in queue:
            try:
                cfg.queue_max_age_s = parse_duration(queue["max_age"])
            except ValueError as exc:
                problems.append(f"queue.max_age: {exc}")
    backoff = raw.get("backoff", {})
    if isinstance(backoff, dict):
        for key, attr in (("initial", "backoff_initial_s"), ("max", "backoff_max_s")):
            if key in backoff:
                try:
                    setattr(cfg, attr, parse_duration(backoff[key]))
                except ValueError as exc:
                    problems.append(f"backoff.{key}: {exc}")
    if problems:
        raise InfluxConfigError(path, problems)
    return cfg


_KIND_NAMES = {str: "string", int: "whole number", bool: "true/false"}
