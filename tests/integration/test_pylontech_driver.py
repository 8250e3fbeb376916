"""The Pylontech console driver through the gateway and an OPC UA client: the simulated console on one end of a
socat pty pair (asleep until the wake-up), the gateway on the other; garbled rows, a silent console, a console
that fell asleep, noise, and the line going away and coming back turn values Bad and Good again. The wake-up
must come at 1200 baud (a pty pair of the simulator's own tells the rate), and the example site runs under
--simulate."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import serial
import serial.rfc2217
from asyncua import Client, ua
from field_client import wait_for

from gateway.drivers.base import Binding, DriverError, Point
from gateway.drivers.pylontech import tables
from gateway.drivers.pylontech.console import Console, ConsoleError, ConsoleSettings
from gateway.drivers.pylontech.driver import PylontechDriver
from gateway.drivers.pylontech.simulator import CELLS, ConsoleSimulator, PylontechSimulation, Stack
from gateway.nodeset.yaml_build import compile_text
from gateway.server import Gateway, GatewayConfig

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "nodesets" / "examples" / "pylontech-stack.xml"
_S = ua.StatusCodes

_SITE = """site: {{namespace: "urn:test:pylontech", name: Battery}}
devices:
  - name: Stack
    connection: "pylontech://{port}?timeout_ms=700&wakeup_wait_ms=300&reopen_after=2"
    variables:
      - {{name: M1Voltage, unit: V, address: pwr/1/Volt, scan: HighSpeed}}
      - {{name: M1Current, unit: A, address: pwr/1/Curr, scan: HighSpeed}}
      - {{name: M1Temperature, unit: °C, address: pwr/1/Tempr, scan: HighSpeed}}
      - {{name: M1Soc, unit: "%", address: pwr/1/SOC, scan: HighSpeed}}
      - {{name: M1State, datatype: String, address: pwr/1/BaseState, scan: HighSpeed}}
      - {{name: M1VoltageState, datatype: String, address: pwr/1/VoltState, scan: HighSpeed}}
      - {{name: M2Voltage, unit: V, address: pwr/2/Volt, scan: HighSpeed}}
      - {{name: M2Soc, unit: "%", address: pwr/2/SOC, scan: HighSpeed}}
      - {{name: M3Present, datatype: Boolean, address: pwr/3/Present, scan: HighSpeed}}
      - {{name: M4Present, datatype: Boolean, address: pwr/4/Present, scan: HighSpeed}}
      - {{name: M4Voltage, unit: V, address: pwr/4/Volt, scan: HighSpeed}}
      - {{name: M1Cell0, unit: V, address: bat/1/0/Volt, scan: HighSpeed}}
      - {{name: M1Cell14, unit: mV, address: bat/1/14/Volt, console_units: true, scan: HighSpeed}}
      - {{name: M1Cell14State, datatype: String, address: bat/1/14/VoltState, scan: HighSpeed}}
