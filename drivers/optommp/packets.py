"""OptoMMP packets: Opto 22's memory-mapped protocol, IEEE 1394 asynchronous read and write transactions over TCP.

Every packet starts with three big-endian quadlets (Opto 22 form 1465, OptoMMP Protocol Guide):

    bytes 0-1   destination id (0)          byte 2  transaction label << 2 (6 bits; retry code 0)
    byte 3      transaction code << 4       bytes 4-5  source id (0)
    bytes 6-7   requests: 0xFFFF, the high half of the 48-bit destination offset;
                responses: response code << 4 in byte 6 (0 = ACK, anything else a NAK)
    bytes 8-11  requests: the memory-map address; responses: reserved

then, by transaction code: read quadlet request (4): nothing more (12 bytes); write quadlet request (0)
and read quadlet response (6): one data quadlet (16 bytes); read block request (5): data length (2
bytes) and extended code (2 bytes, 0) (16 bytes); write block request (1) and read block response
(7): the same 4 bytes and then the data; write response (2): nothing more (12 bytes).

A hand-written codec, not a library: Opto 22's `optommp` package is synchronous, Python 2 era code that
sends one request and trusts a single recv to hold the answer, with no transaction labels checked.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

WRITE_QUADLET, WRITE_BLOCK, WRITE_RESPONSE = 0, 1, 2
READ_QUADLET, READ_BLOCK, READ_QUADLET_RESPONSE, READ_BLOCK_RESPONSE = 4, 5, 6, 7
NAMES = {0: "write quadlet request", 1: "write block request", 2: "write response", 4: "read quadlet request",
         5: "read block request", 6: "read quadlet response", 7: "read block response"}
ACK = 0
HEAD = 12  # what every packet has; the rest follows from its transaction code
_HIGH_OFFSET = 0xFFFF
_HEADER = struct.Struct(">HBBHHI")
_LENGTH = struct.Struct(">HH")


class PacketError(ValueError):
    """Bytes that are not an OptoMMP packet of the kind expected; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Packet:
    tcode: int
    tlabel: int
    address: int = 0  # requests
    rcode: int = ACK  # responses
    data: bytes = b""  # the quadlet or block carried
    length: int = 0  # read block request: bytes asked for

    @property
    def name(self) -> str:
        return NAMES.get(self.tcode, f"transaction code {self.tcode}")


def _head(tcode: int, tlabel: int, word: int, address: int) -> bytes:
    if not 0 <= tlabel < 64:
        raise PacketError(f"transaction label {tlabel} is not 0..63")
    if not 0 <= address <= 0xFFFFFFFF:
        raise PacketError(f"address {address:#x} is not 32 bits")
    return _HEADER.pack(0, tlabel << 2, tcode << 4, 0, word, address)


def read_quadlet(tlabel: int, address: int) -> bytes:
    return _head(READ_QUADLET, tlabel, _HIGH_OFFSET, address)


def read_block(tlabel: int, address: int, length: int) -> bytes:
    if not 1 <= length <= 0xFFFF:
        raise PacketError(f"block length {length} is not 1..65535")
    return _head(READ_BLOCK, tlabel, _HIGH_OFFSET, address) + _LENGTH.pack(length, 0)


def write_quadlet(tlabel: int, address: int, data: bytes) -> bytes:
    if len(data) != 4:
        raise PacketError(f"a quadlet is 4 bytes, not {len(data)}")
    return _head(WRITE_QUADLET, tlabel, _HIGH_OFFSET, address) + data


def write_block(tlabel: int, address: int, data: bytes) -> bytes:
    if not 1 <= len(data) <= 0xFFFF:
        raise PacketError(f"block length {len(data)} is not 1..65535")
    return _head(WRITE_BLOCK, tlabel, _HIGH_OFFSET, address) + _LENGTH.pack(len(data), 0) + data


def write_response(tlabel: int, rcode: int = ACK) -> bytes:
    return _head(WRITE_RESPONSE, tlabel, rcode << 12, 0)


def read_quadlet_response(tlabel: int, data: bytes, rcode: int = ACK) -> bytes:
    return _head(READ_QUADLET_RESPONSE, tlabel, rcode << 12, 0) + (data if rcode == ACK else bytes(4))


def read_block_response(tlabel: int, data: bytes, rcode: int = ACK) -> bytes:
    body = data if rcode == ACK else b""
    return _head(READ_BLOCK_RESPONSE, tlabel, rcode << 12, 0) + _LENGTH.pack(len(body), 0) + body


def remaining(head: bytes, ahead: bytes = b"") -> int:
    """How many more bytes the packet whose first 12 bytes are `head` has, given the `ahead` bytes read after
    them so far (a block's length is in its 13th and 14th). PacketError for a transaction code no packet has."""
    if len(head) != HEAD:
        raise PacketError(f"a packet starts with {HEAD} bytes, not {len(head)}")
    tcode = head[3] >> 4
    if tcode in (READ_QUADLET, WRITE_RESPONSE):
        return 0
    if tcode in (WRITE_QUADLET, READ_QUADLET_RESPONSE, READ_BLOCK):
        return 4 - len(ahead)
    if tcode in (WRITE_BLOCK, READ_BLOCK_RESPONSE):
        if len(ahead) < 4:
            return 4 - len(ahead)
        return 4 + _LENGTH.unpack_from(ahead)[0] - len(ahead)
    raise PacketError(f"transaction code {tcode} (byte 3 {head[3]:#04x}) is not an OptoMMP packet")


def parse(packet: bytes) -> Packet:
    """A whole packet (as `remaining` delimited it); PacketError if it is not one."""
    if len(packet) < HEAD:
        raise PacketError(f"{len(packet)} bytes are too short for a packet ({HEAD} at least)")
    _, label, code, _, word, address = _HEADER.unpack_from(packet)
    tcode, tlabel = code >> 4, label >> 2
    rest = packet[HEAD:]
    if remaining(packet[:HEAD], rest) != 0:
        raise PacketError(f"a {NAMES.get(tcode, tcode)} of {len(packet)} bytes has the wrong length")
    is_request = tcode in (WRITE_QUADLET, WRITE_BLOCK, READ_QUADLET, READ_BLOCK)
    if is_request and word != _HIGH_OFFSET:
        raise PacketError(f"a request's high offset must be 0xFFFF, not {word:#06x}")
    rcode = 0 if is_request else word >> 12
    if tcode == READ_BLOCK:
        return Packet(tcode, tlabel, address, length=_LENGTH.unpack_from(rest)[0])
    if tcode in (WRITE_BLOCK, READ_BLOCK_RESPONSE):
        return Packet(tcode, tlabel, address if is_request else 0, rcode, rest[4:])
    return Packet(tcode, tlabel, address if is_request else 0, rcode, rest)
