"""The gateway's own encoding of DataValues, notifications and publish responses is what asyncua's generic
serializer makes of the same objects, byte for byte, and what asyncua's decoder reads back."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import struct_from_binary, struct_to_binary

from gateway.subscriptions import encoding
from gateway.values.aspace_io import StoredDataValue, status_code

NOW = datetime(2026, 11, 23, 12, 0, 0, 123456, tzinfo=UTC)

VALUES = [
    ua.DataValue(ua.Variant(1.5, ua.VariantType.Double), SourceTimestamp=NOW, ServerTimestamp=NOW),
    StoredDataValue(ua.Variant(True, ua.VariantType.Boolean), StatusCode=status_code(ua.StatusCodes.BadTimeout),
                    ServerTimestamp=NOW),
    ua.DataValue(ua.Variant("héllo wörld", ua.VariantType.String)),
    ua.DataValue(ua.Variant(None, ua.VariantType.String)),
    ua.DataValue(ua.Variant()),
    ua.DataValue(ua.Variant([1, 2, 3], ua.VariantType.Int32)),
    ua.DataValue(ua.Variant(-5, ua.VariantType.Int16), SourceTimestamp=datetime(1500, 1, 1, tzinfo=UTC)),
    ua.DataValue(ua.Variant(3.25, ua.VariantType.Float), SourceTimestamp=datetime(2020, 1, 1)),
    ua.DataValue(ua.Variant(2**40, ua.VariantType.UInt64), ServerTimestamp=datetime(9999, 12, 31, 23, 59, 59,
                                                                                    999999, tzinfo=UTC)),
    ua.DataValue(ua.Variant(7, ua.VariantType.Byte), SourcePicoseconds=5, ServerTimestamp=NOW),
    ua.DataValue(ua.Variant(NOW, ua.VariantType.DateTime), StatusCode=None),
]


@pytest.mark.parametrize("dv", VALUES, ids=lambda dv: repr(dv.Value)[:60])
def test_a_data_value_encodes_as_asyncua_encodes_it(dv: ua.DataValue) -> None:
    assert encoding.encode_data_value(dv) == struct_to_binary(dv)


def test_the_overflow_bit_is_added_to_the_status_only() -> None:
    dv = VALUES[0]
    flagged = struct_from_binary(ua.DataValue, Buffer(encoding.encode_data_value(dv, 0x480)))
    assert flagged.StatusCode.value == 0x480
    assert flagged.Value == dv.Value and flagged.SourceTimestamp == dv.SourceTimestamp


def test_a_stored_value_is_encoded_once_and_shared() -> None:
    dv = StoredDataValue(ua.Variant(2.5, ua.VariantType.Double), StatusCode=status_code(0), ServerTimestamp=NOW)
    dv.encoded = None  # as store_value leaves a value somebody watches
    first = encoding.encoded(dv)
    assert encoding.encoded(dv) is first
    assert first == struct_to_binary(dv)


def test_a_publish_response_decodes_as_asyncua_built_it() -> None:
    items = [ua.MonitoredItemNotification(ClientHandle=h, Value=dv)
             for h, dv in ((1, VALUES[0]), (2**32 - 1, VALUES[2]))]
    fields = ua.EventFieldList(ClientHandle=9, EventFields=[ua.Variant("x"), ua.Variant(3, ua.VariantType.UInt16)])
    parts = [encoding.status_change_notification(ua.StatusCodes.BadTimeout),
             encoding.data_change_notification([encoding.client_handle(i.ClientHandle) + encoding.encoded(i.Value)
                                                for i in items]),
             encoding.event_notification_list([encoding.event_field_list(fields)])]
    header = ua.ResponseHeader(Timestamp=NOW, RequestHandle=77)
    results = [ua.StatusCode(), ua.StatusCode(ua.StatusCodes.BadSequenceNumberUnknown)]
    body = encoding.publish_response(header, 81, [4, 5], True, encoding.notification_message(5, NOW, parts), results)

    expected = ua.PublishResponse()
    expected.ResponseHeader = header
    expected.Parameters = ua.PublishResult(
        SubscriptionId=81, AvailableSequenceNumbers=[4, 5], MoreNotifications=True, Results=results,
        NotificationMessage=ua.NotificationMessage(SequenceNumber=5, PublishTime=NOW, NotificationData=[
            ua.StatusChangeNotification(Status=ua.StatusCode(ua.StatusCodes.BadTimeout)),
            ua.DataChangeNotification(MonitoredItems=items),
            ua.EventNotificationList(Events=[fields])]))
    expected.Parameters.DiagnosticInfos = []
    assert body == struct_to_binary(expected)

    republish = encoding.republish_response(header, encoding.notification_message(5, NOW, parts))
    again = ua.RepublishResponse(ResponseHeader=header, NotificationMessage=expected.Parameters.NotificationMessage)
    assert republish == struct_to_binary(again)


@pytest.mark.parametrize("dv", VALUES, ids=lambda dv: repr(dv.Value)[:60])
@pytest.mark.parametrize(("source", "server"), [(True, False), (False, True), (False, False)])
def test_a_value_with_fewer_timestamps_encodes_as_asyncua_encodes_it(dv: ua.DataValue, source: bool,
                                                                      server: bool) -> None:
    fewer = ua.DataValue(dv.Value, dv.StatusCode, dv.SourceTimestamp if source else None,
                         dv.ServerTimestamp if server else None, dv.SourcePicoseconds if source else None,
                         dv.ServerPicoseconds if server else None)
    assert encoding.encoded_with(dv, source, server) == struct_to_binary(fewer)
