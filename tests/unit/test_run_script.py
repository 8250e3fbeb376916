"""tests/run.sh for a developer who is not root: sudo for apt-get when it exists, a clear message of
what to install when it does not, and nothing installed when everything is present.

The script runs for real (bash), copied into a scratch tree, with every command it calls replaced
by a stand-in on PATH that records its arguments: no package is installed and no test suite runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "tests" / "run.sh"
RECORD = 'printf "%s\\n" "${0##*/} $*" >> "$RUN_LOG"\n'


def _stub(folder: Path, name: str, body: str = "") -> None:
    path = folder / name
    path.write_text(f"#!{shutil.which('bash')}\n{RECORD}{body}")
    path.chmod(0o755)


def _run(tmp_path: Path, *, present: set[str], sudo: bool) -> tuple[int, str, list[str]]:
    tree, stubs = tmp_path / "repo", tmp_path / "stubs"
    (tree / "tests" / "interop").mkdir(parents=True)
    shutil.copy(SCRIPT, tree / "tests" / "run.sh")
    stubs.mkdir()
    for tool in ("dirname", "mkdir", "ln"):  # real tools the script and the stand-ins use
        (stubs / tool).symlink_to(shutil.which(tool))
    _stub(stubs, "id", 'echo 1000\n')  # a developer, not root
    _stub(stubs, "apt-get")
    if sudo:
        _stub(stubs, "sudo", '"$@"\n')
    for tool in present:
        _stub(stubs, tool)
    recorder = tmp_path / "recorder"  # stands in for .venv/bin/pip, ruff and pytest (named by the link)
    recorder.write_text(f"#!{shutil.which('bash')}\n{RECORD}")
    recorder.chmod(0o755)
    _stub(stubs, "python3", 'if [ "$1" = -m ]; then mkdir -p .venv/bin\n'
          f'  for t in pip ruff pytest; do ln -sf {recorder} .venv/bin/$t; done; fi\n')
    log = tmp_path / "calls.log"
    log.touch()
    done = subprocess.run([shutil.which("bash"), str(tree / "tests" / "run.sh"), "-k", "x"], capture_output=True,
                          text=True, timeout=60, env={"PATH": str(stubs), "RUN_LOG": str(log), "HOME": str(tmp_path)})
    return done.returncode, done.stderr, log.read_text().splitlines()


SERVERS = {"victoria-metrics", "influxd"}
# Mosquitto is stubbed in every run: the script also looks in /usr/sbin, where this machine may have it.
MQTT = {"mosquitto", "mosquitto_pub"}
ALL = {"node", "npm", "socat", "mbpoll", *SERVERS, *MQTT}


def test_non_root_installs_what_is_missing_with_sudo(tmp_path: Path) -> None:
    code, err, calls = _run(tmp_path, present={"npm", "mbpoll", "influxd", *MQTT}, sudo=True)
    assert code == 0, err
    assert "sudo apt-get update -qq" in calls
    assert "sudo apt-get install -y -qq nodejs socat victoria-metrics" in calls
    assert "pytest -q -k x" in calls, "the suite runs after the install"


def test_non_root_without_sudo_is_told_what_to_install(tmp_path: Path) -> None:
    code, err, calls = _run(tmp_path, present={"node", "npm", *SERVERS, *MQTT}, sudo=False)
    assert code == 1
    assert "socat mbpoll" in err and "apt-get install -y socat mbpoll" in err
    assert not [c for c in calls if c.startswith(("apt-get", "pytest"))], calls


def test_the_mqtt_clients_are_installed_when_missing(tmp_path: Path) -> None:
    code, err, calls = _run(tmp_path, present=ALL - {"mosquitto_pub"}, sudo=True)
    assert code == 0, err
    assert "sudo apt-get install -y -qq mosquitto-clients" in calls


@pytest.mark.parametrize("sudo", [True, False])
def test_nothing_installed_when_everything_is_present(tmp_path: Path, sudo: bool) -> None:
    code, err, calls = _run(tmp_path, present=ALL, sudo=sudo)
    assert code == 0, err
    assert not [c for c in calls if "apt-get" in c]
    assert calls[-2:] == ["ruff check .", "pytest -q -k x"]
    assert os.path.exists(tmp_path / "repo" / ".venv" / "bin" / "pytest")
