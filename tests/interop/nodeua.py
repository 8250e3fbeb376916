"""Run the node-opcua client script (ua_client.mjs) from async tests."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "ua_client.mjs"


def node_client_available() -> None:
    """Skip (a failure under CI=true, see tests/conftest.py) when node or node-opcua is missing."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed (tests/run.sh installs it)")
    if not (HERE / "node_modules" / "node-opcua-client").is_dir():
        pytest.skip("node-opcua-client is not installed: run `npm ci` in tests/interop (tests/run.sh does)")


async def run_node_client(script: dict[str, Any], within_s: float = 60.0) -> dict[str, Any]:
    """Run one script; never blocks the event loop the gateway under test runs in."""
    env = {**os.environ, "XDG_CONFIG_HOME": str(Path(script["pkiDir"]).parent)}
    proc = await asyncio.create_subprocess_exec(
        "node", str(SCRIPT), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env, cwd=HERE,
    )
    try:
        async with asyncio.timeout(within_s):
            out, err = await proc.communicate(json.dumps(script).encode())
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    # node-opcua prints its own notices on stdout; the result is the last JSON line.
    for line in reversed(out.decode().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError(f"node client printed no result (exit {proc.returncode}):\n{out.decode()}\n{err.decode()}")
