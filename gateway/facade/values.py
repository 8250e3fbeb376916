"""A mapped value as registers and back, through the Modbus driver's codec.

Reading, the engineering value becomes raw = (value - Offset) / Scale, rounded to a whole number for
an integer field (a measurement of 12.34 kW at Scale 0.1 reads 123). Writing is exact or refused, as
the write path is everywhere else: raw x Scale + Offset must be a whole number for an integer
variable, and a value the variable's type cannot hold is refused, never rounded or clamped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from asyncua import ua

from gateway.bindings import DEFAULT_FIELD_TYPE
from gateway.drivers.modbus import codec
from gateway.facade.model import Mapping
from gateway.nodeset.values import INT_RANGE_OF

# Integer field types take the range of the VariantType they stand for (the one table of integer ranges).
_FIELD_INT_RANGE = {xsd: INT_RANGE_OF[vt] for vt, xsd in DEFAULT_FIELD_TYPE.items() if vt in INT_RANGE_OF}
_FLOAT32_MAX = 3.4028234663852886e38
_FLOATS = (ua.VariantType.Float, ua.VariantType.Double)
_TOLERANCE = 1e-9  # relative: 12.3 / 0.1 is 123.00000000000001 in doubles


class Unrepresentable(ValueError):
    """The value cannot be shown in (or taken from) the field."""


def raw_for_read(m: Mapping, value: Any) -> Any:
    """Engineering value -> the raw field value a SCADA reads (rounded for integer fields)."""
    if m.field_type == "xsd:string":
        return str(value)
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, int | float):
        raise Unrepresentable(f"{value!r} is not a number")
    raw = (value - m.value_offset) / m.scale if (m.scale != 1.0 or m.value_offset != 0.0) else value
    if m.field_type == "xsd:boolean":
        return bool(raw)
    limits = _FIELD_INT_RANGE.get(m.field_type)
    if limits is not None:
        if not math.isfinite(raw):
            raise Unrepresentable(f"{value!r} is not finite")
        whole = round(raw)
        if not limits[0] <= whole <= limits[1]:
            raise Unrepresentable(f"{value!r} is {whole} in the field, outside {m.field_type}")
        return whole
    if m.field_type == "xsd:float" and math.isfinite(raw) and abs(raw) > _FLOAT32_MAX:
        raise Unrepresentable(f"{value!r} is outside xsd:float")
    return float(raw)


def encode_read(m: Mapping, value: Any) -> list[int]:
    """The registers (or the one bit, as 0/1) that show `value`."""
    raw = raw_for_read(m, value)
    if m.table in ("coil", "discrete"):
        return [1 if raw else 0]
    return codec.encode(raw, m.field_type, m.byte_order, m.word_order, length=m.length)


def encode_sentinel(m: Mapping, sentinel: float) -> list[int]:
    """The site's raw sentinel in this mapping's field (no scaling: it is a raw marker)."""
    if m.table in ("coil", "discrete") or m.field_type == "xsd:boolean":
        return [1 if sentinel else 0] * m.count
    if m.field_type == "xsd:string":
        return [0] * m.count
    raw: float | int = sentinel
    if m.field_type in _FIELD_INT_RANGE:
        if not float(sentinel).is_integer():
            raise ValueError(f"the sentinel {sentinel!r} is not a whole number for {m.field_type}")
        raw = int(sentinel)
    return codec.encode(raw, m.field_type, m.byte_order, m.word_order, length=m.length)


def decode_write(m: Mapping, words: Sequence[int]) -> Any:
    """Registers (or one bit) a SCADA wrote -> the variable's value; Unrepresentable when it cannot be exact."""
    if m.table == "coil":
        raw: Any = bool(words[0])
    else:
        raw = codec.decode(words, m.field_type, m.byte_order, m.word_order, length=m.length)
    return engineering(m, raw)


def engineering(m: Mapping, raw: Any) -> Any:
    """Raw field value -> a value of the variable's DataType, exactly or not at all."""
    vt = m.vtype
    if vt == ua.VariantType.Boolean:
        if isinstance(raw, bool) or raw in (0, 1):
            return bool(raw)
        raise Unrepresentable(f"{raw!r} is not 0 or 1 for a Boolean")
    if vt == ua.VariantType.String:
        if not isinstance(raw, str):
            raise Unrepresentable(f"{raw!r} is not text")
        return raw
    if isinstance(raw, float) and not math.isfinite(raw):
        raise Unrepresentable(f"{raw!r} is not a finite number")
    scaled = m.scale != 1.0 or m.value_offset != 0.0
    value = raw * m.scale + m.value_offset if scaled else raw
    if vt in _FLOATS:
        if vt == ua.VariantType.Float and abs(value) > _FLOAT32_MAX:
            raise Unrepresentable(f"{value!r} is outside Float")
        return float(value)
    limits = INT_RANGE_OF.get(vt)
    if limits is None:
        raise Unrepresentable(f"a {vt.name} cannot be written through the facade")
    whole = round(value)
    if abs(value - whole) > _TOLERANCE * max(abs(value), 1.0):
        raise Unrepresentable(f"{raw!r} is {value!r}, not a whole number for {vt.name}")
    if not limits[0] <= whole <= limits[1]:
        raise Unrepresentable(f"{whole} is outside {vt.name}")
    return whole


def variant(m: Mapping, value: Any) -> ua.Variant:
    return ua.Variant(value, m.vtype)


def fits_field(m: Mapping, value: float) -> str | None:
    """Why an engineering value could not be shown in the field, or None (for `nodeset check`)."""
    try:
        encode_read(m, value)
    except (Unrepresentable, ValueError) as exc:
        return str(exc)
    return None
