"""The demo site's facade as a legacy SCADA uses it, with pymodbus' client and an OPC UA client.

The map (README, Modbus facade for SCADA) shows site and battery reactive power, the control mode as
a number and the setpoints; a mode written through the facade switches the control engine (as
`facade:<address>`), a reactive power setpoint reaches the simulated battery, the facade's counters
are OPC UA variables, and a silent SCADA loses its setpoints and its ExternalControl mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shutil
import socket
import struct
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncua import Client, Node, ua
from pymodbus.client import AsyncModbusTcpClient

from gateway.nodeset.yaml_build import compile_text

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEMO_YAML = ROOT / "nodesets" / "demo" / "demo-site.yaml"
NS = "urn:opcua-gateway:demo"
GW_NS = "urn:opcua-gateway:types"
WATCHDOG = 100
SITE_P, SOC, SITE_Q, BATTERY_Q, STATUS = 0, 1, 7, 8, 10
EXTERNAL_P, MODE, Q_SETPOINT = 0, 3, 4
MAX_SELF_CONSUMPTION, EXTERNAL_CONTROL = 2, 5


def _demo(tmp_path: Path, port: int) -> Path:
    doc = yaml.safe_load(DEMO_YAML.read_text())
    doc["facade"]["endpoint"] = f"modbus+tcp://127.0.0.1:{port}/1"
    doc["facade"]["watchdog"]["timeout_ms"] = 3000  # the demo's 30 s, shortened for the test
    out = tmp_path / "demo-site.xml"
    out.write_bytes(compile_text(yaml.safe_dump(doc, sort_keys=False), "demo-site.yaml"))
    return out


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _signed(word: int) -> int:
    return struct.unpack(">h", struct.pack(">H", word))[0]


async def _until(condition: Callable[[], Awaitable[bool] | bool], within: float) -> None:
    async with asyncio.timeout(within):
        while True:
            result = condition()
            if await result if isinstance(result, Awaitable) else result:
                return
            await asyncio.sleep(0.1)


async def _mbpoll(*args: str) -> tuple[int, str]:
    path = shutil.which("mbpoll")
    if path is None:
        pytest.skip("mbpoll is not installed (tests/run.sh installs it: apt-get install mbpoll)")
    proc = await asyncio.create_subprocess_exec(path, *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    async with asyncio.timeout(20):
        out = (await proc.communicate())[0].decode()
    return proc.returncode or 0, out


class Scada:
    """A SCADA's Modbus master: keeps the watchdog changing every 300 ms while it runs."""

    def __init__(self, port: int) -> None:
        self.client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=3, retries=0)
        self.count = 0
        self.stopping = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def _feed(self) -> None:
        while not self.stopping.is_set():
            self.count = (self.count + 1) & 0xFFFF
            await self.client.write_register(WATCHDOG, self.count, device_id=1)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.3):
                    await self.stopping.wait()

    async def start(self) -> None:
        assert await self.client.connect()
        self.task = asyncio.create_task(self._feed())

    async def go_silent(self) -> None:
        self.stopping.set()  # not a cancel: a request cancelled in flight would answer the next one
        if self.task is not None:
            async with asyncio.timeout(5):
                await self.task

    async def inputs(self, address: int, count: int) -> list[int]:
        """Input registers once every value behind them is Good (the gateway has polled the devices)."""
        return await self._good(self.client.read_input_registers, address, count)

    async def holdings(self, address: int, count: int) -> list[int]:
        """Holding registers once every value behind them is Good (a mode just changed may still be settling:
        the facade answers exception 0x04 for a value that is not Good)."""
        return await self._good(self.client.read_holding_registers, address, count)

    async def _good(self, read: Callable[..., Awaitable[Any]], address: int, count: int) -> list[int]:
        async with asyncio.timeout(10):
            while True:
                rr = await read(address, count=count, device_id=1)
                if not rr.isError():
                    return rr.registers
                await asyncio.sleep(0.1)

    async def holding(self, address: int) -> int:
        rr = await self.client.read_holding_registers(address, count=1, device_id=1)
        assert not rr.isError(), rr
        return rr.registers[0]


