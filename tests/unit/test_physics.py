"""The plant models behind the simulators: stepped by hand, so every figure is exact."""

from __future__ import annotations

import pytest

from gateway.drivers.simulators.physics import Battery, GridMeter, Load, Plant, PvInverter, parse_model


def test_soc_integrates_power_with_efficiency() -> None:
    bat = Battery(capacity_kwh=100, max_power_kw=50, soc=50, ramp_kw_per_s=1e9, efficiency=0.9)
    plant = Plant([bat])
    bat.set_input("ActivePowerSetpoint", 36.0)  # discharge 36 kW for 100 s = 1 kWh delivered
    for _ in range(100):
        plant.step(1.0)
    assert bat.power == pytest.approx(36.0)
    assert bat.soc == pytest.approx(50 - 1 / 0.9)  # 1.11 kWh drawn from 100 kWh
    bat.set_input("ActivePowerSetpoint", -36.0)  # charge 1 kWh: 0.9 kWh stored
    for _ in range(100):
        plant.step(1.0)
    assert bat.soc == pytest.approx(50 - 1 / 0.9 + 0.9)


def test_limits_derate_near_the_soc_limits_and_when_hot() -> None:
    bat = Battery(max_power_kw=100, soc=50, soc_min=5, soc_max=95, derate_band=10)
    assert bat.limits() == (100.0, 100.0)
    bat.soc = 10.0  # halfway into the lower band
    assert bat.limits() == pytest.approx((100.0, 50.0))
    bat.soc = 5.0
    assert bat.limits()[1] == 0.0
    bat.soc, bat.temperature = 50.0, 50.0  # 5 K above 45 °C: half power both ways
    assert bat.limits() == pytest.approx((50.0, 50.0))


def test_setpoint_is_clamped_ramped_and_a_fault_trips_to_zero() -> None:
    bat = Battery(max_power_kw=100, soc=50, ramp_kw_per_s=20)
    plant = Plant([bat])
    bat.set_input("ActivePowerSetpoint", 500.0)
    plant.step(1.0)
    assert bat.power == pytest.approx(20.0)  # ramp limited
    for _ in range(10):
        plant.step(1.0)
    assert bat.power == pytest.approx(100.0)  # clamped to the discharge limit
    bat.inject_fault(7)
    for _ in range(10):
        plant.step(1.0)
    assert bat.power == 0.0 and bat.outputs()["Running"] is False and bat.outputs()["FaultCode"] == 7


def test_temperature_follows_losses_derates_and_trips_at_60_degrees() -> None:
    bat = Battery(max_power_kw=100, soc=50, ramp_kw_per_s=1e9, heat_k_at_max=40, thermal_tau_s=10)
    plant = Plant([bat])
    bat.set_input("ActivePowerSetpoint", 100.0)
    plant.step(5.0)
    assert 25.0 < bat.temperature < 65.0
    for _ in range(100):
        plant.step(5.0)
    # The thermal derating finds its balance below the trip point: 40 °C at 25 kW here.
    assert bat.temperature == pytest.approx(40.0, abs=0.5) and bat.power == pytest.approx(25.0, abs=1.0)
    assert bat.fault == 0
    bat.ambient_c = 65.0  # a failed cooling system
    for _ in range(100):
        plant.step(5.0)
    assert bat.fault == Battery.OVER_TEMPERATURE and bat.power == 0.0


def test_pv_follows_the_sun_and_the_curtailment() -> None:
    pv = PvInverter(peak_kw=80, start_hour=13, sunrise=6, sunset=20, seed=1)
    plant = Plant([pv])
    assert 40.0 < pv.power <= 80.0  # early afternoon
    pv.set_input("CurtailmentSetpoint", 25.0)
    plant.step(1.0)
    assert pv.power == pytest.approx(20.0)  # 25 % of 80 kW
    pv.set_input("CurtailmentSetpoint", 100.0)
    night = PvInverter(start_hour=23)
    assert night.power == 0.0 and night.irradiance == 0.0
    fast = PvInverter(start_hour=19.5, time_scale=3600)  # an hour per second
    fast.step(1.0, Plant([fast]))
    assert fast.power == 0.0  # 20:30, after sunset


