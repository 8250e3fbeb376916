"""`gateway --nodeset` as a process: serves, stops cleanly on SIGINT/SIGTERM with history flushed."""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from asyncua import Client, ua

from gateway.history.store import HistoryStore

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "sim_site.xml"
_START = datetime(2000, 1, 1, tzinfo=UTC)


async def _connect(url: str, proc: asyncio.subprocess.Process, within: float = 30.0) -> Client:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        assert proc.returncode is None, "gateway exited before serving"
        client = Client(url, timeout=2)
        try:
            await client.connect()
            return client
        except (OSError, TimeoutError):
            assert asyncio.get_running_loop().time() < deadline, "gateway did not start serving in time"
            await asyncio.sleep(0.1)


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_signal_stops_cleanly_and_history_survives(tmp_path: Path, free_port: int, sig: signal.Signals) -> None:
    url = f"opc.tcp://127.0.0.1:{free_port}"
    data = tmp_path / "data"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "--nodeset", str(FIXTURE), "--endpoint", url, "--data-dir", str(data),
        "--insecure", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        client = await _connect(url, proc)
        async with client:
            ns = await client.get_namespace_index("urn:test:sim-site")
            sine = client.get_node(ua.NodeId("Sim1.Sine", ns))
            assert await (await sine.get_parent()).read_browse_name() == ua.QualifiedName("Sim1", ns)
            await asyncio.sleep(1.0)  # about ten HighSpeed scans, all historized
            seen = await sine.read_value()
        proc.send_signal(sig)
        talk = asyncio.ensure_future(proc.communicate())
        done, _ = await asyncio.wait([talk], timeout=60)
        if not done:  # say where it hung: kill it and show what it logged
            proc.kill()
            _, stderr = await talk
            pytest.fail(f"gateway did not stop within 60 s of {sig.name}; its log:\n{stderr.decode()[-4000:]}")
        _, stderr = talk.result()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log = stderr.decode()
    assert proc.returncode == 0, log
    assert "signal received, stopping" in log and "stopped" in log
    assert "Traceback" not in log
    # Everything historized before the signal is on disk after the process has gone.
    store = HistoryStore(data / "history" / "history.sqlite3", retention=None)
    await store.start()
    try:
        values, _ = await store.read_raw("nsu=urn:test:sim-site;s=Sim1.Sine", _START, datetime.now(UTC), 0)
    finally:
        await store.stop()
    assert len(values) >= 5
    assert seen in [v.Value.Value for v in values]
