"""The control engine closing the loop on the physics simulators through real Modbus.

Each test runs a gateway under --simulate on a small site (battery, PV, site load, grid meter: pymodbus
servers on loopback, scanned every 100 ms) with a 200 ms control cycle, and judges the plant where it
is: the registers of the simulated devices (`sim.device(...).get`), every setpoint write as the battery
received it (a write hook on its unit), the engine's cycle count. The load has no noise unless a test
asks (the simulator's `noise_kw`), so a steady state is steady.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from asyncua import Client, ua

from gateway.control.state import SystemState
from gateway.drivers.modbus.simulators.site import SiteSimulation
from gateway.events.audit import Writer
from gateway.nodeset.yaml_build import compile_text
from gateway.security.roles import Role
from gateway.server import Gateway

pytestmark = pytest.mark.integration

OPERATOR = Writer("operator1", Role.operator)
IMPORT_LIMIT = 80.0

SITE = """
site: {namespace: "urn:test:closed-loop", name: LoopSite}
devices:
  - name: Battery1
    connection: modbus+tcp://192.168.10.10:502/1
    simulator: battery?capacity_kwh=CAPACITY&max_power_kw=100&soc=SOC&ramp_kw_per_s=1000
    variables:
      - {name: StateOfCharge, datatype: Double, unit: "%", scan: HighSpeed, address: input/0,
         field_type: "xsd:unsignedShort", scale: 0.1}
      - {name: ActivePower, datatype: Double, unit: kW, scan: HighSpeed, address: input/1, field_type: "xsd:short",
         scale: 0.1}
      - {name: MaxChargePower, datatype: Double, unit: kW, scan: HighSpeed, address: input/2,
         field_type: "xsd:unsignedShort", scale: 0.1}
      - {name: MaxDischargePower, datatype: Double, unit: kW, scan: HighSpeed, address: input/3,
         field_type: "xsd:unsignedShort", scale: 0.1}
      - {name: ActivePowerSetpoint, datatype: Double, unit: kW, range: [-100, 100], writable: true, scan: HighSpeed,
         address: holding/0, field_type: "xsd:short", scale: 0.1}
      - {name: ReactivePower, datatype: Double, unit: kvar, scan: HighSpeed, address: input/4, field_type: "xsd:short",
         scale: 0.1}
      - {name: ReactivePowerSetpoint, datatype: Double, unit: kvar, range: [-100, 100], writable: true,
         scan: HighSpeed, address: holding/1, field_type: "xsd:short", scale: 0.1}
  - name: PvInverter1
    connection: modbus+tcp://192.168.10.20:502/1
    simulator: pv?peak_kw=0&start_hour=13
    variables:
      - {name: ActivePower, datatype: Double, unit: kW, scan: HighSpeed, address: input/0, field_type: "xsd:float"}
  - name: SiteLoad
    connection: modbus+tcp://192.168.10.40:502/1
    simulator: load?base_kw=60&peak_kw=0&noise_kw=0
    variables:
      - {name: ActivePower, datatype: Double, unit: kW, scan: HighSpeed, address: input/0, field_type: "xsd:int",
         scale: 0.001}
  - name: GridMeter
    connection: modbus+tcp://192.168.10.30:502/1
    simulator: meter?frequency_noise_hz=0
    variables:
      - {name: ActivePower, datatype: Double, unit: kW, scan: HighSpeed, address: input/0, field_type: "xsd:int",
         scale: 0.001, description: "> 0 importing"}
      - {name: Frequency, datatype: Double, unit: Hz, scan: HighSpeed, address: input/2,
         field_type: "xsd:unsignedShort", scale: 0.001}
      - {name: Voltage, datatype: Double, unit: V, scan: HighSpeed, address: input/3,
         field_type: "xsd:unsignedShort", scale: 0.01}
