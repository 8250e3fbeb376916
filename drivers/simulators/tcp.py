"""The TCP side of a simulated device that tests can take away and bring back (a vanished instrument)."""

from __future__ import annotations

import asyncio
import contextlib

STOP_WITHIN_S = 2.0


class DroppableListener:
    """`start()` listens on `port` (a free one the first time), `drop()` closes every connection and stops
    listening until `start()` again. The device class provides `_serve` and the three attributes."""

    port: int
    _server: asyncio.Server | None
    _writers: set[asyncio.StreamWriter]  # `_serve` adds its connection's writer and discards it at the end

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def start(self, host: str = "127.0.0.1") -> None:
        self._server = await asyncio.start_server(self._serve, host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def drop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.close()
        if server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_WITHIN_S):
                    await server.wait_closed()
