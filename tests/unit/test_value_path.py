"""Driver readings -> tag table -> address space, on a steppable clock."""

from __future__ import annotations

from pathlib import Path

import pytest
from asyncua import Server, ua

from gateway.clock import SteppableClock
from gateway.drivers.sim import SimDriver
from gateway.site import load_site
from gateway.values.runners import DeviceRunner
from gateway.values.tags import TagTable

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "sim_site.xml"


class ListHistory:
    def __init__(self) -> None:
        self.rows: list[tuple[ua.NodeId, ua.DataValue]] = []

    def append(self, node_id: ua.NodeId, dv: ua.DataValue) -> None:
        self.rows.append((node_id, dv))


@pytest.fixture
async def site():
    server = Server()
    await server.init()
    site, bindings = await load_site(server, [FIXTURE])
    assert site.namespaces["urn:test:sim-site"] == SITE_NS
    clock = SteppableClock()
    history = ListHistory()
    tags = TagTable(server.iserver.aspace, history, clock)
    runner = DeviceRunner(bindings.devices[0], tags, bindings.scan_classes, None, clock)
    yield server, runner, tags, clock, history
    await runner.driver.stop()


SITE_NS = 3  # 0 UA, 1 the server, 2 the gateway types, 3 the site


def _value(server: Server, name: str) -> ua.DataValue:
    return server.iserver.aspace[ua.NodeId(f"Sim1.{name}", SITE_NS)].attributes[ua.AttributeIds.Value].value


async def test_scan_scales_casts_and_stores_only_changes(site) -> None:
    server, runner, tags, clock, history = site
    assert await runner.scan("HighSpeed")
    assert _value(server, "Scaled").Value == ua.Variant(123 * 0.1 + 1, ua.VariantType.Double)
    assert _value(server, "Counter").Value.VariantType == ua.VariantType.Int32
    assert _value(server, "Flag").Value == ua.Variant(True, ua.VariantType.Boolean)
    assert _value(server, "Sine").StatusCode.is_good()
    stored = tags.stored
    assert await runner.scan("HighSpeed")  # same instant: nothing changed, nothing stored
    assert tags.stored == stored
    clock.step(1.5)  # the 2 s square wave is now in its low half
    assert await runner.scan("HighSpeed")
    changed = tags.stored - stored
    assert changed == 3  # sine, counter, flag moved; constant and setpoint did not
    # Only historized variables reach history: Sine and Setpoint.
    assert {n.Identifier for n, _ in history.rows} == {"Sim1.Sine", "Sim1.Setpoint"}


async def test_device_loss_keeps_value_and_turns_bad_then_recovers(site) -> None:
    server, runner, _tags, clock, _ = site
    assert await runner.scan("HighSpeed")
    before = _value(server, "Scaled")
    SimDriver.instances["sim1"].offline = True
    clock.step(1)
    assert not await runner.scan("HighSpeed")
    lost = _value(server, "Scaled")
    assert lost.StatusCode.value == ua.StatusCodes.BadCommunicationError
    assert lost.Value == before.Value and lost.SourceTimestamp == before.SourceTimestamp
    assert runner.health.state == "Disconnected" and "offline" in runner.health.last_error
    SimDriver.instances["sim1"].offline = False
    clock.step(1)
    assert await runner.scan("HighSpeed")
    assert _value(server, "Scaled").StatusCode.is_good()
    assert runner.health.state == "Connected" and runner.health.errors == 1


async def test_write_through_scales_back_and_failed_write_keeps_old_value(site) -> None:
    server, runner, _tags, _clock, _ = site
    assert await runner.scan("HighSpeed")
    sp = ua.NodeId("Sim1.Setpoint", SITE_NS)
    assert await runner.write(sp, 42.0) == ua.StatusCodes.Good
    assert _value(server, "Setpoint").Value.Value == 42.0
    SimDriver.instances["sim1"].offline = True
    assert await runner.write(sp, 7.0) == ua.StatusCodes.BadCommunicationError
    assert _value(server, "Setpoint").Value.Value == 42.0
    # A signal is not a setpoint: the driver refuses, the status says so.
    SimDriver.instances["sim1"].offline = False
    assert await runner.write(ua.NodeId("Sim1.Sine", SITE_NS), 1.0) == ua.StatusCodes.BadNotWritable