def test_meter_reads_load_minus_pv_minus_battery() -> None:
    load, pv, bat, meter = Load(base_kw=60, peak_kw=0, seed=2), PvInverter(peak_kw=80, start_hour=13), \
        Battery(ramp_kw_per_s=1e9), GridMeter()
    plant = Plant([meter, load, pv, bat])  # the meter is stepped last whatever the order
    bat.set_input("ActivePowerSetpoint", 30.0)
    plant.step(1.0)
    assert meter.power == pytest.approx(load.power - pv.power - 30.0)
    assert meter.import_kwh > 0 or meter.export_kwh > 0


def test_parse_model_names_what_is_wrong() -> None:
    assert isinstance(parse_model("battery?capacity_kwh=200&soc=20"), Battery)
    assert parse_model("battery?soc=20").soc == 20.0  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="unknown simulator 'boiler'"):
        parse_model("boiler")
    with pytest.raises(ValueError, match="has no parameter 'colour'"):
        parse_model("pv?colour=red")
    with pytest.raises(ValueError, match="is not a number"):
        parse_model("load?base_kw=lots")


def test_a_steady_load_without_noise_and_a_load_step() -> None:
    load = Load(base_kw=60, peak_kw=0, noise_kw=0)
    plant = Plant([load])
    for _ in range(50):
        plant.step(0.1)
    assert load.power == 60.0
    load.base_kw += 50  # a 50 kW load step
    plant.step(0.1)
    assert load.power == 110.0
    noisy = Load(base_kw=60, peak_kw=0, noise_kw=2, seed=5)
    seen = []
    for _ in range(200):
        noisy.step(0.1, Plant([]))
        seen.append(noisy.power)
    assert max(seen) - min(seen) > 2.0 and all(50.0 <= p <= 70.0 for p in seen)  # within +/- 5 x noise


def test_grid_frequency_follows_a_target_at_its_ramp_with_or_without_wander() -> None:
    meter = GridMeter(frequency_noise_hz=0)
    plant = Plant([meter])
    plant.step(0.1)
    assert meter.frequency == 50.0
    meter.set_frequency(49.5, ramp_hz_per_s=0.1)
    for _ in range(10):
        plant.step(0.1)
    assert meter.frequency == pytest.approx(49.9)  # 1 s at 0.1 Hz/s
    for _ in range(100):
        plant.step(0.1)
    assert meter.frequency == pytest.approx(49.5)  # holds at the target
    meter.set_frequency(50.8)  # a step
    plant.step(0.1)
    assert meter.frequency == pytest.approx(50.8)
    meter.set_frequency(50.0, noise_hz=0.004)
    seen = []
    for _ in range(300):
        plant.step(0.1)
        seen.append(meter.frequency)
    assert all(49.95 <= f <= 50.05 for f in seen) and max(seen) > min(seen)
    assert parse_model("meter?frequency_target_hz=49.8&frequency_noise_hz=0").outputs()["Frequency"] == 49.8


def test_reactive_power_follows_its_setpoint_within_the_rating_and_a_voltage_step() -> None:
    bat, meter = Battery(max_power_kw=100), GridMeter(frequency_noise_hz=0)
    plant = Plant([bat, meter])
    bat.set_input("ReactivePowerSetpoint", -40.0)
    plant.step(0.1)
    assert bat.outputs()["ReactivePower"] == -40.0
    bat.set_input("ReactivePowerSetpoint", 400.0)
    plant.step(0.1)
    assert bat.outputs()["ReactivePower"] == 100.0
    assert meter.outputs()["Voltage"] == 230.0
    meter.voltage_offset_v = 12.0
    assert meter.outputs()["Voltage"] == 242.0


