"""The transport against a hostile network, with a raw socket client speaking OPC UA TCP.

Frames are built with asyncua's encoders (Hello, headers) or by hand where they must be wrong on
purpose. Each test names what asyncua did before the gateway's transport took over.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from asyncua import Client, ua
from asyncua.client.ua_client import UaClientState
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import struct_from_binary, struct_to_binary, uatcp_to_binary
from asyncua.ua.uaerrors import UaStatusCodeError

from gateway.security.roles import Role
from gateway.security.users import UserStore
from gateway.transport import GatewayServer, TransportConfig
from gateway.transport.login import LoginThrottle
from gateway.transport.peers import PeerLog

ServerFactory = Callable[..., Awaitable[GatewayServer]]


@pytest.fixture
async def start_server(tmp_path: Path, secured_server: ServerFactory) -> ServerFactory:
    UserStore(tmp_path / "data" / "users.yaml").add("op1", "op-secret-1", Role.operator)

    async def start(transport: TransportConfig | None = None) -> GatewayServer:
        return await secured_server(insecure=True, transport=transport)

    return start


# -- a raw client ---------------------------------------------------------------------------------------------


def _hello(url: str, receive: int = 65535, send: int = 65535, max_message: int = 0, max_chunks: int = 0) -> bytes:
    return uatcp_to_binary(ua.MessageType.Hello, ua.Hello(
        ProtocolVersion=0, ReceiveBufferSize=receive, SendBufferSize=send, MaxMessageSize=max_message,
        MaxChunkCount=max_chunks, EndpointUrl=url))


def _header(msg_type: bytes, chunk: bytes, size: int) -> bytes:
    return struct.pack("<3scI", msg_type, chunk, size)


class RawPeer:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, server: GatewayServer, source: str | None = None) -> RawPeer:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.endpoint.port, local_addr=(source, 0) if source else None)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def frame(self, within_s: float = 2.0) -> tuple[bytes, bytes]:
        """The next frame (type, body), within `within_s`: a refusal is answered at once, not by a timeout."""
        async with asyncio.timeout(within_s):
            header = await self.reader.readexactly(8)
            msg_type, _, size = struct.unpack("<3scI", header)
            return msg_type, await self.reader.readexactly(size - 8)

    async def error(self, within_s: float = 2.0) -> int:
        msg_type, body = await self.frame(within_s)
        assert msg_type == b"ERR", f"expected an ErrorMessage, got {msg_type!r}"
        return struct_from_binary(ua.ErrorMessage, Buffer(body)).Error.value

    async def closed(self, within_s: float = 2.0) -> bool:
        async with asyncio.timeout(within_s):
            try:
                return await self.reader.read(1) == b""
            except ConnectionResetError:
                return True

    def close(self) -> None:
        self.writer.close()


def _url(server: GatewayServer) -> str:
    return server.endpoint.geturl()


def _no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


# -- framing --------------------------------------------------------------------------------------------------


@pytest.mark.integration
async def test_a_header_announcing_4_gb_is_refused_before_its_body(start_server: ServerFactory,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    server = await start_server()
    # asyncua buffered all that followed such a header (4 connections: 716 MB RSS, 100 % CPU).
    peer = await RawPeer.connect(server)
    await peer.send(_hello(_url(server)))
    assert (await peer.frame())[0] == b"ACK"
    await peer.send(_header(b"MSG", b"F", 0xFFFFFFF0) + b"\0" * 4)
    assert await peer.error() == ua.StatusCodes.BadTcpMessageTooLarge
    assert await peer.closed()
    # Before the Hello, nothing but a Hello is buffered.
    first = await RawPeer.connect(server)
    await first.send(_header(b"MSG", b"F", 0xFFFFFFF0))
    assert await first.error() == ua.StatusCodes.BadTcpMessageTypeInvalid
    big_hello = await RawPeer.connect(server)
    await big_hello.send(_header(b"HEL", b"F", 1 << 30))
    assert await big_hello.error() == ua.StatusCodes.BadTcpMessageTooLarge
    _no_tracebacks(caplog)


@pytest.mark.integration
async def test_a_chunk_larger_than_the_receive_buffer_is_refused(start_server: ServerFactory) -> None:
    server = await start_server()
    peer = await RawPeer.connect(server)
    await peer.send(_hello(_url(server), send=8192))  # the client's send buffer is the server's receive buffer
    assert (await peer.frame())[0] == b"ACK"
    await peer.send(_header(b"MSG", b"F", 8193))
    assert await peer.error() == ua.StatusCodes.BadTcpMessageTooLarge


@pytest.mark.integration
async def test_a_message_larger_than_max_message_size_is_refused(start_server: ServerFactory) -> None:
    server = await start_server(TransportConfig(max_message_size=100_000))
    async with Client(_url(server), timeout=5) as client:
        many = [ua.ReadValueId(NodeId=ua.NodeId("x" * 40, 1), AttributeId=ua.AttributeIds.Value)] * 4000
        with pytest.raises((UaStatusCodeError, ConnectionError)) as refused:
            await client.uaclient.read(ua.ReadParameters(NodesToRead=many))
        if isinstance(refused.value, UaStatusCodeError):
            assert refused.value.code == ua.StatusCodes.BadTcpMessageTooLarge


@pytest.mark.integration
async def test_a_hello_below_the_specification_minimums_is_answered_and_closed(
        start_server: ServerFactory, caplog: pytest.LogCaptureFixture) -> None:
    server = await start_server()
    url = _url(server)
    cases = [
        # asyncua acknowledged a zero buffer, then raised a traceback on its first answer
        (_hello(url, receive=0), ua.StatusCodes.BadTcpInternalError),
        (_hello(url, send=100), ua.StatusCodes.BadTcpInternalError),
        (_hello(url, max_message=10), ua.StatusCodes.BadTcpInternalError),
        (_hello("opc.tcp://" + "h" * 5000), ua.StatusCodes.BadTcpEndpointUrlInvalid),
        (_header(b"HEL", b"F", 20) + b"\xff" * 12, ua.StatusCodes.BadDecodingError),
        (_header(b"HEL", b"C", 40) + b"\0" * 32, ua.StatusCodes.BadTcpMessageTypeInvalid),
        (_header(b"XYZ", b"F", 16) + b"\0" * 8, ua.StatusCodes.BadTcpMessageTypeInvalid),
    ]
    for frame, status in cases:
        peer = await RawPeer.connect(server)
        await peer.send(frame)
        assert await peer.error() == status, frame[:16]
        assert await peer.closed()
    _no_tracebacks(caplog)


@pytest.mark.integration
async def test_malformed_traffic_is_logged_once_per_address_per_minute(start_server: ServerFactory,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    server = await start_server()
    caplog.clear()
    started = time.monotonic()
    with caplog.at_level(logging.INFO):
        for _ in range(100):  # asyncua wrote a 29-line traceback for each (58 MB of log in 10 s)
            peer = await RawPeer.connect(server)
            await peer.send(_header(b"HEL", b"F", 20) + b"\xff" * 12)
            assert await peer.error() == ua.StatusCodes.BadDecodingError
            peer.close()
    assert time.monotonic() - started < 10
    _no_tracebacks(caplog)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "127.0.0.1" in warnings[0] and "undecodable Hello" in warnings[0], warnings


# -- connections and totals -----------------------------------------------------------------------------------


async def _client_from(server: GatewayServer, source: str) -> Client:
    """asyncua's client, connected from another loopback address."""
    client = Client(_url(server), timeout=5)
    uaclient = client.uaclient
    uaclient._set_state(UaClientState.CONNECTING)
    await asyncio.get_running_loop().create_connection(
        uaclient._make_protocol, "127.0.0.1", server.endpoint.port, local_addr=(source, 0))
    uaclient._set_state(UaClientState.SOCKET_OPEN)
    await client.send_hello()
    await client.open_secure_channel()
    await client.create_session()
    await client.activate_session()
    return client


