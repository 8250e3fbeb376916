"""HistoryRead through a real asyncua client against a plain asyncua server with the history service."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from asyncua import Client, Server, ua

from gateway.history.service import install_history
from gateway.history.store import HistoryStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)
pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# One server for the module: starting and stopping an asyncua server costs about a second each.
@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory):
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{_free_port()}")
    ns = await server.register_namespace("urn:test:history")
    hist = await server.nodes.objects.add_variable(ua.NodeId("Hist", ns), "Hist", 0.0)
    await hist.write_attribute(ua.AttributeIds.Historizing, ua.DataValue(ua.Variant(True, ua.VariantType.Boolean)))
    await hist.set_attr_bit(ua.AttributeIds.AccessLevel, ua.AccessLevel.HistoryRead)
    await server.nodes.objects.add_variable(ua.NodeId("Plain", ns), "Plain", 0.0)
    await server.nodes.objects.add_variable(ua.NodeId("ViaAsyncua", ns), "ViaAsyncua", 0.0)
    store = HistoryStore(tmp_path_factory.mktemp("hist") / "history" / "h.sqlite3", retention=None)
    await store.start()
    manager = install_history(server, store)
    for i in range(30):
        store.append(hist.nodeid, ua.DataValue(ua.Variant(float(i), ua.VariantType.Double),
                                               SourceTimestamp=T0 + timedelta(seconds=i),
                                               ServerTimestamp=T0 + timedelta(seconds=i, milliseconds=1)))
    await store.flush()
    await server.start()
    server.history_manager_under_test = manager  # type: ignore[attr-defined]
    yield server, ns, store
    await server.stop()
    await store.stop()


def _params(node: ua.NodeId, details: object, cp: bytes | None = None, release: bool = False,
            timestamps: ua.TimestampsToReturn = ua.TimestampsToReturn.Both) -> ua.HistoryReadParameters:
    params = ua.HistoryReadParameters()
    params.HistoryReadDetails = details
    params.TimestampsToReturn = timestamps
    params.ReleaseContinuationPoints = release
    params.NodesToRead = [ua.HistoryReadValueId(NodeId=node, ContinuationPoint=cp)]
    return params


async def _history_read(client: Client, node: ua.NodeId, details: object, cp: bytes | None = None,
                        release: bool = False,
                        timestamps: ua.TimestampsToReturn = ua.TimestampsToReturn.Both) -> ua.HistoryReadResult:
    return (await client.uaclient.history_read(_params(node, details, cp, release, timestamps)))[0]


def _raw(start: datetime | None, end: datetime | None, n: int, bounds: bool = False) -> ua.ReadRawModifiedDetails:
    return ua.ReadRawModifiedDetails(IsReadModified=False, StartTime=start or ua.get_win_epoch(),
                                     EndTime=end or ua.get_win_epoch(), NumValuesPerNode=n, ReturnBounds=bounds)


def _values(result: ua.HistoryReadResult) -> list[object]:
    return [v.Value.Value for v in result.HistoryData.DataValues]


async def test_raw_reads_page_and_refuse_what_they_cannot_do(served) -> None:
    server, ns, _ = served
    hist = ua.NodeId("Hist", ns)
    end = T0 + timedelta(minutes=1)
    async with Client(server.endpoint.geturl()) as client:
        # asyncua's own helper follows continuation points and asks for bounds: none after the last value.
        values = await client.get_node(hist).read_raw_history(T0, end)
        assert [v.Value.Value for v in values[:-1]] == [float(i) for i in range(30)]
        assert values[-1].StatusCode.value == ua.StatusCodes.BadBoundNotFound and values[-1].SourceTimestamp == end
        assert values[0].ServerTimestamp == T0 + timedelta(milliseconds=1)

        first = await _history_read(client, hist, _raw(T0, end, 12))
        assert first.StatusCode.value == ua.StatusCodes.GoodMoreData and first.ContinuationPoint
        assert _values(first) == [float(i) for i in range(12)]
        second = await _history_read(client, hist, _raw(T0, end, 12), first.ContinuationPoint)
        assert _values(second) == [float(i) for i in range(12, 24)]
        third = await _history_read(client, hist, _raw(T0, end, 12), second.ContinuationPoint)
        assert _values(third) == [float(i) for i in range(24, 30)] and not third.ContinuationPoint
        released = await _history_read(client, hist, _raw(T0, end, 12), second.ContinuationPoint, release=True)
        assert released.StatusCode.is_good() and not released.ContinuationPoint

        reverse = await _history_read(client, hist, _raw(T0 + timedelta(seconds=5), T0, 0))
        assert _values(reverse) == [5.0, 4.0, 3.0, 2.0, 1.0]
        latest = await _history_read(client, hist, _raw(None, end, 3))
        assert _values(latest) == [29.0, 28.0, 27.0]
        source_only = await _history_read(client, hist, _raw(T0, end, 2), timestamps=ua.TimestampsToReturn.Source)
        assert all(v.SourceTimestamp and v.ServerTimestamp is None for v in source_only.HistoryData.DataValues)
        server_only = await _history_read(client, hist, _raw(T0, end, 2), timestamps=ua.TimestampsToReturn.Server)
        assert all(v.ServerTimestamp and v.SourceTimestamp is None for v in server_only.HistoryData.DataValues)
        empty = await _history_read(client, hist, _raw(T0 + timedelta(days=1), T0 + timedelta(days=2), 0))
        assert empty.StatusCode.value == ua.StatusCodes.GoodNoData

        bad_cp = await _history_read(client, hist, _raw(T0, end, 12), b"not-a-point")
        assert bad_cp.StatusCode.value == ua.StatusCodes.BadContinuationPointInvalid
        plain = await _history_read(client, ua.NodeId("Plain", ns), _raw(T0, end, 0))
        assert plain.StatusCode.value == ua.StatusCodes.BadHistoryOperationUnsupported
        unknown = await _history_read(client, ua.NodeId("Nope", ns), _raw(T0, end, 0))
        assert unknown.StatusCode.value == ua.StatusCodes.BadNodeIdUnknown
        no_range = await _history_read(client, hist, _raw(None, None, 5))
        assert no_range.StatusCode.value == ua.StatusCodes.BadHistoryOperationInvalid
        at_time = await _history_read(client, hist, ua.ReadAtTimeDetails(ReqTimes=[T0]))
        assert at_time.StatusCode.value == ua.StatusCodes.BadHistoryOperationUnsupported
        modified = await _history_read(client, hist, ua.ReadRawModifiedDetails(IsReadModified=True, StartTime=T0,
                                                                                EndTime=end))
        assert modified.StatusCode.value == ua.StatusCodes.BadHistoryOperationUnsupported
        events = await _history_read(client, server.nodes.server.nodeid,
                                     ua.ReadEventDetails(StartTime=T0, EndTime=end, Filter=ua.EventFilter()))
        assert events.StatusCode.value == ua.StatusCodes.BadHistoryOperationUnsupported

        with pytest.raises(ua.UaStatusCodeError) as neither:
            await client.uaclient.history_read(_params(hist, _raw(T0, end, 1),
                                                       timestamps=ua.TimestampsToReturn.Neither))
        assert neither.value.code == ua.StatusCodes.BadTimestampsToReturnInvalid
    # HistoryUpdate: asyncua refuses it for anonymous users before it reaches the manager, so ask it directly.
    update = server.history_manager_under_test.update_history(ua.HistoryUpdateParameters(
        HistoryUpdateDetails=[ua.DeleteRawModifiedDetails(NodeId=hist, StartTime=T0, EndTime=end)]))
    assert update[0].StatusCode.value == ua.StatusCodes.BadHistoryOperationUnsupported


async def test_asyncua_historize_api_feeds_the_store(served) -> None:
    """server.historize_node_data_change (asyncua's own API) stores into the gateway store, not a dict."""
    server, ns, store = served
    plain = server.get_node(ua.NodeId("ViaAsyncua", ns))
    await plain.set_attr_bit(ua.AttributeIds.AccessLevel, ua.AccessLevel.HistoryRead)
    await server.historize_node_data_change(plain, period=None)
    before = datetime.now(UTC) - timedelta(seconds=1)
    for v in (1.0, 2.0, 3.0):
        await plain.write_value(v)
        await asyncio.sleep(0.03)  # asyncua's internal subscription publishes every 10 ms
    for _ in range(100):  # bounded: the internal subscription delivers within a few publish cycles
        await store.flush()
        values, _ = await store.read_raw(plain.nodeid, before, datetime.now(UTC) + timedelta(seconds=1), 0)
        if [v.Value.Value for v in values][-1:] == [3.0]:
            break
        await asyncio.sleep(0.02)
    assert [v.Value.Value for v in values][-3:] == [1.0, 2.0, 3.0]
    async with Client(server.endpoint.geturl()) as client:
        got = await client.get_node(plain.nodeid).read_raw_history(before, datetime.now(UTC) + timedelta(seconds=1),
                                                                    return_bounds=False)
        assert [v.Value.Value for v in got][-3:] == [1.0, 2.0, 3.0]
    with pytest.raises(ua.UaStatusCodeError):  # event history is refused, not silently dropped
        await server.historize_node_event(server.nodes.server, period=None)
