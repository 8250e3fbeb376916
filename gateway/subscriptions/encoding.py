"""The bytes of data-change notifications and publish responses, built once and shared.

asyncua builds a MonitoredItemNotification object per item and change and serialises the whole
PublishResponse field by field through its generic dataclass serializer. Here a stored DataValue is
encoded once (the bytes are kept on the value, so five subscriptions reporting it encode it once), a
notification is its client handle and those bytes, and a NotificationMessage is joined from them.
The layout is OPC UA Part 6 (5.2.2.17 DataValue, 5.2.2.16 Variant, 5.2.2.15 ExtensionObject);
`tests/unit/test_subscription_encoding.py` checks every byte against asyncua's own serializer.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from asyncua import ua
from asyncua.ua.ua_binary import nodeid_to_binary, struct_to_binary, variant_to_binary

_FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)
_FILETIME_EPOCH_NAIVE = datetime(1601, 1, 1)
_MAX_DATETIME = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
_MAX_INT64 = 2**63 - 1
_US = __import__("datetime").timedelta(microseconds=1)

_U32 = struct.Struct("<I").pack
_I32 = struct.Struct("<i").pack
_I64 = struct.Struct("<q").pack
_B = struct.Struct("<B").pack
_EMPTY_ARRAY = _I32(0)

# Scalar Variant bodies packed directly (type byte + value); anything else goes through asyncua.
_SCALAR = {
    ua.VariantType.Boolean: struct.Struct("<B?").pack,
    ua.VariantType.SByte: struct.Struct("<Bb").pack,
    ua.VariantType.Byte: struct.Struct("<BB").pack,
    ua.VariantType.Int16: struct.Struct("<Bh").pack,
    ua.VariantType.UInt16: struct.Struct("<BH").pack,
    ua.VariantType.Int32: struct.Struct("<Bi").pack,
    ua.VariantType.UInt32: struct.Struct("<BI").pack,
    ua.VariantType.Int64: struct.Struct("<Bq").pack,
    ua.VariantType.UInt64: struct.Struct("<BQ").pack,
    ua.VariantType.Float: struct.Struct("<Bf").pack,
    ua.VariantType.Double: struct.Struct("<Bd").pack,
}
_SCALAR_ID = {vt: vt.value for vt in _SCALAR}
# A stored value as the value path makes it (scalar, status, both timestamps) in one pack call.
# Keyed by the VariantType's number (`_value_`): hashing an Enum member is a Python call.
_FULL = {vt._value_: struct.Struct("<BB" + pack.__self__.format[2:] + "Iqq").pack  # type: ignore[attr-defined]
         for vt, pack in _SCALAR.items()}
_STRING = ua.VariantType.String
_NULL = ua.VariantType.Null

_DATA_CHANGE_ID = nodeid_to_binary(ua.NodeId(ua.ObjectIds.DataChangeNotification_Encoding_DefaultBinary))
_EVENT_LIST_ID = nodeid_to_binary(ua.NodeId(ua.ObjectIds.EventNotificationList_Encoding_DefaultBinary))
_STATUS_CHANGE_ID = nodeid_to_binary(ua.NodeId(ua.ObjectIds.StatusChangeNotification_Encoding_DefaultBinary))
_PUBLISH_RESPONSE_ID = nodeid_to_binary(ua.NodeId(ua.ObjectIds.PublishResponse_Encoding_DefaultBinary))
_REPUBLISH_RESPONSE_ID = nodeid_to_binary(ua.NodeId(ua.ObjectIds.RepublishResponse_Encoding_DefaultBinary))
_NO_DIAGNOSTIC = b"\x00"


class _TimeCache:
    """The last datetime converted: a scan stamps all its values with one source time and one server time."""

    __slots__ = ("dt", "ticks")

    def __init__(self) -> None:
        self.dt: datetime | None = None
        self.ticks = 0


_source_time = _TimeCache()
_server_time = _TimeCache()


def ticks(dt: datetime) -> int:
    """A datetime as OPC UA DateTime (100 ns since 1601), clamped as asyncua clamps it."""
    if dt.tzinfo is None:
        if dt <= _FILETIME_EPOCH_NAIVE:
            return 0
        return ua.datetime_to_win_epoch(dt)
    if dt <= _FILETIME_EPOCH:
        return 0
    if dt >= _MAX_DATETIME:
        return _MAX_INT64
    return 10 * ((dt - _FILETIME_EPOCH) // _US)


def _variant(var: ua.Variant) -> bytes:
    vt = var.VariantType
    pack = _SCALAR.get(vt)
    if pack is not None and not var.is_array and var.Dimensions is None:
        return pack(_SCALAR_ID[vt], var.Value)
    if vt is _STRING and not var.is_array and var.Dimensions is None:
        text = var.Value
        if text is None:
            return b"\x0c\xff\xff\xff\xff"
        raw = text.encode("utf-8")
        return b"\x0c" + _I32(len(raw)) + raw
    return variant_to_binary(var)


def encode_data_value(dv: ua.DataValue, extra_status_bits: int = 0) -> bytes:
    """`dv` in OPC UA binary, as asyncua would encode it; `extra_status_bits` are or-ed into the
    StatusCode (the Overflow info bit of a queue that discarded values)."""
    if dv.SourcePicoseconds is not None or dv.ServerPicoseconds is not None:
        if extra_status_bits:
            dv = ua.DataValue(dv.Value, _with_bits(dv.StatusCode, extra_status_bits), dv.SourceTimestamp,
                              dv.ServerTimestamp, dv.SourcePicoseconds, dv.ServerPicoseconds)
        return struct_to_binary(dv)
    value = dv.Value
    status = dv.StatusCode
    source = dv.SourceTimestamp
    server = dv.ServerTimestamp
    if (value is not None and status is not None and source is not None and server is not None
            and not value.is_array and value.Dimensions is None):
        type_id = value.VariantType._value_
        full = _FULL.get(type_id)
        if full is not None:
            # the two time caches written out: this runs once per reported change
            cache = _source_time
            if source is not cache.dt:
                cache.ticks, cache.dt = ticks(source), source
            cache2 = _server_time
            if server is not cache2.dt:
                cache2.ticks, cache2.dt = ticks(server), server
            return full(0x0F, type_id, value.Value, status.value | extra_status_bits, cache.ticks, cache2.ticks)
    mask = 0
    parts: list[bytes] = []
    if value is not None:
        mask = 0x01
        parts.append(_variant(value))
    if status is not None or extra_status_bits:
        mask |= 0x02
        parts.append(_U32((status.value if status is not None else 0) | extra_status_bits))
    if source is not None:
        mask |= 0x04
        parts.append(_I64(ticks(source)))
    if server is not None:
        mask |= 0x08
        parts.append(_I64(ticks(server)))
    return _B(mask) + b"".join(parts)


def _with_bits(status: ua.StatusCode | None, bits: int) -> ua.StatusCode:
    return ua.StatusCode((status.value if status is not None else 0) | bits)


def encoded(dv: ua.DataValue) -> bytes:
    """The encoding of a stored value, made on first use and kept on the value (`StoredDataValue.encoded`,
    which `store_value` sets to None for a watched value; nobody mutates a stored value, so the bytes stay
    true). A plain DataValue (one asyncua stored) is encoded each time it is reported."""
    try:
        cached = dv.encoded  # type: ignore[attr-defined]
    except AttributeError:
        return encode_data_value(dv)
    if cached is None:
        cached = dv.encoded = encode_data_value(dv)  # type: ignore[attr-defined]
    return cached  # type: ignore[no-any-return]


# Mask byte of a DataValue with value, status and both timestamps (no picoseconds): its last 16 bytes are
# the source and server timestamps, so a copy with fewer timestamps is a slice of it.
_ALL_FOUR = 0x0F


def encoded_with(dv: ua.DataValue, source: bool, server: bool) -> bytes:
    """The encoding of a stored value with only the timestamps asked for (TimestampsToReturn), cut from the
    shared encoding when it has all four fields."""
    data = encoded(dv)
    if data[0] != _ALL_FOUR:
        return encode_data_value(ua.DataValue(dv.Value, dv.StatusCode, dv.SourceTimestamp if source else None,
                                              dv.ServerTimestamp if server else None,
                                              dv.SourcePicoseconds if source else None,
                                              dv.ServerPicoseconds if server else None))
    if source:
        return b"\x07" + data[1:-8]
    if server:
        return b"\x0b" + data[1:-16] + data[-8:]
    return b"\x03" + data[1:-16]


def client_handle(handle: int) -> bytes:
    return _U32(handle & 0xFFFFFFFF)


def _extension_object(type_id: bytes, body: bytes) -> bytes:
    return type_id + b"\x01" + _I32(len(body)) + body


def data_change_notification(items: Sequence[bytes]) -> bytes:
    """A DataChangeNotification (as ExtensionObject) of pre-encoded MonitoredItemNotifications."""
    return _extension_object(_DATA_CHANGE_ID, _I32(len(items)) + b"".join(items) + _EMPTY_ARRAY)


def event_notification_list(events: Sequence[bytes]) -> bytes:
    """An EventNotificationList (as ExtensionObject) of pre-encoded EventFieldLists."""
    return _extension_object(_EVENT_LIST_ID, _I32(len(events)) + b"".join(events))


def event_field_list(fields: ua.EventFieldList) -> bytes:
    return struct_to_binary(fields)


def status_change_notification(status: int) -> bytes:
    return _extension_object(_STATUS_CHANGE_ID, _U32(status) + _NO_DIAGNOSTIC)


def notification_message(sequence_number: int, publish_time: datetime, notifications: Sequence[bytes]) -> bytes:
    """A NotificationMessage: SequenceNumber, PublishTime and NotificationData (ExtensionObjects)."""
    return (_U32(sequence_number) + _I64(ticks(publish_time)) + _I32(len(notifications))
            + b"".join(notifications))


def _uint32_array(values: Iterable[int]) -> bytes:
    values = list(values)
    return _I32(len(values)) + b"".join(_U32(v) for v in values)


def publish_response(header: ua.ResponseHeader, subscription_id: int, available: Iterable[int],
                     more_notifications: bool, message: bytes, results: Sequence[ua.StatusCode]) -> bytes:
    """A whole PublishResponse body (TypeId included) around a pre-encoded NotificationMessage."""
    return b"".join((
        _PUBLISH_RESPONSE_ID, struct_to_binary(header), _U32(subscription_id), _uint32_array(available),
        b"\x01" if more_notifications else b"\x00", message,
        _uint32_array(r.value for r in results), _EMPTY_ARRAY,
    ))


def republish_response(header: ua.ResponseHeader, message: bytes) -> bytes:
    return _REPUBLISH_RESPONSE_ID + struct_to_binary(header) + message


def empty_message(sequence_number: int, publish_time: datetime) -> bytes:
    return notification_message(sequence_number, publish_time, ())
