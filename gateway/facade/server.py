"""The facade's Modbus TCP listener: MBAP framing, connection limits, idle timeout, allowed clients.

A small asyncio server rather than pymodbus' ModbusTcpServer: that one has no connection limit, no
idle timeout and no allow-list, and it hands requests to a datastore interface that cannot answer
from the gateway's values with per-request exceptions (Bad -> 0x04, unmapped -> 0x02). The MBAP
header is 7 fixed bytes; the PDUs are decoded and encoded by pymodbus' own classes (requests.py).

Each connection is its own task and reads one frame at a time: a frame that is malformed (protocol id
not 0, a length outside 2..254) closes that connection only, a truncated one waits for the idle
timeout, and no request does more than read a few hundred stored values or wait for its own write,
so no client can hold up the event loop or another client.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field

from gateway.facade.model import FacadeConfig
from gateway.facade.requests import GATEWAY_PATH_UNAVAILABLE, Client, RequestHandler

log = logging.getLogger(__name__)

MBAP = struct.Struct(">HHHB")  # transaction id, protocol id (0), length (unit id + PDU), unit id
MAX_PDU = 253  # Modbus Application Protocol v1.1b3: 253 bytes, so a length field of at most 254
LOG_EVERY_S = 60.0  # bad traffic is logged once per client address and minute


@dataclass
class FacadeStats:
    requests: int = 0
    exceptions: int = 0
    exception_codes: Counter[int] = field(default_factory=Counter)  # exception code -> responses
    connections: int = 0  # open now
    accepted: int = 0
    refused: int = 0  # over the limit or not allowed
    malformed: int = 0
    idle_closed: int = 0
    _logged: dict[str, float] = field(default_factory=dict)


class FacadeServer:
    def __init__(self, config: FacadeConfig, handler: RequestHandler) -> None:
        self.config = config
        self.handler = handler
        self.stats = FacadeStats()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.config.host, self.config.port,
                                                  reuse_address=True, backlog=128)
        log.info("Modbus facade listening on %s:%d (unit %d, %d mapping(s))", self.config.host, self.port,
                 self.config.unit, len(self.config.mappings))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        self._server = None

    def _note(self, peer: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self.stats._logged.get(peer, -LOG_EVERY_S) >= LOG_EVERY_S:
            self.stats._logged[peer] = now
            if len(self.stats._logged) > 4096:  # bounded: an address scan must not grow it for ever
                self.stats._logged.clear()
            log.warning("Modbus facade: " + message + " (logged once a minute per address)", *args)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("?", 0)
        client = Client(str(peer[0]), int(peer[1]))
        if not self.config.allows(client.host):
            self.stats.refused += 1
            self._note(client.host, "refused %s: not one of the AllowedClients", client.host)
            writer.close()
            return
        if self.stats.connections >= self.config.max_connections:
            self.stats.refused += 1
            self._note(client.host, "refused %s: %d connections open, the limit (MaxConnections)", client.address,
                       self.stats.connections)
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.stats.connections += 1
        self.stats.accepted += 1
        try:
            await self._serve(reader, writer, client)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away, or closed in the middle of a frame
        except Exception:
            log.exception("Modbus facade: the connection of %s failed; closed", client.address)
        finally:
            self.stats.connections -= 1
            self._tasks.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: Client) -> None:
        idle = self.config.idle_timeout_s
        accepted_units = {self.config.unit, 0, 255}  # 0 and 255: "no unit" on TCP (Modbus Messaging on TCP/IP)
        while True:
            try:
                async with asyncio.timeout(idle):
                    header = await reader.readexactly(MBAP.size)
                    tid, protocol, length, unit = MBAP.unpack(header)
                    if protocol != 0 or not 2 <= length <= MAX_PDU + 1:
                        self.stats.malformed += 1
                        self._note(client.host, "closed %s: malformed MBAP header %s", client.address, header.hex())
                        return
                    pdu = await reader.readexactly(length - 1)
            except TimeoutError:
                self.stats.idle_closed += 1
                log.debug("Modbus facade: closed %s after %g s without a request", client.address, idle)
                return
            self.stats.requests += 1
            if unit not in accepted_units:
                response: bytes = bytes([pdu[0] | 0x80, GATEWAY_PATH_UNAVAILABLE])
            else:
                answer = self.handler.handle(pdu, client)
                response = await answer if isinstance(answer, Awaitable) else answer
            if response[0] & 0x80:
                self.stats.exceptions += 1
                self.stats.exception_codes[response[1]] += 1
            writer.write(MBAP.pack(tid, 0, len(response) + 1, unit) + response)
            async with asyncio.timeout(idle):
                await writer.drain()