async def test_the_demo_map_shows_q_and_the_mode_and_takes_setpoints_until_the_watchdog_expires(
        simulated_gateway, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.audit")
    port = _port()
    gw = await simulated_gateway(_demo(tmp_path, port))
    sim = gw.simulations[0]
    battery, meter = sim.device("Battery1"), sim.device("GridMeter")
    scada = Scada(port)
    await scada.start()
    try:
        # Site and battery reactive power, as the simulated meter and battery hold them (kvar x 10, int16).
        words = await scada.inputs(0, 9)
        assert 0 < words[SOC] <= 1000
        assert _signed(words[SITE_Q]) / 10 == pytest.approx(meter.get("ReactivePower"), abs=3.0)
        assert _signed(words[SITE_Q]) > 0  # the inductive site load draws it from the grid
        assert (await scada.inputs(STATUS, 1)) == [0]

        # The mode as a number: the demo starts in MaxSelfConsumption; the SCADA switches to ExternalControl.
        assert await scada.holding(MODE) == MAX_SELF_CONSUMPTION
        assert not (await scada.client.write_register(MODE, EXTERNAL_CONTROL, device_id=1)).isError()
        assert gw.control is not None and gw.control.mode == "ExternalControl"
        assert await scada.holding(MODE) == EXTERNAL_CONTROL
        assert "accepted GoToMode ExternalControl by facade:127.0.0.1" in caplog.text
        no_such_mode = await scada.client.write_register(MODE, 99, device_id=1)
        assert no_such_mode.isError() and no_such_mode.exception_code == 0x03
        assert gw.control.mode == "ExternalControl"
        # In one FC16 with good setpoints, the unknown mode refuses the whole request: none is written.
        before = await scada.holdings(EXTERNAL_P, 5)
        mixed = await scada.client.write_registers(EXTERNAL_P, [200, 500, 50, 99, 100], device_id=1)
        assert mixed.isError() and mixed.exception_code == 0x03
        assert (await scada.client.read_holding_registers(EXTERNAL_P, count=5, device_id=1)).registers == before

        # Setpoints: the battery power ExternalControl follows, and the battery's reactive power.
        assert not (await scada.client.write_register(EXTERNAL_P, 300, device_id=1)).isError()  # 30 kW
        assert not (await scada.client.write_register(Q_SETPOINT, (-250) & 0xFFFF, device_id=1)).isError()
        await _until(lambda: battery.get("ActivePowerSetpoint") == pytest.approx(30.0), 8)
        await _until(lambda: battery.get("ReactivePower") == pytest.approx(-25.0), 5)

        async def battery_q_shown() -> bool:
            return _signed((await scada.inputs(BATTERY_Q, 1))[0]) == -250

        await _until(battery_q_shown, 5)
        # mbpoll (Debian) as the SCADA's tool: a reactive power setpoint that reaches the battery, then reads.
        code, out = await _mbpoll("-m", "tcp", "-p", str(port), "-a", "1", "-0", "-t", "4", "-r", str(Q_SETPOINT),
                                  "127.0.0.1", "150")
        assert code == 0, out
        await _until(lambda: battery.get("ReactivePower") == pytest.approx(15.0), 5)
        code, out = await _mbpoll("-m", "tcp", "-p", str(port), "-a", "1", "-0", "-1", "-t", "4", "-r", str(MODE),
                                  "-c", "2", "127.0.0.1")
        assert code == 0 and re.search(rf"\[{MODE}\]:\s+{EXTERNAL_CONTROL}\b", out), out
        assert re.search(rf"\[{Q_SETPOINT}\]:\s+150\b", out), out

        async with Client(gw.config.endpoint) as ua_client:
            ns, gw_ns = await ua_client.get_namespace_index(NS), await ua_client.get_namespace_index(GW_NS)
            mode_code = ua_client.get_node(ua.NodeId("DemoSite.Control.ModeCode", ns))
            assert await mode_code.read_value() == EXTERNAL_CONTROL
            names = await (await mode_code.get_child(["0:EnumStrings"])).read_value()
            assert [n.Text for n in names][EXTERNAL_CONTROL] == "ExternalControl"
            with pytest.raises(ua.UaStatusCodeError, match="BadUserAccessDenied"):  # anonymous: a viewer
                await mode_code.write_value(ua.DataValue(ua.Variant(1, ua.VariantType.UInt16)))

            # The facade's counters as variables of Gateway/Diagnostics/Facade.
            def counter(ident: int) -> Node:
                return ua_client.get_node(ua.NodeId(ident, gw_ns))

            async def counted() -> bool:
                return await counter(6159).read_value() >= 3  # WritesAccepted: mode, P, Q (and the watchdog)

            await _until(counted, 5)
            assert await counter(6150).read_value() == "Listening"
            assert await counter(6151).read_value() > 10  # Requests
            assert await counter(6160).read_value() >= 1  # WritesRefused: mode 99
            assert await counter(6155).read_value() >= 1  # ExceptionCodes.IllegalDataValue
            assert await counter(6161).read_value() >= 1  # Connections open now
            assert await counter(6166).read_value() == 0  # WatchdogExpiries

            # The SCADA goes silent: its setpoints are withdrawn and control falls back to self-consumption.
            await scada.go_silent()
            await _until(lambda: battery.get("ReactivePower") == 0.0, 10)
            await _until(lambda: gw.control is not None and gw.control.mode == "MaxSelfConsumption", 10)

            async def mode_shown() -> bool:
                return await mode_code.read_value() == MAX_SELF_CONSUMPTION

            await _until(mode_shown, 5)
            assert await scada.holding(MODE) == MAX_SELF_CONSUMPTION

            async def expiry_counted() -> bool:
                return await counter(6166).read_value() == 1

            await _until(expiry_counted, 5)
            assert "by facade:watchdog" in caplog.text

        # An operator switches modes over OPC UA through the same variable.
        url = gw.config.endpoint.replace("opc.tcp://", "opc.tcp://operator1:op-secret-1@")
        async with Client(url) as operator:
            node = operator.get_node(ua.NodeId("DemoSite.Control.ModeCode", ns))
            await node.write_value(ua.DataValue(ua.Variant(1, ua.VariantType.UInt16)))
            assert gw.control is not None and gw.control.mode == "Manual"
            assert await node.read_value() == 1
        assert "accepted GoToMode Manual by operator1" in caplog.text
    finally:
        await scada.go_silent()
        scada.client.close()
