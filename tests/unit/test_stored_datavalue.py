"""stored_datavalue: the value path's DataValue, built slot by slot, is asyncua's DataValue to the byte."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import struct_from_binary, struct_to_binary, variant_to_binary

from gateway.values.aspace_io import StoredDataValue, status_code, stored_datavalue

VT = ua.VariantType
SOURCE = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
SERVER = datetime(2026, 3, 1, 12, 0, 1, tzinfo=UTC)

CASES: list[tuple[Any, ua.VariantType]] = [
    (1.5, VT.Double), (-0.0, VT.Double), (float("nan"), VT.Double), (3, VT.Double), (2.25, VT.Float),
    (True, VT.Boolean), (False, VT.Boolean), (-7, VT.SByte), (200, VT.Byte), (-300, VT.Int16), (65535, VT.UInt16),
    (-(2**31), VT.Int32), (2**32 - 1, VT.UInt32), (-(2**63), VT.Int64), (2**64 - 1, VT.UInt64),
    ("", VT.String), ("Grüße", VT.String), (b"\x00\x01", VT.ByteString), (SOURCE, VT.DateTime),
    (None, VT.Double), (None, VT.String),
    ([1.0, 2.0], VT.Double), ([[1, 2], [3, 4]], VT.Int32),  # arrays: asyncua's own constructor
    (ua.LocalizedText("x"), VT.LocalizedText),
]


def _expected(value: Any, vtype: ua.VariantType, status: ua.StatusCode, source: datetime | None,
              server: datetime | None) -> StoredDataValue:
    variant = ua.Variant(value, vtype) if value is not None else ua.Variant()
    return StoredDataValue(variant, StatusCode=status, SourceTimestamp=source, ServerTimestamp=server)


def _slots(dv: ua.DataValue) -> dict[str, Any]:
    """Every slot, a slot left unset (a cache filled on first use) included as such."""
    return {name: getattr(dv, name, "<unset>") for cls in type(dv).__mro__ for name in getattr(cls, "__slots__", ())}


@pytest.mark.parametrize(("value", "vtype"), CASES, ids=[f"{vt.name}-{v!r}"[:40] for v, vt in CASES])
@pytest.mark.parametrize(("code", "source", "server"), [
    (ua.StatusCodes.Good, SOURCE, SERVER), (ua.StatusCodes.BadSensorFailure, None, SERVER),
    (ua.StatusCodes.UncertainLastUsableValue, SOURCE, None), (ua.StatusCodes.Good, None, None),
])
def test_the_same_datavalue_as_asyncuas_constructors_make(value: Any, vtype: ua.VariantType, code: int,
                                                          source: datetime | None, server: datetime | None) -> None:
    status = status_code(code)
    fast = stored_datavalue(value, vtype, status, source, server)
    slow = _expected(value, vtype, status, source, server)
    assert type(fast) is StoredDataValue and type(fast.Value) is ua.Variant
    assert _slots(fast.Value) == _slots(slow.Value) or value != value  # NaN: compared by the encoding below
    assert {k: v for k, v in _slots(fast).items() if k != "Value"} == {
        k: v for k, v in _slots(slow).items() if k != "Value"}
    assert variant_to_binary(fast.Value) == variant_to_binary(slow.Value)
    encoded = struct_to_binary(fast)
    assert encoded == struct_to_binary(slow) == struct_to_binary(ua.DataValue(
        slow.Value, StatusCode=status, SourceTimestamp=source, ServerTimestamp=server))
    back = struct_from_binary(ua.DataValue, Buffer(encoded))
    if value == value:
        assert back == fast and fast == slow
    assert copy.deepcopy(fast) is fast  # stored values are shared, never copied


def test_anything_but_a_plain_scalar_takes_asyncuas_constructor() -> None:
    class Level(float):
        pass

    for value in (Level(2.0), ua.Variant(5, VT.Int32)):
        dv = stored_datavalue(value, VT.Double, status_code(0), None, None)
        assert dv == _expected(value, VT.Double, status_code(0), None, None)
    assert stored_datavalue(ua.Variant(5, VT.Int32), VT.Double, status_code(0), None, None).Value == ua.Variant(
        5, VT.Int32)  # a Variant is copied, as asyncua does
