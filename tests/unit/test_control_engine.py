"""The engine as tables of cycles on a steppable clock, writing through the real write path to a sim device:
priorities, the ramp limit, writes only on change, refused writes retried and shown, interlocks acting on
the change itself, latching and reset, the stall watchdog and bumpless mode switches."""

from __future__ import annotations

import asyncio
import logging

import pytest
from asyncua import Server, ua

from gateway.clock import SteppableClock
from gateway.control.config import ControlConfig, SetpointSpec
from gateway.control.engine import ControlEngine
from gateway.control.safety import InterlockSpec
from gateway.events.audit import Writer
from gateway.nodeset.yaml_build import compile_text
from gateway.security.roles import Role
from gateway.site import load_site
from gateway.values.aspace_io import read_value
from gateway.values.runners import DeviceRunner
from gateway.values.tags import TagTable
from gateway.values.writepath import WritePath

SITE = """
site: {namespace: "urn:test:control-engine", name: CtlSite}
devices:
  - name: Bat
    connection: sim://ctlbat
    variables:
      - {name: Setpoint, datatype: Double, unit: kW, range: [-50, 50], writable: true, scan: HighSpeed,
         address: "setpoint?initial=0"}
"""
NS = 3
SETPOINT = ua.NodeId("Bat.Setpoint", NS)
GRID, SOC, ESTOP, TEMP = (ua.NodeId(n, 1) for n in ("grid", "soc", "estop", "temp"))
OPERATOR = Writer("op1", Role.operator)
VIEWER = Writer("viewer1", Role.viewer)


@pytest.fixture
async def plant(tmp_path):
    site_xml = tmp_path / "site.xml"
    site_xml.write_bytes(compile_text(SITE, "site.yaml"))
    server = Server()
    await server.init()
    _site, bindings = await load_site(server, [site_xml])
    clock = SteppableClock()
    tags = TagTable(server.iserver.aspace, None, clock)
    runner = DeviceRunner(bindings.devices[0], tags, bindings.scan_classes, None, clock)
    await runner.driver.start()
    path = WritePath(server.iserver.aspace, tags, {runner.cfg.nodeid: runner}, None, clock)
    yield server, path, clock
    await runner.driver.stop()


def make_engine(path: WritePath, clock: SteppableClock, mode: str = "PeakShaving", ramp: float = 0.0,
                **extra) -> ControlEngine:
    config = ControlConfig(
        period_s=1.0, max_age_s=5.0, stall_periods=3, mode=mode,
        setpoints={"battery_power": SetpointSpec("battery_power", SETPOINT, 0.0, ramp)},
        signals={"grid_power": GRID, "soc": SOC},
        modes={"PeakShaving": {"import_limit": 50.0, "export_limit": 50.0}},
        interlocks=[InterlockSpec("EStop", "estop", {"signal": ESTOP}),
                    InterlockSpec("OverTemperature", "over_temperature", {"signal": TEMP}, {"limit": 55.0})],
        **extra)
    engine = ControlEngine(config, path.write, clock)
    for node, value in ((GRID, 0.0), (SOC, 60.0), (ESTOP, False), (TEMP, 25.0)):
        engine.image.set(node, value)
    return engine


def device_value(server: Server) -> float | None:
    return read_value(server.iserver.aspace, SETPOINT).Value.Value


async def run_cycles(engine: ControlEngine, server: Server, clock: SteppableClock,
                     rows: list[tuple[dict, float | None]]) -> None:
    for i, (inputs, expected) in enumerate(rows):
        for node, value in inputs.items():
            engine.image.set(node, value)
        await engine.cycle()
        await engine.settle()
        assert device_value(server) == (pytest.approx(expected) if expected is not None else None), f"cycle {i}"
        clock.step(1.0)


async def test_peak_shaving_table_through_the_write_path(plant) -> None:
    server, path, clock = plant
    engine = make_engine(path, clock)
    await run_cycles(engine, server, clock, [
        ({GRID: 30.0}, 0.0),
        ({GRID: 80.0}, 30.0),
        ({GRID: 50.0}, 30.0),
        ({GRID: 40.0}, 20.0),
    ])
    assert engine.state.state.name == "Run"
    assert engine.nodes.values["Setpoints.battery_power.DecidedBy"] == "PeakShaving"


