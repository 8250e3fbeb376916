"""Where an OptoMMP variable lives in the memory map, how its bytes read as a value, and how reads are planned.

FieldAddress forms (addresses of the groov EPIC / high-density memory map, as Opto 22's own `optommp`
toolkit uses them):

    analog/M/C          analog point C of module M, an IEEE 754 float (engineering units): read at
                        0xF0260000 + M*0x1000 + C*0x40, written at 0xF02A0000 + the same
    digital/M/C         digital point state, a quadlet 0 or 1: read at 0xF01E0000 + M*0x1000 + C*0x40,
                        written at 0xF0220000 + the same
    scratchpad/int/N    scratchpad integer N (0..1023), a signed 32-bit quadlet at 0xF0D81000 + 4N
    scratchpad/float/N  scratchpad float N (0..1023) at 0xF0D82000 + 4N
    0xF0300080          any address, read and written as the variable's FieldType (`Length` bytes of text)

All values are big-endian. Points of the named areas have the area's encoding whatever the
variable's DataType (the gateway converts: an analog value to an Int32 variable, a point state to a
Boolean); a raw address takes the FieldType: 4 bytes for Boolean (not zero), Int32, UInt32 and
smaller integers and Float, 8 for Int64, UInt64 and Double.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

ANALOG_READ, ANALOG_WRITE = 0xF0260000, 0xF02A0000
DIGITAL_READ, DIGITAL_WRITE = 0xF01E0000, 0xF0220000
MODULE_STRIDE, POINT_STRIDE = 0x1000, 0x40
SCRATCHPAD_INT, SCRATCHPAD_FLOAT, SCRATCHPAD_ELEMENTS = 0xF0D81000, 0xF0D82000, 1024
LAST_ERROR = 0xF030000C  # the brain's last error code, read after a NAK
MODULES, POINTS = 64, 64  # module and point numbers the addresses leave room for

# Error codes of the brain (OptoMMP SDK), and what a refused request's variables show.
BRAIN_ERRORS = {
    0xE001: "undefined command", 0xE002: "invalid point type", 0xE003: "invalid float",
    0xE004: "powerup clear expected", 0xE005: "invalid memory address", 0xE006: "invalid command length",
    0xE007: "reserved", 0xE008: "busy", 0xE009: "cannot erase flash", 0xE00A: "cannot program flash",
    0xE00B: "image too small", 0xE00C: "image CRC mismatch", 0xE00D: "image length mismatch",
    0xE00E: "feature not implemented", 0xE00F: "watchdog timeout",
}

_FORMS = re.compile(r"^(?:(?P<area>analog|digital)/(?P<module>\d+)/(?P<point>\d+)"
                    r"|scratchpad/(?P<kind>int|float)/(?P<index>\d+)"
                    r"|(?P<raw>0[xX][0-9a-fA-F]{1,8}))$")
_QUADLET_INTS = {"xsd:byte": "b", "xsd:short": "h", "xsd:int": "i", "xsd:unsignedByte": "B",
                 "xsd:unsignedShort": "H", "xsd:unsignedInt": "I"}
_RANGES = {"b": (-2**7, 2**7 - 1), "h": (-2**15, 2**15 - 1), "i": (-2**31, 2**31 - 1), "B": (0, 255),
           "H": (0, 65535), "I": (0, 2**32 - 1), "q": (-2**63, 2**63 - 1), "Q": (0, 2**64 - 1)}


@dataclass(frozen=True, slots=True)
class Location:
    """One variable's bytes: read at `read`, written at `write`, `size` bytes, encoded as `encoding`
    (f: float32, d: float64, i/I/q/Q/b/h/B/H: integers carried in a quadlet or 8 bytes, bool, text)."""

    read: int
    write: int
    size: int
    encoding: str
    area: str  # analog, digital, scratchpad, raw: for messages


def locate(address: str, field_type: str, length: int | None = None) -> Location:
    """The location of a FieldAddress; ValueError names what is wrong."""
    m = _FORMS.match(address.strip())
    if m is None:
        raise ValueError(f"'{address}' is not analog/MODULE/POINT, digital/MODULE/POINT, scratchpad/int/N, "
                         f"scratchpad/float/N or a hex address (0xF0D81000)")
    if m["area"]:
        module, point = int(m["module"]), int(m["point"])
        if module >= MODULES or point >= POINTS:
            raise ValueError(f"module {module} point {point}: modules and points are numbered 0..{MODULES - 1}")
        offset = module * MODULE_STRIDE + point * POINT_STRIDE
        if field_type == "xsd:string":
            raise ValueError(f"a {m['area']} point is a number, not a String")
        if m["area"] == "analog":
            return Location(ANALOG_READ + offset, ANALOG_WRITE + offset, 4, "f", "analog")
        return Location(DIGITAL_READ + offset, DIGITAL_WRITE + offset, 4, "bool" if field_type == "xsd:boolean"
                        else "I", "digital")
    if m["kind"]:
        index = int(m["index"])
        if index >= SCRATCHPAD_ELEMENTS:
            raise ValueError(f"scratchpad index {index} is not 0..{SCRATCHPAD_ELEMENTS - 1}")
        if field_type == "xsd:string":
            raise ValueError(f"a scratchpad {m['kind']} is a number, not a String")
        base, encoding = (SCRATCHPAD_INT, "i") if m["kind"] == "int" else (SCRATCHPAD_FLOAT, "f")
        return Location(base + 4 * index, base + 4 * index, 4, encoding, "scratchpad")
    raw = int(m["raw"], 16)
    if field_type == "xsd:string":
        if not length:
            raise ValueError("a String at a raw address needs Length (bytes)")
        size, encoding = length, "text"
    elif field_type == "xsd:boolean":
        size, encoding = 4, "bool"
    elif field_type in ("xsd:float", "xsd:double"):
        size, encoding = (4, "f") if field_type == "xsd:float" else (8, "d")
    elif field_type in ("xsd:long", "xsd:unsignedLong"):
        size, encoding = 8, "q" if field_type == "xsd:long" else "Q"
    else:
        size, encoding = 4, "i" if _QUADLET_INTS[field_type].islower() else "I"  # a quadlet, signed or not
    if raw + size > 0x1_0000_0000:
        raise ValueError(f"{size} bytes at {raw:#010x} run past the end of the memory map")
    return Location(raw, raw, size, encoding, "raw")


def decode(data: bytes, loc: Location) -> Any:
    """The value of `loc`'s bytes; ValueError for text that is not latin-1 (it always is) or a short read."""
    if len(data) != loc.size:
        raise ValueError(f"{len(data)} bytes for a {loc.size}-byte value")
    if loc.encoding == "text":
        return data.split(b"\0", 1)[0].decode("latin-1")
    if loc.encoding == "bool":
        return struct.unpack(">I", data)[0] != 0
    return struct.unpack(">" + loc.encoding, data)[0]


