"""A simulated Opto 22 controller speaking OptoMMP on TCP, for `gateway --simulate` and the tests.

It holds the memory map's areas the driver addresses (status, high-density digital and analog points
of 64 modules, the scratchpad integers, floats and strings) and answers all four requests; an access
that leaves them gets a NAK with last error 0xE005 (invalid memory address), as a brain does. A digital
or analog point written in its write area shows in its read area, as an output's state does. Under
`--simulate`, read-only analog points the site binds move slowly inside their EURange (20 +- 2 without
one). Tests reach `silent` (it reads requests but never answers), `garbage` (it answers with bytes
that are no packet) and `drop()` (connections closed, nothing listening until `start()` again).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import SplitResult

from asyncua import ua

from gateway.drivers.optommp import memory, packets
from gateway.drivers.simulators.tcp import DroppableListener

if TYPE_CHECKING:
    from gateway.bindings import BoundVariable, DeviceConfig

TICK_S = 0.5
NAK = 7
_AREAS = (  # (start, size) of what the controller holds
    (0xF0300000, 0x100),  # status: last error at 0x0C
    (memory.DIGITAL_READ, memory.MODULES * memory.MODULE_STRIDE),
    (memory.DIGITAL_WRITE, memory.MODULES * memory.MODULE_STRIDE),
    (memory.ANALOG_READ, memory.MODULES * memory.MODULE_STRIDE),
    (memory.ANALOG_WRITE, memory.MODULES * memory.MODULE_STRIDE),
    (memory.SCRATCHPAD_INT, 4 * memory.SCRATCHPAD_ELEMENTS),
    (memory.SCRATCHPAD_FLOAT, 4 * memory.SCRATCHPAD_ELEMENTS),
    (0xF0D83000, 0x2080),  # scratchpad strings
)
_MIRRORS = ((memory.DIGITAL_WRITE, memory.DIGITAL_READ), (memory.ANALOG_WRITE, memory.ANALOG_READ))


@dataclass
class MmpController(DroppableListener):
    name: str = "Controller"
    silent: bool = False
    garbage: bool = False
    port: int = 0
    areas: dict[int, bytearray] = field(default_factory=lambda: {start: bytearray(size) for start, size in _AREAS})
    requests: list[packets.Packet] = field(default_factory=list)  # every request, newest last (tests)
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    # -- memory ------------------------------------------------------------------------------
    def _area(self, address: int, size: int) -> tuple[bytearray, int] | None:
        for start, area in self.areas.items():
            if start <= address and address + size <= start + len(area):
                return area, address - start
        return None

    def read(self, address: int, size: int) -> bytes | None:
        found = self._area(address, size)
        return None if found is None else bytes(found[0][found[1]:found[1] + size])

    def write(self, address: int, data: bytes) -> bool:
        found = self._area(address, len(data))
        if found is None:
            return False
        area, offset = found
        area[offset:offset + len(data)] = data
        for write_base, read_base in _MIRRORS:  # an output written shows in its read area
            if write_base <= address < write_base + memory.MODULES * memory.MODULE_STRIDE:
                self.write(read_base + address - write_base, data)
        return True

    def set_float(self, address: int, value: float) -> None:
        self.write(address, struct.pack(">f", value))

    def get_float(self, address: int) -> float:
        return struct.unpack(">f", self.read(address, 4) or bytes(4))[0]

    def set_int(self, address: int, value: int) -> None:
        self.write(address, struct.pack(">i", value))

    def get_int(self, address: int) -> int:
        return struct.unpack(">i", self.read(address, 4) or bytes(4))[0]

    def _refuse(self, code: int) -> None:
        self.set_int(memory.LAST_ERROR, code)

    def answer(self, request: packets.Packet) -> bytes:
        """The response to one request."""
        self.requests.append(request)
        del self.requests[:-500]
        t, label = request.tcode, request.tlabel
        if t in (packets.READ_QUADLET, packets.READ_BLOCK):
            size = 4 if t == packets.READ_QUADLET else request.length
            data = self.read(request.address, size)
            if data is None:
                self._refuse(0xE005)
            build = packets.read_quadlet_response if t == packets.READ_QUADLET else packets.read_block_response
            return build(label, data or b"", NAK if data is None else packets.ACK)
        if t in (packets.WRITE_QUADLET, packets.WRITE_BLOCK):
            if self.write(request.address, request.data):
                return packets.write_response(label)
            self._refuse(0xE005)
            return packets.write_response(label, NAK)
        self._refuse(0xE001)
        return packets.write_response(label, NAK)

    # -- the wire ----------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readexactly(packets.HEAD)
                rest = b""
                while (more := packets.remaining(head, rest)) > 0:
                    rest += await reader.readexactly(more)
                response = self.answer(packets.parse(head + rest))
                if self.silent:
                    continue
                writer.write(b"\xde\xad" * 8 if self.garbage else response)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, packets.PacketError):
            return  # a brain drops a connection that sends what is no request
        finally:
            self._writers.discard(writer)
            writer.close()


class MmpSimulation:
    """`gateway --simulate`: one controller per `optommp://` device, on a loopback port of its own."""

    def __init__(self, devices: Sequence[DeviceConfig]) -> None:
        self.devices = devices
        self.urls: dict[ua.NodeId, SplitResult] = {}
        self.controllers: dict[str, MmpController] = {}
        self._task: asyncio.Task[None] | None = None
        self._t0 = time.monotonic()

    async def start(self) -> None:
        for dev in self.devices:
            controller = MmpController(dev.name)
            await controller.start()
            self.controllers[dev.name] = controller
            self.urls[dev.nodeid] = SplitResult("optommp", f"127.0.0.1:{controller.port}", "", dev.url.query, "")
        self._move()
        self._task = asyncio.create_task(self._tick(), name="OptoMMP controllers")

    def _inputs(self) -> list[tuple[MmpController, BoundVariable, memory.Location]]:
        out = []
        for dev in self.devices:
            for var in dev.variables:
                try:
                    loc = memory.locate(var.binding.address, var.field_type, var.binding.options.get("length"))
                except ValueError:
                    continue
                if loc.area == "analog" and not var.writable:
                    out.append((self.controllers[dev.name], var, loc))
        return out

    def _move(self) -> None:
        for controller, var, loc in self._inputs():
            low, high = var.eurange or (18.0, 22.0)
            middle, swing = (low + high) / 2, (high - low) / 10
            phase = sum(map(ord, var.name)) % 7
            controller.set_float(loc.read, middle + swing * math.sin((time.monotonic() - self._t0) / 30.0 + phase))

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self._move()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for controller in self.controllers.values():
            await controller.drop()
