"""The Modbus facade in a running gateway, with real masters: pymodbus' client and mbpoll (Debian).

Every field type and order is read back as the SCADA sees it (decoded here with struct, not with the
gateway's codec), setpoints written through the facade reach the simulated device, refusals show as
the exceptions a master understands, the watchdog withdraws setpoints, and the server stays up under
many clients, idle and malformed connections and random frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import struct
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import yaml
from asyncua import Client, ua
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from gateway.nodeset.yaml_build import compile_text
from gateway.server import Gateway

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SITE_YAML = ROOT / "tests" / "fixtures" / "facade_site.yaml"
NS = "urn:opcua-gateway:test:facade"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _site(tmp_path: Path, port: int, **changes: object) -> Path:
    doc = yaml.safe_load(SITE_YAML.read_text())
    doc["facade"]["endpoint"] = f"modbus+tcp://127.0.0.1:{port}/1"
    for key, value in changes.items():
        if value is None:
            doc["facade"].pop(key, None)
        else:
            doc["facade"][key] = value
    out = tmp_path / "facade-site.xml"
    out.write_bytes(compile_text(yaml.safe_dump(doc, sort_keys=False), "facade-site.yaml"))
    return out


async def _until(condition: Callable[[], Awaitable[bool] | bool], within: float) -> None:
    """Wait, bounded, until the condition holds (a plain or an async predicate)."""
    async with asyncio.timeout(within):
        while True:
            result = condition()
            if await result if isinstance(result, Awaitable) else result:
                return
            await asyncio.sleep(0.05)


async def _negate(value: Awaitable[bool]) -> bool:
    return not await value


class Feeder:
    """Keeps the watchdog alive as a SCADA does: a changing value every 200 ms."""

    def __init__(self, client: AsyncModbusTcpClient) -> None:
        self.client = client
        self.value = 0
        self.task: asyncio.Task[None] | None = None

    async def feed(self) -> None:
        self.value = (self.value + 1) & 0xFFFF
        await self.client.write_register(900, self.value, device_id=1)

    async def _run(self) -> None:
        while not self.stopping.is_set():
            await self.feed()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    await self.stopping.wait()

    def start(self) -> None:
        self.stopping = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        # Not a cancel: a request cancelled in flight leaves its answer for the client's next request.
        if self.task is not None:
            self.stopping.set()
            async with asyncio.timeout(5):
                await self.task


@pytest.fixture
async def facade(simulated_gateway, tmp_path: Path) -> AsyncIterator[tuple[Gateway, int]]:
    port = _port()
    gw = await simulated_gateway(_site(tmp_path, port))
    yield gw, port


@pytest.fixture
async def master(facade) -> AsyncIterator[AsyncModbusTcpClient]:
    client = AsyncModbusTcpClient("127.0.0.1", port=facade[1], timeout=3, retries=0)
    assert await client.connect()
    yield client
    client.close()


async def _good_registers(client: AsyncModbusTcpClient, address: int, count: int, fc: int = 3,
                          within: float = 10.0) -> list[int]:
    """Registers once the values behind them are Good (the gateway has polled the device)."""
    read = client.read_holding_registers if fc == 3 else client.read_input_registers
    async with asyncio.timeout(within):
        while True:
            rr = await read(address, count=count, device_id=1)
            if not rr.isError():
                return rr.registers
            await asyncio.sleep(0.1)


def _words(fmt: str, value: object, byte_order: str = "big", word_order: str = "big") -> list[int]:
    data = struct.pack(fmt, value)
    words = [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]
    if word_order == "little":
        words.reverse()
    if byte_order == "little":
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    return words


async def _read(client: AsyncModbusTcpClient, address: int, count: int) -> list[int]:
    rr = await client.read_holding_registers(address, count=count, device_id=1)
    assert not rr.isError(), rr
    return rr.registers


async def test_reads_every_type_and_order(master: AsyncModbusTcpClient) -> None:
    assert await _read(master, 1, 2) == _words(">f", 100.0, "big", "little")  # ExportLimit, CDAB
    assert await _read(master, 10, 2) == _words(">I", 305419896)  # Counter32, ABCD
    assert await _read(master, 12, 4) == _words(">q", -1234567890123, "little", "big")  # Signed64, BADC...
    assert await _read(master, 16, 4) == _words(">Q", 1234567890123, "little", "little")  # Unsigned64, DCBA...
    assert await _read(master, 20, 4) == _words(">d", 3.25, "big", "little")  # Float64, low word first
    assert await _read(master, 24, 1) == [0xFFFB]  # Small: xsd:byte -5, sign-extended
    assert await _read(master, 30, 4) == [0x4757, 0x2D31, 0, 0]  # Tag "GW-1" in 8 bytes
    assert await _read(master, 40, 1) == [0xFFD6]  # Level: int16 -42
    coils = await master.read_coils(0, count=1, device_id=1)
    assert not coils.isError() and coils.bits[0] is False  # Enabled
    soc = (await _good_registers(master, 0, 1, fc=4))[0]
    assert 0 < soc <= 1000  # StateOfCharge x 10 as an unsigned register
    power = await _good_registers(master, 1, 2, fc=4)
    assert -100.0 <= struct.unpack(">f", struct.pack(">2H", *power))[0] <= 100.0
    status = await master.read_input_registers(100, count=1, device_id=1)
    assert status.registers == [0]  # both values Good
    running = await master.read_discrete_inputs(0, count=1, device_id=1)
    assert not running.isError()
    sunspec = await _read(master, 40000, 72)
    assert sunspec[:4] == [0x5375, 0x6E53, 1, 66] and sunspec[70:] == [0xFFFF, 0]
    assert bytes(b for w in sunspec[4:20] for b in w.to_bytes(2, "big")).rstrip(b"\0") == b"opcua-gateway project"
    heartbeat = (await master.read_input_registers(901, count=1, device_id=1)).registers[0]
    await asyncio.sleep(1.3)
    assert (await master.read_input_registers(901, count=1, device_id=1)).registers[0] != heartbeat


async def test_setpoints_written_through_the_facade_reach_the_device(facade, master: AsyncModbusTcpClient) -> None:
    gw, _ = facade
    feeder = Feeder(master)
    await feeder.feed()
    feeder.start()
    try:
        assert not (await master.write_register(0, 425, device_id=1)).isError()  # 42.5 kW at scale 0.1
        device = gw.simulations[0].device("Battery1")
        await _until(lambda: device.get("ActivePowerSetpoint") == pytest.approx(42.5), 5)
        # FC16 of a float with the low word first; FC16 of 64-bit values; FC05 and FC15 on a coil.
        assert not (await master.write_registers(1, _words(">f", 250.0, "big", "little"), device_id=1)).isError()
        assert not (await master.write_registers(12, _words(">q", -7, "little", "big"), device_id=1)).isError()
        assert not (await master.write_registers(30, [0x4F4B, 0, 0, 0], device_id=1)).isError()
        assert not (await master.write_coil(0, True, device_id=1)).isError()
        async with Client(f"opc.tcp://127.0.0.1:{gw.config.endpoint.rsplit(':', 1)[1]}") as ua_client:
            ns = await ua_client.get_namespace_index(NS)
            assert await ua_client.get_node(ua.NodeId("ExportLimit", ns)).read_value() == 250.0
            assert await ua_client.get_node(ua.NodeId("Signed64", ns)).read_value() == -7
            assert await ua_client.get_node(ua.NodeId("Tag", ns)).read_value() == "OK"
            assert await ua_client.get_node(ua.NodeId("Enabled", ns)).read_value() is True
        assert not (await master.write_coils(0, [False], device_id=1)).isError()
        assert (await master.read_coils(0, count=1, device_id=1)).bits[0] is False
    finally:
        await feeder.stop()


async def test_refusals_are_exceptions_and_change_nothing(facade, master: AsyncModbusTcpClient,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.audit")
    feeder = Feeder(master)
    await feeder.feed()
    before = await _read(master, 40, 1)
    out_of_range = await master.write_register(40, 2000, device_id=1)  # Level's EURange is -1000..1000
    assert out_of_range.isError() and out_of_range.exception_code == 0x03
    half = await master.write_register(1, 0x4348, device_id=1)  # one register of the float ExportLimit
    assert half.isError() and half.exception_code == 0x03
    unmapped = await master.read_holding_registers(500, count=1, device_id=1)
    assert unmapped.isError() and unmapped.exception_code == 0x02
    spans_a_gap = await master.read_holding_registers(0, count=10, device_id=1)  # holding/3..9 are unmapped
    assert spans_a_gap.isError() and spans_a_gap.exception_code == 0x02
    read_only = await master.write_register(40000, 1, device_id=1)  # the SunSpec block
    assert read_only.isError() and read_only.exception_code == 0x02
    # A whole FC16 with one bad value writes none of them: a good setpoint and an ExportLimit over its range.
    setpoint_before = await _good_registers(master, 0, 1)
    mixed = await master.write_registers(0, [100, *_words(">f", 9999.0, "big", "little")], device_id=1)
    assert mixed.isError() and mixed.exception_code == 0x03
    assert await _read(master, 0, 1) == setpoint_before and setpoint_before != [100]
    assert await _read(master, 40, 1) == before
    assert "refused write" in caplog.text and "by facade:127.0.0.1" in caplog.text


async def _closed(reader: asyncio.StreamReader) -> bool:
    """The server closed the connection without an answer (a reset, when our request was still unread)."""
    try:
        async with asyncio.timeout(6):
            return await reader.read(10) == b""
    except ConnectionResetError:
        return True


async def _raw(port: int, frame: bytes, expect: int = 9) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(frame)
        async with asyncio.timeout(5):
            return await reader.readexactly(expect)
    finally:
        writer.close()


async def test_a_request_over_the_protocol_limits_answers_0x03(facade) -> None:
    _, port = facade
    too_many = struct.pack(">HHHBBHH", 1, 0, 6, 1, 3, 0, 126)  # FC03 of 126 registers
    assert await _raw(port, too_many) == struct.pack(">HHHBBB", 1, 0, 3, 1, 0x83, 0x03)
    unknown_function = struct.pack(">HHHBB", 2, 0, 2, 1, 0x11)  # Report Server ID: not served
    assert await _raw(port, unknown_function) == struct.pack(">HHHBBB", 2, 0, 3, 1, 0x91, 0x01)
    other_unit = struct.pack(">HHHBBHH", 3, 0, 6, 9, 3, 0, 1)
    assert await _raw(port, other_unit) == struct.pack(">HHHBBB", 3, 0, 3, 9, 0x83, 0x0A)


async def test_writes_are_refused_until_the_site_grants_a_role(simulated_gateway, tmp_path: Path) -> None:
    port = _port()
    await simulated_gateway(_site(tmp_path, port, write_role=None, watchdog=None,
                                  map=[m for m in yaml.safe_load(SITE_YAML.read_text())["facade"]["map"]
                                       if "fallback" not in m]))
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=3, retries=0)
    assert await client.connect()
    try:
        refused = await client.write_register(40, 1, device_id=1)
        assert refused.isError() and refused.exception_code == 0x01
        assert await _read(client, 40, 1) == [0xFFD6]
    finally:
        client.close()


async def test_a_bad_value_answers_0x04_and_sets_its_status_bit(facade, master: AsyncModbusTcpClient) -> None:
    gw, _ = facade
    await _good_registers(master, 0, 3, fc=4)
    for sim in gw.simulations:
        await sim.stop()
    async with asyncio.timeout(15):
        while True:
            rr = await master.read_input_registers(0, count=3, device_id=1)
            if rr.isError():
                break
            await asyncio.sleep(0.1)
    assert rr.exception_code == 0x04
    status = await master.read_input_registers(100, count=1, device_id=1)
    assert status.registers == [0b11]
    # A setpoint for the device that no longer answers: the write path's BadCommunicationError is 0x0B.
    feeder = Feeder(master)
    await feeder.feed()
    lost = await master.write_register(0, 100, device_id=1)
    assert lost.isError() and lost.exception_code == 0x0B


async def test_a_site_sentinel_answers_bad_values(simulated_gateway, tmp_path: Path) -> None:
    port = _port()
    gw = await simulated_gateway(_site(tmp_path, port, bad_value=0))
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=3, retries=0)
    assert await client.connect()
    try:
        await _good_registers(client, 0, 1, fc=4)
        for sim in gw.simulations:
            await sim.stop()
        async def shows_sentinel() -> bool:
            return (await client.read_input_registers(0, count=1, device_id=1)).registers == [0]

        await _until(shows_sentinel, 15)
    finally:
        client.close()


async def test_the_watchdog_withdraws_setpoints_and_shows_its_state(facade, master: AsyncModbusTcpClient,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.audit")
    gw, _ = facade
    feeder = Feeder(master)
    await feeder.feed()
    feeder.start()
    device = gw.simulations[0].device("Battery1")
    endpoint = gw.config.endpoint
    async with Client(endpoint) as ua_client:
        ns_gw = await ua_client.get_namespace_index("urn:opcua-gateway:types")
        ns = await ua_client.get_namespace_index(NS)
        expired = ua_client.get_node(ua.NodeId("FacadeSite.Facade.WatchdogExpired", ns))
        assert (await expired.read_browse_name()).NamespaceIndex == ns_gw
        async def is_expired() -> bool:
            return bool(await expired.read_value())

        await _until(lambda: _negate(is_expired()), 5)
        assert not (await master.write_register(0, 300, device_id=1)).isError()  # 30 kW
        assert not (await master.write_registers(1, _words(">f", 400.0, "big", "little"), device_id=1)).isError()
        await _until(lambda: device.get("ActivePowerSetpoint") == pytest.approx(30.0), 5)
        await feeder.stop()  # the SCADA goes silent
        await _until(is_expired, 8)
        alarm = next(c for c in gw.alarms.conditions.values() if c.cfg.name == "WatchdogAlarm")
        await _until(lambda: alarm.active, 5)
        assert "stopped changing the watchdog" in alarm.message
        await _until(lambda: device.get("ActivePowerSetpoint") == pytest.approx(0.0), 8)
        export_limit = ua_client.get_node(ua.NodeId("ExportLimit", ns))

        async def export_limit_withdrawn() -> bool:
            return await export_limit.read_value() == 100.0

        await _until(export_limit_withdrawn, 8)
        assert "by facade:watchdog" in caplog.text
        # While expired, a guarded setpoint is refused; an unchanged watchdog value is no sign of life.
        refused = await master.write_register(0, 300, device_id=1)
        assert refused.isError() and refused.exception_code == 0x04
        await master.write_register(900, feeder.value, device_id=1)
        assert (await master.write_register(0, 300, device_id=1)).isError()
        await feeder.feed()
        assert not (await master.write_register(0, 300, device_id=1)).isError()
        assert await expired.read_value() is False
        await _until(lambda: not alarm.active, 5)
        assert alarm.retain  # back to normal, still to be acknowledged


async def test_many_clients_limits_idle_timeout_and_allowed_addresses(facade) -> None:
    gw, port = facade
    clients = [AsyncModbusTcpClient("127.0.0.1", port=port, timeout=5, retries=0) for _ in range(16)]
    try:
        assert all(await asyncio.gather(*(c.connect() for c in clients)))
        for _ in range(5):
            answers = await asyncio.gather(*(c.read_holding_registers(10, count=2, device_id=1) for c in clients))
            assert all(a.registers == _words(">I", 305419896) for a in answers)
        # The limit is 20: four more fit, the 21st is closed at once.
        extra = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        async with asyncio.timeout(3):
            assert await reader.read(10) == b""
        writer.close()
        for _, w in extra:
            w.close()
    finally:
        for c in clients:
            c.close()
    # An idle connection is closed after IdleTimeout (2 s).
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    async with asyncio.timeout(6):
        assert await reader.read(10) == b""
    writer.close()
    assert gw.facade is not None and gw.facade.listener.stats.idle_closed >= 1
    # A client from an address not allowed (127.0.0.2 is loopback too, but not in AllowedClients).
    sock = socket.socket()
    sock.bind(("127.0.0.2", 0))
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(struct.pack(">HHHBBHH", 1, 0, 6, 1, 3, 10, 2))
    assert await _closed(reader)
    writer.close()


async def test_a_malformed_or_truncated_frame_closes_only_its_connection(facade, master) -> None:
    _, port = facade
    for frame in (struct.pack(">HHHB", 1, 7, 6, 1) + b"\x03\x00\x00\x00\x01",  # protocol id 7
                  struct.pack(">HHHB", 1, 0, 0, 1),  # length 0
                  struct.pack(">HHHB", 1, 0, 4000, 1) + b"\x03"):  # length over the PDU limit
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(frame)
        assert await _closed(reader)
        writer.close()
    truncated_reader, truncated = await asyncio.open_connection("127.0.0.1", port)
    truncated.write(struct.pack(">HHHB", 1, 0, 6, 1) + b"\x03\x00")  # half a PDU, then silence
    assert (await master.read_holding_registers(10, count=2, device_id=1)).registers == _words(">I", 305419896)
    async with asyncio.timeout(6):  # the idle timeout ends it
        assert await truncated_reader.read(10) == b""
    truncated.close()


_FRAME = st.one_of(
    st.binary(min_size=1, max_size=300),
    st.builds(lambda tid, fc, body: struct.pack(">HHHB", tid, 0, len(body) + 2, 1) + bytes([fc]) + body,
              st.integers(0, 0xFFFF), st.sampled_from([1, 2, 3, 4, 5, 6, 15, 16, 23, 43, 0x80, 0xFF]),
              st.binary(max_size=260)),
    st.builds(lambda fc, addr, count, tail: struct.pack(">HHHBBHH", 9, 0, 6 + len(tail), 1, fc, addr, count) + tail,
              st.sampled_from([1, 2, 3, 4, 5, 6, 15, 16]), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF),
              st.binary(max_size=8)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frame=_FRAME)
async def test_fuzzed_frames_never_take_the_server_down(facade, frame: bytes) -> None:
    gw, port = facade
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(frame)
        await writer.drain()
        async with asyncio.timeout(0.3):
            await reader.read(300)
    except (TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()
    # Whatever that frame did, another client is served at once.
    probe = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=3, retries=0)
    assert await probe.connect()
    try:
        rr = await probe.read_holding_registers(10, count=2, device_id=1)
        assert rr.registers == _words(">I", 305419896)
    except ModbusIOException:
        pytest.fail("the facade stopped answering after a fuzzed frame")
    finally:
        probe.close()
    assert gw.facade is not None and gw.facade.listener._server is not None


def _mbpoll() -> str:
    path = shutil.which("mbpoll")
    if path is None:
        pytest.skip("mbpoll is not installed (tests/run.sh installs it: apt-get install mbpoll)")
    return path


async def _mbpoll_run(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(_mbpoll(), *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    async with asyncio.timeout(20):
        out = (await proc.communicate())[0].decode()
    return proc.returncode or 0, out


async def test_mbpoll_reads_floats_and_sees_a_range_refusal_as_0x03(facade) -> None:
    _, port = facade
    # -0: zero-based offsets as the map prints them; -1: one poll; -B: big-endian words (ABCD).
    code, out = await _mbpoll_run("-m", "tcp", "-p", str(port), "-a", "1", "-0", "-1", "-t", "4:int", "-B",
                                  "-r", "10", "-c", "1", "127.0.0.1")
    assert code == 0 and "305419896" in out, out
    code, out = await _mbpoll_run("-m", "tcp", "-p", str(port), "-a", "1", "-0", "-1", "-t", "4:float",
                                  "-r", "20", "-c", "1", "127.0.0.1")
    assert code == 0, out
    code, out = await _mbpoll_run("-m", "tcp", "-p", str(port), "-a", "1", "-0", "-t", "4", "-r", "40",
                                  "127.0.0.1", "2000")
    assert code != 0 and "Illegal data value" in out, out
    code, out = await _mbpoll_run("-m", "tcp", "-p", str(port), "-a", "1", "-0", "-t", "4", "-r", "40",
                                  "127.0.0.1", "65036")
    assert code == 0, out
    code, out = await _mbpoll_run("-m", "tcp", "-p", str(port), "-a", "1", "-0", "-1", "-t", "4", "-r", "40",
                                  "-c", "1", "127.0.0.1")
    assert code == 0 and "(-500)" in out, out


async def test_read_device_identification_answers_the_gateways_identity(facade, master: AsyncModbusTcpClient) -> None:
    from gateway import product

    _, port = facade
    version = product.version().encode()
    basic = await master.read_device_information(read_code=1, object_id=0, device_id=1)
    assert not basic.isError(), basic
    assert basic.information == {0: b"opcua-gateway project", 1: b"opcua-gateway", 2: version}
    assert basic.conformity == 0x82 and basic.more_follows == 0
    regular = await master.read_device_information(read_code=2, object_id=0, device_id=1)
    assert regular.information == {0: b"opcua-gateway project", 1: b"opcua-gateway", 2: version,
                                   3: b"urn:opcua-gateway", 4: b"OPC UA Gateway", 5: b"Modbus TCP facade",
                                   6: b"FacadeSite"}
    one = await master.read_device_information(read_code=4, object_id=6, device_id=1)
    assert one.information == {6: b"FacadeSite"}
    # A stream from an object it does not reach starts at the first one; an unknown object alone is 0x02.
    restarted = await master.read_device_information(read_code=1, object_id=5, device_id=1)
    assert sorted(restarted.information) == [0, 1, 2]
    unknown = await master.read_device_information(read_code=4, object_id=0x80, device_id=1)
    assert unknown.isError() and unknown.exception_code == 0x02
    bad_code = struct.pack(">HHHBBBBB", 4, 0, 5, 1, 0x2B, 0x0E, 7, 0)
    assert await _raw(port, bad_code) == struct.pack(">HHHBBB", 4, 0, 3, 1, 0xAB, 0x03)
    canopen = struct.pack(">HHHBBBBB", 5, 0, 5, 1, 0x2B, 0x0D, 1, 0)
    assert await _raw(port, canopen) == struct.pack(">HHHBBB", 5, 0, 3, 1, 0xAB, 0x01)