async def test_external_control_falls_back_when_its_watchdog_signal_is_true_or_bad(plant) -> None:
    server, path, clock = plant
    external, lost = ua.NodeId("external", 1), ua.NodeId("lost", 1)
    engine = make_engine(path, clock, mode="ExternalControl")
    engine.config.signals |= {"external_power": external, "external_lost": lost}
    engine.config.fallback = ("external_lost", "PeakShaving")
    engine.image.track([external, lost], {})
    engine.image.set(external, 20.0)
    engine.image.set(lost, False)
    await run_cycles(engine, server, clock, [({GRID: 80.0}, 20.0), ({external: -10.0}, -10.0)])
    assert engine.mode == "ExternalControl"
    engine.image.set(lost, True)
    await engine.cycle()
    assert engine.mode == "PeakShaving"  # the site's fallback takes over
    assert engine.nodes.values["Setpoints.battery_power.DecidedBy"] == "PeakShaving"
    engine.go_to_mode("ExternalControl", OPERATOR)
    engine.image.set(lost, False, ua.StatusCodes.BadCommunicationError)
    await engine.cycle()
    assert engine.mode == "PeakShaving"  # a watchdog state nobody can read is no sign of life either


async def test_local_control_falls_back_when_the_operators_heartbeat_stops(plant) -> None:
    server, path, clock = plant
    local, beat = ua.NodeId("local", 1), ua.NodeId("beat", 1)
    engine = make_engine(path, clock, mode="LocalControl", fallback=(None, "PeakShaving"))
    engine.modes["LocalControl"].params["heartbeat_timeout_s"] = 3.0
    engine.config.signals |= {"local_power": local, "local_heartbeat": beat}
    engine.image.track([local, beat], {})
    engine.image.set(local, 15.0)
    engine.image.set(beat, 0)
    # 1 s per row: the heartbeat changes, then stops at 2 (the local setpoint steers meanwhile).
    await run_cycles(engine, server, clock, [({GRID: 80.0, beat: 1}, 15.0), ({beat: 2, local: -5.0}, -5.0),
                                             ({}, -5.0), ({}, -5.0), ({}, -5.0)])
    assert engine.mode == "LocalControl"
    await engine.cycle()  # 4 s without a change: more than the 3 s allowed
    await engine.settle()
    assert engine.mode == "PeakShaving" and device_value(server) == pytest.approx(25.0)  # 80 - 5 - 50
    engine.go_to_mode("LocalControl", OPERATOR)  # the operator is back: a fresh timeout from the switch
    for beat_value in (3, 4, 5):
        clock.step(2.0)
        for node, value in ((beat, beat_value), (GRID, 80.0), (SOC, 60.0), (ESTOP, False), (TEMP, 25.0)):
            engine.image.set(node, value)
        await engine.cycle()
        assert engine.mode == "LocalControl"
    await engine.settle()
    assert device_value(server) == pytest.approx(-5.0)


async def test_a_setpoint_is_written_once_per_change(plant) -> None:
    server, path, clock = plant
    engine = make_engine(path, clock)
    await run_cycles(engine, server, clock, [({GRID: 80.0}, 30.0)] + [({GRID: 50.0}, 30.0)] * 4)
    assert engine.channels["battery_power"].writes == 1


async def test_ramp_limits_the_step_and_bounds_beat_the_ramp(plant) -> None:
    server, path, clock = plant
    engine = make_engine(path, clock, ramp=10.0, charge_limiter={})
    max_chg, max_dis = ua.NodeId("chg", 1), ua.NodeId("dis", 1)
    engine.config.signals.update({"max_charge_power": max_chg, "max_discharge_power": max_dis})
    await run_cycles(engine, server, clock, [
        ({GRID: 80.0, max_chg: 50.0, max_dis: 50.0}, 10.0),  # ramps from the present 0 at 10 kW/s
        ({GRID: 70.0}, 20.0), ({GRID: 60.0}, 30.0), ({GRID: 50.0}, 30.0),
        ({max_dis: 5.0}, 5.0),  # the BMS limit drops: the bound holds at once, whatever the ramp
    ])