def encode(value: Any, loc: Location) -> bytes:
    """The bytes that write `value` at `loc`; ValueError when it does not fit."""
    if loc.encoding == "text":
        raw = str(value).encode("latin-1")
        if len(raw) > loc.size:
            raise ValueError(f"{len(raw)} bytes of text do not fit {loc.size}")
        return raw.ljust(loc.size, b"\0")
    if loc.encoding == "bool":
        return struct.pack(">I", 1 if value else 0)
    if loc.encoding in ("f", "d"):
        return struct.pack(">" + loc.encoding, float(value))
    number = int(value)
    if number != value:
        raise ValueError(f"{value!r} is not a whole number")
    low, high = _RANGES[loc.encoding]
    if not low <= number <= high:
        raise ValueError(f"{number} is outside {low}..{high}")
    return struct.pack(">" + loc.encoding, number)


@dataclass(frozen=True, slots=True)
class Block:
    """One read request: `size` bytes at `start`, and the (key, offset into the block, location) it serves."""

    start: int
    size: int
    items: tuple[tuple[int, int, Location], ...]


def plan(points: Iterable[tuple[int, Location]], gap: int, max_block: int) -> list[Block]:
    """The fewest reads that cover `points`: neighbours join when at most `gap` unused bytes lie between them
    and the block stays within `max_block` bytes; a variable is never split."""
    blocks: list[Block] = []
    start = end = -1
    items: list[tuple[int, int, Location]] = []
    for key, loc in sorted(points, key=lambda p: (p[1].read, p[1].size)):
        new_end = max(end, loc.read + loc.size)
        if items and loc.read - end <= gap and new_end - start <= max_block:
            items.append((key, loc.read - start, loc))
            end = new_end
            continue
        if items:
            blocks.append(Block(start, end - start, tuple(items)))
        start, end, items = loc.read, loc.read + loc.size, [(key, 0, loc)]
    if items:
        blocks.append(Block(start, end - start, tuple(items)))
    return blocks
