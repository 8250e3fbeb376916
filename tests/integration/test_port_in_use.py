"""An endpoint that cannot be opened at start (port in use, address not local) is one line and exit code 2."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_port_in_use_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "--nodeset", str(ROOT / "tests/fixtures/sim_site.xml"),
             "--endpoint", f"opc.tcp://127.0.0.1:{port}", "--data-dir", str(tmp_path / "data"), "--insecure"],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    said = [line for line in run.stderr.splitlines() if line.startswith("gateway: ")]
    assert said == [f"gateway: cannot listen on opc.tcp://127.0.0.1:{port}: the port is already in use"], run.stderr


@pytest.mark.integration
def test_an_address_of_another_machine_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    endpoint = "opc.tcp://192.0.2.1:4840"  # TEST-NET-1 (RFC 5737): never an address of this machine
    run = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "--nodeset", str(ROOT / "tests/fixtures/sim_site.xml"),
         "--endpoint", endpoint, "--data-dir", str(tmp_path / "data"), "--insecure"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    said = [line for line in run.stderr.splitlines() if line.startswith("gateway: ")]
    assert said == [f"gateway: cannot listen on {endpoint}: the address is not one of this machine's"], run.stderr