def test_an_island_is_served_by_a_grid_forming_battery_or_goes_dark() -> None:
    load = Load(base_kw=60, peak_kw=0, noise_kw=0, sheddable_kw=20)
    pv, bat, meter = PvInverter(peak_kw=0), Battery(ramp_kw_per_s=10, soc=60), GridMeter(frequency_noise_hz=0)
    plant = Plant([meter, load, pv, bat])
    bat.set_input("ActivePowerSetpoint", -10.0)
    plant.step(1.0)
    assert meter.power == pytest.approx(70.0) and meter.outputs()["Voltage"] == pytest.approx(230.0)
    meter.grid_up = 0.0  # an outage: the meter reads a dead grid, nothing flows through it
    plant.step(0.1)
    out = meter.outputs()
    assert (out["Voltage"], out["Frequency"], meter.power) == (0.0, 0.0, 0.0)
    assert bat.power == 0.0 and load.power == 0.0  # grid-following: it stops (anti-islanding); the site is dark
    bat.set_input("GridFormingSetpoint", True)
    meter.set_input("GridConnectSetpoint", False)
    plant.step(0.1)
    assert load.power == pytest.approx(60.0) and bat.power == pytest.approx(60.0)  # at once, not ramped
    load.set_input("ShedSetpoint", True)
    plant.step(0.1)
    assert load.power == pytest.approx(40.0) and bat.power == pytest.approx(40.0)  # priority loads only
    meter.grid_up = 1.0  # the grid is back, the breaker still open: still an island
    plant.step(0.1)
    assert meter.outputs()["Voltage"] == pytest.approx(230.0) and meter.power == 0.0 and bat.power == pytest.approx(40)
    meter.set_input("GridConnectSetpoint", True)
    bat.set_input("GridFormingSetpoint", False)
    load.set_input("ShedSetpoint", False)
    plant.step(0.1)
    assert bat.power == pytest.approx(39.0)  # following its setpoint again from where it was, ramped (10 kW/s)
    assert meter.power == pytest.approx(60.0 - 39.0)


def test_reactive_power_is_limited_by_the_apparent_power_the_active_power_leaves() -> None:
    bat = Battery(max_power_kw=100, apparent_power_kva=125, ramp_kw_per_s=1e9, soc=50)
    plant = Plant([bat])
    bat.set_input("ReactivePowerSetpoint", 110.0)
    plant.step(0.1)
    assert bat.outputs()["ReactivePower"] == pytest.approx(110.0)  # P = 0: all of S is free
    bat.set_input("ActivePowerSetpoint", 100.0)
    plant.step(0.1)
    assert bat.power == pytest.approx(100.0)
    assert bat.outputs()["ReactivePower"] == pytest.approx(75.0)  # sqrt(125² - 100²), active power first
    bat.set_input("ReactivePowerSetpoint", -200.0)
    plant.step(0.1)
    assert bat.outputs()["ReactivePower"] == pytest.approx(-75.0)
    bat.inject_fault(Battery.OVER_TEMPERATURE)
    plant.step(0.1)
    assert bat.outputs()["ReactivePower"] == 0.0


def test_the_grid_meter_sums_the_loads_and_batteries_reactive_power() -> None:
    load = Load(base_kw=60, peak_kw=0, noise_kw=0, power_factor=0.8)
    bat, meter = Battery(max_power_kw=100), GridMeter(frequency_noise_hz=0)
    plant = Plant([load, bat, meter])
    plant.step(0.1)
    assert load.outputs()["ReactivePower"] == pytest.approx(45.0)  # 60 kW at cos phi 0.8
    assert meter.outputs()["ReactivePower"] == pytest.approx(45.0)
    bat.set_input("ReactivePowerSetpoint", 30.0)  # the battery supplies part of it
    plant.step(0.1)
    assert meter.outputs()["ReactivePower"] == pytest.approx(15.0)
    assert parse_model("load?power_factor=1").outputs()["ReactivePower"] == pytest.approx(0.0)