"""


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (tests/run.sh installs it: apt-get install {tool})")
    return path


class PtyPair:
    """A socat pty pair at two paths; stop() takes both ends away, start() brings them back at the same paths."""

    def __init__(self, tmp: Path) -> None:
        self.socat = _need("socat")
        self.gateway_end, self.device_end = str(tmp / "ttyGateway"), str(tmp / "ttyBattery")
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            self.socat, f"pty,raw,echo=0,link={self.gateway_end}", f"pty,raw,echo=0,link={self.device_end}",
            stderr=subprocess.DEVNULL)
        for _ in range(100):
            if os.path.exists(self.gateway_end) and os.path.exists(self.device_end):
                return
            await asyncio.sleep(0.05)
        raise AssertionError("socat did not create the pty pair")

    async def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            async with asyncio.timeout(5):
                await self.proc.wait()
            self.proc = None


@pytest.fixture
async def line(tmp_path: Path) -> AsyncIterator[PtyPair]:
    pair = PtyPair(tmp_path)
    await pair.start()
    yield pair
    await pair.stop()


@pytest.fixture
async def battery(line: PtyPair) -> AsyncIterator[ConsoleSimulator]:
    sim = ConsoleSimulator(Stack.of(3), path=line.device_end, name="test stack")
    sim.stack.frozen = True  # the values the gateway shows are compared with the model's
    sim.start()
    yield sim
    await asyncio.to_thread(sim.stop)


@pytest.fixture
async def gateway(tmp_path: Path, free_port: int, line: PtyPair, battery: ConsoleSimulator) -> AsyncIterator[Gateway]:
    site = tmp_path / "battery.xml"
    site.write_bytes(compile_text(_SITE.format(port=line.gateway_end), "battery.yaml"))
    gw = Gateway(GatewayConfig(nodesets=[site], endpoint=f"opc.tcp://127.0.0.1:{free_port}",
                               data_dir=tmp_path / "data", insecure=True))
    await gw.load()
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


async def test_the_stack_reads_through_the_gateway_and_faults_turn_values_bad_and_good(
        gateway: Gateway, battery: ConsoleSimulator, line: PtyPair) -> None:
    stack = battery.stack
    m1, m2 = stack.modules[0], stack.modules[1]
    cells = [m1.cell_mv(c, stack.current_a(m1)) for c in range(CELLS)]
    async with Client(gateway.config.endpoint) as client:
        ns = await client.get_namespace_index("urn:test:pylontech")

        def dv(name: str) -> Any:
            return lambda: client.get_node(ua.NodeId(name, ns)).read_data_value(raise_on_bad_status=False)

        def good(d: ua.DataValue) -> bool:
            return d.StatusCode.is_good()

        state = client.get_node(ua.NodeId("Stack.Diagnostics.ConnectionState", ns))
        voltage = await wait_for(dv("Stack.M1Voltage"), good, what="first reading (after the wake-up)")
        assert battery.wakeups == 1  # the console was asleep: the driver woke it at 1200 baud
        assert voltage.Value.Value == pytest.approx(sum(cells) / 1000)
        assert (await dv("Stack.M1Current")()).Value.Value == pytest.approx(stack.current_a(m1))
        assert (await dv("Stack.M1Temperature")()).Value.Value == pytest.approx(m1.temperature_c)
        assert (await dv("Stack.M1Soc")()).Value.Value == round(m1.soc)
        assert (await dv("Stack.M1State")()).Value.Value == "Dischg"
        assert (await dv("Stack.M1VoltageState")()).Value.Value == "Normal"
        assert (await dv("Stack.M2Voltage")()).Value.Value == \
            pytest.approx(sum(m2.cell_mv(c, stack.current_a(m2)) for c in range(CELLS)) / 1000)
        assert (await dv("Stack.M2Soc")()).Value.Value == round(m2.soc)
        assert (await dv("Stack.M3Present")()).Value.Value is True
        assert (await dv("Stack.M4Present")()).Value.Value is False  # the stack has three modules
        assert (await dv("Stack.M4Voltage")()).StatusCode.value == _S.BadOutOfService
        assert (await dv("Stack.M1Cell0")()).Value.Value == pytest.approx(cells[0] / 1000)
        assert (await dv("Stack.M1Cell14")()).Value.Value == cells[14]  # console units: mV as printed
        assert (await dv("Stack.M1Cell14State")()).Value.Value == "Normal"
        assert await state.read_value() == "Connected"
        assert battery.commands[0] == "pwr" and set(battery.commands) == {"pwr", "bat 1"}  # one scan class

        # A row lost in noise: that module's values turn Bad, the others and the device stay Good.
        battery.garbled = {2}
        await wait_for(dv("Stack.M2Voltage"), lambda d: d.StatusCode.value == _S.BadDataEncodingInvalid,
                        what="garbled row")
        assert (await dv("Stack.M1Voltage")()).StatusCode.is_good()
        assert await state.read_value() == "Connected"
        battery.garbled = set()
        await wait_for(dv("Stack.M2Voltage"), good, what="row readable again")

        # Silent: no prompt comes; every value turns Bad, the device Disconnected; it answers again: Good.
        battery.silent = True
        bad = await wait_for(dv("Stack.M1Voltage"), lambda d: not d.StatusCode.is_good(), what="silent console")
        assert bad.StatusCode.value == _S.BadTimeout
        assert bad.Value.Value == pytest.approx(sum(cells) / 1000)  # the last value is kept
        await wait_for(state.read_value, lambda s: s == "Disconnected", what="silent device")
        battery.silent = False
        await wait_for(dv("Stack.M1Voltage"), good, what="console answers again")
        await wait_for(state.read_value, lambda s: s == "Connected")
        assert battery.wakeups == 1

        # Noise instead of answers: Bad, and Good again once the console answers.
        battery.noise = True
        noisy = await wait_for(dv("Stack.M1Voltage"), lambda d: not d.StatusCode.is_good(), what="noise")
        assert noisy.StatusCode.value == _S.BadCommunicationError
        battery.noise = False
        await wait_for(dv("Stack.M1Voltage"), good, what="noise gone")

        # The console fell back asleep (the battery restarted): after repeated failures the port is opened
        # again, the console gives no prompt, and the driver wakes it once more.
        battery.asleep = True
        await wait_for(dv("Stack.M1Voltage"), lambda d: not d.StatusCode.is_good(), what="asleep")
        await wait_for(dv("Stack.M1Voltage"), good, within=20, what="woken again")
        assert battery.wakeups == 2

        # The line goes away (socat ends: both ends of the pty pair vanish) and comes back.
        await line.stop()
        gone = await wait_for(dv("Stack.M1Voltage"), lambda d: not d.StatusCode.is_good(), what="line gone")
        assert gone.StatusCode.value == _S.BadCommunicationError
        await wait_for(state.read_value, lambda s: s == "Disconnected")
        errors = client.get_node(ua.NodeId("Stack.Diagnostics.LastError", ns))
        assert "ttyGateway" in await errors.read_value()
        await line.start()
        await wait_for(dv("Stack.M1Voltage"), good, within=40, what="line back")  # backoff doubles, capped
        await wait_for(state.read_value, lambda s: s == "Connected")
        assert battery.wakeups == 2  # the battery stayed awake: only the cable went


async def test_the_wake_up_must_come_at_1200_baud() -> None:
    master, slave = os.openpty()
    sim = ConsoleSimulator(Stack.of(2), fd=master, name="baud check")
    sim.start()
    try:
        port = os.ttyname(slave)
        wrong = Console(ConsoleSettings(port, wakeup="always", wakeup_baud=9600, wakeup_wait_s=0.3, timeout_s=0.6))
        with pytest.raises(ConsoleError, match="after the wake-up at 9600 baud"):
            await asyncio.to_thread(wrong.open)
        assert sim.asleep and sim.wakeups == 0
        right = Console(ConsoleSettings(port, wakeup="auto", wakeup_wait_s=0.3, timeout_s=0.6))
        await asyncio.to_thread(right.open)  # no prompt at 115200, so it wakes the console at 1200 baud
        assert sim.wakeups == 1 and right.woken == 1
        answer = await asyncio.to_thread(right.command, "pwr")
        assert "Command completed successfully" in answer and answer.rstrip().endswith("pylon>")
        await asyncio.to_thread(right.close)
        slow = Console(ConsoleSettings(port, baud=9600, wakeup="never", timeout_s=0.6))
        with pytest.raises(ConsoleError, match=r"no pylon> prompt .* at 9600 baud"):  # awake, but at 115200 only
            await asyncio.to_thread(slow.open)
    finally:
        await asyncio.to_thread(sim.stop)
        os.close(master)
        os.close(slave)


async def test_a_paged_answer_in_pieces_is_read_whole() -> None:
    master, slave = os.openpty()
    sim = ConsoleSimulator(Stack.of(2), fd=master, name="pager")
    sim.asleep, sim.pager_after = False, 6
    sim.start()
    try:
        console = Console(ConsoleSettings(os.ttyname(slave), wakeup="never", timeout_s=1.0))
        await asyncio.to_thread(console.open)
        sim.trickle = (7, 0.002)  # lines arrive in pieces over many reads
        answer = await asyncio.to_thread(console.command, "bat 1")
        # 19 lines (@, header, 15 cells, 2 end lines): a pager line after 6, 12 and 18, the last after the table
        assert answer.count("Press [Enter] to be continued") == 3
        table = tables.parse(answer, "bat")
        assert table.complete and sorted(table.rows) == list(range(CELLS)) and not table.broken
        assert table.skipped == ["Press [Enter] to be continued,other key to exit"] * 2
        await asyncio.to_thread(console.close)
    finally:
        await asyncio.to_thread(sim.stop)
        os.close(master)
        os.close(slave)


async def test_the_port_is_opened_again_after_repeated_failures_and_the_console_woken() -> None:
    master, slave = os.openpty()
    sim = ConsoleSimulator(Stack.of(2), fd=master, name="reopen")
    sim.asleep = False
    sim.start()
    points = [Point(0, "V", Binding("pwr/1/Volt"), "xsd:double", False),
              Point(1, "C", Binding("bat/2/0/Volt"), "xsd:double", False)]
    url = urlsplit(f"pylontech://{os.ttyname(slave)}?timeout_ms=400&wakeup_wait_ms=200&reopen_after=2")
    driver = PylontechDriver(url, {"HighSpeed": points})
    await driver.start()
    try:
        assert all(r.status == _S.Good for r in (await driver.read("HighSpeed")).values())
        assert sim.wakeups == 0 and driver.console.woken == 0  # awake already: no wake-up sent
        sim.silent = True
        with pytest.raises(DriverError) as failed:  # both commands unanswered: the scan fails
            await driver.read("HighSpeed")
        assert failed.value.status == _S.BadTimeout and "no pylon> prompt within 0.4 s" in str(failed.value)
        assert not driver.console.is_open  # 2 failures in a row: closed, to be opened again
        assert (driver.requests, driver.request_errors) == (4, 2)
        sim.silent, sim.asleep = False, True  # the battery restarted meanwhile: its console sleeps
        readings = await driver.read("HighSpeed")  # opened; no prompt, so the console is woken
        assert all(r.status == _S.Good for r in readings.values()) and sim.wakeups == 1
    finally:
        await driver.stop()
        await asyncio.to_thread(sim.stop)
        os.close(master)
        os.close(slave)


class Rfc2217Converter:
    """A serial-to-Ethernet converter on loopback: RFC 2217 (pyserial's PortManager) in front of a serial port,
    whose line settings the client sets through it."""

    def __init__(self, serial_port: str) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.serial = _PtyPort(serial_port, 115200, timeout=0.05)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True, name="RFC 2217 converter")
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        conn.settimeout(0.05)
        manager = serial.rfc2217.PortManager(self.serial, _Sender(conn))

        def to_network() -> None:
            while not self.stop.is_set():
                try:
                    data = self.serial.read(self.serial.in_waiting or 1)
                    if data:
                        conn.sendall(b"".join(manager.escape(data)))
                except (OSError, TypeError, serial.SerialException):  # closed (pyserial: TypeError): the test is over
                    return

        threading.Thread(target=to_network, daemon=True).start()
        while not self.stop.is_set():
            try:
                data = conn.recv(1024)
            except TimeoutError:
                continue
            if not data:
                break
            self.serial.write(b"".join(manager.filter(data)))
        conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.listener.close()
        self.serial.close()


class _PtyPort(serial.Serial):
    """A pty has no modem lines (TIOCMGET and TIOCMBIS fail): the converter reports them off, and sets none."""

    cts = dsr = ri = cd = property(lambda self: False)  # type: ignore[assignment]

    def _update_rts_state(self) -> None:
        pass

    def _update_dtr_state(self) -> None:
        pass


class _Sender:
    def __init__(self, conn: socket.socket) -> None:
        self.conn, self.lock = conn, threading.Lock()

    def write(self, data: bytes) -> None:
        with self.lock:
            self.conn.sendall(data)


@pytest.mark.filterwarnings("ignore:set(Daemon|Name)\\(\\) is deprecated:DeprecationWarning")  # pyserial's rfc2217
async def test_a_console_behind_converters_rfc2217_wakes_it_raw_tcp_reads_it_awake() -> None:
    master, slave = os.openpty()
    sim = ConsoleSimulator(Stack.of(2), fd=master, name="behind a converter")
    sim.start()  # asleep: only the frame at 1200 baud wakes it, so the baud change must pass the converter
    converter = await asyncio.to_thread(Rfc2217Converter, os.ttyname(slave))
    points = [Point(0, "V", Binding("pwr/2/Volt"), "xsd:double", False)]
    driver = PylontechDriver(urlsplit(f"pylontech+rfc2217://127.0.0.1:{converter.port}?timeout_ms=700"
                                      f"&wakeup_wait_ms=300"), {"HighSpeed": points})
    await driver.start()
    try:
        reading = (await driver.read("HighSpeed"))[0]
        assert reading.status == _S.Good and 45 < reading.value < 54
        assert sim.wakeups == 1
    finally:
        await driver.stop()
        await asyncio.to_thread(converter.close)
    # A raw TCP converter: its line settings are its own, so the console must already be awake.
    listener = socket.create_server(("127.0.0.1", 0))
    tcp = PylontechDriver(urlsplit(f"pylontech+tcp://127.0.0.1:{listener.getsockname()[1]}?timeout_ms=700"),
                          {"HighSpeed": points})
    accepted = asyncio.ensure_future(asyncio.to_thread(listener.accept))
    await tcp.start()
    try:
        opening = asyncio.ensure_future(tcp.read("HighSpeed"))
        conn, _ = await accepted
        on_tcp = ConsoleSimulator(sim.stack, fd=conn.fileno(), name="raw TCP")
        on_tcp.asleep = False
        on_tcp.start()
        try:
            reading = (await opening)[0]
            assert reading.status == _S.Good and 45 < reading.value < 54 and on_tcp.wakeups == 0
        finally:
            await tcp.stop()
            await asyncio.to_thread(on_tcp.stop)
            conn.close()
    finally:
        await tcp.stop()
        listener.close()
        await asyncio.to_thread(sim.stop)
        os.close(master)
        os.close(slave)


def test_the_example_site_is_built_from_its_yaml() -> None:
    yaml_text = (ROOT / "nodesets/examples/pylontech-stack.yaml").read_text(encoding="utf-8")
    assert compile_text(yaml_text, "pylontech-stack.yaml") == EXAMPLE.read_bytes()


async def test_the_example_site_under_simulate_wakes_and_reads_the_simulated_stack(simulated_gateway: Any) -> None:
    gw = await simulated_gateway(EXAMPLE)
    sim = next(s for s in gw.simulations if isinstance(s, PylontechSimulation))
    async with Client(gw.config.endpoint) as client:
        ns = await client.get_namespace_index("urn:opcua-gateway:examples:pylontech-stack")

        def dv(name: str) -> Any:
            return lambda: client.get_node(ua.NodeId(name, ns)).read_data_value(raise_on_bad_status=False)

        voltage = await wait_for(dv("Battery.Module1Voltage"), lambda d: d.StatusCode.is_good(), what="voltage")
        assert 45.0 < voltage.Value.Value < 54.0
        soc = await wait_for(dv("Battery.Module2Soc"), lambda d: d.StatusCode.is_good())
        assert 0 <= soc.Value.Value <= 100
        cell = await wait_for(dv("Battery.Module1CellMin"), lambda d: d.StatusCode.is_good())
        assert 3.0 < cell.Value.Value < 3.6
        assert sim.consoles["Battery"].knows_baud and sim.consoles["Battery"].wakeups == 1
