"""One Modbus request PDU in, one response PDU out: reads from the stored values, writes through the write path.

Reads answer from the values the gateway already holds (`read_value`), never from the field, so a
request never waits for a device. A mapped value whose status is Bad answers the whole request with
exception 0x04, or with the site's BadValue sentinel; status registers show each value's quality
bit by bit (1 = not Good). An address nothing is mapped to answers 0x02; a quantity over the
protocol's limits, or a malformed PDU, answers 0x03.

Writes (FC05, FC06, FC15, FC16) go through the one write path as `facade:<client address>` with the
role the site grants the facade, and are audited like a client's. A multi-register value is taken
only when all its registers are in the same request. Every value of a request is decoded and checked
(access, type, range, watchdog) before any is written, so a refused request changes nothing.

Read Device Identification (FC43, MEI type 0x0E) answers the gateway's identity: basic objects
(VendorName, ProductCode, MajorMinorRevision from the installed version) and regular ones (VendorUrl,
ProductName, ModelName, UserApplicationName: the site), by stream (read codes 1-3) or one object
(read code 4); conformity level 0x82.

The PDUs are decoded and encoded by pymodbus' own request and response classes.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from asyncua import ua
from asyncua.server.address_space import AddressSpace
from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.bit_message import (
    ReadCoilsRequest,
    ReadCoilsResponse,
    ReadDiscreteInputsRequest,
    ReadDiscreteInputsResponse,
    WriteMultipleCoilsRequest,
    WriteMultipleCoilsResponse,
    WriteSingleCoilRequest,
    WriteSingleCoilResponse,
)
from pymodbus.pdu.mei_message import ReadDeviceInformationResponse
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadHoldingRegistersResponse,
    ReadInputRegistersRequest,
    ReadInputRegistersResponse,
    WriteMultipleRegistersRequest,
    WriteMultipleRegistersResponse,
    WriteSingleRegisterRequest,
    WriteSingleRegisterResponse,
)

from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.drivers.modbus.address import MAX_READ_BITS, MAX_READ_REGISTERS, MAX_WRITE_BITS, MAX_WRITE_REGISTERS
from gateway.events.audit import Writer, WriteRecord
from gateway.facade.model import (
    SUNSPEC_BASE,
    FacadeConfig,
    Mapping,
    Register,
    RegisterMap,
    build_register_map,
    status_bits,
)
from gateway.facade.sunspec import common_model
from gateway.facade.values import Unrepresentable, decode_write, encode_read, encode_sentinel, variant
from gateway.facade.watchdog import Watchdog
from gateway.security.roles import Role
from gateway.values.aspace_io import read_value
from gateway.values.writepath import WritePath, access

log = logging.getLogger(__name__)

ILLEGAL_FUNCTION, ILLEGAL_ADDRESS, ILLEGAL_VALUE, DEVICE_FAILURE = 0x01, 0x02, 0x03, 0x04
GATEWAY_PATH_UNAVAILABLE, GATEWAY_NO_RESPONSE = 0x0A, 0x0B

_REQUESTS: dict[int, type[ModbusPDU]] = {
    1: ReadCoilsRequest, 2: ReadDiscreteInputsRequest, 3: ReadHoldingRegistersRequest, 4: ReadInputRegistersRequest,
    5: WriteSingleCoilRequest, 6: WriteSingleRegisterRequest, 15: WriteMultipleCoilsRequest,
    16: WriteMultipleRegistersRequest,
}
_READ_TABLE = {1: "coil", 2: "discrete", 3: "holding", 4: "input"}
ENCAPSULATED_INTERFACE, MEI_DEVICE_IDENTIFICATION = 0x2B, 0x0E
DEVICE_ID_CONFORMITY = 0x82  # regular identification, stream and individual access
_LAST_OBJECT = {1: 0x02, 2: 0x06, 3: 0x06}  # stream read code -> last object it reaches (no extended objects)
# Object id -> the identity key it shows (Modbus Application Protocol v1.1b3, 6.21).
DEVICE_ID_OBJECTS = {0x00: "manufacturer", 0x01: "product_code", 0x02: "version", 0x03: "vendor_url",
                     0x04: "model", 0x05: "model_name", 0x06: "application"}
_WRITE_TABLE = {5: "coil", 15: "coil", 6: "holding", 16: "holding"}
_READ_LIMIT = {1: MAX_READ_BITS, 2: MAX_READ_BITS, 3: MAX_READ_REGISTERS, 4: MAX_READ_REGISTERS}
_CURRENT_WRITE = ua.AccessLevel.CurrentWrite.mask
_S = ua.StatusCodes
# The write path's answer as the exception a Modbus master understands.
_EXCEPTION_OF_STATUS = {
    _S.BadOutOfRange: ILLEGAL_VALUE, _S.BadTypeMismatch: ILLEGAL_VALUE, _S.BadUserAccessDenied: ILLEGAL_FUNCTION,
    _S.BadNotWritable: ILLEGAL_ADDRESS, _S.BadNodeIdUnknown: ILLEGAL_ADDRESS,
    _S.BadCommunicationError: GATEWAY_NO_RESPONSE, _S.BadTimeout: GATEWAY_NO_RESPONSE,
    _S.BadNoCommunication: GATEWAY_NO_RESPONSE,
}


def exception_of(status: ua.StatusCode) -> int:
    return _EXCEPTION_OF_STATUS.get(status.value, DEVICE_FAILURE)


class ModbusException(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True, slots=True)
class Client:
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class RequestHandler:
    def __init__(self, config: FacadeConfig, aspace: AddressSpace, write_path: WritePath | None,
                 watchdog: Watchdog | None = None, clock: Clock = SYSTEM_CLOCK,
                 identity: dict[str, str] | None = None) -> None:
        self.config = config
        self.aspace = aspace
        self.write_path = write_path
        self.watchdog = watchdog
        self.clock = clock
        self.rmap: RegisterMap = build_register_map(config)
        self.status_of: dict[Register, list[tuple[int, Mapping]]] = status_bits(config.mappings)
        self.heartbeat = 0
        self.writes_accepted = 0
        self.writes_refused = 0  # answered with an exception
        self.sunspec = common_model(identity or {}) if config.sunspec_common else []
        self.device_id = {oid: (identity or {}).get(key, "").encode("latin-1", "replace")[:200]
                          for oid, key in DEVICE_ID_OBJECTS.items()}

    def handle(self, pdu: bytes, client: Client) -> Any:
        """The response PDU for a request PDU: bytes for a read (at once), an awaitable for a write."""
        fc = pdu[0]
        try:
            if fc in _READ_TABLE:
                return bytes([fc]) + self._read(fc, pdu)
            if fc in _WRITE_TABLE:
                return self._write(fc, pdu, client)
            if fc == ENCAPSULATED_INTERFACE:
                return bytes([fc]) + self._device_identification(pdu)
            raise ModbusException(ILLEGAL_FUNCTION)
        except ModbusException as exc:
            return bytes([fc | 0x80, exc.code])

    # -- reads --------------------------------------------------------------------------------
    def _decode(self, fc: int, pdu: bytes) -> Any:
        request = _REQUESTS[fc]()
        try:
            request.decode(pdu[1:])
        except (ValueError, struct.error, IndexError):
            raise ModbusException(ILLEGAL_VALUE) from None  # a quantity out of range, or a PDU too short
        return request

    def _read(self, fc: int, pdu: bytes) -> bytes:
        if len(pdu) != 5:
            raise ModbusException(ILLEGAL_VALUE)
        request = self._decode(fc, pdu)
        address, count = request.address, request.count
        if not 1 <= count <= _READ_LIMIT[fc]:
            raise ModbusException(ILLEGAL_VALUE)
        if address + count > 0x10000:
            raise ModbusException(ILLEGAL_ADDRESS)
        table = _READ_TABLE[fc]
        words = self.read_words(table, address, count)
        if fc in (1, 2):
            response = (ReadCoilsResponse if fc == 1 else ReadDiscreteInputsResponse)(bits=[bool(w) for w in words])
        else:
            response = (ReadHoldingRegistersResponse if fc == 3 else ReadInputRegistersResponse)(registers=words)
        return response.encode()

    def read_words(self, table: str, address: int, count: int) -> list[int]:
        cells = self.rmap.cells[table]
        found = [cells.get(offset) for offset in range(address, address + count)]
        if None in found:  # an unmapped address answers 0x02 whatever the values of the others
            raise ModbusException(ILLEGAL_ADDRESS)
        shown: dict[int, list[int]] = {}  # id(mapping) -> its registers, encoded once per request
        out: list[int] = []
        for offset, cell in zip(range(address, address + count), found, strict=True):
            assert cell is not None
            if cell.kind == "value":
                m = cell.mapping
                assert m is not None
                words = shown.get(id(m))
                if words is None:
                    words = shown[id(m)] = self._value_words(m)
                out.append(words[cell.index])
            elif cell.kind == "status":
                out.append(self._status_word(Register(table, offset)))
            elif cell.kind == "watchdog":
                out.append(self.watchdog.value if self.watchdog is not None else 0)
            elif cell.kind == "heartbeat":
                out.append(self.heartbeat)
            else:  # sunspec
                out.append(self.sunspec[offset - SUNSPEC_BASE])
        return out

    def _value_words(self, m: Mapping) -> list[int]:
        dv = read_value(self.aspace, m.nodeid)
        good = dv is not None and dv.Value is not None and dv.Value.Value is not None and \
            (dv.StatusCode is None or not dv.StatusCode.is_bad())
        if good:
            assert dv is not None and dv.Value is not None
            try:
                return encode_read(m, dv.Value.Value)
            except (Unrepresentable, ValueError):
                pass  # a value the field cannot show is answered as a Bad one
        if self.config.bad_value is None:
            raise ModbusException(DEVICE_FAILURE)
        return encode_sentinel(m, self.config.bad_value)

    def _status_word(self, reg: Register) -> int:
        word = 0
        for bit, m in self.status_of.get(reg, ()):
            dv = read_value(self.aspace, m.nodeid)
            if dv is None or dv.Value is None or dv.Value.Value is None or \
                    (dv.StatusCode is not None and not dv.StatusCode.is_good()):
                word |= 1 << bit
        return word

    def _device_identification(self, pdu: bytes) -> bytes:
        if len(pdu) < 2 or pdu[1] != MEI_DEVICE_IDENTIFICATION:
            raise ModbusException(ILLEGAL_FUNCTION)  # the other MEI type (CANopen) is not served
        if len(pdu) != 4:
            raise ModbusException(ILLEGAL_VALUE)
        read_code, first = pdu[2], pdu[3]
        if read_code == 4:
            if first not in self.device_id:
                raise ModbusException(ILLEGAL_ADDRESS)
            objects = {first: self.device_id[first]}
        elif read_code in _LAST_OBJECT:
            last = _LAST_OBJECT[read_code]
            if first > last:
                first = 0  # an object the stream does not reach: from the first one (as the protocol says)
            objects = {oid: value for oid, value in self.device_id.items() if first <= oid <= last}
        else:
            raise ModbusException(ILLEGAL_VALUE)
        response = ReadDeviceInformationResponse(read_code=read_code, information=objects)
        response.conformity = DEVICE_ID_CONFORMITY
        return response.encode()

    # -- writes -------------------------------------------------------------------------------
    async def _write(self, fc: int, pdu: bytes, client: Client) -> bytes:
        try:
            response = bytes([fc]) + await self._write_items(fc, pdu, client)
        except ModbusException as exc:
            self.writes_refused += 1
            return bytes([fc | 0x80, exc.code])
        self.writes_accepted += 1
        return response

    def _write_request(self, fc: int, pdu: bytes) -> tuple[Any, list[int]]:
        body = pdu[1:]
        if fc in (5, 6):
            if len(body) != 4:
                raise ModbusException(ILLEGAL_VALUE)
            request = self._decode(fc, pdu)
            if fc == 5:
                raw = struct.unpack(">H", body[2:4])[0]
                if raw not in (0x0000, 0xFF00):
                    raise ModbusException(ILLEGAL_VALUE)
                return request, [1 if raw else 0]
            return request, list(request.registers)
        if len(body) < 5:
            raise ModbusException(ILLEGAL_VALUE)
        _, count, byte_count = struct.unpack(">HHB", body[:5])
        payload = len(body) - 5
        if fc == 15:
            if not 1 <= count <= MAX_WRITE_BITS or byte_count != (count + 7) // 8 or payload != byte_count:
                raise ModbusException(ILLEGAL_VALUE)
            request = self._decode(fc, pdu)
            return request, [1 if b else 0 for b in request.bits[:count]]
        if not 1 <= count <= MAX_WRITE_REGISTERS or byte_count != 2 * count or payload != byte_count:
            raise ModbusException(ILLEGAL_VALUE)
        request = self._decode(fc, pdu)
        return request, list(request.registers)

    def _writer(self, client: Client) -> Writer:
        # No role granted: a viewer, whom the write path refuses (BadUserAccessDenied) and audits.
        return Writer(f"facade:{client.host}", self.config.write_role or Role.viewer, client=client.address)

    async def _write_items(self, fc: int, pdu: bytes, client: Client) -> bytes:
        request, words = self._write_request(fc, pdu)
        table = _WRITE_TABLE[fc]
        address = request.address
        if address + len(words) > 0x10000:
            raise ModbusException(ILLEGAL_ADDRESS)
        writer = self._writer(client)
        watchdog_value: int | None = None
        items: list[tuple[Mapping, Any]] = []
        seen: set[int] = set()
        for i, offset in enumerate(range(address, address + len(words))):
            cell = self.rmap.cells[table].get(offset)
            if cell is None:
                raise ModbusException(ILLEGAL_ADDRESS)
            if cell.kind == "watchdog":
                watchdog_value = words[i]
                continue
            m = cell.mapping
            if cell.kind != "value" or m is None:
                raise ModbusException(ILLEGAL_ADDRESS)  # status, heartbeat and SunSpec registers are read-only
            if not m.writable:
                self._audit_refused(writer, m, _S.BadNotWritable, words)
                raise ModbusException(ILLEGAL_ADDRESS)
            if id(m) in seen:
                continue
            seen.add(id(m))
            start = m.offset - address
            if start < 0 or start + m.count > len(words):
                # Half a value is no value: a 32-bit setpoint is taken only with both its registers.
                self._audit_refused(writer, m, _S.BadOutOfRange, words)
                raise ModbusException(ILLEGAL_VALUE)
            part = words[start:start + m.count]
            try:
                value = decode_write(m, part)
            except (Unrepresentable, ValueError) as exc:
                log.info("facade write of %s from %s refused: %s", m.name, client.address, exc)
                self._audit_refused(writer, m, _S.BadOutOfRange, part)
                raise ModbusException(ILLEGAL_VALUE) from None
            items.append((m, value))
        # Everything checked before anything is written: a refused request changes nothing.
        if self.write_path is None:
            raise ModbusException(DEVICE_FAILURE)
        for m, value in items:
            status = self._precheck(m, value, writer)
            if status is not None:
                if status == _S.BadInvalidState:
                    self._audit_refused(writer, m, status, value)
                    raise ModbusException(DEVICE_FAILURE)
                # The write path refuses it for the same reason, and audits it.
                await self.write_path.write(self._write_value(m, value), writer)
                raise ModbusException(exception_of(ua.StatusCode(status)))
        if watchdog_value is not None and self.watchdog is not None:
            await self.watchdog.write(watchdog_value)
        for m, value in items:
            result = await self.write_path.write(self._write_value(m, value), writer)
            if not result.is_good():
                raise ModbusException(exception_of(result))
        if fc == 5:
            return WriteSingleCoilResponse(address=address, bits=[bool(words[0])]).encode()
        if fc == 6:
            return WriteSingleRegisterResponse(address=address, registers=words).encode()
        if fc == 15:
            return WriteMultipleCoilsResponse(address=address, count=len(words)).encode()
        return WriteMultipleRegistersResponse(address=address, count=len(words)).encode()

    def _write_value(self, m: Mapping, value: Any) -> ua.WriteValue:
        return ua.WriteValue(NodeId=m.nodeid, AttributeId=ua.AttributeIds.Value, Value=ua.DataValue(variant(m, value)))

    def _precheck(self, m: Mapping, value: Any, writer: Writer) -> int | None:
        """Why the write path would refuse this value (its own checks, in its order), or None."""
        assert self.write_path is not None
        nd = self.aspace.get(m.nodeid)
        if nd is None:
            return _S.BadNodeIdUnknown
        if not access.attribute(nd, ua.AttributeIds.AccessLevel, 0) & _CURRENT_WRITE:
            return _S.BadNotWritable
        if not access.user_access_level(nd, writer.role) & _CURRENT_WRITE:
            return _S.BadUserAccessDenied
        type_status = self.write_path.check_type(nd, variant(m, value))
        if type_status is not None:
            return type_status.value
        if m.eurange is not None and isinstance(value, int | float) and not isinstance(value, bool) and \
                not m.eurange[0] <= value <= m.eurange[1]:
            return _S.BadOutOfRange
        handler = self.write_path.handlers.get(m.nodeid)  # a variable a part of the gateway acts on (ModeCode)
        handled = handler.check(variant(m, value), writer) if handler is not None else None
        if handled is not None:
            return handled.value
        if m.guarded and self.watchdog is not None and self.watchdog.expired:
            return _S.BadInvalidState  # the SCADA must show it is alive before its setpoints are taken again
        return None

    def _audit_refused(self, writer: Writer, m: Mapping, status: int, new: Sequence[int] | Any) -> None:
        if self.write_path is None:
            return
        audit = self.write_path.audit
        audit.record_write(WriteRecord(writer, m.nodeid, ua.StatusCode(status), audit.now(),
                                       new=list(new) if isinstance(new, list) else new))
