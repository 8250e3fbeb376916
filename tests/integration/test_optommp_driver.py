"""The OptoMMP driver against the simulated controller on a real TCP socket, read and written by an OPC UA
client: analog and digital points and the scratchpad in planned quadlet and block reads, writes reaching the
controller and read back, a NAK failing only its variables with the brain's error, and a silent, vanished or
garbled controller turning values Bad and Good again. One gateway serves the module's tests."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from asyncua import ua
from field_client import connect, start_gateway, wait_for

from gateway.drivers.optommp import memory, packets
from gateway.drivers.optommp.simulator import MmpController
from gateway.server import Gateway

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]
NS = "urn:test:optommp"
_S = ua.StatusCodes

_SITE = """site: {{namespace: "{ns}", name: Plant}}
scan_classes: {{Fast: 200}}
devices:
  - name: Epic
    connection: "optommp://127.0.0.1:{port}?timeout_ms=800"
    variables:
      - {{name: StackTemperature, unit: °C, address: analog/0/0, scan: Fast}}
      - {{name: SteamFlow, datatype: Float, address: analog/0/1, scan: Fast}}
      - {{name: HeaterPower, unit: "%", range: [0, 100], writable: true, address: analog/1/0, scan: Fast}}
      - {{name: EStop, datatype: Boolean, address: digital/2/0, scan: Fast}}
      - {{name: HeaterEnable, datatype: Boolean, writable: true, address: digital/3/1, scan: Fast}}
      - {{name: Cycles, datatype: Int32, address: scratchpad/int/0, scan: Fast}}
      - {{name: Faults, datatype: Int32, address: scratchpad/int/1, scan: Fast}}
      - {{name: Ratio, writable: true, address: scratchpad/float/3, scan: Fast}}
      - {{name: Description, datatype: String, address: "0xF0300080", length: 12, scan: Fast}}
      - {{name: Nowhere, datatype: Int32, writable: true, address: "0xE0000010", scan: Fast}}
      - {{name: StepName, datatype: String, writable: true, address: "0xF0D83002", length: 16, scan: Fast}}
