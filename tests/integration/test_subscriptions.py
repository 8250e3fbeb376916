"""The gateway's subscriptions, seen by asyncua's client: deadbands, queues, MaxNotificationsPerPublish with
MoreNotifications, Republish until acknowledged, keep-alives, sampling revised to the scan period, the
timestamps asked for, TransferSubscriptions with initial values, and expiry.

Values reach the variables as the gateway stores them (`store_value`, the value path of every device), and
Publish requests are sent one by one where a test needs to see each response.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, Node, ua
from asyncua.ua.ua_binary import struct_from_binary

from gateway.security.roles import Role
from gateway.security.users import UserStore
from gateway.subscriptions.items import OVERFLOW
from gateway.values.aspace_io import StoredDataValue, status_code, store_value

pytestmark = pytest.mark.integration

ServerFactory = Callable[..., Awaitable[Any]]


@pytest.fixture
async def server(tmp_path: Path, secured_server: ServerFactory) -> Any:
    UserStore(tmp_path / "data" / "users.yaml").add("op1", "op-secret-1", Role.operator)
    return await secured_server(insecure=True)


def _store(server: Any, node: Node, value: Any, vtype: ua.VariantType = ua.VariantType.Double,
           status: int = ua.StatusCodes.Good) -> None:
    now = datetime.now(UTC)
    store_value(server.iserver.aspace, node.nodeid, StoredDataValue(
        ua.Variant(value, vtype), StatusCode=status_code(status), SourceTimestamp=now, ServerTimestamp=now))


async def _client(server: Any, user: str | None = None) -> Client:
    client = Client(server.endpoint.geturl(), timeout=5)
    if user:
        client.set_user(user)
        client.set_password("op-secret-1")
    await client.connect()
    return client


class _Values:
    def __init__(self) -> None:
        self.by_node: dict[str, list[ua.DataValue]] = {}

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        self.by_node.setdefault(node.nodeid.to_string(), []).append(data.monitored_item.Value)

    def of(self, node: Node) -> list[Any]:
        return [dv.Value.Value for dv in self.by_node.get(node.nodeid.to_string(), [])]


async def _until(predicate: Callable[[], bool], within_s: float = 5.0) -> None:
    async with asyncio.timeout(within_s):
        while not predicate():  # noqa: ASYNC110 - polls what a client received, bounded by the timeout
            await asyncio.sleep(0.02)


def _request(node: Node, handle: int, *, flt: Any = None, queue: int = 10, discard_oldest: bool = True,
             sampling: float = 0.0) -> ua.MonitoredItemCreateRequest:
    return ua.MonitoredItemCreateRequest(
        ItemToMonitor=ua.ReadValueId(NodeId=node.nodeid, AttributeId=ua.AttributeIds.Value),
        MonitoringMode=ua.MonitoringMode.Reporting,
        RequestedParameters=ua.MonitoringParameters(ClientHandle=handle, SamplingInterval=sampling, QueueSize=queue,
                                                    DiscardOldest=discard_oldest, Filter=flt))


def _deadband(kind: ua.DeadbandType, value: float) -> ua.DataChangeFilter:
    return ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValue, DeadbandType=kind, DeadbandValue=value)


async def test_deadbands_count_from_the_last_reported_value_and_are_refused_where_they_mean_nothing(
        server: Any) -> None:
    objects = server.nodes.objects
    absolute = await objects.add_variable(1, "Absolute", 0.0)
    percent = await objects.add_variable(1, "Percent", 0.0)
    await percent.add_property(0, "EURange", ua.Range(Low=0.0, High=200.0))
    no_range = await objects.add_variable(1, "NoRange", 0.0)
    text = await objects.add_variable(1, "Text", "a")
    client = await _client(server)
    try:
        values = _Values()
        sub = await client.create_subscription(50, values)
        results = await sub.create_monitored_items([
            _request(absolute, 1, flt=_deadband(ua.DeadbandType.Absolute, 1.0)),
            _request(percent, 2, flt=_deadband(ua.DeadbandType.Percent, 5.0)),  # 5 % of 0..200: 10
            _request(no_range, 3, flt=_deadband(ua.DeadbandType.Percent, 5.0)),
            _request(text, 4, flt=_deadband(ua.DeadbandType.Absolute, 1.0)),
        ])
        assert isinstance(results[0], int) and isinstance(results[1], int), results
        assert [r.value if isinstance(r, ua.StatusCode) else r for r in results[2:]] == [
            ua.StatusCodes.BadMonitoredItemFilterUnsupported, ua.StatusCodes.BadFilterNotAllowed]
        await _until(lambda: values.of(absolute) == [0.0] and values.of(percent) == [0.0])
        # Each step moves less than the deadband from the previous value; what is reported is measured from
        # the last value reported (asyncua compared with the previous sample, so a slow drift never showed).
        for a, p in ((0.6, 6.0), (1.2, 9.0), (1.8, 12.0), (2.3, 15.0), (2.9, 21.0), (3.4, 23.0)):
            _store(server, absolute, a)
            _store(server, percent, p)
            await asyncio.sleep(0.01)
        await _until(lambda: len(values.of(absolute)) >= 3 and len(values.of(percent)) >= 3)
        await asyncio.sleep(0.3)
        assert values.of(absolute) == [0.0, 1.2, 2.3, 3.4]
        assert values.of(percent) == [0.0, 12.0, 23.0]
        # A status change is reported whatever the deadband.
        _store(server, absolute, 3.5, status=ua.StatusCodes.BadCommunicationError)
        await _until(lambda: len(values.of(absolute)) == 5)
    finally:
        await client.disconnect()


async def test_a_full_queue_discards_as_asked_and_flags_the_overflow(server: Any) -> None:
    objects = server.nodes.objects
    oldest = await objects.add_variable(1, "DiscardOldest", 0.0)
    newest = await objects.add_variable(1, "DiscardNewest", 0.0)
    client = await _client(server)
    try:
        values = _Values()
        sub = await client.create_subscription(50, values)
        await sub.create_monitored_items([_request(oldest, 1, queue=3, discard_oldest=True),
                                          _request(newest, 2, queue=3, discard_oldest=False)])
        await _until(lambda: values.of(oldest) == [0.0] and values.of(newest) == [0.0])
        await sub.set_publishing_mode(False)
        for v in (1.0, 2.0, 3.0, 4.0, 5.0):
            _store(server, oldest, v)
            _store(server, newest, v)
        await sub.set_publishing_mode(True)
        await _until(lambda: len(values.of(oldest)) == 4 and len(values.of(newest)) == 4)
        assert values.of(oldest)[1:] == [3.0, 4.0, 5.0]
        assert values.of(newest)[1:] == [1.0, 2.0, 5.0]
        flags = {name: [dv.StatusCode.value & OVERFLOW for dv in dvs[1:]] for name, dvs in values.by_node.items()}
        assert flags[oldest.nodeid.to_string()] == [OVERFLOW, 0, 0]  # the oldest kept follows the discarded
        assert flags[newest.nodeid.to_string()] == [0, 0, OVERFLOW]  # the newest replaced the last one
    finally:
        await client.disconnect()


async def _raw_subscription(client: Client, *, max_notifications: int = 0, keep_alive: int = 2,
                            lifetime: int = 600) -> int:
    params = ua.CreateSubscriptionParameters(RequestedPublishingInterval=50, RequestedLifetimeCount=lifetime,
                                             RequestedMaxKeepAliveCount=keep_alive,
                                             MaxNotificationsPerPublish=max_notifications, PublishingEnabled=True)
    request = ua.CreateSubscriptionRequest(Parameters=params)
    response = struct_from_binary(ua.CreateSubscriptionResponse, await client.uaclient.protocol.send_request(request))
    response.ResponseHeader.ServiceResult.check()
    return int(response.Parameters.SubscriptionId)


async def _create_items(client: Client, sid: int, requests: list[ua.MonitoredItemCreateRequest],
                        timestamps: ua.TimestampsToReturn = ua.TimestampsToReturn.Both
                        ) -> list[ua.MonitoredItemCreateResult]:
    return await client.uaclient.create_monitored_items(ua.CreateMonitoredItemsParameters(
        SubscriptionId=sid, TimestampsToReturn=timestamps, ItemsToCreate=requests))


async def _publish(client: Client, acks: list[tuple[int, int]] | None = None) -> ua.PublishResult:
    request = ua.PublishRequest()
    request.Parameters.SubscriptionAcknowledgements = [
        ua.SubscriptionAcknowledgement(SubscriptionId=s, SequenceNumber=n) for s, n in acks or []]
    async with asyncio.timeout(5):
        data = await client.uaclient.protocol.send_request(request, timeout=0)
    response = struct_from_binary(ua.PublishResponse, data)
    response.ResponseHeader.ServiceResult.check()
    return response.Parameters


def _changes(result: ua.PublishResult) -> list[ua.MonitoredItemNotification]:
    return [item for n in result.NotificationMessage.NotificationData if isinstance(n, ua.DataChangeNotification)
            for item in n.MonitoredItems]


async def test_max_notifications_split_a_message_which_stays_for_republish_until_acknowledged(server: Any) -> None:
    nodes = [await server.nodes.objects.add_variable(1, f"V{i}", float(i)) for i in range(10)]
    client = await _client(server)
    try:
        sid = await _raw_subscription(client, max_notifications=4, keep_alive=2)
        await _create_items(client, sid, [_request(n, 100 + i, queue=1) for i, n in enumerate(nodes)])
        messages = [await _publish(client)]
        while messages[-1].MoreNotifications:
            messages.append(await _publish(client))
        assert [len(_changes(m)) for m in messages] == [4, 4, 2]
        assert sorted(c.ClientHandle for m in messages for c in _changes(m)) == list(range(100, 110))
        seqs = [m.NotificationMessage.SequenceNumber for m in messages]
        assert seqs == [seqs[0], seqs[0] + 1, seqs[0] + 2]
        assert messages[-1].AvailableSequenceNumbers == seqs  # none acknowledged yet
        # Republish answers with the message as sent, as often as asked, until it is acknowledged.
        for _ in range(2):
            again = await client.uaclient.session.republish(sid, seqs[0])
            assert again == messages[0].NotificationMessage
        quiet = await _publish(client, [(sid, s) for s in seqs])
        assert quiet.Results == [ua.StatusCode()] * 3
        with pytest.raises(ua.UaStatusCodeError) as refused:
            await client.uaclient.session.republish(sid, seqs[0])
        assert refused.value.code == ua.StatusCodes.BadMessageNotAvailable
        # Nothing changed: a keep-alive after 2 intervals, carrying the next number without using it.
        assert quiet.NotificationMessage.NotificationData == []
        assert quiet.NotificationMessage.SequenceNumber == seqs[-1] + 1
        assert quiet.AvailableSequenceNumbers == []
        unknown = await _publish(client, [(sid, seqs[-1] + 50)])
        assert unknown.Results == [ua.StatusCode(ua.StatusCodes.BadSequenceNumberUnknown)]
        _store(server, nodes[3], 33.0)
        change = await _publish(client)
        assert [(c.ClientHandle, c.Value.Value.Value) for c in _changes(change)] == [(103, 33.0)]
        assert change.NotificationMessage.SequenceNumber == seqs[-1] + 1
    finally:
        await client.disconnect()


async def test_sampling_follows_the_scan_period_and_timestamps_are_those_asked_for(server: Any) -> None:
    fast = await server.nodes.objects.add_variable(1, "Scanned", 0.0)
    server.iserver.subscription_service.sampling_of = {fast.nodeid: 100.0}.get
    client = await _client(server)
    try:
        sid = await _raw_subscription(client)
        scanned, slow = await _create_items(client, sid, [_request(fast, 1, sampling=0, queue=1),
                                                          _request(fast, 2, sampling=1000, queue=1)])
        assert scanned.RevisedSamplingInterval == 100.0  # faster than the device is scanned sees nothing new
        assert slow.RevisedSamplingInterval == 1000.0
        first = await _publish(client)
        assert sorted(c.ClientHandle for c in _changes(first)) == [1, 2]
        acked = [(sid, first.NotificationMessage.SequenceNumber)]
        _store(server, fast, 1.0)
        _store(server, fast, 2.0)
        burst = await _publish(client, acked)
        assert [(c.ClientHandle, c.Value.Value.Value) for c in _changes(burst)] == [(1, 2.0)]
        acked = [(sid, burst.NotificationMessage.SequenceNumber)]
        later: list[ua.MonitoredItemNotification] = []
        async with asyncio.timeout(5):
            while not later:  # keep-alives until the slow item's second is over
                later = _changes(await _publish(client, acked))
                acked = []
        assert [(c.ClientHandle, c.Value.Value.Value) for c in later] == [(2, 2.0)]

        sid2 = await _raw_subscription(client)
        await _create_items(client, sid2, [_request(fast, 7)], timestamps=ua.TimestampsToReturn.Source)
        await _create_items(client, sid2, [_request(fast, 8)], timestamps=ua.TimestampsToReturn.Neither)
        stamped = {}
        async with asyncio.timeout(5):
            while len(stamped) < 2:
                for c in _changes(await _publish(client)):
                    stamped[c.ClientHandle] = c.Value
        assert stamped[7].SourceTimestamp is not None and stamped[7].ServerTimestamp is None
        assert stamped[8].SourceTimestamp is None and stamped[8].ServerTimestamp is None
        assert stamped[8].Value.Value == 2.0
    finally:
        await client.disconnect()


async def test_a_transferred_subscription_sends_initial_values_and_an_abandoned_one_expires(server: Any) -> None:
    node = await server.nodes.objects.add_variable(1, "Transferred", 5.0)
    first, second = await _client(server, "op1"), await _client(server, "op1")
    try:
        sid = await _raw_subscription(first, keep_alive=200)  # no keep-alive for 10 s: requests wait
        await _create_items(first, sid, [_request(node, 42)])
        assert [c.Value.Value.Value for c in _changes(await _publish(first))] == [5.0]
        held = asyncio.create_task(_publish(first))  # the old session's request, held by the server
        await asyncio.sleep(0.2)
        results = await second.uaclient.transfer_subscriptions(
            ua.TransferSubscriptionsParameters(SubscriptionIds=[sid], SendInitialValues=True))
        assert [r.StatusCode.value for r in results] == [ua.StatusCodes.Good]
        told = await held
        assert [n.Status.value for n in told.NotificationMessage.NotificationData] == [
            ua.StatusCodes.GoodSubscriptionTransferred]
        initial = await _publish(second)
        assert [(c.ClientHandle, c.Value.Value.Value) for c in _changes(initial)] == [(42, 5.0)]
        # No Publish request for lifetime x interval (3 x 50 ms, the least for a keep-alive count of 1): gone.
        abandoned = await _raw_subscription(second, keep_alive=1, lifetime=3)
        subscriptions = server.iserver.subscription_service.subscriptions
        assert abandoned in subscriptions
        await _until(lambda: abandoned not in subscriptions, within_s=5)
        assert sid in subscriptions
    finally:
        await first.disconnect()
        await second.disconnect()
