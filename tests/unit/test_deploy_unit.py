"""The systemd unit: private files, a sandbox that leaves only the data dir writable, and a stop
timeout consistent with the gateway's own 5 s stop bound."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.app import STOP_DEADLINE_S

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "gateway.service"


def _settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_files_private_and_sandboxed() -> None:
    s = _settings()
    exec_start = shlex.split(s["ExecStart"][0])
    data_dir = exec_start[exec_start.index("--data-dir") + 1]
    assert s["UMask"] == ["0077"]
    assert s["StateDirectoryMode"] == ["0700"]
    assert s["CacheDirectoryMode"] == ["0700"], "namespace 0's cache is the service user's own"
    assert s["ReadWritePaths"] == [data_dir], "the data dir, and only it, is writable"
    assert f"/var/lib/{s['StateDirectory'][0]}" == data_dir
    for key, value in {"NoNewPrivileges": "true", "ProtectSystem": "strict", "PrivateTmp": "true",
                       "ProtectHome": "true", "ProtectKernelTunables": "true", "ProtectKernelModules": "true",
                       "ProtectControlGroups": "true", "RestrictNamespaces": "true", "RestrictSUIDSGID": "true",
                       "DevicePolicy": "closed"}.items():
        assert s.get(key) == [value], key
    assert s["CapabilityBoundingSet"] == [""]
    assert set(s["RestrictAddressFamilies"][0].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}


def test_stop_timeout_leaves_the_gateway_its_own_deadline() -> None:
    timeout = float(_settings()["TimeoutStopSec"][0])
    assert STOP_DEADLINE_S < timeout <= 3 * STOP_DEADLINE_S


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_accepts_the_unit() -> None:
    done = subprocess.run(["systemd-analyze", "verify", str(UNIT)], capture_output=True, text=True, timeout=60)
    problems = [line for line in done.stderr.splitlines() if "is not executable" not in line]
    assert problems == [], done.stderr
