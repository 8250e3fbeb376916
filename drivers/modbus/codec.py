"""Field values <-> Modbus registers for every xsd:* field type, byte order and word order (pure).

Conventions (docs/bindings.md):
- A register is an unsigned 16-bit int as pymodbus hands it over (the two wire bytes, high byte first).
- byte_order "little" swaps the two bytes inside every register; word_order "little" puts the least
  significant register first (32/64-bit values). The four combinations of a 32-bit value 0xAABBCCDD:
  big/big = ABCD, big/little = CDAB, little/big = BADC, little/little = DCBA.
- Bit n is bit n of the field's integer value after both orders are applied (0 = least significant).
  xsd:boolean with a Bit is one register; an integer field type with a Bit is that integer's bit.
  Writing a bit is a read-modify-write: `encode` then needs the current registers.
- xsd:boolean without a Bit: a coil or discrete input (one bit), or a whole register that is 0 or not.
- xsd:byte / xsd:unsignedByte: one register holding the value in its low byte (after byte order);
  writing sign-extends xsd:byte, so a device that reads the register as int16 sees the same number.
- xsd:string: Length bytes in address order (word order does not apply; byte order does, for devices
  that swap characters pairwise), latin-1, cut at the first NUL, trailing spaces dropped;
  written padded with NULs to whole registers.

`struct` does the packing rather than pymodbus' `convert_to_registers`/`convert_from_registers`
because those only know word order; they have no byte swap inside a register (BADC, DCBA devices).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

from gateway.drivers.modbus.address import BIT_TABLES, TABLES

# type: (struct format, registers, bits of the integer value or 0 for floats)
_NUMERIC: dict[str, tuple[str, int, int]] = {
    "xsd:short": (">h", 1, 16),
    "xsd:unsignedShort": (">H", 1, 16),
    "xsd:int": (">i", 2, 32),
    "xsd:unsignedInt": (">I", 2, 32),
    "xsd:long": (">q", 4, 64),
    "xsd:unsignedLong": (">Q", 4, 64),
    "xsd:float": (">f", 2, 0),
    "xsd:double": (">d", 4, 0),
}
_BYTES = {"xsd:byte": True, "xsd:unsignedByte": False}  # type: signed
FIELD_TYPES = ("xsd:boolean", "xsd:byte", "xsd:unsignedByte", *_NUMERIC, "xsd:string")
_ORDERS = ("big", "little")
Value = bool | int | float | str


def register_count(field_type: str, table: str = "holding", bit: int | None = None, length: int | None = None) -> int:
    """Registers (or bits, in a coil/discrete table) a field occupies; ValueError when the binding is inconsistent."""
    if table not in TABLES:
        raise ValueError(f"unknown Modbus table '{table}' (known: {', '.join(TABLES)})")
    if field_type not in FIELD_TYPES:
        raise ValueError(f"field type '{field_type}' is not supported by Modbus (known: {', '.join(FIELD_TYPES)})")
    if length is not None and field_type != "xsd:string":
        raise ValueError(f"Length applies only to xsd:string, not {field_type}")
    if table in BIT_TABLES:
        if field_type != "xsd:boolean":
            raise ValueError(f"a {table} holds one bit: its field type must be xsd:boolean, not {field_type}")
        if bit is not None:
            raise ValueError(f"Bit applies to registers, not to a {table} (a {table} is one bit already)")
        return 1
    if bit is not None:
        width = _bit_width(field_type)
        if not 0 <= bit < width:
            raise ValueError(f"Bit {bit} is outside 0..{width - 1} of {field_type}")
    if field_type == "xsd:string":
        if length is None or length < 1:
            raise ValueError("xsd:string needs a Length (bytes) of at least 1")
        return (length + 1) // 2
    if field_type in _NUMERIC:
        return _NUMERIC[field_type][1]
    return 1  # boolean in a register, byte types


def _bit_width(field_type: str) -> int:
    if field_type == "xsd:boolean":
        return 16
    if field_type in _BYTES:
        return 8
    if field_type in _NUMERIC and _NUMERIC[field_type][2]:
        return _NUMERIC[field_type][2]
    raise ValueError(f"Bit applies to xsd:boolean and integer field types, not {field_type}")


def _check_orders(byte_order: str, word_order: str) -> None:
    if byte_order not in _ORDERS:
        raise ValueError(f"byte order '{byte_order}' must be big or little")
    if word_order not in _ORDERS:
        raise ValueError(f"word order '{word_order}' must be big or little")


def _swap(word: int) -> int:
    return ((word & 0xFF) << 8) | (word >> 8)


def registers_to_bytes(registers: Sequence[int], byte_order: str = "big", word_order: str = "big") -> bytes:
    """The value's bytes, most significant first, from registers as the device orders them."""
    words = list(registers)
    for w in words:
        if not isinstance(w, int) or not 0 <= w <= 0xFFFF:
            raise ValueError(f"register value {w!r} is not a 16-bit unsigned integer")
    if word_order == "little":
        words.reverse()
    if byte_order == "little":
        words = [_swap(w) for w in words]
    return b"".join(w.to_bytes(2, "big") for w in words)


