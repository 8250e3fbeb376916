"""Alarms end to end: an operator's write drives an alarm's input; an asyncua client sees the events,
acknowledges and confirms with the EventId, and refreshes the retained conditions."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from asyncua import Client, ua

from gateway.nodeset.yaml_build import compile_text

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "alarm_site.yaml"
ACK = ua.NodeId(ua.ObjectIds.AcknowledgeableConditionType_Acknowledge)
CONFIRM = ua.NodeId(ua.ObjectIds.AcknowledgeableConditionType_Confirm)
REFRESH = ua.NodeId(ua.ObjectIds.ConditionType_ConditionRefresh)




@pytest.fixture
async def alarm_gateway(simulated_gateway, tmp_path: Path):
    site = tmp_path / "alarm-site.xml"
    site.write_bytes(compile_text(FIXTURE.read_text(encoding="utf-8"), str(FIXTURE)))
    return await simulated_gateway(site)


def _url(gw) -> str:
    return gw.config.endpoint


async def _operator(gw) -> Client:
    client = Client(_url(gw))
    client.set_user("operator1")
    client.set_password("op-secret-1")
    await client.connect()
    return client


def _field(ev: object, name: str) -> object:
    return getattr(ev, name, None)


async def test_limit_alarm_goes_active_is_acknowledged_confirmed_and_refreshed(alarm_gateway, event_collector) -> None:
    gw = alarm_gateway
    ns = gw.site.namespaces["urn:test:alarm-site"]
    temperature = ua.NodeId("Rack1.Temperature", ns)
    condition = ua.NodeId("Rack1.TemperatureHigh", ns)
    client = await _operator(gw)
    try:
        events = event_collector()
        sub = await client.create_subscription(50, events)
        alarm_type = client.get_node(ua.NodeId(ua.ObjectIds.AlarmConditionType))
        await sub.subscribe_events(client.get_node(ua.ObjectIds.Server), alarm_type)

        await client.get_node(temperature).write_value(ua.DataValue(ua.Variant(57.5, ua.VariantType.Double)))
        active = await events.next(lambda e: _field(e, "SourceName") == "Rack1" and
                                   "57.5" in _field(e, "Message").Text)
        assert active.Message.Text == "Rack1 cell temperature 57.5 °C above high limit 55 °C"
        assert active.Severity == 700 and active.Retain is True
        assert isinstance(active.EventId, bytes) and active.EventType == ua.NodeId(ua.ObjectIds.ExclusiveLimitAlarmType)
        cond = client.get_node(condition)

        with pytest.raises(ua.uaerrors.BadEventIdUnknown):
            await cond.call_method(ACK, b"not-the-event", ua.LocalizedText("wrong id"))
        await cond.call_method(ACK, active.EventId, ua.LocalizedText("seen it"))
        acked = await events.next(lambda e: _field(e, "Comment") is not None and e.Comment.Text == "seen it")
        assert acked.Retain is True and acked.EventId != active.EventId

        await client.get_node(temperature).write_value(ua.DataValue(ua.Variant(40.0, ua.VariantType.Double)))
        cleared = await events.next(lambda e: "back within limits" in _field(e, "Message").Text)
        assert cleared.Retain is True  # still to be confirmed
        await cond.call_method(CONFIRM, cleared.EventId, ua.LocalizedText("fixed"))
        confirmed = await events.next(lambda e: _field(e, "Comment") is not None and e.Comment.Text == "fixed")
        assert confirmed.Retain is False
        with pytest.raises(ua.uaerrors.BadEventIdUnknown):  # a stale EventId is refused
            await cond.call_method(CONFIRM, active.EventId, ua.LocalizedText("again"))
    finally:
        await client.disconnect()


async def test_refresh_sends_only_retained_conditions_between_start_and_end(alarm_gateway, event_collector) -> None:
    gw = alarm_gateway
    ns = gw.site.namespaces["urn:test:alarm-site"]
    client = await _operator(gw)
    try:
        await client.get_node(ua.NodeId("Rack1.FaultCode", ns)).write_value(
            ua.DataValue(ua.Variant(3.0, ua.VariantType.Double)))
        events = event_collector()
        sub = await client.create_subscription(50, events)
        await sub.subscribe_events(client.get_node(ua.ObjectIds.Server),
                                   client.get_node(ua.NodeId(ua.ObjectIds.BaseEventType)))
        await asyncio.sleep(0.5)
        events.got.clear()
        await client.get_node(ua.NodeId(ua.ObjectIds.ConditionType)).call_method(
            REFRESH, ua.Variant(sub.subscription_id, ua.VariantType.UInt32))
        start = await events.next(lambda e: e.EventType == ua.NodeId(ua.ObjectIds.RefreshStartEventType))
        assert start is not None
        end = await events.next(lambda e: e.EventType == ua.NodeId(ua.ObjectIds.RefreshEndEventType))
        assert end is not None
        names = [getattr(e, "SourceName", None) for e in events.got]
        messages = [e.Message.Text for e in events.got if getattr(e, "Message", None) is not None]
        assert any("Rack1 FaultCode is 3" in m for m in messages), messages
        assert not any("cell temperature" in m for m in messages)  # not retained: not refreshed
        assert "Rack1" in names
    finally:
        await client.disconnect()


async def test_a_viewer_cannot_acknowledge_and_another_sessions_subscription_cannot_be_refreshed(
        alarm_gateway, event_collector) -> None:
    gw = alarm_gateway
    ns = gw.site.namespaces["urn:test:alarm-site"]
    operator = await _operator(gw)
    viewer = Client(_url(gw))
    await viewer.connect()
    try:
        events = event_collector()
        sub = await operator.create_subscription(50, events)
        await sub.subscribe_events(operator.get_node(ua.ObjectIds.Server),
                                   operator.get_node(ua.NodeId(ua.ObjectIds.AlarmConditionType)))
        await operator.get_node(ua.NodeId("Rack1.Temperature", ns)).write_value(
            ua.DataValue(ua.Variant(70.0, ua.VariantType.Double)))
        active = await events.next(lambda e: "high-high" in e.Message.Text)
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await viewer.get_node(ua.NodeId("Rack1.TemperatureHigh", ns)).call_method(
                ACK, active.EventId, ua.LocalizedText("viewer"))
        with pytest.raises(ua.uaerrors.BadSubscriptionIdInvalid):
            await viewer.get_node(ua.NodeId(ua.ObjectIds.ConditionType)).call_method(
                REFRESH, ua.Variant(sub.subscription_id, ua.VariantType.UInt32))
    finally:
        await viewer.disconnect()
        await operator.disconnect()


async def test_writes_and_condition_methods_raise_audit_events_carrying_the_user(
        alarm_gateway, event_collector) -> None:
    gw = alarm_gateway
    ns = gw.site.namespaces["urn:test:alarm-site"]
    client = await _operator(gw)
    try:
        audits, alarms = event_collector(), event_collector()
        sub = await client.create_subscription(50, audits)
        await sub.subscribe_events(client.get_node(ua.ObjectIds.Server), [
            client.get_node(ua.NodeId(ua.ObjectIds.AuditWriteUpdateEventType)),
            client.get_node(ua.NodeId(ua.ObjectIds.AuditConditionAcknowledgeEventType))])
        alarm_sub = await client.create_subscription(50, alarms)
        await alarm_sub.subscribe_events(client.get_node(ua.ObjectIds.Server),
                                         client.get_node(ua.NodeId(ua.ObjectIds.OffNormalAlarmType)))
        await client.get_node(ua.NodeId("Rack1.FaultCode", ns)).write_value(
            ua.DataValue(ua.Variant(2.0, ua.VariantType.Double)))
        write = await audits.next(lambda e: e.EventType == ua.NodeId(ua.ObjectIds.AuditWriteUpdateEventType))
        assert write.ClientUserId == "operator1" and write.Status is True
        assert write.SourceNode == ua.NodeId("Rack1.FaultCode", ns)
        fault = await alarms.next(lambda e: "FaultCode is 2" in e.Message.Text)
        assert fault.Severity == 950  # the site's Critical class
        await client.get_node(ua.NodeId("Rack1.Fault", ns)).call_method(ACK, fault.EventId, ua.LocalizedText("ok"))
        ack = await audits.next(lambda e: e.EventType == ua.NodeId(ua.ObjectIds.AuditConditionAcknowledgeEventType))
        assert ack.ClientUserId == "operator1" and ack.ConditionEventId == fault.EventId
        assert ack.Comment.Text == "ok"
    finally:
        await client.disconnect()


async def _read_events(client: Client, node: ua.NodeId, start, end, count: int, cp: bytes | None = None,
                       where: ua.ContentFilter | None = None) -> ua.HistoryReadResult:
    details = ua.ReadEventDetails(StartTime=start, EndTime=end, NumValuesPerNode=count)
    flt = ua.EventFilter()
    for name in ("EventId", "EventType", "Message", "Time"):
        op = ua.SimpleAttributeOperand(TypeDefinitionId=ua.NodeId(ua.ObjectIds.BaseEventType),
                                       BrowsePath=[ua.QualifiedName(name, 0)], AttributeId=ua.AttributeIds.Value)
        flt.SelectClauses.append(op)
    if where is not None:
        flt.WhereClause = where
    details.Filter = flt
    params = ua.HistoryReadParameters(HistoryReadDetails=details, TimestampsToReturn=ua.TimestampsToReturn.Both,
                                      ReleaseContinuationPoints=False,
                                      NodesToRead=[ua.HistoryReadValueId(NodeId=node, ContinuationPoint=cp)])
    return (await client.uaclient.history_read(params))[0]


async def test_history_read_events_on_the_server_and_the_device_forward_backward_and_in_pages(alarm_gateway) -> None:
    from datetime import UTC, datetime, timedelta

    gw = alarm_gateway
    ns = gw.site.namespaces["urn:test:alarm-site"]
    t0 = datetime.now(UTC) - timedelta(seconds=1)
    client = await _operator(gw)
    try:
        fault = client.get_node(ua.NodeId("Rack1.FaultCode", ns))
        for code in (1.0, 0.0, 2.0, 0.0):
            await fault.write_value(ua.DataValue(ua.Variant(code, ua.VariantType.Double)))
            await asyncio.sleep(0.15)  # the sim scan (100 ms) must see each value
        await gw.history.flush()
        t1 = datetime.now(UTC) + timedelta(seconds=1)
        of_type = ua.ContentFilter()
        of_type.Elements = [ua.ContentFilterElement(
            FilterOperator=ua.FilterOperator.OfType,
            FilterOperands=[ua.LiteralOperand(Value=ua.Variant(ua.NodeId(ua.ObjectIds.OffNormalAlarmType)))])]
        device = ua.NodeId("Rack1", ns)
        forward = await _read_events(client, device, t0, t1, 0, where=of_type)
        texts = [e.EventFields[2].Value.Text for e in forward.HistoryData.Events]
        assert texts == ["Rack1 FaultCode is 1 (normal 0)", "Rack1 FaultCode is 0, normal",
                         "Rack1 FaultCode is 2 (normal 0)", "Rack1 FaultCode is 0, normal"]
        backward = await _read_events(client, device, t1, t0, 0, where=of_type)
        assert [e.EventFields[2].Value.Text for e in backward.HistoryData.Events] == texts[::-1]
        page1 = await _read_events(client, ua.NodeId(ua.ObjectIds.Server), t0, t1, 3, where=of_type)
        assert page1.StatusCode.value == ua.StatusCodes.GoodMoreData and len(page1.HistoryData.Events) == 3
        page2 = await _read_events(client, ua.NodeId(ua.ObjectIds.Server), t0, t1, 3, cp=page1.ContinuationPoint,
                                   where=of_type)
        assert [e.EventFields[2].Value.Text for e in page1.HistoryData.Events + page2.HistoryData.Events] == texts
        assert page2.ContinuationPoint is None
        # Audit events are history too: the operator's writes are on the Server object.
        everything = await _read_events(client, ua.NodeId(ua.ObjectIds.Server), t0, t1, 0)
        types = {e.EventFields[1].Value for e in everything.HistoryData.Events}
        assert ua.NodeId(ua.ObjectIds.AuditWriteUpdateEventType) in types
    finally:
        await client.disconnect()


async def test_event_history_is_read_after_a_restart(alarm_gateway) -> None:
    from datetime import UTC, datetime, timedelta

    from gateway.server import Gateway

    gw = alarm_gateway
    ns = gw.site.namespaces["urn:test:alarm-site"]
    t0 = datetime.now(UTC) - timedelta(seconds=1)
    client = await _operator(gw)
    try:
        await client.get_node(ua.NodeId("Rack1.FaultCode", ns)).write_value(
            ua.DataValue(ua.Variant(7.0, ua.VariantType.Double)))
        await asyncio.sleep(0.3)
    finally:
        await client.disconnect()
    await gw.stop()  # flushes history
    again = Gateway(gw.config)
    await again.load()
    await again.start()
    try:
        client = await _operator(again)
        try:
            result = await _read_events(client, ua.NodeId("Rack1", ns), t0, datetime.now(UTC) + timedelta(seconds=1), 0)
            texts = [e.EventFields[2].Value.Text for e in result.HistoryData.Events]
            assert "Rack1 FaultCode is 7 (normal 0)" in texts
        finally:
            await client.disconnect()
    finally:
        await again.stop()


async def test_an_operator_shelves_and_unshelves_and_timed_shelving_expires_by_itself(
        alarm_gateway, event_collector) -> None:
    gw = alarm_gateway
    ns = gw.site.namespaces["urn:test:alarm-site"]
    timed = ua.NodeId(ua.ObjectIds.ShelvedStateMachineType_TimedShelve)
    one_shot = ua.NodeId(ua.ObjectIds.ShelvedStateMachineType_OneShotShelve)
    unshelve = ua.NodeId(ua.ObjectIds.ShelvedStateMachineType_Unshelve)
    client = await _operator(gw)
    try:
        events = event_collector()
        sub = await client.create_subscription(50, events)
        await sub.subscribe_events(client.get_node(ua.ObjectIds.Server),
                                   client.get_node(ua.NodeId(ua.ObjectIds.OffNormalAlarmType)))
        cond = client.get_node(ua.NodeId("Rack1.Fault", ns))
        await cond.call_method(one_shot)
        shelved = await events.next(lambda e: "oneshotshelved" in e.Message.Text)
        assert shelved.SuppressedOrShelved is True
        await cond.call_method(unshelve)
        back = await events.next(lambda e: "unshelved by operator1" in e.Message.Text)
        assert back.SuppressedOrShelved is False
        await cond.call_method(timed, ua.Variant(300.0, ua.VariantType.Double))  # ms
        await events.next(lambda e: "timedshelved" in e.Message.Text)
        expired = await events.next(lambda e: "shelving time over" in e.Message.Text)
        assert expired.SuppressedOrShelved is False
    finally:
        await client.disconnect()
