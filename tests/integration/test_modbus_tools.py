"""Independent proof that the simulators are real Modbus devices and that RTU works on a serial line:
mbpoll (Debian's Modbus master) reads the simulators, and the driver talks RTU over a socat pty pair."""

from __future__ import annotations

import asyncio
import shutil
import struct
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from gateway.drivers.base import Binding, Point
from gateway.drivers.modbus.driver import ModbusDriver
from gateway.drivers.modbus.simulators.server import SimulatorServer, UnitMemory

pytestmark = pytest.mark.integration


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (tests/run.sh installs it: apt-get install {tool})")
    return path


async def _output(proc: asyncio.subprocess.Process) -> str:
    async with asyncio.timeout(20):
        return (await proc.communicate())[0].decode()


async def test_mbpoll_reads_and_writes_the_simulator(free_port: int) -> None:
    mbpoll = _need("mbpoll")
    mem = UnitMemory(7)
    mem.define("holding", 0, 10)
    mem.set("holding", 0, [100, 0xFFFF, *struct.unpack(">2H", struct.pack(">f", 3.5))])
    server = SimulatorServer([mem], port=free_port)
    await server.start()
    try:
        # -r is one-based in mbpoll; -1 polls once; -0 would make it zero-based.
        read = await asyncio.create_subprocess_exec(
            mbpoll, "-m", "tcp", "-p", str(free_port), "-a", "7", "-t", "4", "-r", "1", "-c", "2", "-1",
            "127.0.0.1", stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = await _output(read)
        assert read.returncode == 0, out
        assert "[1]: \t100" in out and "[2]: \t65535 (-1)" in out, out
        flt = await asyncio.create_subprocess_exec(
            mbpoll, "-m", "tcp", "-p", str(free_port), "-a", "7", "-t", "4:float", "-B", "-r", "3", "-c", "1", "-1",
            "127.0.0.1", stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = await _output(flt)
        assert flt.returncode == 0 and "3.5" in out, out
        write = await asyncio.create_subprocess_exec(
            mbpoll, "-m", "tcp", "-p", str(free_port), "-a", "7", "-t", "4", "-r", "6", "127.0.0.1", "4242",
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = await _output(write)
        assert write.returncode == 0, out
        assert mem.get("holding", 5, 1) == [4242]
    finally:
        await server.stop()


@pytest.fixture
async def pty_pair(tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    socat = _need("socat")
    a, b = str(tmp_path / "ttyA"), str(tmp_path / "ttyB")
    proc = await asyncio.create_subprocess_exec(socat, "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}",
                                                stderr=subprocess.DEVNULL)
    for _ in range(100):
        if Path(a).exists() and Path(b).exists():
            break
        await asyncio.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("socat did not create the pty pair")
    yield a, b
    proc.terminate()
    await proc.wait()


async def test_rtu_over_a_serial_line(pty_pair: tuple[str, str]) -> None:
    gateway_end, device_end = pty_pair
    units = [UnitMemory(1), UnitMemory(2)]
    for u in units:
        u.define("input", 0, 4)
        u.set("input", 0, [u.unit, 2, 3, 4 * u.unit])
        u.define("holding", 0, 1)
    # Parity N: a Linux pty refuses PARENB (EINVAL); framing bits do not exist on a pty anyway.
    server = SimulatorServer(units, transport="rtu", serial_port=device_end, baud=19200, parity="N")
    await server.start()
    pts = [Point(0, "A", Binding("input/0"), "xsd:unsignedShort", False),
           Point(1, "B", Binding("input/3"), "xsd:unsignedShort", False),
           Point(2, "S", Binding("holding/0"), "xsd:short", True)]
    drivers = [ModbusDriver(urlsplit(f"modbus+rtu://{gateway_end}/{u}?baud=19200&parity=N&gap=2"),
                            {"MediumSpeed": pts}) for u in (1, 2)]
    try:
        for d in drivers:
            await d.start()
        assert drivers[0].link is drivers[1].link  # one serial port, two units on the bus
        got = [await d.read("MediumSpeed") for d in drivers]
        assert [(g[0].value, g[1].value) for g in got] == [(1, 4), (2, 8)]
        assert drivers[0].requests_per_scan("MediumSpeed") == 2  # input 0..3 spanned by gap=2, holding 0
        assert await drivers[1].write(pts[2], -5) == -5
        assert units[1].get("holding", 0, 1) == [0xFFFB] and units[0].get("holding", 0, 1) == [0]
    finally:
        for d in drivers:
            await d.stop()
        await server.stop()
