"""asyncua's Server, started with the gateway's transport (`GatewayBinaryServer`)."""

from __future__ import annotations

import socket

from asyncua import Server
from asyncua.crypto import uacrypto

from gateway.transport.channel_policy import OfferedSecurity
from gateway.transport.config import TransportConfig
from gateway.transport.context import TransportContext
from gateway.transport.diagnostics import DiagnosticsPublisher, SessionCounters
from gateway.transport.operation_limits import advertise
from gateway.transport.protocol import GatewayBinaryServer


class GatewayServer(Server):
    """Server whose start() builds the gateway's BinaryServer (asyncua's start() names its own class).

    Needs a GatewayInternalServer (gateway.session), whose sessions implement the awaited
    ActivateSession and the subscription ownership the processor relies on."""

    def __init__(self, *args: object, transport: TransportConfig | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.transport = transport or TransportConfig()
        self.limits = self.transport.transport_limits()
        self.counters = SessionCounters()
        self.context: TransportContext | None = None

    def _apply_limits(self) -> None:
        cfg, iserver = self.transport, self.iserver
        iserver.max_connections = cfg.max_connections
        iserver.max_pending_activation_seconds = cfg.max_pending_activation_s
        iserver.max_subscriptions = cfg.max_subscriptions
        iserver.max_monitored_items = cfg.max_monitored_items  # read by GatewaySession
        iserver.session_counters = self.counters  # read by GatewaySession

    async def start(self) -> None:
        # The steps of asyncua's Server.start(), with GatewayBinaryServer in place of BinaryServer.
        if self.iserver.certificate is not None:
            uacrypto.check_certificate(self.iserver.certificate, self._application_uri, socket.gethostname())
        await self._setup_server_nodes()
        self._apply_limits()
        await advertise(self.iserver, self.transport.operation_limits)
        self.context = TransportContext(self.transport, OfferedSecurity.of(self._policies), self.counters)
        await self.iserver.start()
        try:
            host, port = self._get_bind_socket_info()
            self.bserver = GatewayBinaryServer(self.iserver, host, port, self.limits, self.context)
            self.bserver.set_policies(self._policies)
            await self.bserver.start()
        except Exception:  # the caller reports it (the CLI: one line, exit code 2)
            await self.iserver.stop()
            raise
        self.context.diagnostics = DiagnosticsPublisher(self.iserver, self.counters)
        await self.context.diagnostics.start()

    async def stop(self) -> None:
        if self.context is not None and self.context.diagnostics is not None:
            await self.context.diagnostics.stop()
            self.context.diagnostics = None
        await super().stop()
