"""The Modbus driver: reads the planned blocks of a scan class, writes through FC05/06/15/16.

Connection URIs, addresses and options: see address.py and the README's binding reference.
Failure handling follows what a fieldbus needs:
- no answer, a lost connection or a frame pymodbus cannot decode fails the whole read (DriverError):
  the gateway marks the scan class BadCommunicationError and backs the device off;
- a Modbus exception response, or an answer shorter than asked, fails only that block: its
  variables turn Bad (which Bad says why, see _EXCEPTION_STATUS) and the rest of the device keeps
  updating. It is logged when a block's state changes, not on every poll;
- a gateway exception (0x0A, 0x0B) on every block means the unit behind the gateway is gone, and is
  treated as no answer, so that unit is backed off too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult

from asyncua import ua
from pymodbus.pdu import ModbusPDU

from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.drivers.base import Driver, DriverError, Point, Reading, Simulation
from gateway.drivers.modbus.address import (
    BIT_TABLES,
    CONNECTION_OPTIONS,
    POINT_OPTIONS,
    WRITABLE_TABLES,
    DeviceOptions,
    link_conflicts,
    parse_connection,
)
from gateway.drivers.modbus.codec import decode, encode
from gateway.drivers.modbus.link import LinkDown, ModbusLink
from gateway.drivers.modbus.planner import PointSpan, ReadBlock, WriteRequest, plan_reads, plan_write, span_for
from gateway.drivers.registry import register

if TYPE_CHECKING:
    from gateway.bindings import DeviceConfig

log = logging.getLogger(__name__)

_S = ua.StatusCodes
# Modbus Application Protocol v1.1b3, section 7.
EXCEPTION_NAMES = {
    1: "IllegalFunction", 2: "IllegalDataAddress", 3: "IllegalDataValue", 4: "ServerDeviceFailure",
    5: "Acknowledge", 6: "ServerDeviceBusy", 8: "MemoryParityError", 10: "GatewayPathUnavailable",
    11: "GatewayTargetDeviceFailedToRespond",
}
_EXCEPTION_STATUS = {
    1: _S.BadNotSupported, 2: _S.BadNotFound, 3: _S.BadOutOfRange, 4: _S.BadDeviceFailure,
    5: _S.BadResourceUnavailable, 6: _S.BadResourceUnavailable, 8: _S.BadDeviceFailure,
    10: _S.BadCommunicationError, 11: _S.BadCommunicationError,
}
_GATEWAY_EXCEPTIONS = frozenset({10, 11})
_READ = {"coil": "read_coils", "discrete": "read_discrete_inputs", "holding": "read_holding_registers",
         "input": "read_input_registers"}


@dataclass(frozen=True, slots=True)
class FieldLayout:
    """How one point's registers turn into a value."""

    span: PointSpan
    field_type: str
    byte_order: str
    word_order: str
    bit: int | None
    length: int | None


