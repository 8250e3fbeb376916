"""asyncua's OPCUAProtocol and BinaryServer with framing limits and per-address connection limits.

asyncua appends every received byte to a buffer until the frame its header announces is complete,
so a header announcing 4 GB made the server hold whatever the peer sent. Here each header is
checked (`FrameChecker`) as soon as its 8 bytes are in, and a frame that must not be buffered is
answered with an ErrorMessage and the connection closed. Reading pauses while a connection's
decoded frames wait for the processor, so one fast sender cannot queue without bound.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from asyncua import ua
from asyncua.common.connection import TransportLimits
from asyncua.common.utils import Buffer
from asyncua.server.binary_server_asyncio import BinaryServer, OPCUAProtocol
from asyncua.ua.ua_binary import header_from_binary

from gateway.transport.context import TransportContext
from gateway.transport.framing import HEADER_SIZE, FrameChecker, FrameError, error_message, peek_header
from gateway.transport.peers import peer_host, peer_text
from gateway.transport.processor import GatewayUaProcessor

# Decoded frames waiting for the processor: reading pauses above HIGH and resumes at LOW.
_QUEUE_HIGH = 16
_QUEUE_LOW = 4


class GatewayProtocol(OPCUAProtocol):
    def __init__(self, *args: Any, context: TransportContext, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.context = context
        self._buffer = bytearray()  # type: ignore[assignment]
        self._host = "?"
        self._counted = False
        self._refused = False
        self._paused = False
        self._head_checked = False  # the frame at the start of the buffer passed its header check
        limits = self.limits
        self._frames = FrameChecker(limits.max_recv_buffer, limits.max_message_size, limits.max_chunk_count)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.peer_name = transport.get_extra_info("peername")
        self._host = peer_host(self.peer_name)
        peers = self.context.connections
        if len(self.clients) >= self.iserver.max_connections or not peers.admit(self._host):
            many = peers.count(self._host) >= peers.per_peer
            self.context.peer_log.warning(
                self._host, "connections", "refused a connection from %s: %s", peer_text(self.peer_name),
                f"{peers.per_peer} connections from this address are open" if many
                else f"{self.iserver.max_connections} connections are open")
            transport.write(error_message(ua.StatusCodes.BadTcpServerTooBusy, "too many connections"))
            transport.close()
            return
        self._counted = True
        self.transport = transport  # type: ignore[assignment]
        self.processor = GatewayUaProcessor(self.iserver, self.transport, self.limits, self.context)
        self.processor.set_policies(self.policies)
        self.iserver.asyncio_transports.append(transport)
        self.clients.append(self)
        self._task = asyncio.create_task(self._process_received_message_loop())
        if self.iserver.max_pending_activation_seconds > 0:
            self._activation_watchdog_task = asyncio.create_task(self._activation_watchdog())

    def connection_lost(self, ex: BaseException | None) -> None:
        if self._counted:
            self._counted = False
            self.context.connections.release(self._host)
        super().connection_lost(ex)

    async def _activation_watchdog(self) -> None:
        try:
            await asyncio.sleep(self.iserver.max_pending_activation_seconds)
        except asyncio.CancelledError:
            return
        session = self.processor.session if self.processor is not None else None
        if session is None or not session.is_activated():
            self.context.peer_log.warning(self._host, "idle", "closed idle connection from %s: no session activated "
                                          "within %g s", peer_text(self.peer_name),
                                          self.iserver.max_pending_activation_seconds)
            if self.transport is not None:
                self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._refused or self.transport is None:
            return
        self._buffer += data
        while len(self._buffer) >= HEADER_SIZE:
            msg_type, chunk_type, size = peek_header(self._buffer)
            try:
                if not self._head_checked:
                    self._frames.check_header(msg_type, chunk_type, size)
                    self._head_checked = True
                if len(self._buffer) < size:
                    return
                packet = bytes(self._buffer[:size])
                del self._buffer[:size]
                self._head_checked = False
                if msg_type == ua.MessageType.Hello:
                    self._frames.accept_hello(packet)
            except FrameError as err:
                self._refuse(err)
                return
            buf = Buffer(packet)
            header = header_from_binary(buf)
            try:
                self.messages.put_nowait((header, buf))
            except asyncio.QueueFull:
                self._refuse(FrameError(ua.StatusCodes.BadTcpNotEnoughResources, "too many frames queued"))
                return
            if not self._paused and self.messages.qsize() >= _QUEUE_HIGH:
                self._paused = True
                self.transport.pause_reading()

    def _refuse(self, err: FrameError) -> None:
        self._refused = True
        self._buffer.clear()
        self.context.peer_log.warning(self._host, "framing", "refused traffic from %s: %s (%s)",
                                      peer_text(self.peer_name), err.reason, ua.StatusCode(err.status).name)
        if self.transport is not None:
            self.transport.write(error_message(err.status, err.reason))
            self.transport.close()

    async def _process_received_message_loop(self) -> None:
        while True:
            header, buf = await self.messages.get()
            if header is None and buf is None:
                break
            if self._paused and self.messages.qsize() <= _QUEUE_LOW and self.transport is not None:
                self._paused = False
                self.transport.resume_reading()
            try:
                if not await self._process_one_msg(header, buf):
                    break
            except Exception:  # the processor answers what it can; this is a bug, logged once per address a minute
                self.context.peer_log.warning(self._host, "processing", "internal error processing a message from %s",
                                              peer_text(self.peer_name), level=logging.ERROR, exc_info=True)


class GatewayBinaryServer(BinaryServer):
    def __init__(self, internal_server: Any, hostname: str | None, port: int | None, limits: TransportLimits,
                 context: TransportContext) -> None:
        super().__init__(internal_server, hostname, port, limits)  # type: ignore[arg-type]
        self.context = context

    def _make_protocol(self) -> GatewayProtocol:
        return GatewayProtocol(iserver=self.iserver, policies=self._policies, clients=self.clients,
                               closing_tasks=self.closing_tasks, limits=self.limits, context=self.context)
