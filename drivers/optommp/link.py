"""One TCP connection to an OptoMMP device: requests one at a time, each answered (or not) within the timeout.

asyncio streams, not a thread: the protocol is plain TCP. The connection opens on the first request and
after any failure; a request that is not answered in time, an answer that is not the packet asked for
(transaction code, label or length) or a lost connection closes it, so a late or stray answer is never
taken for the next request's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gateway.drivers.base import os_error_text
from gateway.drivers.optommp import packets


class LinkDown(Exception):
    """No (valid) answer: the message says whether the device was unreachable, silent, gone or garbled."""


class MmpLink:
    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.where = f"{host}:{port}"
        self._lock = asyncio.Lock()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._label = 0

    def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()

    async def request(self, build: Callable[[int], bytes], answer: int) -> packets.Packet:
        """Send `build(transaction label)` and return the answer, which must be transaction code `answer`."""
        async with self._lock:
            try:
                async with asyncio.timeout(self.timeout_s):
                    reader, writer = await self._connected()
                    self._label = (self._label + 1) % 64
                    writer.write(build(self._label))
                    await writer.drain()
                    head = await reader.readexactly(packets.HEAD)
                    rest = b""
                    while (more := packets.remaining(head, rest)) > 0:
                        rest += await reader.readexactly(more)
                got = packets.parse(head + rest)
                if got.tcode != answer:
                    raise packets.PacketError(f"a {got.name} came back, not a {packets.NAMES[answer]}")
                if got.tlabel != self._label:
                    raise packets.PacketError(f"transaction label {got.tlabel} came back, not {self._label}")
                return got
            except TimeoutError:
                self.close()
                raise LinkDown(f"no answer from {self.where} within {self.timeout_s:g} s") from None
            except asyncio.IncompleteReadError:
                self.close()
                raise LinkDown(f"{self.where} closed the connection") from None
            except packets.PacketError as exc:
                self.close()
                raise LinkDown(f"bad answer from {self.where}: {exc}") from None
            except OSError as exc:
                self.close()
                raise LinkDown(f"connection to {self.where}: {os_error_text(exc)}") from None

    async def _connected(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None or self._writer.is_closing():
            self.close()
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self._reader, self._writer
