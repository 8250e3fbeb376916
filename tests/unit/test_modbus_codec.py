"""Modbus decoding cases as data folders: tests/cases/modbus/decode/<case>/case.yaml (as Telegraf's testcases/).

case.yaml fields:
  field_type             xsd:* name (required)
  byte_order, word_order big | little (default big)
  bit, length            as the binding's Bit and Length
  registers              list of 16-bit ints (hex as strings "0x1234"), or coil states 0/1
  expected               the decoded value (float32 compares as float32: 123.456 means the float32 nearest)
  encode: true           also check encode(expected) gives back `registers` (bit cases: from the same registers)
  error                  text the ValueError must contain: from encode(value) if `value` is given, else decode
  value                  the value to encode, for encode error cases
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.drivers.modbus.codec import (
    FIELD_TYPES,
    bytes_to_registers,
    decode,
    encode,
    register_count,
    registers_to_bytes,
    set_bit,
)

CASES_DIR = Path(__file__).resolve().parents[1] / "cases" / "modbus" / "decode"
CASES = sorted(p.parent for p in CASES_DIR.glob("*/case.yaml"))


def _load(case: Path) -> dict[str, Any]:
    doc = yaml.safe_load((case / "case.yaml").read_text())
    unknown = set(doc) - {"field_type", "byte_order", "word_order", "bit", "length", "registers", "expected",
                          "encode", "error", "value"}
    assert not unknown, f"{case.name}: unknown fields {unknown}"
    if "registers" in doc:
        doc["registers"] = [int(r, 0) if isinstance(r, str) else r for r in doc["registers"]]
    return doc


def _same(field_type: str, got: Any, expected: Any) -> bool:
    if field_type == "xsd:float":
        return struct.pack(">f", got) == struct.pack(">f", expected)
    return type(got) is type(expected) and got == expected


def test_the_case_folders_cover_every_type_and_order() -> None:
    docs = [_load(c) for c in CASES]
    assert len(docs) >= 30
    decoded = [d for d in docs if "error" not in d]
    assert {d["field_type"] for d in decoded} == set(FIELD_TYPES)
    for field_type in ("xsd:int", "xsd:float", "xsd:double"):
        orders = {(d.get("byte_order", "big"), d.get("word_order", "big")) for d in decoded
                  if d["field_type"] == field_type}
        assert len(orders) == 4, f"{field_type} lacks an order combination: {orders}"
    assert any("value" in d for d in docs if "error" in d) and any("value" not in d for d in docs if "error" in d)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decode_case(case: Path) -> None:
    doc = _load(case)
    field_type = doc["field_type"]
    opts = {"byte_order": doc.get("byte_order", "big"), "word_order": doc.get("word_order", "big"),
            "bit": doc.get("bit"), "length": doc.get("length")}
    if "error" in doc:
        with pytest.raises(ValueError) as err:
            if "value" in doc:
                encode(doc["value"], field_type, **opts)
            else:
                decode(doc["registers"], field_type, **opts)
        assert doc["error"] in str(err.value)
        return
    registers, expected = doc["registers"], doc["expected"]
    got = decode(registers, field_type, **opts)
    assert _same(field_type, got, expected), f"decoded {got!r}, expected {expected!r}"
    if doc.get("encode"):
        current = registers if opts["bit"] is not None else None
        assert encode(expected, field_type, **opts, current=current) == registers
        if opts["bit"] is not None:
            # Flipping the bit changes that bit only, and reads back flipped.
            flipped = encode(not expected, field_type, **opts, current=registers)
            assert decode(flipped, field_type, **opts) is (not expected)
            before = int.from_bytes(registers_to_bytes(registers, opts["byte_order"], opts["word_order"]), "big")
            after = int.from_bytes(registers_to_bytes(flipped, opts["byte_order"], opts["word_order"]), "big")
            assert before ^ after == 1 << opts["bit"]


@pytest.mark.parametrize(
    ("field_type", "table", "bit", "length", "count"),
    [
        ("xsd:boolean", "coil", None, None, 1),
        ("xsd:boolean", "discrete", None, None, 1),
        ("xsd:boolean", "holding", 3, None, 1),
        ("xsd:boolean", "input", None, None, 1),
        ("xsd:byte", "holding", None, None, 1),
        ("xsd:unsignedByte", "input", None, None, 1),
        ("xsd:short", "holding", None, None, 1),
        ("xsd:unsignedShort", "holding", None, None, 1),
        ("xsd:int", "holding", None, None, 2),
        ("xsd:unsignedInt", "input", 31, None, 2),
        ("xsd:float", "holding", None, None, 2),
        ("xsd:long", "holding", None, None, 4),
        ("xsd:unsignedLong", "holding", 63, None, 4),
        ("xsd:double", "input", None, None, 4),
        ("xsd:string", "holding", None, 1, 1),
        ("xsd:string", "holding", None, 2, 1),
        ("xsd:string", "holding", None, 7, 4),
        ("xsd:string", "holding", None, 250, 125),
    ],
)
def test_register_count(field_type: str, table: str, bit: int | None, length: int | None, count: int) -> None:
    assert register_count(field_type, table, bit, length) == count


@pytest.mark.parametrize(
    ("field_type", "table", "bit", "length", "message"),
    [
        ("xsd:float", "coil", None, None, "a coil holds one bit: its field type must be xsd:boolean, not xsd:float"),
        ("xsd:short", "discrete", None, None, "must be xsd:boolean"),
        ("xsd:boolean", "coil", 0, None, "Bit applies to registers, not to a coil"),
        ("xsd:short", "holding", 16, None, "Bit 16 is outside 0..15 of xsd:short"),
        ("xsd:byte", "holding", 8, None, "Bit 8 is outside 0..7 of xsd:byte"),
        ("xsd:string", "holding", 0, 4, "Bit applies to xsd:boolean and integer field types"),
        ("xsd:double", "holding", 0, None, "not xsd:double"),
        ("xsd:string", "holding", None, None, "xsd:string needs a Length"),
        ("xsd:string", "holding", None, 0, "xsd:string needs a Length"),
        ("xsd:int", "holding", None, 4, "Length applies only to xsd:string, not xsd:int"),
        ("xsd:int", "register", None, None, "unknown Modbus table 'register'"),
        ("int32", "holding", None, None, "field type 'int32' is not supported"),
    ],
)
def test_register_count_refuses_inconsistent_bindings(
    field_type: str, table: str, bit: int | None, length: int | None, message: str
) -> None:
    with pytest.raises(ValueError) as err:
        register_count(field_type, table, bit, length)
    assert message in str(err.value)


def test_bit_write_needs_the_current_registers() -> None:
    with pytest.raises(ValueError, match="read-modify-write"):
        encode(True, "xsd:boolean", bit=3)
    with pytest.raises(ValueError, match="needs 1 current register"):
        encode(True, "xsd:boolean", bit=3, current=[0, 0])
    assert encode(True, "xsd:boolean", bit=3, current=[0x1200]) == [0x1208]
    assert encode(0, "xsd:unsignedShort", bit=15, current=[0xFFFF]) == [0x7FFF]


def test_set_bit() -> None:
    assert set_bit(0, 0, True) == 1
    assert set_bit(0xFFFF, 15, False) == 0x7FFF
    assert set_bit(0x8000, 15, True) == 0x8000
    assert set_bit(0x0001, 0, False) == 0
    with pytest.raises(ValueError, match="negative"):
        set_bit(0, -1, True)


@pytest.mark.parametrize("byte_order", ["big", "little"])
@pytest.mark.parametrize("word_order", ["big", "little"])
def test_round_trip_of_extremes_in_every_order(byte_order: str, word_order: str) -> None:
    samples = {
        "xsd:short": [-32768, -1, 0, 1, 32767],
        "xsd:unsignedShort": [0, 1, 0x1234, 65535],
        "xsd:int": [-(2**31), -1, 0, 2**31 - 1],
        "xsd:unsignedInt": [0, 1, 2**32 - 1],
        "xsd:long": [-(2**63), -1, 0, 2**63 - 1],
        "xsd:unsignedLong": [0, 2**64 - 1],
        "xsd:double": [-1.5e308, -0.0, 5e-324, 1.5e308, float("inf")],
        "xsd:float": [-3.4028234663852886e38, 1.401298464324817e-45, 0.5, float("-inf")],
        "xsd:byte": [-128, -1, 0, 127],
        "xsd:unsignedByte": [0, 255],
    }
    for field_type, values in samples.items():
        for value in values:
            registers = encode(value, field_type, byte_order, word_order)
            assert len(registers) == register_count(field_type)
            assert all(0 <= r <= 0xFFFF for r in registers)
            got = decode(registers, field_type, byte_order, word_order)
            assert got == value and type(got) is type(value), (field_type, value, got)


def test_nan_round_trips() -> None:
    for field_type in ("xsd:float", "xsd:double"):
        got = decode(encode(float("nan"), field_type), field_type)
        assert got != got


def test_whole_floats_fit_integer_fields_but_other_types_do_not() -> None:
    assert encode(100.0, "xsd:short") == [100]  # a scaled write arrives as float
    assert encode(True, "xsd:boolean") == [1]
    assert encode(0, "xsd:boolean") == [0]
    assert encode(7, "xsd:float") == [0x40E0, 0]
    assert encode(True, "xsd:unsignedShort") == [1]  # a Boolean variable on a register field
    for value, field_type in [("5", "xsd:short"), (None, "xsd:float"), (float("nan"), "xsd:int"),
                              (5, "xsd:string"), ("yes", "xsd:boolean")]:
        with pytest.raises(ValueError, match="not"):
            encode(value, field_type, length=4)


def test_register_bytes_helpers_are_inverse() -> None:
    data = bytes(range(1, 9))
    for byte_order in ("big", "little"):
        for word_order in ("big", "little"):
            assert registers_to_bytes(bytes_to_registers(data, byte_order, word_order), byte_order, word_order) == data
    assert bytes_to_registers(data, "little", "little") == [0x0807, 0x0605, 0x0403, 0x0201]