class _BlockFailed(Exception):
    def __init__(self, message: str, status: int, code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def exception_text(code: int) -> str:
    return f"exception {code:#04x} {EXCEPTION_NAMES.get(code, 'Unknown')}"


def layout_of(key: int, point: Point, options: DeviceOptions) -> FieldLayout:
    b = point.binding
    bit, length = b.options.get("bit"), b.options.get("length")
    span = span_for(key, b.address, point.field_type, options, bit=bit, length=length, scan_class=b.scan_class)
    return FieldLayout(span, point.field_type, b.options.get("byte_order") or options.byte_order,
                       b.options.get("word_order") or options.word_order, bit, length)


@register("modbus+tcp", "modbus+rtutcp", "modbus+rtu")
class ModbusDriver(Driver):
    connection_options = CONNECTION_OPTIONS
    point_options = POINT_OPTIONS
    connection_form = "`modbus+tcp://HOST[:PORT]/UNIT[?OPTIONS]`, `modbus+rtutcp://HOST:PORT/UNIT[?OPTIONS]`, " \
                      "`modbus+rtu:///dev/ttyUSB0/UNIT[?OPTIONS]`"

    def __init__(
        self, url: SplitResult, points_by_class: Mapping[str, Sequence[Point]], clock: Clock = SYSTEM_CLOCK
    ) -> None:
        super().__init__(url, points_by_class, clock)
        self.options = parse_connection(url)
        self.fields = {pt.key: layout_of(pt.key, pt, self.options) for pts in points_by_class.values() for pt in pts}
        self.plan: dict[str, list[ReadBlock]] = plan_reads((f.span for f in self.fields.values()), self.options)
        self.link: ModbusLink | None = None
        self._block_errors: dict[tuple[str, int], str] = {}  # failing blocks, for logging state changes

    @classmethod
    def validate_connection(cls, url: SplitResult) -> None:
        parse_connection(url)

    @classmethod
    def validate_point(cls, url: SplitResult, point: Point) -> None:
        options = parse_connection(url)
        f = layout_of(0, point, options)
        plan_reads([f.span], options)  # a point longer than one request is refused here, with its size
        if point.writable and f.span.table not in WRITABLE_TABLES:
            kind = "an input register" if f.span.table == "input" else "a discrete input"
            raise ValueError(f"a writable variable needs a holding register or coil, not {kind} "
                             f"(make it read-only or bind it to holding/N)")
        if f.bit is not None and f.span.table in BIT_TABLES:
            raise ValueError(f"Bit applies to registers, not to a {f.span.table}")

    @classmethod
    def validate_devices(cls, urls: Sequence[SplitResult]) -> list[tuple[int, str]]:
        options = [parse_connection(u) for u in urls]
        return [(i, f"serial port {options[i].serial_port} is opened as {options[j].line_settings} for unit "
                    f"{options[j].unit}, but this device (unit {options[i].unit}) says {options[i].line_settings}: "
                    f"every device on one port needs the same baud, parity, stopbits and bytesize")
                for i, j in link_conflicts(options)]

    @classmethod
    def point_warnings(cls, url: SplitResult, points: Sequence[Point]) -> list[tuple[int, str]]:
        return [(p.key, message) for p, message in overlapping_points(parse_connection(url), points)]

    def call_timeout(self, default_s: float) -> float | None:
        return None  # every request is bounded by the device's timeout_ms; waiting for the link is not a failure

    @classmethod
    async def simulate(cls, devices: Sequence[DeviceConfig], clock: Clock) -> Simulation:
        from gateway.drivers.modbus.simulators.site import SiteSimulation  # servers load only when simulating

        sim = SiteSimulation(devices, clock)
        await sim.start()
        return sim

    def requests_per_scan(self, scan_class: str) -> int:
        return len(self.plan.get(scan_class, ()))

    async def start(self) -> None:
        self.link = ModbusLink.acquire(self.options, self.clock)

    async def stop(self) -> None:
        if self.link is not None:
            self.link.release()
            self.link = None

    # -- reads -------------------------------------------------------------------------------
    async def read(self, scan_class: str) -> Mapping[int, Reading]:
        out: dict[int, Reading] = {}
        blocks = self.plan.get(scan_class, ())
        gateway_failures = 0
        for block in blocks:
            try:
                data = await self._read_block(block)
            except _BlockFailed as exc:
                self._block_state(scan_class, block, str(exc))
                gateway_failures += exc.code in _GATEWAY_EXCEPTIONS
                for item in block.items:
                    out[item.key] = Reading(None, exc.status)
                continue
            self._block_state(scan_class, block, None)
            now = self.clock.now()
            for item in block.items:
                out[item.key] = self._decode(item.key, data[item.offset:item.offset + item.count], now)
        if blocks and gateway_failures == len(blocks):
            raise DriverError(f"unit {self.options.unit} behind {self._where()} does not answer "
                              f"(every block got a gateway exception)", _S.BadCommunicationError)
        return out

    def _decode(self, key: int, data: Sequence[Any], now: Any) -> Reading:
        f = self.fields[key]
        if f.span.table in BIT_TABLES:
            return Reading(bool(data[0]), _S.Good, now)
        try:
            return Reading(decode(data, f.field_type, f.byte_order, f.word_order, f.bit, f.length), _S.Good, now)
        except (ValueError, UnicodeDecodeError):
            return Reading(None, _S.BadDataEncodingInvalid, now)

    async def _read_block(self, block: ReadBlock) -> list[Any]:
        method = _READ[block.table]
        rr = await self._request(lambda c: getattr(c, method)(block.start, count=block.count,
                                                                device_id=self.options.unit))
        what = f"{block.table} {block.start}..{block.start + block.count - 1}"
        if rr.isError():
            code = int(getattr(rr, "exception_code", 0))
            raise _BlockFailed(f"{what}: {exception_text(code)}", _EXCEPTION_STATUS.get(code, _S.BadDeviceFailure),
                               code)
        data = list(rr.bits if block.table in BIT_TABLES else rr.registers)
        if len(data) < block.count:
            self.request_errors += 1
            raise _BlockFailed(f"{what}: short answer, {len(data)} of {block.count} "
                               f"{'bits' if block.table in BIT_TABLES else 'registers'}", _S.BadCommunicationError)
        return data[:block.count]  # bits come padded to whole bytes

    def _block_state(self, scan_class: str, block: ReadBlock, error: str | None) -> None:
        key = (f"{scan_class}/{block.table}", block.start)
        before = self._block_errors.get(key)
        if error == before:
            return
        name = self.url.geturl()
        if error is None:
            del self._block_errors[key]
            log.info("%s: %s %d.. answers again", name, block.table, block.start)
        else:
            self._block_errors[key] = error
            log.warning("%s: %s (%d variable(s) Bad until it answers)", name, error, len(block.items))

    async def _request(self, call: Any) -> ModbusPDU:
        assert self.link is not None, "driver not started"
        self.requests += 1
        try:
            rr = await self.link.call(self.options.min_interval_ms, call)
        except LinkDown as exc:
            self.request_errors += 1
            raise DriverError(f"unit {self.options.unit}: {exc}", _S.BadCommunicationError) from exc
        if rr.isError():
            self.request_errors += 1
        return rr

    def _where(self) -> str:
        o = self.options
        return o.serial_port if o.transport == "rtu" else f"{o.host}:{o.port}"

    # -- writes ------------------------------------------------------------------------------
    async def write(self, point: Point, value: Any) -> Any:
        f = self.fields[point.key]
        table, offset = f.span.table, f.span.offset
        if table not in WRITABLE_TABLES:
            raise DriverError(f"{point.name}: a {table} cannot be written", _S.BadNotWritable)
        try:
            if table == "coil":
                values: list[int] = [1 if value else 0]
            elif f.bit is not None:  # read-modify-write of one bit
                current = await self._read_span(f)
                values = encode(value, f.field_type, f.byte_order, f.word_order, f.bit, f.length, current=current)
            else:
                values = encode(value, f.field_type, f.byte_order, f.word_order, f.bit, f.length)
            req = plan_write(table, offset, values, self.options)
        except (ValueError, TypeError) as exc:
            raise DriverError(f"{point.name}: {exc}", _S.BadOutOfRange) from exc
        except _BlockFailed as exc:
            raise DriverError(f"{point.name}: reading the register to change one bit: {exc}", exc.status) from exc
        rr = await self._request(lambda c: _send_write(c, req, self.options.unit))
        if rr.isError():
            code = int(getattr(rr, "exception_code", 0))
            raise DriverError(f"{point.name}: write FC{req.function_code:02d} {table} {offset} refused: "
                              f"{exception_text(code)}", _EXCEPTION_STATUS.get(code, _S.BadDeviceFailure))
        try:
            data = await self._read_span(f)
        except (DriverError, _BlockFailed) as exc:
            # Written, but the check failed: the node shows the value written (the write path's default).
            log.warning("%s: written, but reading it back failed: %s", point.name, exc)
            return None
        return bool(data[0]) if table in BIT_TABLES else decode(data, f.field_type, f.byte_order, f.word_order,
                                                                 f.bit, f.length)

    async def _read_span(self, f: FieldLayout) -> list[Any]:
        block = ReadBlock(f.span.table, f.span.offset, f.span.count)
        return await self._read_block(block)


def overlapping_points(options: DeviceOptions, points: Sequence[Point]) -> list[tuple[Point, str]]:
    """Each point whose registers (or bits) another point of the device also binds, with the other one named.

    Two Bit points of one register are not an overlap unless they name the same bit.
    """
    spans = sorted(((layout_of(p.key, p, options), p) for p in points),
                   key=lambda fp: (fp[0].span.table, fp[0].span.offset, fp[0].span.count))
    out: list[tuple[Point, str]] = []
    active: list[tuple[FieldLayout, Point]] = []  # earlier points that reach the current offset (a sweep)
    for f, p in spans:
        active = [(g, q) for g, q in active
                  if g.span.table == f.span.table and g.span.offset + g.span.count > f.span.offset]
        active.append((f, p))
        for g, q in active[:-1]:
            if f.bit is not None and g.bit is not None and f.bit != g.bit:
                continue
            where = f"{f.span.table} {f.span.offset}" + (f"..{f.span.offset + f.span.count - 1}"
                                                        if f.span.count > 1 else "")
            out.append((p, f"{where} overlaps {q.name} ({q.binding.address}): the same field bound twice"))
            break
    return out


def _send_write(client: Any, req: WriteRequest, unit: int) -> Any:
    if req.function_code == 5:
        return client.write_coil(req.offset, bool(req.values[0]), device_id=unit)
    if req.function_code == 15:
        return client.write_coils(req.offset, [bool(v) for v in req.values], device_id=unit)
    if req.function_code == 6:
        return client.write_register(req.offset, req.values[0], device_id=unit)
    return client.write_registers(req.offset, req.values, device_id=unit)