def bytes_to_registers(data: bytes, byte_order: str = "big", word_order: str = "big") -> list[int]:
    """Inverse of registers_to_bytes; `data` has an even length."""
    words = [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]
    if byte_order == "little":
        words = [_swap(w) for w in words]
    if word_order == "little":
        words.reverse()
    return words


def get_bit(word: int, bit: int) -> bool:
    """Bit `bit` (0 = least significant) of an integer."""
    return bool((word >> bit) & 1)


def set_bit(word: int, bit: int, value: bool) -> int:
    """`word` with bit `bit` set to `value`: the modify step of a bit write's read-modify-write."""
    if bit < 0:
        raise ValueError(f"Bit {bit} is negative")
    return word | (1 << bit) if value else word & ~(1 << bit)


def decode(
    registers: Sequence[int],
    field_type: str,
    byte_order: str = "big",
    word_order: str = "big",
    bit: int | None = None,
    length: int | None = None,
) -> Value:
    """Decode one field from its registers (or its one bit, for a coil/discrete input)."""
    _check_orders(byte_order, word_order)
    count = register_count(field_type, "holding", bit, length)
    if len(registers) != count:
        raise ValueError(f"{field_type} needs {count} register(s), got {len(registers)}")
    if field_type == "xsd:boolean" and bit is None:
        return bool(registers[0])
    data = registers_to_bytes(registers, byte_order, "big" if field_type == "xsd:string" else word_order)
    if field_type == "xsd:string":
        assert length is not None  # register_count refused a missing Length
        text = data[:length].split(b"\x00", 1)[0]
        return text.decode("latin-1").rstrip(" ")
    if bit is not None:
        return get_bit(int.from_bytes(data, "big"), bit)
    if field_type in _BYTES:
        low = data[-1]
        return low - 256 if _BYTES[field_type] and low > 127 else low
    return struct.unpack(_NUMERIC[field_type][0], data)[0]


def encode(
    value: object,
    field_type: str,
    byte_order: str = "big",
    word_order: str = "big",
    bit: int | None = None,
    length: int | None = None,
    current: Sequence[int] | None = None,
) -> list[int]:
    """Registers to write for `value`; ValueError names a value that does not fit the field type.

    With a Bit, `current` (the registers as just read) is required: only that bit changes.
    """
    _check_orders(byte_order, word_order)
    count = register_count(field_type, "holding", bit, length)
    if bit is not None:
        if current is None:
            raise ValueError(f"writing Bit {bit} of {field_type} is a read-modify-write: the current registers "
                             f"are needed")
        if len(current) != count:
            raise ValueError(f"{field_type} needs {count} current register(s), got {len(current)}")
        data = registers_to_bytes(current, byte_order, word_order)
        word = set_bit(int.from_bytes(data, "big"), bit, _boolean(value, field_type))
        return bytes_to_registers(word.to_bytes(len(data), "big"), byte_order, word_order)
    if field_type == "xsd:boolean":
        return [1 if _boolean(value, field_type) else 0]
    if field_type == "xsd:string":
        assert length is not None
        return bytes_to_registers(_string_bytes(value, length, count), byte_order, "big")
    if field_type in _BYTES:
        signed = _BYTES[field_type]
        n = _integral(value, field_type, -128 if signed else 0, 127 if signed else 255)
        return bytes_to_registers((n & 0xFFFF).to_bytes(2, "big"), byte_order, word_order)
    fmt, _, width = _NUMERIC[field_type]
    if width:
        signed = fmt[1].islower()
        low, high = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
        data = struct.pack(fmt, _integral(value, field_type, low, high))
    else:
        data = struct.pack(fmt, _real(value, field_type))
    return bytes_to_registers(data, byte_order, word_order)


def _boolean(value: object, field_type: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    raise ValueError(f"value {value!r} is not a boolean for {field_type}")


def _integral(value: object, field_type: str, low: int, high: int) -> int:
    # bool passes as 0/1: a Boolean variable may sit on a whole-register integer field.
    if not isinstance(value, int | float):
        raise ValueError(f"value {value!r} is not a number for {field_type}")
    if isinstance(value, float):
        # A scaled write arrives as float; only whole numbers fit an integer field (no silent rounding).
        if not math.isfinite(value) or value != int(value):
            raise ValueError(f"value {value!r} is not an integer for {field_type}")
        value = int(value)
    if not low <= value <= high:
        raise ValueError(f"value {value} is out of range for {field_type} ({low}..{high})")
    return value


def _real(value: object, field_type: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"value {value!r} is not a number for {field_type}")
    number = float(value)
    if field_type == "xsd:float" and math.isfinite(number):
        try:
            struct.pack(">f", number)  # struct refuses finite values beyond float32's range
        except OverflowError:
            raise ValueError(f"value {value!r} is out of range for {field_type} (|x| <= 3.4028235e38)") from None
    return number


def _string_bytes(value: object, length: int, count: int) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"value {value!r} is not a string for xsd:string")
    try:
        data = value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"string {value!r} has characters outside latin-1") from None
    if len(data) > length:
        raise ValueError(f"string {value!r} is {len(data)} bytes, longer than its Length {length}")
    return data.ljust(2 * count, b"\x00")