"""


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def plant(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Gateway, MmpController]]:
    controller = MmpController("Epic")
    await controller.start()
    gw = await start_gateway(tmp_path_factory.mktemp("optommp"), _SITE.format(ns=NS, port=controller.port))
    try:
        yield gw, controller
    finally:
        await gw.stop()
        await controller.drop()


async def test_points_and_scratchpad_are_read_in_planned_requests(
        plant: tuple[Gateway, MmpController], caplog: pytest.LogCaptureFixture) -> None:
    gw, controller = plant
    caplog.set_level(logging.INFO, logger="gateway.drivers.optommp.driver")
    controller.set_float(memory.ANALOG_READ, 712.5)  # module 0 point 0
    controller.set_float(memory.ANALOG_READ + 0x40, 1.25)  # module 0 point 1
    controller.set_int(memory.DIGITAL_READ + 2 * 0x1000, 1)  # module 2 point 0
    controller.set_int(memory.SCRATCHPAD_INT, 123456)
    controller.set_int(memory.SCRATCHPAD_INT + 4, -7)
    controller.write(0xF0300080, b"GRV-EPIC-PR1")
    client, view = await connect(gw, NS)
    try:
        got = await view.wait("Epic.StackTemperature", lambda d: d.StatusCode.is_good() and d.Value.Value == 712.5)
        assert got.Value.VariantType == ua.VariantType.Double
        assert (await view.dv("Epic.SteamFlow")()).Value.Value == 1.25
        assert (await view.dv("Epic.EStop")()).Value.Value is True
        assert (await view.dv("Epic.Cycles")()).Value.Value == 123456
        assert (await view.dv("Epic.Faults")()).Value.Value == -7
        assert (await view.dv("Epic.Description")()).Value.Value == "GRV-EPIC-PR1"
        # A NAK fails only its own variables, with the brain's last error; the rest keep updating.
        nowhere = await view.wait("Epic.Nowhere", lambda d: d.StatusCode.value == _S.BadNotFound, "NAK")
        assert nowhere.Value.Value is None
        assert await view.node("Epic.Diagnostics.ConnectionState").read_value() == "Connected"
        assert any("reading 4 byte(s) at 0xe0000010: refused, error 0xe005 invalid memory address" in r.getMessage()
                   for r in caplog.records if r.levelno == logging.WARNING)
        controller.set_int(memory.SCRATCHPAD_INT, 654321)
        await view.wait("Epic.Cycles", lambda d: d.Value.Value == 654321, "a later scan")
        # The plan: the two adjacent scratchpad integers in one read block of 8 bytes; a lone point in a quadlet read.
        recent = controller.requests[-60:]
        assert any(r.tcode == packets.READ_BLOCK and r.address == memory.SCRATCHPAD_INT and r.length == 8
                   for r in recent)
        assert any(r.tcode == packets.READ_QUADLET and r.address == memory.ANALOG_READ for r in recent)
        assert not any(r.address == memory.SCRATCHPAD_INT + 4 for r in recent)
    finally:
        await client.disconnect()


async def test_writes_reach_the_controller_and_are_read_back(plant: tuple[Gateway, MmpController]) -> None:
    gw, controller = plant
    client, view = await connect(gw, NS, operator=True)
    try:
        await view.wait("Epic.HeaterPower", lambda d: d.StatusCode.is_good())
        await view.write("Epic.HeaterPower", 42.5, ua.VariantType.Double)
        assert controller.get_float(memory.ANALOG_WRITE + 0x1000) == 42.5  # module 1 point 0, write area
        write = next(r for r in reversed(controller.requests) if r.tcode == packets.WRITE_QUADLET)
        assert write.address == memory.ANALOG_WRITE + 0x1000
        await view.wait("Epic.HeaterPower", lambda d: d.Value.Value == 42.5, "read back")
        await view.write("Epic.HeaterEnable", True, ua.VariantType.Boolean)
        assert controller.get_int(memory.DIGITAL_WRITE + 3 * 0x1000 + 0x40) == 1
        await view.wait("Epic.HeaterEnable", lambda d: d.Value.Value is True)
        await view.write("Epic.Ratio", 0.75, ua.VariantType.Double)
        assert controller.get_float(memory.SCRATCHPAD_FLOAT + 12) == 0.75
        await view.write("Epic.StepName", "Heat-Up", ua.VariantType.String)  # 16 bytes: a write block request
        write = next(r for r in reversed(controller.requests) if r.tcode == packets.WRITE_BLOCK)
        assert (write.address, write.data) == (0xF0D83002, b"Heat-Up".ljust(16, b"\0"))
        await view.wait("Epic.StepName", lambda d: d.Value.Value == "Heat-Up", "read back as a block")
        with pytest.raises(ua.UaStatusCodeError) as err:  # NAK'd: the brain's error says why
            await view.write("Epic.Nowhere", 5, ua.VariantType.Int32)
        assert err.value.code == _S.BadNotFound
        last_error = await view.node("Epic.Diagnostics.LastError").read_value()
        assert "writing 0xE0000010 (0xe0000010): refused, error 0xe005 invalid memory address" in last_error
        with pytest.raises(ua.UaStatusCodeError) as err:  # the gateway's own range check, before the wire
            await view.write("Epic.HeaterPower", 150.0, ua.VariantType.Double)
        assert err.value.code == _S.BadOutOfRange
        assert controller.get_float(memory.ANALOG_WRITE + 0x1000) == 42.5
    finally:
        await client.disconnect()


async def test_silent_vanished_and_garbled_controllers_turn_values_bad_and_good_again(
        plant: tuple[Gateway, MmpController], caplog: pytest.LogCaptureFixture) -> None:
    gw, controller = plant
    client, view = await connect(gw, NS)
    state = view.node("Epic.Diagnostics.ConnectionState")
    last_error = view.node("Epic.Diagnostics.LastError")
    controller.set_float(memory.ANALOG_READ + 0x40, 1.25)
    try:
        await view.wait("Epic.SteamFlow", lambda d: d.StatusCode.is_good() and d.Value.Value == 1.25)
        controller.silent = True
        await view.wait("Epic.SteamFlow", lambda d: d.StatusCode.value == _S.BadCommunicationError, "silent")
        await wait_for(state.read_value, lambda s: s == "Disconnected", what="silent controller")
        assert "no answer from 127.0.0.1" in await last_error.read_value()
        controller.silent = False
        await view.wait("Epic.SteamFlow", lambda d: d.StatusCode.is_good(), "answers again", within=15)

        await controller.drop()
        await view.wait("Epic.SteamFlow", lambda d: d.StatusCode.value == _S.BadCommunicationError, "gone")
        await controller.start()
        await view.wait("Epic.SteamFlow", lambda d: d.StatusCode.is_good(), "back", within=15)

        caplog.set_level(logging.WARNING, logger="gateway.values.runners")
        controller.garbage = True
        await view.wait("Epic.SteamFlow", lambda d: d.StatusCode.value == _S.BadCommunicationError, "garbage")
        assert "is not an OptoMMP packet" in await last_error.read_value()
        assert any("device Epic: optommp://127.0.0.1" in r.getMessage() and "bad answer" in r.getMessage()
                   for r in caplog.records)
        controller.garbage = False
        await view.wait("Epic.SteamFlow", lambda d: d.StatusCode.is_good(), "answers in form again", within=15)
        assert (await view.dv("Epic.SteamFlow")()).Value.Value == 1.25  # the same value, Good again
    finally:
        controller.silent = controller.garbage = False
        if controller._server is None:
            await controller.start()
        await client.disconnect()
