"""HistoryRead through a real asyncua client against the gateway's history service."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asyncua import Client, Server, ua

from gateway.history.service import install_history
from gateway.history.store import HistoryStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def served(tmp_path: Path, free_port: int):
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{free_port}")
    ns = await server.register_namespace("urn:test:history")
    hist = await server.nodes.objects.add_variable(ua.NodeId("Hist", ns), "Hist", 0.0)
    await hist.write_attribute(ua.AttributeIds.Historizing, ua.DataValue(ua.Variant(True, ua.VariantType.Boolean)))
    await hist.set_attr_bit(ua.AttributeIds.AccessLevel, ua.AccessLevel.HistoryRead)
    await server.nodes.objects.add_variable(ua.NodeId("Plain", ns), "Plain", 0.0)
    store = HistoryStore(tmp_path / "h.sqlite3", retention=None)
    await store.start()
    install_history(server, store)
    for i in range(30):
        store.append(hist.nodeid, ua.DataValue(ua.Variant(float(i), ua.VariantType.Double),
                                               SourceTimestamp=T0 + timedelta(seconds=i)))
    await store.flush()
    await server.start()
    yield server, ns
    await server.stop()
    await store.stop()


async def _history_read(client: Client, node: ua.NodeId, details: object, cp: bytes | None = None,
                        release: bool = False) -> ua.HistoryReadResult:
    params = ua.HistoryReadParameters()
    params.HistoryReadDetails = details
    params.TimestampsToReturn = ua.TimestampsToReturn.Both
    params.ReleaseContinuationPoints = release
    params.NodesToRead = [ua.HistoryReadValueId(NodeId=node, ContinuationPoint=cp)]
    return (await client.uaclient.history_read(params))[0]


def _raw(start: datetime | None, end: datetime | None, n: int) -> ua.ReadRawModifiedDetails:
    return ua.ReadRawModifiedDetails(IsReadModified=False, StartTime=start or ua.get_win_epoch(),
                                     EndTime=end or ua.get_win_epoch(), NumValuesPerNode=n, ReturnBounds=False)


@pytest.mark.integration
async def test_raw_reads_page_and_refuse_what_they_cannot_do(served) -> None:
    server, ns = served
    hist = ua.NodeId("Hist", ns)
    async with Client(server.endpoint.geturl()) as client:
        values = await client.get_node(hist).read_raw_history(T0, T0 + timedelta(minutes=1))
        assert [v.Value.Value for v in values] == [float(i) for i in range(30)]

        first = await _history_read(client, hist, _raw(T0, T0 + timedelta(minutes=1), 12))
        assert first.StatusCode.value == ua.StatusCodes.GoodMoreData and first.ContinuationPoint
        assert [v.Value.Value for v in first.HistoryData.DataValues] == [float(i) for i in range(12)]
        second = await _history_read(client, hist, _raw(T0, T0 + timedelta(minutes=1), 12), first.ContinuationPoint)
        assert [v.Value.Value for v in second.HistoryData.DataValues] == [float(i) for i in range(12, 24)]
        released = await _history_read(client, hist, _raw(T0, T0 + timedelta(minutes=1), 12),
                                       second.ContinuationPoint, release=True)
        assert released.StatusCode.is_good() and not released.ContinuationPoint

        latest = await _history_read(client, hist, _raw(None, T0 + timedelta(minutes=1), 3))
        assert [v.Value.Value for v in latest.HistoryData.DataValues] == [29.0, 28.0, 27.0]
        empty = await _history_read(client, hist, _raw(T0 + timedelta(days=1), T0 + timedelta(days=2), 0))
        assert empty.StatusCode.value == ua.StatusCodes.GoodNoData

        bad_cp = await _history_read(client, hist, _raw(T0, T0 + timedelta(minutes=1), 12), b"not-a-point")
        assert bad_cp.StatusCode.value == ua.StatusCodes.BadContinuationPointInvalid
        plain = await _history_read(client, ua.NodeId("Plain", ns), _raw(T0, T0 + timedelta(minutes=1), 0))
        assert plain.StatusCode.value == ua.StatusCodes.BadHistoryOperationUnsupported
        unknown = await _history_read(client, ua.NodeId("Nope", ns), _raw(T0, T0 + timedelta(minutes=1), 0))
        assert unknown.StatusCode.value == ua.StatusCodes.BadNodeIdUnknown
        no_range = await _history_read(client, hist, _raw(None, None, 5))
        assert no_range.StatusCode.value == ua.StatusCodes.BadHistoryOperationInvalid
        at_time = await _history_read(client, hist, ua.ReadAtTimeDetails(ReqTimes=[T0]))
        assert at_time.StatusCode.value == ua.StatusCodes.BadHistoryOperationUnsupported
