"""One physical Modbus link (a TCP socket or a serial port), shared in turn by the units behind it.

A ComBox, a serial-to-Ethernet converter or an RS-485 bus answers one request at a time, so every
device on the same link (same host and port, or same serial port) goes through one pymodbus client
under one lock. The link also keeps each device's minimum silence between requests and reconnects
on the next request after a failure, never in the background: a dead link costs one connect
attempt per poll of a device that is already backed off, not a busy loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.drivers.base import os_error_text
from gateway.drivers.modbus.address import DeviceOptions

# pymodbus logs every request that fails; the driver reports once per state change instead.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


class LinkDown(Exception):
    """The link could not be opened, or the device did not answer in time; `message` says which."""


class ModbusLink:
    """A pymodbus client shared by the devices of one link; see the module docstring."""

    # Per event loop: a link (its lock, its client's transport) belongs to the loop that opened it, and a
    # link left open by a loop that has gone must never be handed to another one.
    _open: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str, int], ModbusLink]] = (
        weakref.WeakKeyDictionary())

    def __init__(self, options: DeviceOptions, clock: Clock) -> None:
        self.options = options
        self.clock = clock
        self.key = options.link_key
        self.users = 0
        self.timeout_s = options.timeout_ms / 1000.0
        self.lock = asyncio.Lock()
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        self._last_end = float("-inf")

    @classmethod
    def acquire(cls, options: DeviceOptions, clock: Clock = SYSTEM_CLOCK) -> ModbusLink:
        """The link of `options.link_key`, opened lazily; every acquire needs a `release`."""
        links = cls._open.setdefault(asyncio.get_running_loop(), {})
        link = links.get(options.link_key)
        if link is None:
            link = links[options.link_key] = ModbusLink(options, clock)
        link.users += 1
        # One client, one timeout: the most patient device sets it, so no device is cut short.
        link.timeout_s = max(link.timeout_s, options.timeout_ms / 1000.0)
        return link

    def release(self) -> None:
        self.users -= 1
        if self.users <= 0:
            self.close()
            for links in ModbusLink._open.values():
                if links.get(self.key) is self:
                    del links[self.key]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _make_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        o = self.options
        # retries=0: a poll that fails is retried by the next poll, after the device's backoff; pymodbus'
        # own retries would hold the link for (retries + 1) x timeout while other devices wait.
        # reconnect_delay=0: no background reconnects; the next request reconnects.
        common: dict[str, Any] = {"timeout": self.timeout_s, "retries": 0, "reconnect_delay": 0}
        if o.transport == "rtu":
            return AsyncModbusSerialClient(o.serial_port, framer=FramerType.RTU, baudrate=o.baud,
                                           bytesize=o.bytesize, parity=o.parity, stopbits=o.stopbits, **common)
        framer = FramerType.RTU if o.transport == "rtutcp" else FramerType.SOCKET
        return AsyncModbusTcpClient(o.host, port=o.port, framer=framer, **common)

    def _where(self) -> str:
        o = self.options
        return o.serial_port if o.transport == "rtu" else f"{o.host}:{o.port}"

    async def _why_not_connected(self) -> str:
        """The cause of a failed connect, in words: pymodbus only logs it, and "refused" (nothing
        listens: wrong port, device restarting) needs another fix than "no answer" (wrong address,
        cable, firewall). Asked once per failed connect, which backoff keeps rare."""
        o = self.options
        if o.transport == "rtu":
            return "no such serial port" if not os.path.exists(o.serial_port) else "cannot open the serial port"
        try:
            async with asyncio.timeout(self.timeout_s):
                _, writer = await asyncio.open_connection(o.host, o.port)
        except TimeoutError:
            return f"no answer within {self.timeout_s:g} s"
        except OSError as exc:
            return os_error_text(exc)
        writer.close()
        return "the connection closed at once"

    async def call(self, min_interval_ms: int, request: Callable[[Any], Awaitable[ModbusPDU]]) -> ModbusPDU:
        """Run one request on the link, in turn; returns the response PDU (possibly an exception response).

        Raises LinkDown when the link cannot be opened or no (valid) answer came within the timeout.
        """
        async with self.lock:
            if min_interval_ms:
                wait = self._last_end + min_interval_ms / 1000.0 - self.clock.monotonic()
                if wait > 0:
                    await self.clock.sleep(wait)
            try:
                if self._client is None or not self._client.connected:
                    self.close()
                    self._client = self._make_client()
                    if not await self._client.connect():
                        self.close()
                        raise LinkDown(f"cannot connect to {self._where()}: {await self._why_not_connected()}")
                # pymodbus bounds the request by timeout_s itself; this outer bound only guards against a
                # request that never resolves (a transport gone without a close), so a device cannot hang.
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the cancellation of a stop.
                async with asyncio.timeout(2 * self.timeout_s + 1.0):
                    return await request(self._client)
            except TimeoutError as exc:
                self.close()
                raise LinkDown(f"no answer from {self._where()} (request stuck; connection reset)") from exc
            except ModbusIOException as exc:
                if self.options.transport != "tcp":
                    # RTU frames carry no transaction id: a late answer would be taken for the next
                    # request's. A fresh connection drops it.
                    self.close()
                raise LinkDown(f"no answer from {self._where()} within {self.timeout_s:g} s") from exc
            except (ConnectionException, OSError) as exc:
                self.close()
                raise LinkDown(f"connection to {self._where()} lost: {exc}") from exc
            except ModbusException as exc:  # a malformed frame pymodbus could not decode
                self.close()
                raise LinkDown(f"bad answer from {self._where()}: {exc}") from exc
            finally:
                self._last_end = self.clock.monotonic()