async def test_a_refused_write_is_retried_each_cycle_and_shown(plant, caplog) -> None:
    server, path, clock = plant
    engine = make_engine(path, clock)  # the setpoint's EURange is -50..50
    caplog.set_level(logging.WARNING, "gateway.control.channel")
    await run_cycles(engine, server, clock, [({GRID: 130.0}, None), ({}, None), ({}, None)])
    channel = engine.channels["battery_power"]
    assert channel.writes == 3 and channel.failures == 3 and channel.written is None
    assert engine.nodes.values["Setpoints.battery_power.WriteStatus"] == "BadOutOfRange"
    assert sum("refused" in r.getMessage() for r in caplog.records) == 1  # once per change, not per retry
    await run_cycles(engine, server, clock, [({GRID: 90.0}, 40.0)])
    assert engine.nodes.values["Setpoints.battery_power.WriteStatus"] == "Good"


async def test_an_interlock_acts_on_the_change_itself_latches_and_resets(plant) -> None:
    server, path, clock = plant
    engine = make_engine(path, clock)
    await run_cycles(engine, server, clock, [({GRID: 80.0}, 30.0)])
    engine.image.set(ESTOP, True)  # between two cycles
    await engine.settle()
    assert device_value(server) == 0.0  # forced without a cycle
    assert engine.state.state.name == "Error"
    assert engine.nodes.values["Interlocks.EStop.Tripped"] is True
    engine.image.set(ESTOP, False)
    await run_cycles(engine, server, clock, [({}, 0.0), ({}, 0.0)])  # latched: still safe
    assert engine.reset("EStop", VIEWER)[0].value == ua.StatusCodes.BadUserAccessDenied
    assert engine.reset("EStop", OPERATOR)[0].is_good()
    assert engine.state.state.name == "Run"
    await run_cycles(engine, server, clock, [({}, 30.0)])


async def test_a_reset_is_refused_while_the_cause_is_there(plant) -> None:
    server, path, clock = plant
    engine = make_engine(path, clock)
    await run_cycles(engine, server, clock, [({TEMP: 70.0}, 0.0)])
    status, text = engine.reset("OverTemperature", OPERATOR)
    assert status.value == ua.StatusCodes.BadInvalidState and "temperature 70 above 55" in text
    assert engine.reset("NoSuch", OPERATOR)[0].value == ua.StatusCodes.BadInvalidArgument


@pytest.mark.parametrize("status", [ua.StatusCodes.BadCommunicationError, None])
async def test_a_bad_or_stale_interlock_input_trips(plant, status) -> None:
    server, path, clock = plant
    engine = make_engine(path, clock)
    await run_cycles(engine, server, clock, [({GRID: 80.0}, 30.0)])
    if status is not None:
        engine.image.set(TEMP, 25.0, status)
    else:
        for _ in range(5):  # E-stop and temperature never change again: after 5 s they are stale
            engine.image.set(GRID, 80.0)
            await engine.cycle()
            clock.step(1.0)
        engine.image.set(GRID, 80.0)
        await engine.cycle()
    await engine.settle()
    assert device_value(server) == 0.0
    assert engine.safety.tripped


async def test_a_stalled_engine_drives_the_safe_setpoints(plant) -> None:
    server, path, clock = plant
    engine = make_engine(path, clock)
    await engine.start()
    for _ in range(3):
        for _ in range(20):
            await asyncio.sleep(0)
        engine.image.set(GRID, 80.0)
        clock.step(1.0)
    await engine.settle()
    assert device_value(server) == 30.0
    engine._tasks[0].cancel()  # the cycle task dies
    for _ in range(6):
        clock.step(1.0)
        for _ in range(20):
            await asyncio.sleep(0)
    await engine.settle()
    assert engine.stall.tripped and device_value(server) == 0.0
    await engine.stop()


async def test_a_mode_switch_is_bumpless_and_ramped(plant) -> None:
    server, path, clock = plant
    engine = make_engine(path, clock, ramp=10.0)
    await run_cycles(engine, server, clock, [({GRID: 60.0}, 10.0), ({GRID: 50.0}, 10.0)])
    assert engine.go_to_mode("Nope", OPERATOR)[0].value == ua.StatusCodes.BadInvalidArgument
    assert engine.go_to_mode("Passive", VIEWER)[0].value == ua.StatusCodes.BadUserAccessDenied
    assert engine.go_to_mode("Passive", OPERATOR)[0].is_good()
    await run_cycles(engine, server, clock, [({}, 0.0)])  # 10 -> 0 is within one cycle's ramp
    engine.go_to_mode("PeakShaving", OPERATOR)
    await run_cycles(engine, server, clock, [({GRID: 100.0}, 10.0), ({GRID: 90.0}, 20.0)])
    assert engine.nodes.values["Mode"] == "PeakShaving"


