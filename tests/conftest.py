"""Shared fixtures, and the CI rule: under CI=true a skipped integration or interop test fails.

A skip there means a real part (node-opcua, mbpoll, a server) was missing, and CI must not pass
without having talked to it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

_STRICT_MARKERS = ("integration", "interop")


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def simulated_gateway(tmp_path: Path, free_port: int) -> AsyncIterator[Callable[[Path], Awaitable[object]]]:
    """Start a gateway on a site under --simulate, with user operator1 / op-secret-1 (operator)."""
    from gateway.security.roles import Role
    from gateway.security.users import UserStore
    from gateway.server import Gateway, GatewayConfig

    started: list[Gateway] = []

    async def start(site: Path) -> Gateway:
        UserStore(tmp_path / "data" / "users.yaml").add("operator1", "op-secret-1", Role.operator)
        gw = Gateway(GatewayConfig(nodesets=[site], endpoint=f"opc.tcp://127.0.0.1:{free_port}",
                                   data_dir=tmp_path / "data", insecure=True, simulate=True))
        started.append(gw)
        await gw.load()
        await gw.start()
        return gw

    yield start
    for gw in started:
        await gw.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.skipped and _ci() and any(item.get_closest_marker(m) for m in _STRICT_MARKERS):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"CI=true: integration/interop test skipped, which counts as a failure: {reason}"
