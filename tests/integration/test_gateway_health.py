"""Gateway/Diagnostics shows what goes wrong inside the gateway, read by a client, and the log repeats it."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
from asyncua import Client

from gateway.health import monitor
from gateway.nodesets import GATEWAY_NAMESPACE

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "sim_site.xml"


async def _read(client: Client, ns: int, path: str) -> object:
    node = await client.nodes.objects.get_child([f"{ns}:Gateway", f"{ns}:Diagnostics", *(
        f"{ns}:{part}" for part in path.split("."))])
    return await node.read_value()


async def _eventually(check, within: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(within / 0.1)):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not true within {within} s: {check.__name__}")


async def test_history_counters_and_a_failed_poll_task_show_on_gateway_diagnostics(
        simulated_gateway, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(monitor, "REFRESH_S", 0.1)
    gw = await simulated_gateway(FIXTURE)
    async with Client(gw.config.endpoint) as client:
        ns = await client.get_namespace_index(GATEWAY_NAMESPACE)
        assert await _read(client, ns, "History.State") == "Writing"

        async def stored() -> bool:
            return int(await _read(client, ns, "History.ValuesStored")) > 0 and \
                int(await _read(client, ns, "ValuesUpdated")) > 0
        await _eventually(stored)

        # A full queue drops values: the count shows, and the log says so.
        assert gw.history is not None
        gw.history.max_queue = 0

        async def dropping() -> bool:
            return int(await _read(client, ns, "History.ValuesDropped")) > 0
        await _eventually(dropping)
        gw.history.max_queue = 1_000_000

        # A poll task that fails (a bug, not a device error) is counted, named, and restarted.
        runner = next(iter(gw.runners.values()))
        real_scan = runner.scan
        failed = []

        async def scan_once_broken(scan_class: str) -> bool:
            if not failed:
                failed.append(scan_class)
                raise RuntimeError("bug in the value path")
            return await real_scan(scan_class)

        runner.scan = scan_once_broken  # type: ignore[method-assign]

        async def counted() -> bool:
            return await _read(client, ns, "TaskFailures") == 1
        with caplog.at_level(logging.ERROR, logger="gateway.values.runners"):
            await _eventually(counted)
        error = await _read(client, ns, "LastError")
        assert "Sim1" in str(error) and "bug in the value path" in str(error)
        assert any("restarting it" in r.message for r in caplog.records)
        polls = runner.driver.requests
        await asyncio.sleep(1.5)  # restarted after TASK_RESTART_S: the device is polled again
        assert runner.driver.requests > polls


async def test_degraded_history_is_repeated_in_the_log(simulated_gateway, caplog: pytest.LogCaptureFixture,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(monitor, "REFRESH_S", 0.05)
    monkeypatch.setattr(monitor, "REMIND_EVERY_S", 0.2)
    gw = await simulated_gateway(FIXTURE)
    assert gw.health is not None
    # A store in the state a full disk leaves it in (the real disk-full path: test_history_full_disk.py).
    gw.health.sources.history = SimpleNamespace(  # type: ignore[assignment]
        state="Failing", written=10, dropped=3, queued=42, last_error="writing failed: database or disk is full")
    with caplog.at_level(logging.WARNING, logger="gateway.health.monitor"):
        await asyncio.sleep(0.7)
    reminders = [r.getMessage() for r in caplog.records if "history is Failing" in r.getMessage()]
    assert 2 <= len(reminders) <= 6
    assert "42 values waiting, 3 dropped" in reminders[0] and "disk is full" in reminders[0]
    async with Client(gw.config.endpoint) as client:
        ns = await client.get_namespace_index(GATEWAY_NAMESPACE)
        assert await _read(client, ns, "History.State") == "Failing"
        assert await _read(client, ns, "History.QueueDepth") == 42
