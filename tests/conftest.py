"""Shared fixtures, and the CI rule: under CI=true a skipped integration or interop test fails.

A skip there means a real part (node-opcua, mbpoll, a server) was missing, and CI must not pass
without having talked to it.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

_STRICT_MARKERS = ("integration", "interop")
TEST_APP_URI = "urn:opcua-gateway:test"


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


@pytest.fixture
async def secured_server(tmp_path: Path, free_port: int) -> AsyncIterator[Callable[..., Awaitable[object]]]:
    """Factory of the gateway's OPC UA server (its transport and security, no site) on a free port,
    with its data dir in tmp_path/data; stopped at the end of the test."""
    from gateway.security.setup import configure_security
    from gateway.session import GatewayInternalServer
    from gateway.transport import GatewayServer

    started: list[GatewayServer] = []

    async def start(*, insecure: bool, allow_anonymous: bool = True, transport: object = None) -> GatewayServer:
        server = GatewayServer(iserver=GatewayInternalServer(), transport=transport)
        await server.init()
        server.set_endpoint(f"opc.tcp://127.0.0.1:{free_port}")
        await server.set_application_uri(TEST_APP_URI)
        await configure_security(server, tmp_path / "data", insecure=insecure, allow_anonymous=allow_anonymous,
                                 app_uri=TEST_APP_URI, hostnames=["localhost", "127.0.0.1"])
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


@pytest.fixture
def client_cert(tmp_path: Path) -> Callable[[str], Awaitable[tuple[Path, Path]]]:
    """Make a self-signed client certificate for urn:NAME: returns (cert.der, key.pem) in tmp_path."""
    from asyncua.crypto.cert_gen import setup_self_signed_certificate
    from cryptography.x509.oid import ExtendedKeyUsageOID

    async def make(name: str) -> tuple[Path, Path]:
        cert, key = tmp_path / f"{name}.der", tmp_path / f"{name}.pem"
        await setup_self_signed_certificate(key, cert, f"urn:{name}", "localhost",
                                            [ExtendedKeyUsageOID.CLIENT_AUTH], {"commonName": name})
        return cert, key

    return make


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.skipped and _ci() and any(item.get_closest_marker(m) for m in _STRICT_MARKERS):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"CI=true: integration/interop test skipped, which counts as a failure: {reason}"


class EventCollector:
    """An asyncua subscription handler that keeps the events it gets; `next()` waits for one (that matches)."""

    def __init__(self) -> None:
        self.got: list[object] = []
        self.new = asyncio.Event()

    def event_notification(self, event: object) -> None:
        self.got.append(event)
        self.new.set()

    async def next(self, match: Callable[[object], bool] | None = None, within_s: float = 5.0) -> object:
        async with asyncio.timeout(within_s):
            while True:
                for i, ev in enumerate(self.got):
                    if match is None or match(ev):
                        return self.got.pop(i)
                self.new.clear()
                await self.new.wait()


@pytest.fixture
def event_collector() -> type[EventCollector]:
    """Make event collectors: `events = event_collector()`, then `create_subscription(50, events)`."""
    return EventCollector