control:
  period_ms: 200
  max_input_age_s: MAX_AGE
  mode: MODE
  setpoints:
    battery_power: {node: Battery1.ActivePowerSetpoint, safe: 0, ramp: RAMP, resolution: 0.1}
    reactive_power: {node: Battery1.ReactivePowerSetpoint, safe: 0, resolution: 0.1}
  signals:
    grid_power: GridMeter.ActivePower
    battery_power: Battery1.ActivePower
    soc: Battery1.StateOfCharge
    max_charge_power: Battery1.MaxChargePower
    max_discharge_power: Battery1.MaxDischargePower
    frequency: GridMeter.Frequency
    voltage: GridMeter.Voltage
  grid_support: GRID_SUPPORT
  charge_limiter: {soc_min: 5, soc_max: 95}
  modes:
    MaxSelfConsumption: {reserve_soc: 5, kp: 0.5, ki: 1.5}
    PeakShaving: {import_limit: 80, export_limit: 100}
    ChargeOnly: {soc_target: 95, charge_power: 50}
  interlocks:
    - {name: CommLoss, kind: comm_loss, inputs: [GridMeter.ActivePower, Battery1.StateOfCharge]}
"""


def site_text(mode: str, ramp: float = 500.0, max_age: float = 2.0, soc: float = 60.0,
              capacity: float = 200.0, grid_support: str = "{}") -> str:
    return (SITE.replace("MODE", mode).replace("GRID_SUPPORT", grid_support).replace("RAMP", f"{ramp:g}")
            .replace("MAX_AGE", f"{max_age:g}")
            .replace("CAPACITY", f"{capacity:.0f}").replace("SOC", f"{soc:g}"))


async def start(simulated_gateway, tmp_path: Path, mode: str, **kw: float | str) -> tuple[Gateway, SiteSimulation]:
    site = tmp_path / "loop-site.xml"
    site.write_bytes(compile_text(site_text(mode, **kw), "loop-site.yaml"))
    gw = await simulated_gateway(site)
    sim = gw.simulations[0]
    assert isinstance(sim, SiteSimulation) and gw.control is not None
    await until(lambda: gw.control.state.state is SystemState.Run, 10.0)
    return gw, sim


async def until(predicate: Callable[[], bool], within_s: float, step_s: float = 0.01) -> None:
    async with asyncio.timeout(within_s):
        while not predicate():  # noqa: ASYNC110 - the plant's registers have no event to wait on
            await asyncio.sleep(step_s)


async def sample(read: Callable[[], float], for_s: float, step_s: float = 0.02) -> list[float]:
    seen = []
    end = time.monotonic() + for_s
    while time.monotonic() < end:
        seen.append(read())
        await asyncio.sleep(step_s)
    return seen


class SetpointWrites:
    """Every battery setpoint as the simulated battery received it, with when and the BMS limits then."""

    def __init__(self, sim: SiteSimulation) -> None:
        self.battery = sim.device("Battery1")
        self.got: list[tuple[float, float, float, float]] = []  # (monotonic, setpoint, max charge, max discharge)
        self.battery.memory.on_write.append(self._seen)

    def _seen(self, unit: object, table: str, address: int, words: list[int]) -> None:
        b = self.battery
        self.got.append((time.monotonic(), b.get("ActivePowerSetpoint"), b.get("MaxChargePower"),
                         b.get("MaxDischargePower")))


def grid_of(sim: SiteSimulation) -> Callable[[], float]:
    meter = sim.device("GridMeter")
    return lambda: meter.get("ActivePower")


async def test_peak_shaving_keeps_import_under_the_limit_within_3_cycles_of_a_50_kw_load_step(
        simulated_gateway, tmp_path: Path) -> None:
    gw, sim = await start(simulated_gateway, tmp_path, "PeakShaving")
    engine, grid = gw.control, grid_of(sim)
    await until(lambda: abs(grid() - 60.0) < 0.5, 5.0)  # 60 kW load, inside the limit: the battery idles
    assert abs(sim.device("Battery1").get("ActivePowerSetpoint")) < 0.1
    load = sim.device("SiteLoad").model
    load.base_kw += 50.0  # type: ignore[union-attr]  # 110 kW: 30 kW over the import limit
    cycles_at_step = engine.cycles
    await until(lambda: grid() > IMPORT_LIMIT + 1.0, 2.0)  # the plant saw the step
    await until(lambda: grid() <= IMPORT_LIMIT + 0.1, 3.0)  # 0.1 kW: the setpoint register's resolution
    took = engine.cycles - cycles_at_step
    print(f"peak shaving: import under the limit {took} cycle(s) after the load step")
    assert took <= 3, f"import under the limit only after {took} cycles"
    held = await sample(grid, 2.0)
    assert max(held) <= IMPORT_LIMIT + 0.1, f"import {max(held):g} kW over the limit after the step"
    assert sim.device("Battery1").get("ActivePower") == pytest.approx(30.0, abs=0.2)
    load.base_kw -= 50.0  # type: ignore[union-attr]  # back inside the limit: the battery idles again
    await until(lambda: abs(sim.device("Battery1").get("ActivePowerSetpoint")) < 0.1, 3.0)


async def test_self_consumption_holds_the_grid_within_1_kw_in_steady_state(simulated_gateway, tmp_path: Path) -> None:
    _gw, sim = await start(simulated_gateway, tmp_path, "MaxSelfConsumption")
    grid = grid_of(sim)
    assert grid() > 50.0  # the 60 kW load before the battery answers
    await until(lambda: abs(grid()) < 1.0, 15.0)
    await asyncio.sleep(1.0)  # settled
    held = await sample(grid, 2.0)
    print(f"self-consumption: |grid| at most {max(abs(g) for g in held):.2f} kW in steady state")
    assert max(abs(g) for g in held) < 1.0, f"grid power reached {max(held, key=abs):g} kW in steady state"
    assert sim.device("Battery1").get("ActivePower") == pytest.approx(60.0, abs=1.0)


async def test_a_bad_grid_meter_trips_the_interlock_and_drives_the_safe_setpoint(simulated_gateway,
                                                                                 tmp_path: Path) -> None:
    gw, sim = await start(simulated_gateway, tmp_path, "MaxSelfConsumption")
    engine, battery = gw.control, sim.device("Battery1")
    await until(lambda: battery.get("ActivePowerSetpoint") > 30.0, 10.0)  # discharging into the load
    sim.device("GridMeter").memory.exception = 4  # the meter answers every request with a device failure
    await until(lambda: battery.get("ActivePowerSetpoint") == 0.0, 5.0)
    interlock = engine.safety.interlocks["CommLoss"]
    assert interlock.tripped and "Bad" in interlock.cause, interlock.cause
    assert engine.state.state is SystemState.Error
    sim.device("GridMeter").memory.exception = None  # the meter answers again: the trip stays latched
    await until(lambda: engine.image.get(engine.config.signals["grid_power"]).good, 5.0)
    assert max(await sample(lambda: abs(battery.get("ActivePowerSetpoint")), 1.0)) == 0.0
    assert interlock.tripped
    status, text = engine.reset("CommLoss", OPERATOR)
    assert status.is_good(), text
    await until(lambda: battery.get("ActivePowerSetpoint") > 30.0, 10.0)  # self-consumption again


async def test_a_stale_bms_trips_the_interlock_and_drives_the_safe_setpoint(simulated_gateway, tmp_path: Path) -> None:
    gw, sim = await start(simulated_gateway, tmp_path, "MaxSelfConsumption", max_age=0.8)
    engine, battery = gw.control, sim.device("Battery1")
    await until(lambda: battery.get("ActivePowerSetpoint") > 30.0, 10.0)
    # The BMS still answers, with Good values, but each answer takes 2 s: its values age past 0.8 s.
    battery.memory.delay_s = 2.0
    interlock = engine.safety.interlocks["CommLoss"]
    await until(lambda: interlock.tripped, 5.0)
    assert "stale" in interlock.cause, interlock.cause
    assert engine.image.get(engine.config.signals["soc"]).good  # stale, not Bad
    assert engine.state.state is SystemState.Error
    assert engine.outputs["battery_power"] == 0.0
    await until(lambda: battery.get("ActivePowerSetpoint") == 0.0, 10.0)  # the slow BMS got the safe setpoint


async def test_the_bms_limits_are_never_exceeded(simulated_gateway, tmp_path: Path) -> None:
    # SOC 10 % is halfway into the battery's derating band: it allows 50 kW of discharge. A huge capacity
    # keeps the SOC (and so the limits) still while the test runs.
    _gw, sim = await start(simulated_gateway, tmp_path, "MaxSelfConsumption", soc=10, capacity=1e6)
    battery = sim.device("Battery1")
    writes = SetpointWrites(sim)
    sim.device("SiteLoad").model.base_kw = 120.0  # type: ignore[union-attr]  # self-consumption wants 120 kW
    await until(lambda: battery.get("ActivePowerSetpoint") >= 49.9, 10.0)
    await asyncio.sleep(1.5)  # pushing against the limit: the PID must not push through it
    # Charging: 90 % SOC allows 50 kW of charge; PV gives 200 kW against the 120 kW load.
    battery.model.soc = 90.0  # type: ignore[union-attr]
    sim.device("PvInverter1").model.peak_kw = 200.0  # type: ignore[union-attr]
    await until(lambda: battery.get("ActivePowerSetpoint") <= -49.9, 10.0)
    await asyncio.sleep(1.5)
    assert len(writes.got) > 5
    for _when, setpoint, max_charge, max_discharge in writes.got:
        assert -max_charge - 0.05 <= setpoint <= max_discharge + 0.05, \
            f"setpoint {setpoint:g} kW outside the BMS limits -{max_charge:g}..{max_discharge:g} kW"
    assert battery.get("ActivePower") == pytest.approx(-50.0, abs=0.2)


async def test_a_mode_switch_steps_no_further_than_the_ramp_limit(simulated_gateway, tmp_path: Path) -> None:
    ramp = 100.0  # kW/s: 20 kW per 200 ms cycle
    gw, sim = await start(simulated_gateway, tmp_path, "MaxSelfConsumption", ramp=ramp)
    engine, battery = gw.control, sim.device("Battery1")
    await until(lambda: battery.get("ActivePowerSetpoint") > 55.0, 15.0)  # discharging ~60 kW
    writes = SetpointWrites(sim)
    assert engine.go_to_mode("ChargeOnly", OPERATOR)[0].is_good()  # wants -50 kW: a 110 kW step
    await until(lambda: battery.get("ActivePowerSetpoint") == -50.0, 5.0)
    assert engine.go_to_mode("MaxSelfConsumption", OPERATOR)[0].is_good()  # bumpless back towards +60 kW
    await until(lambda: battery.get("ActivePowerSetpoint") > 55.0, 10.0)
    steps = [(b[1] - a[1], b[0] - a[0]) for a, b in zip(writes.got, writes.got[1:], strict=False)]
    assert len(steps) >= 10  # each switch went through several ramped steps
    for step, dt in steps:
        # The engine ramps by its cycle's dt; a write can arrive up to a write's latency early or late.
        assert abs(step) <= ramp * (dt + 0.1) + 0.1, f"a step of {step:g} kW within {dt * 1000:.0f} ms"
    assert max(abs(s) for s, _ in steps) < 55.0  # far from the unramped 110 kW


async def test_the_fcr_d_response_follows_the_droop_line_within_2_percent_of_rated_power(simulated_gateway,
                                                                                           tmp_path: Path) -> None:
    rated = 100.0
    gw, sim = await start(simulated_gateway, tmp_path, "Passive",
                          grid_support="{FcrD: {capacity_up: 100, capacity_down: 100}}")
    meter, battery = sim.device("GridMeter"), sim.device("Battery1")
    fcr = gw.control.services[0]
    # A stepped ramp through both bands and beyond their ends (prequalification-style steps of 0.1-0.15 Hz),
    # judged once each step has settled: the battery's power at the device against the droop line at the
    # frequency at the device.
    profile = [49.95, 49.8, 49.65, 49.5, 49.4, 50.05, 50.2, 50.35, 50.5, 50.6, 50.0]
    worst = 0.0
    for f in profile:
        sim.device("GridMeter").model.set_frequency(f)  # type: ignore[union-attr]
        await until(lambda f=f: abs(meter.get("Frequency") - f) < 0.0005, 2.0)
        expected = fcr.response(meter.get("Frequency"))
        await until(lambda e=expected: abs(battery.get("ActivePower") - e) <= 0.02 * rated, 3.0)
        await asyncio.sleep(0.2)  # settled: it stays on the line
        for p in await sample(lambda: battery.get("ActivePower"), 0.3):
            worst = max(worst, abs(p - expected))
    print(f"FCR-D: at most {worst:.2f} kW off the droop line ({worst / rated:.1%} of rated power)")
    assert worst <= 0.02 * rated, f"FCR-D {worst:g} kW off its droop line"
    assert battery.get("ActivePower") == pytest.approx(0.0, abs=0.2)


async def test_ffr_reaches_full_power_within_the_required_time(simulated_gateway, tmp_path: Path) -> None:
    # Nordic FFR at an activation level of 49.7 Hz: full power within 1.3 s, held at least 5 s.
    _gw, sim = await start(simulated_gateway, tmp_path, "Passive",
                           grid_support="{Ffr: {capacity: 80, f_activation: 49.7, hold_s: 5, recovery_s: 60}}")
    battery = sim.device("Battery1")
    await asyncio.sleep(0.5)
    assert battery.get("ActivePower") == 0.0
    sim.device("GridMeter").model.set_frequency(49.65)  # type: ignore[union-attr]
    stepped = time.monotonic()
    await until(lambda: battery.get("ActivePower") >= 80.0 - 0.1, 3.0)
    took = time.monotonic() - stepped
    print(f"FFR: full power {took * 1000:.0f} ms after the frequency step")
    assert took <= 1.3, f"FFR at full power only after {took:.2f} s"
    sim.device("GridMeter").model.set_frequency(50.0)  # type: ignore[union-attr]
    held = await sample(lambda: battery.get("ActivePower"), 3.0)  # the hold outlasts the dip
    assert min(held) >= 80.0 - 0.1


async def test_volt_var_follows_its_curve_on_voltage_steps(simulated_gateway, tmp_path: Path) -> None:
    gw, sim = await start(simulated_gateway, tmp_path, "Passive", grid_support="{VoltVar: {q_max_kvar: 60}}")
    meter, battery = sim.device("GridMeter"), sim.device("Battery1")
    volt_var = gw.control.services[0]
    for offset in (0.0, 11.5, 18.4, 30.0, -11.5, -18.4, 0.0):  # 1.00, 1.05, 1.08, 1.13, 0.95, 0.92, 1.00 pu
        meter.model.voltage_offset_v = offset  # type: ignore[union-attr]
        await until(lambda o=offset: abs(meter.get("Voltage") - 230.0 - o) < 0.01, 2.0)
        expected = volt_var.curve(meter.get("Voltage"))
        await until(lambda e=expected: abs(battery.get("ReactivePower") - e) <= 0.2, 3.0)
    assert battery.get("ReactivePower") == 0.0
    # Its parameters are writable nodes: an operator halves its reach at 1.05 pu; its output is a node too.
    url = gw.config.endpoint.replace("opc.tcp://", "opc.tcp://operator1:op-secret-1@")
    async with Client(url) as client:
        ns = await client.get_namespace_index("urn:test:closed-loop")
        await client.get_node(ua.NodeId("LoopSite.Control.GridSupport.VoltVar.q_max_kvar", ns)).write_value(
            ua.DataValue(ua.Variant(30.0, ua.VariantType.Double)))
        meter.model.voltage_offset_v = 11.5  # type: ignore[union-attr]
        await until(lambda: abs(battery.get("ReactivePower") + 15.0) <= 0.2, 3.0)
        gw_ns = await client.get_namespace_index("urn:opcua-gateway:types")
        control = client.get_node(ua.NodeId("LoopSite.Control", ns))
        output = await control.get_child([f"{ns}:GridSupport", f"{ns}:VoltVar", f"{gw_ns}:Output"])
        assert await output.read_value() == pytest.approx(-15.0, abs=0.2)


BACKUP_SITE = """
site: {namespace: "urn:test:closed-loop-backup", name: BackupSite}
devices:
  - name: Battery1
    connection: modbus+tcp://192.168.10.10:502/1
    simulator: battery?capacity_kwh=200&max_power_kw=100&soc=60&ramp_kw_per_s=1000
    variables:
      - {name: StateOfCharge, datatype: Double, unit: "%", scan: HighSpeed, address: input/0,
         field_type: "xsd:unsignedShort", scale: 0.1}
      - {name: ActivePower, datatype: Double, unit: kW, scan: HighSpeed, address: input/1, field_type: "xsd:short",
         scale: 0.1}
      - {name: ActivePowerSetpoint, datatype: Double, unit: kW, range: [-100, 100], writable: true, scan: HighSpeed,
         address: holding/0, field_type: "xsd:short", scale: 0.1}
      - {name: GridFormingSetpoint, datatype: Boolean, writable: true, scan: HighSpeed, address: coil/0}
  - name: SiteLoad
    connection: modbus+tcp://192.168.10.40:502/1
    simulator: load?base_kw=60&peak_kw=0&noise_kw=0&sheddable_kw=20
    variables:
      - {name: ActivePower, datatype: Double, unit: kW, scan: HighSpeed, address: input/0, field_type: "xsd:int",
         scale: 0.001}
      - {name: ShedSetpoint, datatype: Boolean, writable: true, scan: HighSpeed, address: coil/0}
  - name: GridMeter
    connection: modbus+tcp://192.168.10.30:502/1
    simulator: meter?frequency_noise_hz=0
    variables:
      - {name: ActivePower, datatype: Double, unit: kW, scan: HighSpeed, address: input/0, field_type: "xsd:int",
         scale: 0.001}
      - {name: Frequency, datatype: Double, unit: Hz, scan: HighSpeed, address: input/2,
         field_type: "xsd:unsignedShort", scale: 0.001}
      - {name: Voltage, datatype: Double, unit: V, scan: HighSpeed, address: input/3,
         field_type: "xsd:unsignedShort", scale: 0.01}
      - {name: GridConnectSetpoint, datatype: Boolean, writable: true, scan: HighSpeed, address: coil/0}
