"""The Modbus driver against real pymodbus servers on loopback: reads, writes, faults, shared links."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import pytest
from asyncua import ua

from gateway.drivers.base import Binding, DriverError, Point
from gateway.drivers.modbus.driver import ModbusDriver
from gateway.drivers.modbus.simulators.server import SimulatorServer, UnitMemory

pytestmark = pytest.mark.integration
S = ua.StatusCodes


def point(key: int, address: str, field_type: str, *, writable: bool = False, scan: str = "MediumSpeed",
          **binding: object) -> Point:
    return Point(key, f"P{key}", Binding(address=address, scan_class=scan, options=binding), field_type, writable)  # type: ignore[arg-type]


def driver(url: str, *points: Point) -> ModbusDriver:
    by_class: dict[str, list[Point]] = {}
    for p in points:
        by_class.setdefault(p.binding.scan_class, []).append(p)
    return ModbusDriver(urlsplit(url), by_class)


@pytest.fixture
async def unit1(free_port: int) -> AsyncIterator[tuple[SimulatorServer, UnitMemory]]:
    mem = UnitMemory(1)
    mem.define("holding", 0, 40)
    mem.define("input", 100, 20)
    mem.define("coil", 0, 8)
    mem.define("discrete", 0, 8)
    server = SimulatorServer([mem], port=free_port)
    await server.start()
    yield server, mem
    await server.stop()


async def started(drv: ModbusDriver) -> ModbusDriver:
    await drv.start()
    return drv


async def test_every_type_order_and_scaling_in_the_fewest_requests(unit1) -> None:
    server, mem = unit1
    mem.set("holding", 0, [0xFFFE])  # int16 -2
    mem.set("holding", 1, struct.unpack(">2H", struct.pack(">f", 12.5)))  # float32 ABCD
    cdab = struct.unpack(">2H", struct.pack(">i", -123456))
    mem.set("holding", 3, [cdab[1], cdab[0]])  # int32, low word first
    mem.set("holding", 5, struct.unpack(">4H", struct.pack(">d", -0.25)))
    mem.set("holding", 9, [0b1010])
    mem.set("holding", 10, list(struct.unpack(">3H", b"AB12\x00\x00")))
    mem.set("holding", 13, [0x3412])  # uint16 0x1234 with bytes swapped (little byte order)
    mem.set("input", 100, [2500])
    mem.set("coil", 3, [1])
    mem.set("discrete", 2, [1])
    drv = await started(driver(
        f"modbus+tcp://127.0.0.1:{server.port}/1",
        point(0, "holding/0", "xsd:short"),
        point(1, "40002", "xsd:float"),
        point(2, "holding/3", "xsd:int", word_order="little"),
        point(3, "holding/5", "xsd:double"),
        point(4, "holding/9", "xsd:boolean", bit=1),
        point(5, "holding/9", "xsd:boolean", bit=2),
        point(6, "holding/10", "xsd:string", length=6),
        point(7, "holding/13", "xsd:unsignedShort", byte_order="little"),
        point(8, "30101", "xsd:unsignedShort", scale=0.1),
        point(9, "coil/3", "xsd:boolean"),
        point(10, "discrete/2", "xsd:boolean"),
    ))
    try:
        got = await drv.read("MediumSpeed")
        values = {k: r.value for k, r in got.items()}
        assert values == {0: -2, 1: 12.5, 2: -123456, 3: -0.25, 4: True, 5: False, 6: "AB12", 7: 0x1234, 8: 2500,
                          9: True, 10: True}
        assert all(r.status == S.Good and r.source_time is not None for r in got.values())
        # Scaling is the gateway's job (Tag.to_engineering); the driver hands over raw field values.
        assert drv.requests_per_scan("MediumSpeed") == 4  # coils, discrete inputs, input registers, holding registers
        assert drv.requests == 4 and mem.reads == 4
    finally:
        await drv.stop()


async def test_writes_choose_the_function_and_read_back(unit1) -> None:
    server, mem = unit1
    seen: list[tuple[str, int, list[int]]] = []
    mem.on_write.append(lambda unit, table, offset, words: seen.append((table, offset, words)))
    url = f"modbus+tcp://127.0.0.1:{server.port}/1"
    pts = [point(0, "holding/20", "xsd:float", writable=True), point(1, "holding/22", "xsd:short", writable=True),
           point(2, "holding/23", "xsd:boolean", writable=True, bit=3),
           point(3, "coil/5", "xsd:boolean", writable=True)]
    drv = await started(driver(url, *pts))
    try:
        assert await drv.write(pts[0], 1.5) == 1.5
        assert seen[-1] == ("holding", 20, list(struct.unpack(">2H", struct.pack(">f", 1.5))))  # one FC16 request
        assert await drv.write(pts[1], -7) == -7
        assert seen[-1] == ("holding", 22, [0xFFF9])
        mem.set("holding", 23, [0b0001])
        assert await drv.write(pts[2], True) is True
        assert mem.get("holding", 23, 1) == [0b1001]  # read-modify-write kept bit 0
        assert await drv.write(pts[3], True) is True and mem.get("coil", 5, 1) == [1]
        with pytest.raises(DriverError) as err:
            await drv.write(pts[1], 40000)  # does not fit an int16: refused before anything is sent
        assert err.value.status == S.BadOutOfRange
        assert len(seen) == 4
        assert mem.write_functions == [16, 6, 6, 5]  # float: FC16; int16 and bit: FC06
    finally:
        await drv.stop()


async def test_write_function_16_option_and_readback_shows_the_device_value(unit1) -> None:
    server, mem = unit1
    pt = point(0, "holding/30", "xsd:unsignedShort", writable=True)
    drv = await started(driver(f"modbus+tcp://127.0.0.1:{server.port}/1?write_function=16", pt))
    # A device that clamps what it is given: the node must show what the device holds, not what was asked.
    mem.on_write.append(lambda unit, table, offset, words: unit.set(table, offset, [min(words[0], 1000)]))
    try:
        assert await drv.write(pt, 5000) == 1000
        assert mem.write_functions == [16]
    finally:
        await drv.stop()


async def test_exception_marks_only_its_block_and_logs_once_per_change(unit1, caplog) -> None:
    server, mem = unit1
    pts = [point(0, "holding/0", "xsd:unsignedShort"), point(1, "input/100", "xsd:unsignedShort")]
    drv = await started(driver(f"modbus+tcp://127.0.0.1:{server.port}/1", *pts))
    try:
        del mem.tables["input"][100]  # the device no longer has that register: IllegalDataAddress
        with caplog.at_level(logging.INFO, logger="gateway.drivers.modbus.driver"):
            for _ in range(3):
                got = await drv.read("MediumSpeed")
                assert got[0].status == S.Good and got[1].status == S.BadNotFound and got[1].value is None
            mem.tables["input"][100] = 7
            got = await drv.read("MediumSpeed")
            assert got[1].status == S.Good and got[1].value == 7
        messages = [r.getMessage() for r in caplog.records]
        assert sum("0x02 IllegalDataAddress" in m for m in messages) == 1, messages
        assert sum("answers again" in m for m in messages) == 1, messages
    finally:
        await drv.stop()


async def test_device_down_then_up(unit1) -> None:
    server, mem = unit1
    drv = await started(driver(f"modbus+tcp://127.0.0.1:{server.port}/1?timeout_ms=200",
                               point(0, "holding/0", "xsd:unsignedShort")))
    try:
        mem.set("holding", 0, [11])
        assert (await drv.read("MediumSpeed"))[0].value == 11
        mem.offline = True
        with pytest.raises(DriverError, match="no answer"):
            await drv.read("MediumSpeed")
        mem.offline = False
        assert (await drv.read("MediumSpeed"))[0].value == 11
        await server.stop()  # the whole device goes away
        with pytest.raises(DriverError):
            await drv.read("MediumSpeed")  # the open connection is lost
        # Reconnecting, nothing listens: the message says so, not "no answer".
        with pytest.raises(DriverError, match=r"cannot connect to 127\.0\.0\.1:[0-9]+: connection refused"):
            await drv.read("MediumSpeed")
        await server.start()
        assert (await drv.read("MediumSpeed"))[0].value == 11
        assert drv.request_errors == 3
    finally:
        await drv.stop()


async def test_units_share_one_link_in_turn(free_port: int) -> None:
    units = [UnitMemory(u) for u in (1, 2, 3)]
    for u in units:
        u.define("holding", 0, 2)
        u.set("holding", 0, [u.unit, u.unit * 10])
    server = SimulatorServer(units, transport="rtutcp", port=free_port)
    await server.start()
    drivers = [await started(driver(f"modbus+rtutcp://127.0.0.1:{free_port}/{u}?min_interval_ms=5",
                                    point(0, "holding/0", "xsd:unsignedShort"),
                                    point(1, "holding/1", "xsd:unsignedShort"))) for u in (1, 2, 3)]
    try:
        assert len({id(d.link) for d in drivers}) == 1  # one connection for the three units
        results = await asyncio.gather(*(d.read("MediumSpeed") for d in drivers))
        assert [(r[0].value, r[1].value) for r in results] == [(1, 10), (2, 20), (3, 30)]
        units[1].exception = 0x0B  # the RS-485 gateway: unit 2 does not answer
        results = await asyncio.gather(*(d.read("MediumSpeed") for d in drivers), return_exceptions=True)
        assert isinstance(results[1], DriverError) and "does not answer" in str(results[1])
        assert results[0][0].value == 1 and results[2][0].value == 3
    finally:
        for d in drivers:
            await d.stop()
        await server.stop()


async def _raw_server(port: int, answer: Callable[[bytes], bytes]) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readexactly(7)
                body = await reader.readexactly(struct.unpack(">H", head[4:6])[0] - 1)
                writer.write(answer(head + body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port)


async def test_short_and_malformed_answers(free_port: int) -> None:
    mode = {"kind": "short"}

    def answer(request: bytes) -> bytes:
        tid, unit, count = request[0:2], request[6], struct.unpack(">H", request[10:12])[0]
        if mode["kind"] == "short":  # a well-formed frame with fewer registers than asked
            pdu = bytes([3, 2 * (count - 1)]) + b"\x00\x01" * (count - 1)
        else:  # garbage that is no Modbus answer at all
            return b"\xde\xad\xbe\xef" * 3
        return tid + b"\x00\x00" + struct.pack(">H", len(pdu) + 1) + bytes([unit]) + pdu

    server = await _raw_server(free_port, answer)
    drv = await started(driver(f"modbus+tcp://127.0.0.1:{free_port}/1?timeout_ms=300",
                               point(0, "holding/0", "xsd:unsignedShort"), point(1, "holding/1", "xsd:unsignedShort")))
    try:
        got = await drv.read("MediumSpeed")
        assert got[0].status == S.BadCommunicationError and got[1].status == S.BadCommunicationError
        mode["kind"] = "garbage"
        with pytest.raises(DriverError):
            await drv.read("MediumSpeed")
    finally:
        await drv.stop()
        server.close()
        await server.wait_closed()


def test_bindings_are_checked_against_the_device_options() -> None:
    url = urlsplit("modbus+tcp://10.0.0.5/1?addressing=1")
    with pytest.raises(ValueError, match=r"outside 1\.\.65536"):
        ModbusDriver.validate_point(url, point(0, "holding/0", "xsd:short"))
    with pytest.raises(ValueError, match="writable variable needs a holding register or coil"):
        ModbusDriver.validate_point(url, point(0, "input/1", "xsd:short", writable=True))
    with pytest.raises(ValueError, match="more than one read of 125"):
        ModbusDriver.validate_point(url, point(0, "holding/1", "xsd:string", length=300))
    ModbusDriver.validate_point(url, point(0, "holding/1", "xsd:short", writable=True))


async def test_a_slow_device_does_not_delay_a_fast_one(tmp_path) -> None:
    from gateway.drivers.modbus.simulators.site import free_tcp_port
    from gateway.nodeset.yaml_build import build
    from gateway.server import Gateway, GatewayConfig

    fast_port, slow_port = free_tcp_port(), free_tcp_port()
    fast, slow = UnitMemory(1), UnitMemory(1)
    for mem in (fast, slow):
        mem.define("holding", 0, 4)
    slow.delay_s = 1.0  # answers, but after its device's timeout
    servers = [SimulatorServer([fast], port=fast_port), SimulatorServer([slow], port=slow_port)]
    for s in servers:
        await s.start()
    doc = {"site": {"namespace": "urn:t:slow", "name": "SlowSite"}, "devices": [
        {"name": name, "connection": f"modbus+tcp://127.0.0.1:{port}/1?timeout_ms=200",
         "variables": [{"name": "R0", "datatype": "UInt16", "address": "holding/0", "scan": "HighSpeed"}]}
        for name, port in (("Fast", fast_port), ("Slow", slow_port))]}
    site = tmp_path / "slow.xml"
    site.write_bytes(build(doc, "slow"))
    gw = Gateway(GatewayConfig(nodesets=[site], endpoint=f"opc.tcp://127.0.0.1:{free_tcp_port()}",
                               data_dir=tmp_path / "data", insecure=True))
    try:
        await gw.load()
        await gw.start()
        await asyncio.sleep(2.0)
        by_name = {r.cfg.name: r for r in gw.runners.values()}
        fast_health, slow_health = by_name["Fast"].health, by_name["Slow"].health
        assert fast_health.state == "Connected" and fast_health.requests >= 12, fast_health  # ~20 scans at 100 ms
        assert slow_health.state == "Disconnected" and "no answer" in slow_health.last_error
        # Backed off: 100 ms doubled per failure, so far fewer than the 20 attempts an unthrottled poll makes.
        assert 2 <= slow_health.requests <= 6, slow_health
    finally:
        await gw.stop()
        for s in servers:
            await s.stop()
