"""The series writer's configuration file: secrets from files or the environment, every problem named."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.influx.config import InfluxConfigError, load_config, parse_duration, parse_size


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "influx.yaml"
    p.write_text(text)
    return p


def test_v2_with_token_file_and_heat_pump_retention(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret\n")
    cfg = load_config(write(tmp_path, """
server: {version: 2, url: "https://influx.example:8086/", org: plant, token_file: token, timeout: 5s}
site: HeatPumpSite
targets:
  HighSpeed: {bucket: hp_high, retention: 1d}
  MediumSpeed: {bucket: hp_medium, retention: 7d}
  LowSpeed: {bucket: hp_low, retention: 28d}
batch: {size: 2000, flush_interval: 500ms}
queue: {max_size: 2GB, max_age: 3d}
"""))
    assert cfg.token == "s3cret" and "s3cret" not in repr(cfg)
    assert cfg.url == "https://influx.example:8086" and cfg.timeout_s == 5.0
    assert cfg.target_for("HighSpeed").name == "hp_high" and cfg.target_for("HighSpeed").retention_s == 86400
    assert cfg.target_for("Custom500ms").name == "hp_low"  # a scan class without its own target: the default
    assert (cfg.batch_size, cfg.flush_interval_s, cfg.queue_max_bytes, cfg.queue_max_age_s) == (2000, 0.5, 2e9,
                                                                                                3 * 86400)


def test_v1_password_from_environment(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, """
server: {version: 1, url: "http://127.0.0.1:8086", database: site, username: gw, password_env: GW_PW}
targets: {HighSpeed: {retention_policy: hs}, LowSpeed: {retention_policy: autogen}}
"""), {"GW_PW": "pw"})
    assert (cfg.version, cfg.database, cfg.username, cfg.password) == (1, "site", "gw", "pw")
    assert cfg.target_for("MediumSpeed").name == "autogen"


def test_defaults_are_off_line_friendly(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "server: {url: 'http://h:8086', org: o, token_env: T}\n"
                                      "targets: {LowSpeed: {bucket: b}}\n"), {"T": "t"})
    assert cfg.queue_max_bytes == 10**9 and cfg.queue_max_age_s == 7 * 86400  # 1 GB, 7 days
    assert cfg.measurement == "device" and cfg.version == 2


def test_every_problem_is_named_with_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, """
server: {version: 3, url: "ftp://x", token: inline, ca_file: missing.pem}
targets: {HighSpeed: {bucket: hs, retention: forever}, MediumSpeed: 5}
default_scan_class: LowSpeed
queue: {max_size: lots}
colour: blue
""")
    with pytest.raises(InfluxConfigError) as err:
        load_config(path, {})
    text = str(err.value)
    for expected in ("colour: unknown key", "server.version: 3", "server.url: 'ftp://x'",
                     "server.ca_file:", "targets.HighSpeed.retention: 'forever'", "targets.MediumSpeed:",
                     "default_scan_class: 'LowSpeed' has no entry", "queue.max_size: 'lots'"):
        assert expected in text, expected
    assert all(line.startswith(f"{path}: ") for line in text.splitlines())


def test_secret_written_inline_is_refused_and_missing_secret_named(tmp_path: Path) -> None:
    with pytest.raises(InfluxConfigError, match=r"server.token: secrets are not written"):
        load_config(write(tmp_path, "server: {url: 'http://h', org: o, token: abc}\n"), {})
    with pytest.raises(InfluxConfigError, match=r"server.token_env: the environment variable NOPE is not set"):
        load_config(write(tmp_path, "server: {url: 'http://h', org: o, token_env: NOPE}\n"), {})
    with pytest.raises(InfluxConfigError, match=r"server.token_file: cannot read"):
        load_config(write(tmp_path, "server: {url: 'http://h', org: o, token_file: /nonexistent/t}\n"), {})


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(InfluxConfigError, match=r"cannot read"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(InfluxConfigError, match=r"not valid YAML"):
        load_config(write(tmp_path, "server: [unclosed\n"))


def test_durations_and_sizes() -> None:
    assert parse_duration("28d") == 28 * 86400 and parse_duration("250ms") == 0.25 and parse_duration(3) == 3.0
    assert parse_size("1GB") == 10**9 and parse_size("2GiB") == 2 * 2**30 and parse_size(4096) == 4096
    for bad in ("0s", "-1d", "soon", True):
        with pytest.raises(ValueError):
            parse_duration(bad)