control:
  period_ms: 200
  max_input_age_s: 2
  mode: Backup
  setpoints:
    battery_power: {node: Battery1.ActivePowerSetpoint, safe: 0, resolution: 0.1}
    grid_forming: {node: Battery1.GridFormingSetpoint, safe: 0}
    grid_connect: {node: GridMeter.GridConnectSetpoint, safe: 1}
    load_shed: {node: SiteLoad.ShedSetpoint, safe: 0}
  signals:
    soc: Battery1.StateOfCharge
    frequency: GridMeter.Frequency
    grid_voltage: GridMeter.Voltage
  modes:
    Backup: {reconnect_s: RECONNECT, soc_target: 50, shed_soc: 100}
"""


async def test_backup_islands_on_a_grid_outage_serves_the_priority_load_and_reconnects_when_stable(
        simulated_gateway, tmp_path: Path) -> None:
    reconnect_s = 2.0
    site = tmp_path / "backup-site.xml"
    site.write_bytes(compile_text(BACKUP_SITE.replace("RECONNECT", f"{reconnect_s:g}"), "backup-site.yaml"))
    gw = await simulated_gateway(site)
    sim = gw.simulations[0]
    await until(lambda: gw.control.state.state is SystemState.Run, 10.0)
    battery, load, meter = sim.device("Battery1"), sim.device("SiteLoad"), sim.device("GridMeter")
    grid = grid_of(sim)
    # On the grid with the backup reserve full (SOC 60 >= 50): the battery idles, the grid serves the load.
    await until(lambda: abs(grid() - 60.0) < 0.5 and meter.get("GridConnectSetpoint"), 5.0)
    assert not battery.get("GridFormingSetpoint") and abs(battery.get("ActivePower")) < 0.1
    lost_at = time.monotonic()
    meter.model.grid_up = 0.0  # type: ignore[union-attr]  # the outage
    # Islanded: breaker open, the battery forms the grid and serves the priority load (60 - 20 shed).
    await until(lambda: battery.get("GridFormingSetpoint") and not meter.get("GridConnectSetpoint")
                and load.get("ShedSetpoint"), 3.0)
    islanded_s = time.monotonic() - lost_at
    await until(lambda: abs(battery.get("ActivePower") - 40.0) < 0.5, 2.0)
    print(f"backup: islanded {islanded_s * 1000:.0f} ms after the outage; battery serving "
          f"{battery.get('ActivePower'):.1f} kW of priority load")
    assert load.get("ActivePower") == pytest.approx(40.0, abs=0.5)  # the priority load stays on
    assert grid() == 0.0
    # The grid comes back: the breaker stays open until the grid has been stable for reconnect_s.
    back_at = time.monotonic()
    meter.model.grid_up = 1.0  # type: ignore[union-attr]
    await until(lambda: meter.get("GridConnectSetpoint"), reconnect_s + 3.0)
    waited = time.monotonic() - back_at
    assert waited >= reconnect_s - 0.3, f"reconnected after {waited:.2f} s, before {reconnect_s} s of stable grid"
    await until(lambda: not battery.get("GridFormingSetpoint") and not load.get("ShedSetpoint"), 2.0)
    await until(lambda: abs(grid() - 60.0) < 0.5, 3.0)  # back on the grid, the whole load served from it
    print(f"backup: reconnected {waited:.2f} s after the grid came back (stable time {reconnect_s:g} s)")
