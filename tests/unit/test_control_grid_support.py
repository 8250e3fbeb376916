"""Each grid-support service as a table of cycles: frequency (and SOC) -> the power it adds to the battery.

Closed loop on the simulators (the FCR-D response following its droop through real Modbus) is in
tests/integration/test_control_closed_loop.py; stacking on a mode through the engine in
tests/unit/test_control_engine.py.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from asyncua import ua

from gateway.clock import SteppableClock
from gateway.control.controller import CycleContext
from gateway.control.grid_support import SERVICES, load_services, make_service
from gateway.control.image import ProcessImage
from gateway.control.moving_average import MovingAverage
from gateway.control.site import parse_section

BAD = object()  # an input with a Bad status


def run_table(service: str, params: dict, rows: list[tuple[dict, float]], step_s: float = 1.0) -> None:
    clock = SteppableClock(datetime(2026, 1, 1, 12, tzinfo=UTC))
    image = ProcessImage(clock)
    signals = {r: ua.NodeId(r, 1) for r in ("frequency", "soc")}
    image.set(signals["soc"], 50.0)
    ctl = make_service(service, params)
    for i, (inputs, expected) in enumerate(rows):
        for role, value in inputs.items():
            if value is BAD:
                image.set(signals[role], None, ua.StatusCodes.BadCommunicationError)
            else:
                image.set(signals[role], value)
        image.set(signals["soc"], image.get(signals["soc"]).value)  # fresh
        ctx = CycleContext(image, signals, clock.now(), step_s, 5.0, {"battery_power": 0.0}, source=ctl.name)
        ctl.run(ctx)
        got = ctx.supports.get("battery_power", 0.0)
        assert not ctx.constraints  # a service adds power; it pins nothing
        assert got == pytest.approx(expected, abs=1e-6), f"{service} cycle {i}: {inputs} -> {got}, not {expected}"
        clock.step(step_s)


def test_every_service_is_registered_by_name() -> None:
    load_services()
    assert {"FcrD", "Ffr", "PowerFrequency", "VoltVar"} <= set(SERVICES)
    with pytest.raises(ValueError, match="unknown grid support"):
        make_service("Fcr-X")
    with pytest.raises(ValueError, match="unknown parameter"):
        make_service("FcrD", {"capacity": 10})
    with pytest.raises(ValueError, match="f_up_full < f_up_start"):
        make_service("FcrD", {"f_up_start": 49.4})


def test_fcr_d_is_a_linear_droop_between_the_thresholds_with_full_activation_at_the_band_end() -> None:
    run_table("FcrD", {"capacity_up": 100.0, "capacity_down": 80.0}, [
        ({"frequency": 50.0}, 0.0),
        ({"frequency": 49.9}, 0.0),  # up starts below 49.9
        ({"frequency": 49.8}, 25.0),  # a quarter into the 49.9..49.5 band
        ({"frequency": 49.7}, 50.0),
        ({"frequency": 49.6}, 75.0),
        ({"frequency": 49.5}, 100.0),  # full at the band end
        ({"frequency": 49.2}, 100.0),  # and held beyond it
        ({"frequency": 50.1}, 0.0),
        ({"frequency": 50.2}, -20.0),  # down: charging, 80 kW at 50.5
        ({"frequency": 50.5}, -80.0),
        ({"frequency": 51.0}, -80.0),
        ({"frequency": BAD}, 0.0),  # a frequency it cannot see: no response
        ({"frequency": 49.7, "soc": 10.0}, 0.0),  # SOC endurance: no discharge at the minimum
        ({"frequency": 50.3, "soc": 10.0}, -40.0),  # but charging is welcome
        ({"frequency": 50.3, "soc": 90.0}, 0.0),  # no charge at the maximum
        ({"frequency": 49.7, "soc": BAD}, 0.0),  # a SOC it cannot see: no promise of energy
    ])


def test_ffr_activates_at_once_holds_deactivates_and_recovers() -> None:
    params = {"capacity": 60.0, "f_activation": 49.7, "hold_s": 2.0, "deactivation_s": 2.0, "recovery_s": 3.0}
    run_table("Ffr", params, [
        ({"frequency": 49.75}, 0.0),  # above the activation level
        ({"frequency": 49.70}, 60.0),  # at it: full power in this cycle
        ({"frequency": 49.90}, 60.0),  # recovered, but the hold lasts 2 s
        ({"frequency": 49.90}, 60.0),  # hold over: the deactivation starts from full power
        ({"frequency": 49.90}, 30.0),  # linear, half way after 1 of 2 s
        ({"frequency": 49.90}, 0.0),  # done: recovering
        ({"frequency": 49.60}, 0.0),  # a new dip while recovering is not answered
        ({"frequency": 49.60}, 0.0),
        ({"frequency": 49.60}, 60.0),  # 3 s recovered: armed again, and the frequency is low
        ({"frequency": 49.60}, 60.0),
        ({"frequency": 49.60}, 60.0),
        ({"frequency": 49.60}, 60.0),  # held while the frequency stays low
        ({"frequency": BAD}, 60.0),  # a lost frequency ends the activation: the deactivation starts
        ({"frequency": BAD}, 30.0),
        ({"frequency": BAD}, 0.0),
    ], step_s=1.0)


def test_power_frequency_droop_over_and_under() -> None:
    # 100 kW for a 5 % droop: 100 kW per 2.5 Hz, 40 kW/Hz beyond the thresholds.
    run_table("PowerFrequency", {"rated_kw": 100.0, "droop_pct": 5.0, "f_over": 50.2, "f_under": 49.8}, [
        ({"frequency": 50.0}, 0.0),
        ({"frequency": 50.2}, 0.0),
        ({"frequency": 50.7}, -20.0),
        ({"frequency": 49.3}, 20.0),
        ({"frequency": 45.0}, 100.0),  # at most the rated power
        ({"frequency": 55.0}, -100.0),
        ({"frequency": 49.3, "soc": 5.0}, 0.0),  # SOC endurance
    ])


def test_the_section_enables_services_and_refuses_bad_ones() -> None:
    def lookup(name: str) -> tuple[bool, ua.VariantType]:
        return name == "Bat.Setpoint", ua.VariantType.Double

    base = {"setpoints": {"battery_power": {"node": "Bat.Setpoint", "safe": 0}}, "signals": {"frequency": "Meter.F"}}
    config, problems = parse_section({**base, "grid_support": {"FcrD": {"capacity_up": 50}}}, lookup,
                                     lambda n: ua.NodeId(n, 1))
    assert problems == [] and config.grid_support == {"FcrD": {"capacity_up": 50}}
    _config, problems = parse_section({**base, "grid_support": {"Ffr": {"capacity": -1}}}, lookup,
                                      lambda n: ua.NodeId(n, 1))
    assert any("capacity = -1 outside" in p for p in problems)
    _config, problems = parse_section({**base, "signals": {}, "grid_support": {"PowerFrequency": {}}}, lookup,
                                      lambda n: ua.NodeId(n, 1))
    assert problems == ["grid support PowerFrequency needs signal 'frequency'"]


def run_volt_var(params: dict, rows: list[tuple[object, float]], step_s: float = 1.0) -> None:
    clock = SteppableClock(datetime(2026, 1, 1, 12, tzinfo=UTC))
    image = ProcessImage(clock)
    signals = {"voltage": ua.NodeId("voltage", 1)}
    ctl = make_service("VoltVar", params)
    for i, (u, expected) in enumerate(rows):
        if u is BAD:
            image.set(signals["voltage"], None, ua.StatusCodes.BadCommunicationError)
        else:
            image.set(signals["voltage"], u)
        ctx = CycleContext(image, signals, clock.now(), step_s, 5.0, {}, source=ctl.name)
        ctl.run(ctx)
        got = ctx.supports.get("reactive_power", 0.0)
        assert got == pytest.approx(expected, abs=1e-6), f"VoltVar cycle {i}: {u} V -> {got}, not {expected}"
        clock.step(step_s)


def test_volt_var_curve_with_its_dead_band_and_ends() -> None:
    run_volt_var({"q_max_kvar": 60.0}, [
        (230.0, 0.0),  # 1.00 pu: inside the dead band 0.98..1.02
        (234.6, 0.0),  # 1.02 pu: absorption starts
        (241.5, -30.0),  # 1.05 pu: half way to 1.08
        (248.4, -60.0),  # 1.08 pu: full absorption
        (260.0, -60.0),
        (218.5, 30.0),  # 0.95 pu: half way between 0.98 and 0.92
        (211.6, 60.0),  # 0.92 pu: full injection
        (BAD, 0.0),  # a voltage it cannot see: no response
    ])


def test_volt_var_settles_through_its_time_constant() -> None:
    run_volt_var({"q_max_kvar": 60.0, "time_constant_s": 2.0}, [
        (248.4, -30.0),  # half of the step in 1 s of a 2 s lag (dt / tau)
        (248.4, -45.0),
        (248.4, -52.5),
        (230.0, -26.25),
    ])


def test_volt_var_needs_a_reactive_power_setpoint_and_a_voltage() -> None:
    def lookup(name: str) -> tuple[bool, ua.VariantType]:
        return True, ua.VariantType.Double

    section = {"setpoints": {"battery_power": {"node": "Bat.P", "safe": 0}}, "signals": {},
               "grid_support": {"VoltVar": {"q_max_kvar": 50}}}
    _config, problems = parse_section(section, lookup, lambda n: ua.NodeId(n, 1))
    assert problems == ["grid support VoltVar needs signal 'voltage'",
                        "grid support VoltVar needs setpoint 'reactive_power'"]
    with pytest.raises(ValueError, match="v1 < v2"):
        make_service("VoltVar", {"v2": 1.05})


# -- the 5-minute moving average and AEM on it ----------------------------------------------------------------
def test_the_moving_average_is_the_mean_of_the_window_in_fixed_memory() -> None:
    avg = MovingAverage(300.0, 300)
    sizes = (len(avg._sums), len(avg._counts))
    assert avg.value(0.0) is None and avg.span(0.0) == 0.0
    for i in range(3000):  # 100 ms samples for 300 s: 49.9 for the first 150 s, 50.1 after
        avg.add(i * 0.1, 49.9 if i < 1500 else 50.1)
    assert avg.value(299.9) == pytest.approx(50.0, abs=1e-9) and avg.span(299.9) == pytest.approx(299.9)
    assert avg.value(450.0) == pytest.approx(50.1, abs=1e-9)  # the 49.9 half has left the window
    assert avg.span(450.0) == pytest.approx(300.0)
    avg.add(451.0, float("nan"))  # a non-finite sample is left out
    assert avg.value(451.0) == pytest.approx(50.1, abs=1e-9)
    assert avg.value(2000.0) is None and avg.span(2000.0) == 0.0  # a gap longer than the window: empty
    for day in range(1):  # a day of samples (288 turns of the ring): no growth, no drift
        for i in range(86400):
            avg.add(10000.0 + day * 86400 + i, 50.0 + (0.2 if i % 2 else -0.2))
    assert avg.value(10000.0 + 86400 - 1) == pytest.approx(50.0, abs=1e-9)
    assert (len(avg._sums), len(avg._counts)) == sizes
    with pytest.raises(ValueError):
        MovingAverage(0.0)


def aem_rows(frequencies: list[float], params: dict, soc: float = 50.0, step_s: float = 1.0) -> list[float]:
    """Run AEM over a frequency series (one sample per step); the power it adds each cycle."""
    clock = SteppableClock(datetime(2026, 1, 1, 12, tzinfo=UTC))
    image = ProcessImage(clock)
    signals = {r: ua.NodeId(r, 1) for r in ("frequency", "soc")}
    ctl = make_service("Aem", params)
    out = []
    for f in frequencies:
        image.set(signals["soc"], soc)
        if f is BAD:
            image.set(signals["frequency"], None, ua.StatusCodes.BadCommunicationError)
        else:
            image.set(signals["frequency"], f)
        ctx = CycleContext(image, signals, clock.now(), step_s, 5.0, {"battery_power": 0.0}, source=ctl.name)
        ctl.run(ctx)
        out.append(ctx.supports.get("battery_power", 0.0))
        clock.step(step_s)
    return out


def test_aem_acts_on_the_5_minute_average_with_hysteresis() -> None:
    params = {"capacity_up": 100.0, "capacity_down": 80.0}
    # A 10-minute dip to 49.7 after 5 minutes at 50 (one sample a second): the average falls 0.1 Hz per 100 s.
    series = [50.0] * 300 + [49.7] * 600 + [50.0] * 600
    got = aem_rows(series, params)
    assert max(abs(p) for p in got[:300]) == 0.0
    # A short dip FCR-D would answer is nothing to AEM: at 49.7 for 60 s the average is 49.94.
    assert max(got[300:360]) == 0.0
    first = next(i for i, p in enumerate(got) if p)
    # Activation when the average reaches 49.8: 2/3 of the window at 49.7, i.e. 200 s into the dip.
    assert 495 <= first <= 502, first
    assert got[first] == pytest.approx(100.0 * (49.9 - 49.8) / 0.4, abs=1.0)  # droop from 49.9, so 25 kW
    assert got[899] == pytest.approx(100.0 * (49.9 - 49.7) / 0.4, abs=0.5)  # the whole window at 49.7: 50 kW
    # Recovery: the average climbs back; active until it is at or above 49.9 (hysteresis), not 49.8.
    last = max(i for i, p in enumerate(got) if p)
    assert 1095 <= last <= 1102, last  # 49.7 + 0.3 * (t / 300) reaches 49.9 at t = 200 s after the return
    assert got[last] > 0.0 and max(got[last + 1:]) == 0.0


def test_aem_down_endurance_and_a_bad_frequency() -> None:
    high = aem_rows([50.4] * 310, {"capacity_down": 80.0})
    assert high[-1] == pytest.approx(-80.0 * (50.4 - 50.1) / 0.4)  # charging: 60 kW
    assert aem_rows([50.4] * 310, {"capacity_down": 80.0, "soc_max": 50.0})[-1] == 0.0  # SOC endurance
    low = aem_rows([49.6] * 305 + [BAD] + [49.6] * 2, {"capacity_up": 100.0})
    assert low[304] > 0 and low[305] == 0.0 and low[306] > 0  # no response on a Bad frequency, the average kept


def test_the_soc_endurance_band_is_derived_from_full_power_and_energy() -> None:
    params = {"capacity_up": 100.0, "capacity_down": 80.0, "endurance_min": 20.0, "energy_kwh": 200.0}
    # 100 kW for 20 min = 33.3 kWh = 16.7 % of 200 kWh; 80 kW of charge for 20 min: below 86.7 %.
    assert make_service("FcrD", params).soc_band() == (pytest.approx(100 / 6), pytest.approx(100 - 80 / 6))
    assert make_service("FcrD", {**params, "soc_min": 20.0}).soc_band()[0] == 20.0  # the larger bound holds
    assert make_service("FcrD", {**params, "endurance_min": 0.0}).soc_band() == (10.0, 90.0)  # off: the fixed band
    assert make_service("Ffr", {"capacity": 60.0, "endurance_min": 30.0, "energy_kwh": 100.0}).soc_band() == \
        (pytest.approx(30.0), 90.0)  # FFR only discharges: its charge bound stays
    low = {"frequency": 49.5}
    for soc, expected in ((16.0, 0.0), (17.0, 100.0)):
        run_table("FcrD", params, [({**low, "soc": soc}, expected)])
    for soc, expected in ((86.0, -80.0), (87.0, 0.0)):
        run_table("FcrD", params, [({"frequency": 50.5, "soc": soc}, expected)])