@pytest.mark.integration
async def test_idle_connections_from_one_address_do_not_lock_out_others(start_server: ServerFactory,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    server = await start_server()
    assert server.transport.max_connections_per_peer == 64
    caplog.clear()
    idle: list[RawPeer] = []
    try:
        # asyncua accepted 1,000 connections in total: these took every slot for 30 s.
        for _ in range(1000):
            idle.append(await RawPeer.connect(server))
        await asyncio.sleep(0.2)
        assert server.context is not None and server.context.connections.count("127.0.0.1") == 64
        refused = idle[-1]
        assert await refused.error() == ua.StatusCodes.BadTcpServerTooBusy
        started = time.monotonic()
        other = await _client_from(server, "127.0.0.2")
        try:
            assert await other.nodes.server_state.read_value() == ua.ServerState.Running
        finally:
            await other.close_session()
            other.disconnect_socket()
        assert time.monotonic() - started < 2
        refusals = [r for r in caplog.records if "refused a connection" in r.getMessage()]
        assert len(refusals) == 1, "936 refusals, one line"
    finally:
        for peer in idle:
            peer.close()


@pytest.mark.integration
async def test_connections_without_an_activated_session_are_closed(start_server: ServerFactory) -> None:
    server = await start_server(TransportConfig(max_pending_activation_s=1.0))
    idle = await RawPeer.connect(server)
    unactivated = Client(_url(server), timeout=5)
    await unactivated.connect_socket()
    await unactivated.send_hello()
    await unactivated.open_secure_channel()
    await unactivated.create_session()
    assert len(server.iserver._external_sessions) == 1
    async with Client(_url(server), timeout=5) as active:
        assert await idle.closed(within_s=3)
        async with asyncio.timeout(3):
            while len(server.iserver._external_sessions) != 1:  # noqa: ASYNC110 - the server closes it
                await asyncio.sleep(0.05)
        assert await active.nodes.server_state.read_value() == ua.ServerState.Running
    unactivated.disconnect_socket()


@pytest.mark.integration
async def test_sessions_subscriptions_and_monitored_items_are_limited_in_total(start_server: ServerFactory) -> None:
    server = await start_server(TransportConfig(max_sessions=2, max_subscriptions=2, max_monitored_items=3))
    async with Client(_url(server), timeout=5) as first, Client(_url(server), timeout=5):
        third = Client(_url(server), timeout=5)
        with pytest.raises(UaStatusCodeError) as refused:
            await third.connect()
        assert refused.value.code == ua.StatusCodes.BadTooManySessions
        sub = await first.create_subscription(100, None)
        nodes = [first.get_node(ua.ObjectIds.Server_ServerStatus_CurrentTime),
                 first.get_node(ua.ObjectIds.Server_ServerStatus_State),
                 first.get_node(ua.ObjectIds.Server_ServerStatus_StartTime)]
        await sub.subscribe_data_change(nodes)
        with pytest.raises(UaStatusCodeError) as too_many:
            await sub.subscribe_data_change(first.get_node(ua.ObjectIds.Server_ServiceLevel))
        assert too_many.value.code == ua.StatusCodes.BadTooManyMonitoredItems
        await first.create_subscription(100, None)
        with pytest.raises(UaStatusCodeError) as too_many_subscriptions:
            await first.create_subscription(100, None)
        assert too_many_subscriptions.value.code == ua.StatusCodes.BadTooManySubscriptions
        assert server.counters.rejected_sessions == 1


# -- operation limits -----------------------------------------------------------------------------------------


def _node(i: int) -> ua.NodeId:
    return ua.NodeId(ua.ObjectIds.Server_ServerStatus_State) if i % 2 else ua.NodeId(ua.ObjectIds.Server)


def _requests(n: int, subscription_id: int) -> dict[str, object]:
    """One request per OperationLimit, each carrying n operations."""
    nodes = [_node(i) for i in range(n)]
    read_ids = [ua.ReadValueId(NodeId=nid, AttributeId=ua.AttributeIds.Value) for nid in nodes]
    item = ua.MonitoredItemCreateRequest(ItemToMonitor=read_ids[1], MonitoringMode=ua.MonitoringMode.Reporting,
                                         RequestedParameters=ua.MonitoringParameters(QueueSize=1))
    history_data = ua.HistoryReadParameters(HistoryReadDetails=ua.ReadRawModifiedDetails(NumValuesPerNode=1),
                                            NodesToRead=[ua.HistoryReadValueId(NodeId=nid) for nid in nodes])
    history_events = ua.HistoryReadParameters(HistoryReadDetails=ua.ReadEventDetails(NumValuesPerNode=1),
                                              NodesToRead=[ua.HistoryReadValueId(NodeId=nid) for nid in nodes])

    def request(cls: type, params: object) -> object:
        req = cls()
        req.Parameters = params
        return req

    return {
        "MaxNodesPerRead": request(ua.ReadRequest, ua.ReadParameters(NodesToRead=read_ids)),
        "MaxNodesPerWrite": request(ua.WriteRequest, ua.WriteParameters(NodesToWrite=[
            ua.WriteValue(NodeId=nid, AttributeId=ua.AttributeIds.Value, Value=ua.DataValue(ua.Variant(1)))
            for nid in nodes])),
        "MaxNodesPerBrowse": request(ua.BrowseRequest, ua.BrowseParameters(NodesToBrowse=[
            ua.BrowseDescription(NodeId=nid) for nid in nodes])),
        "MaxNodesPerTranslateBrowsePathsToNodeIds": request(
            ua.TranslateBrowsePathsToNodeIdsRequest,
            ua.TranslateBrowsePathsToNodeIdsParameters(BrowsePaths=[ua.BrowsePath(StartingNode=nid) for nid in nodes])),
        "MaxNodesPerRegisterNodes": request(ua.RegisterNodesRequest, ua.RegisterNodesParameters(NodesToRegister=nodes)),
        "MaxNodesPerMethodCall": request(ua.CallRequest, ua.CallParameters(MethodsToCall=[
            ua.CallMethodRequest(ObjectId=ua.NodeId(ua.ObjectIds.Server),
                                 MethodId=ua.NodeId(ua.ObjectIds.Server_GetMonitoredItems)) for _ in nodes])),
        "MaxNodesPerHistoryReadData": request(ua.HistoryReadRequest, history_data),
        "MaxNodesPerHistoryReadEvents": request(ua.HistoryReadRequest, history_events),
        "MaxNodesPerNodeManagement": request(ua.DeleteNodesRequest, ua.DeleteNodesParameters(NodesToDelete=[
            ua.DeleteNodesItem(NodeId=ua.NodeId(f"none{i}", 1)) for i in range(n)])),
        "MaxMonitoredItemsPerCall": request(ua.CreateMonitoredItemsRequest, ua.CreateMonitoredItemsParameters(
            SubscriptionId=subscription_id, ItemsToCreate=[item] * n)),
        "MaxMonitoredItemsPerCall/delete": request(ua.DeleteMonitoredItemsRequest, ua.DeleteMonitoredItemsParameters(
            SubscriptionId=subscription_id, MonitoredItemIds=list(range(1, n + 1)))),
        "MaxMonitoredItemsPerCall/mode": request(ua.SetMonitoringModeRequest, ua.SetMonitoringModeParameters(
            SubscriptionId=subscription_id, MonitoredItemIds=list(range(1, n + 1)))),
        "MaxMonitoredItemsPerCall/modify": request(ua.ModifyMonitoredItemsRequest, ua.ModifyMonitoredItemsParameters(
            SubscriptionId=subscription_id, ItemsToModify=[ua.MonitoredItemModifyRequest(MonitoredItemId=1)] * n)),
    }


async def _status(client: Client, request: object) -> int:
    try:
        await client.uaclient.protocol.send_request(request)
    except UaStatusCodeError as err:
        return err.code
    return ua.StatusCodes.Good


@pytest.mark.integration
async def test_every_advertised_operation_limit_is_enforced(start_server: ServerFactory) -> None:
    limits = {name: 4 for name in TransportConfig().operation_limits}
    server = await start_server(TransportConfig(operation_limits=limits))
    async with Client(_url(server), timeout=5) as client:
        for name, value in limits.items():
            node = client.get_node(getattr(ua.ObjectIds, f"Server_ServerCapabilities_OperationLimits_{name}"))
            assert await node.read_value() == value, name
        sub = await client.create_subscription(100, None)
        at_limit = _requests(4, sub.subscription_id)
        for name, request in _requests(5, sub.subscription_id).items():
            assert await _status(client, request) == ua.StatusCodes.BadTooManyOperations, name
            assert await _status(client, at_limit[name]) != ua.StatusCodes.BadTooManyOperations, name


@pytest.mark.integration
async def test_a_huge_read_is_refused_without_blocking_the_server(start_server: ServerFactory) -> None:
    server = await start_server()
    async with Client(_url(server), timeout=10) as client:
        node = ua.ReadValueId(NodeId=ua.NodeId(ua.ObjectIds.Server_ServerStatus_State),
                              AttributeId=ua.AttributeIds.Value)
        request = ua.ReadRequest()
        request.Parameters = ua.ReadParameters(NodesToRead=[node] * 200_000)
        started = time.monotonic()
        struct_to_binary(request)  # what the client spends encoding it, in this same process
        encoding_s = time.monotonic() - started
        started = time.monotonic()
        # asyncua served it: a Read of 1,000,000 nodes blocked the event loop 21 s
        assert await _status(client, request) == ua.StatusCodes.BadTooManyOperations
        assert time.monotonic() - started - encoding_s < 0.5, "the server decoded or served the request"


# -- ServerDiagnosticsSummary ---------------------------------------------------------------------------------


async def _summary(client: Client) -> ua.ServerDiagnosticsSummaryDataType:
    node = client.get_node(ua.ObjectIds.Server_ServerDiagnostics_ServerDiagnosticsSummary)
    return await node.read_value()


@pytest.mark.integration
async def test_server_diagnostics_summary_counts_sessions_and_subscriptions(start_server: ServerFactory) -> None:
    server = await start_server()

    async def until(check: Callable[[ua.ServerDiagnosticsSummaryDataType], bool]) -> None:
        async with asyncio.timeout(3):
            while not check(await _summary(observer)):  # noqa: ASYNC110 - polls the server, bounded
                await asyncio.sleep(0.05)

    async with Client(_url(server), timeout=5) as observer:
        assert await observer.get_node(ua.ObjectIds.Server_ServerDiagnostics_EnabledFlag).read_value() is True
        await until(lambda s: s.CurrentSessionCount == 1 and s.CumulatedSessionCount == 1)
        other = Client(_url(server), timeout=5)
        other.set_user("op1")
        other.set_password("wrong-password")
        with pytest.raises(UaStatusCodeError):
            await other.connect()
        await until(lambda s: s.RejectedSessionCount == 1 and s.SecurityRejectedSessionCount == 1
                    and s.CumulatedSessionCount == 2)
        async with Client(_url(server), timeout=5) as second:
            await until(lambda s: s.CurrentSessionCount == 2 and s.CumulatedSessionCount == 3)
            sub = await second.create_subscription(200, None)
            await until(lambda s: s.CurrentSubscriptionCount == 1 and s.CumulatedSubscriptionCount == 1
                        and s.PublishingIntervalCount == 1)
            await sub.delete()
            await until(lambda s: s.CurrentSubscriptionCount == 0 and s.CumulatedSubscriptionCount == 1)
        await until(lambda s: s.CurrentSessionCount == 1)
        assert (await observer.get_node(
            ua.ObjectIds.Server_ServerDiagnostics_ServerDiagnosticsSummary_CurrentSessionCount).read_value()) == 1


# -- the rate limits on their own clock -----------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_peer_log_writes_one_line_per_address_and_kind_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    log = PeerLog(logging.getLogger("test.peerlog"), interval_s=60, clock=clock)
    with caplog.at_level(logging.WARNING, logger="test.peerlog"):
        written = [log.warning("10.0.0.1", "framing", "bad frame from %s", "10.0.0.1") for _ in range(50)]
        assert log.warning("10.0.0.2", "framing", "bad frame from %s", "10.0.0.2")  # another address
        assert log.warning("10.0.0.1", "connections", "refused %s", "10.0.0.1")  # another kind
        clock.now += 60
        assert log.warning("10.0.0.1", "framing", "bad frame from %s", "10.0.0.1")
    assert written.count(True) == 1
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["bad frame from 10.0.0.1", "bad frame from 10.0.0.2", "refused 10.0.0.1",
                     "bad frame from 10.0.0.1 (49 more like it from 10.0.0.1 not logged)"]


def test_login_throttle_blocks_an_address_for_a_while() -> None:
    clock = _Clock()
    throttle = LoginThrottle(allowed=3, window_s=30, block_s=30, clock=clock)
    assert [throttle.failed("10.0.0.1")[0] for _ in range(3)] == [False, False, False]
    clock.now += 31  # failures older than the window are forgotten
    assert [throttle.failed("10.0.0.1")[0] for _ in range(4)] == [False, False, False, True]
    assert throttle.blocked("10.0.0.1") and throttle.blocked("10.0.0.1")
    assert not throttle.blocked("10.0.0.2")
    clock.now += 30
    assert not throttle.blocked("10.0.0.1")
    assert [throttle.failed("10.0.0.1") for _ in range(4)][-1] == (True, 2)  # 2 refused during the last block
