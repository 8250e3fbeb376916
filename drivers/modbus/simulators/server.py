"""Simulated Modbus units served by a real pymodbus server (TCP, RTU over TCP, or RTU on a serial port).

Each unit has sparse tables: only the registers a site maps exist, so a read that touches anything
else gets exception 0x02 IllegalDataAddress, as most real devices answer. Faults a test or a demo
can inject per unit: `offline` (no answer at all), `exception` (every request answered with that
exception code), `delay_s` (a slow device).

Why our own datastore instead of pymodbus' SimDevice: the simulators need to change registers
from the physics models between requests, see every write as it happens, and inject faults;
pymodbus 3.16's SimDevice builds its memory once and its older datastore classes are deprecated.
The server only asks its context for `async_getValues`/`async_setValues`/`device_ids`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from gateway.clock import SYSTEM_CLOCK, Clock

# Function code -> table, as the Modbus application protocol assigns them.
_TABLE_OF = {1: "coil", 5: "coil", 15: "coil", 2: "discrete", 3: "holding", 6: "holding", 16: "holding",
             23: "holding", 22: "holding", 4: "input"}

WriteHook = Callable[["UnitMemory", str, int, list[int]], None]


@dataclass
class UnitMemory:
    """One unit's registers and bits (sparse), and the faults injected into it."""

    unit: int
    tables: dict[str, dict[int, int]] = field(default_factory=lambda: {t: {} for t in
                                                                         ("coil", "discrete", "input", "holding")})
    offline: bool = False
    exception: int | None = None
    delay_s: float = 0.0
    on_write: list[WriteHook] = field(default_factory=list)
    reads: int = 0
    writes: int = 0
    write_functions: list[int] = field(default_factory=list)  # function code of each write, for tests

    def define(self, table: str, offset: int, count: int) -> None:
        """Make registers (or bits) exist, holding 0, unless already defined."""
        t = self.tables[table]
        for a in range(offset, offset + count):
            t.setdefault(a, 0)

    def get(self, table: str, offset: int, count: int) -> list[int]:
        t = self.tables[table]
        return [t[a] for a in range(offset, offset + count)]

    def set(self, table: str, offset: int, values: Iterable[int]) -> None:
        t = self.tables[table]
        for i, v in enumerate(values):
            t[offset + i] = int(v)

    def missing(self, table: str, offset: int, count: int) -> bool:
        t = self.tables[table]
        return any(a not in t for a in range(offset, offset + count))


class SimulatorContext:
    """The datastore pymodbus' server calls, over our UnitMemory objects."""

    def __init__(self, units: Iterable[UnitMemory], clock: Clock = SYSTEM_CLOCK) -> None:
        self.units = {u.unit: u for u in units}
        self.clock = clock

    def device_ids(self) -> list[int]:
        return list(self.units)

    async def _unit(self, device_id: int, func_code: int, address: int, count: int) -> UnitMemory | ExcCodes:
        unit = self.units.get(device_id)
        if unit is None or unit.offline:
            raise NoSuchIdException(f"unit {device_id} does not answer")  # the server then stays silent
        if unit.delay_s:
            await asyncio.sleep(unit.delay_s)
        if unit.exception is not None:
            return ExcCodes(unit.exception)
        table = _TABLE_OF.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        if unit.missing(table, address, count):
            return ExcCodes.ILLEGAL_ADDRESS
        return unit

    async def async_getValues(self, device_id: int, func_code: int, address: int, count: int = 1
                              ) -> list[int] | list[bool] | ExcCodes:
        unit = await self._unit(device_id, func_code, address, count)
        if isinstance(unit, ExcCodes):
            return unit
        table = _TABLE_OF[func_code]
        unit.reads += 1
        values = unit.get(table, address, count)
        return [bool(v) for v in values] if table in ("coil", "discrete") else values

    async def async_setValues(self, device_id: int, func_code: int, address: int,
                              values: list[int] | list[bool]) -> ExcCodes | None:
        values = values if isinstance(values, list) else [values]
        unit = await self._unit(device_id, func_code, address, len(values))
        if isinstance(unit, ExcCodes):
            return unit
        table = _TABLE_OF[func_code]
        if table not in ("coil", "holding"):
            return ExcCodes.ILLEGAL_FUNCTION
        words = [int(bool(v)) if table == "coil" else int(v) for v in values]
        unit.writes += 1
        unit.write_functions.append(func_code)
        unit.set(table, address, words)
        for hook in unit.on_write:
            hook(unit, table, address, words)
        return None


class SimulatorServer:
    """A pymodbus server on one link: `transport` tcp (Modbus TCP), rtutcp (RTU frames on TCP) or rtu (serial)."""

    def __init__(self, units: Iterable[UnitMemory], transport: str = "tcp", host: str = "127.0.0.1", port: int = 502,
                 serial_port: str = "", baud: int = 19200, parity: str = "E", stopbits: int = 1) -> None:
        self.context = SimulatorContext(units)
        self.transport = transport
        self.host, self.port = host, port
        self.serial = (serial_port, baud, parity, stopbits)
        self._server: ModbusTcpServer | ModbusSerialServer | None = None

    @property
    def units(self) -> dict[int, UnitMemory]:
        return self.context.units

    async def start(self) -> None:
        # pymodbus insists on a SimDevice at construction; its context is then swapped for ours.
        placeholder = SimDevice(0, simdata=[SimData(0, values=0, datatype=DataType.REGISTERS)])
        if self.transport == "rtu":
            port, baud, parity, stopbits = self.serial
            server: ModbusTcpServer | ModbusSerialServer = ModbusSerialServer(
                placeholder, framer=FramerType.RTU, port=port, baudrate=baud, parity=parity, stopbits=stopbits,
                ignore_missing_devices=True)
        else:
            framer = FramerType.RTU if self.transport == "rtutcp" else FramerType.SOCKET
            server = ModbusTcpServer(placeholder, framer=framer, address=(self.host, self.port),
                                     ignore_missing_devices=True)
        server.context = self.context  # type: ignore[assignment]
        await server.serve_forever(background=True)
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None