async def test_dropped_conflicts_are_reported_once_per_change(plant, caplog) -> None:
    server, path, clock = plant
    engine = make_engine(path, clock, charge_limiter={})
    max_chg, max_dis = ua.NodeId("chg", 1), ua.NodeId("dis", 1)
    engine.config.signals.update({"max_charge_power": max_chg, "max_discharge_power": max_dis})
    caplog.set_level(logging.WARNING, "gateway.control.engine")
    await run_cycles(engine, server, clock, [({GRID: 80.0, max_chg: 50.0, max_dis: 10.0}, 10.0), ({GRID: 70.0}, 10.0)])
    conflicts = [r for r in caplog.records if "conflict" in r.getMessage()]
    assert len(conflicts) == 1 and "PeakShaving = 30" in conflicts[0].getMessage()
    assert engine.nodes.values["DroppedConflicts"] == [
        "battery_power: dropped PeakShaving = 30 (priority 100) against ChargeLimiter <= 10 (priority 800)"]


async def test_a_rounded_setpoint_leaves_no_dead_band_in_the_pid(plant) -> None:
    """The PID sees the output before rounding: 0.1 kW steps, ki 0.6, 200 ms would otherwise stall it ~0.8 kW off."""
    server, path, clock = plant
    engine = make_engine(path, clock, mode="MaxSelfConsumption")
    engine.config.setpoints["battery_power"].resolution = 0.1
    engine.period = 0.2
    load = 30.0
    for _ in range(150):  # a plant without delay: grid = load - battery
        written = device_value(server) or 0.0
        for node, value in ((GRID, load - written), (SOC, 60.0), (ESTOP, False), (TEMP, 25.0)):
            engine.image.set(node, value)
        await engine.cycle()
        await engine.settle()
        clock.step(0.2)
    assert abs(load - device_value(server)) <= 0.1 + 1e-9


async def test_grid_support_stacks_on_the_mode_outside_the_ramp_and_safety_still_wins(plant) -> None:
    server, path, clock = plant
    freq = ua.NodeId("frequency", 1)
    engine = make_engine(path, clock, mode="PeakShaving", ramp=5.0, grid_support={"FcrD": {"capacity_up": 40.0}})
    engine.config.signals["frequency"] = freq
    await run_cycles(engine, server, clock, [
        ({GRID: 30.0, freq: 50.0}, 0.0),  # inside the import limit: the mode idles, no frequency deviation
        ({GRID: 30.0, freq: 49.7}, 20.0),  # FCR-D up half activated: at once, not at the 5 kW/s ramp
        ({GRID: 10.0, freq: 49.5}, 40.0),  # full activation; the mode still idles (net demand 50 kW)
        ({GRID: 30.0, freq: 49.5}, 45.0),  # net demand 70 kW: the mode asks 20 kW, ramped to 5 kW, plus 40
        ({GRID: 15.0, freq: 50.0}, 10.0),  # frequency back: the service's 40 kW leave at once
    ])
    assert engine.support["battery_power"] == 0.0
    await run_cycles(engine, server, clock, [({GRID: 30.0, freq: 49.5, ESTOP: True}, 0.0)])  # safety wins
    assert engine.state.state.name == "Error"


async def test_a_failing_grid_service_adds_nothing(plant) -> None:
    server, path, clock = plant
    freq = ua.NodeId("frequency", 1)
    engine = make_engine(path, clock, mode="PeakShaving", grid_support={"FcrD": {"capacity_up": 40.0}})
    engine.config.signals["frequency"] = freq
    await run_cycles(engine, server, clock, [({GRID: 30.0, freq: 49.7}, 20.0)])
    engine.services[0].params["f_up_full"] = 49.9  # an empty band (a parameter node written so): it divides by 0
    await run_cycles(engine, server, clock, [({GRID: 30.0, freq: 49.7}, 0.0)])
    assert engine.controller_failures == 1 and engine.service_outputs["FcrD"] == 0.0
