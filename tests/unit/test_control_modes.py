"""Each mode as a table of cycles: inputs -> the battery setpoint it asks for (OpenEMS-style tests).

The battery's output is fed back as the previous cycle's output, as the engine does; the physics are
left out here (closed-loop tests on the simulators are in tests/integration/test_control_closed_loop.py).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from asyncua import ua

from gateway.clock import SteppableClock
from gateway.control.controller import CycleContext
from gateway.control.image import ProcessImage
from gateway.control.modes import MODES, make_mode

ROLES = ("grid_power", "battery_power", "soc", "external_power")
BAD = object()  # an input with a Bad status


def run_table(mode_name: str, params: dict, rows: list[tuple[dict, float | None]], start_hour: int = 12) -> None:
    clock = SteppableClock(datetime(2026, 1, 1, start_hour, tzinfo=UTC))
    image = ProcessImage(clock)
    signals = {r: ua.NodeId(r, 1) for r in ROLES}
    mode = make_mode(mode_name, params)
    output: float | None = None
    for i, (inputs, expected) in enumerate(rows):
        for role, value in inputs.items():
            if value is BAD:
                image.set(signals[role], None, ua.StatusCodes.BadCommunicationError)
            else:
                image.set(signals[role], value)
        ctx = CycleContext(image, signals, clock.now(), 1.0, 5.0, {"battery_power": output}, source=mode.name)
        if i == 0:
            mode.activate(ctx)
        mode.run(ctx)
        asked = [c.value for c in ctx.constraints if c.setpoint == "battery_power" and c.op == "="]
        got = asked[-1] if asked else None
        assert got == pytest.approx(expected, abs=1e-6), f"{mode_name} cycle {i}: {inputs} -> {got}, not {expected}"
        output = got
        clock.step(1.0)


def test_every_mode_is_registered_by_name() -> None:
    make_mode("Passive")
    assert {"Passive", "MaxSelfConsumption", "PeakShaving", "ChargeOnly", "ExternalControl"} <= set(MODES)
    with pytest.raises(ValueError, match="unknown mode"):
        make_mode("NoSuchMode")


def test_passive() -> None:
    run_table("Passive", {}, [({"grid_power": 50.0}, 0.0), ({"grid_power": -50.0}, 0.0)])


def test_peak_shaving() -> None:
    run_table("PeakShaving", {"import_limit": 80.0, "export_limit": 30.0}, [
        ({"grid_power": 60.0, "battery_power": 0.0}, 0.0),  # inside the limits: idle
        ({"grid_power": 110.0, "battery_power": 0.0}, 30.0),  # 50 kW load step: cover what is over 80
        ({"grid_power": 80.0, "battery_power": 30.0}, 30.0),  # held at the limit
        ({"grid_power": 70.0, "battery_power": 30.0}, 20.0),  # load falls: discharge less
        ({"grid_power": -60.0, "battery_power": 0.0}, -30.0),  # export over 30: charge the rest
        ({"grid_power": BAD, "battery_power": 0.0}, 0.0),  # meter Bad: idle, never steer blind
    ])


def test_max_self_consumption_drives_grid_to_zero() -> None:
    # A plant with no lag: the grid is the load minus the battery's last output.
    load = 40.0
    rows = []
    output = 0.0
    pid_outputs = []
    from gateway.control.pid import PID
    pid = PID(0.3, 0.6)
    pid.reset(0.0)
    for _ in range(12):
        grid = load - output
        output = pid.update(0.0, -grid, 1.0)
        pid_outputs.append(output)
        rows.append(({"grid_power": grid, "soc": 60.0}, output))
    run_table("MaxSelfConsumption", {}, rows)
    assert abs(load - pid_outputs[-1]) < 1.0  # converged: |grid| < 1 kW


def test_max_self_consumption_keeps_the_reserve_and_idles_on_a_bad_meter() -> None:
    run_table("MaxSelfConsumption", {"reserve_soc": 30.0, "kp": 1.0, "ki": 0.0}, [
        ({"grid_power": 20.0, "soc": 50.0}, 20.0),
        ({"grid_power": 20.0, "soc": 30.0}, 0.0),  # at the reserve: no discharge
        ({"grid_power": -20.0, "soc": 30.0}, -20.0),  # charging is still allowed
        ({"grid_power": BAD, "soc": 30.0}, 0.0),
    ])


def test_max_self_consumption_starts_bumpless() -> None:
    clock = SteppableClock()
    image = ProcessImage(clock)
    signals = {r: ua.NodeId(r, 1) for r in ROLES}
    image.set(signals["grid_power"], 0.0)
    image.set(signals["soc"], 60.0)
    mode = make_mode("MaxSelfConsumption")
    ctx = CycleContext(image, signals, clock.now(), 1.0, 5.0, {"battery_power": 35.0})
    mode.activate(ctx)
    mode.run(ctx)
    assert ctx.constraints[-1].value == pytest.approx(35.0)  # no error: it continues from the present output


def test_charge_only() -> None:
    params = {"soc_target": 80.0, "charge_power": 40.0, "start_hour": 11.0, "end_hour": 14.0}
    run_table("ChargeOnly", params, [
        ({"soc": 50.0}, -40.0),
        ({"soc": 80.0}, 0.0),  # target reached
        ({"soc": BAD}, 0.0),
    ])
    run_table("ChargeOnly", params, [({"soc": 50.0}, 0.0)], start_hour=20)  # outside the window


def test_external_control_follows_and_idles_when_stale() -> None:
    clock = SteppableClock()
    image = ProcessImage(clock)
    signals = {"external_power": ua.NodeId("external_power", 1)}
    mode = make_mode("ExternalControl")
    image.set(signals["external_power"], -25.0)
    ctx = CycleContext(image, signals, clock.now(), 1.0, 5.0, {})
    mode.run(ctx)
    assert ctx.constraints[-1].value == -25.0
    clock.step(6.0)  # SCADA stopped refreshing it
    ctx = CycleContext(image, signals, clock.now(), 1.0, 5.0, {})
    mode.run(ctx)
    assert ctx.constraints[-1].value == 0.0 and "stale" in ctx.constraints[-1].reason


# -- tables over several setpoints and roles (LoadMatching, CostSaving, LocalControl, Backup) ----------------
MORE_ROLES = ("grid_power", "battery_power", "soc", "load_power", "price", "local_power", "local_heartbeat",
              "local_reactive_power", "frequency", "grid_voltage")
Row = tuple[float, dict, dict[str, float]]  # (seconds since the previous row, inputs, setpoint -> value asked)


def run_rows(mode_name: str, params: dict, rows: list[Row], roles: tuple[str, ...] = MORE_ROLES,
             refresh: bool = True) -> None:
    """Each row: step the clock, set inputs, run one cycle, compare the `=` asked per setpoint (None: none).
    `refresh`: every input keeps being read (as a device that answers), else only those a row names."""
    clock = SteppableClock(datetime(2026, 1, 1, 12, tzinfo=UTC))
    image = ProcessImage(clock)
    signals = {r: ua.NodeId(r, 1) for r in roles}
    mode = make_mode(mode_name, params)
    outputs: dict[str, float | None] = {"battery_power": None}
    current: dict = {}
    for i, (dt, inputs, expected) in enumerate(rows):
        clock.step(dt)
        current.update(inputs)
        for role, value in (current if refresh else inputs).items():
            if value is BAD:
                image.set(signals[role], None, ua.StatusCodes.BadCommunicationError)
            else:
                image.set(signals[role], value)
        ctx = CycleContext(image, signals, clock.now(), max(dt, 0.1), 5.0, outputs, source=mode.name)
        if i == 0:
            mode.activate(ctx)
        mode.run(ctx)
        asked = {c.setpoint: c.value for c in ctx.constraints if c.op == "="}
        for setpoint, value in expected.items():
            got = asked.get(setpoint)
            assert got == (pytest.approx(value, abs=1e-6) if value is not None else None), \
                f"{mode_name} row {i}: {inputs} -> {setpoint} {got}, not {value} ({ctx.constraints})"
        outputs = {"battery_power": asked.get("battery_power")}


def test_every_mode_of_the_seed_is_registered() -> None:
    assert {"LoadMatching", "CostSaving", "LocalControl", "Backup"} <= set(MODES)


def test_load_matching_follows_the_load_and_never_charges() -> None:
    run_rows("LoadMatching", {"reserve_soc": 20.0, "max_power": 50.0}, [
        (1, {"load_power": 30.0, "soc": 60.0}, {"battery_power": 30.0}),
        (1, {"load_power": 45.5}, {"battery_power": 45.5}),  # a load step: matched in the same cycle
        (1, {"load_power": 80.0}, {"battery_power": 50.0}),  # at most max_power
        (1, {"load_power": -5.0}, {"battery_power": 0.0}),  # a load meter reading export: no charging
        (1, {"load_power": 30.0, "soc": 20.0}, {"battery_power": 0.0}),  # at the reserve
        (1, {"soc": 21.0}, {"battery_power": 30.0}),
        (1, {"load_power": BAD}, {"battery_power": 0.0}),  # never steers blind
        (1, {"load_power": 30.0, "soc": BAD}, {"battery_power": 0.0}),
    ])


def test_load_matching_idles_on_a_stale_load_meter() -> None:
    run_rows("LoadMatching", {}, [
        (1, {"load_power": 30.0, "soc": 60.0}, {"battery_power": 30.0}),
        (4, {"soc": 60.0}, {"battery_power": 30.0}),  # 4 s old: still usable (max age 5 s)
        (2, {"soc": 60.0}, {"battery_power": 0.0}),  # 6 s old: stale
    ], refresh=False)


def test_cost_saving_charges_cheap_discharges_dear_and_covers_only_the_import() -> None:
    params = {"charge_below": 0.10, "discharge_above": 0.30, "charge_power": 40.0, "discharge_power": 50.0,
              "soc_target": 90.0, "reserve_soc": 20.0}
    run_rows("CostSaving", params, [
        (1, {"price": 0.08, "soc": 50.0, "grid_power": 60.0, "battery_power": 0.0}, {"battery_power": -40.0}),
        (1, {"price": 0.10, "soc": 90.0}, {"battery_power": 0.0}),  # at the target
        (1, {"price": 0.20, "soc": 50.0}, {"battery_power": 0.0}),  # between the thresholds: idle
        (1, {"price": 0.35, "grid_power": 30.0, "battery_power": 0.0}, {"battery_power": 30.0}),  # the import only
        (1, {"grid_power": 0.0, "battery_power": 30.0}, {"battery_power": 30.0}),  # held: grid at zero
        (1, {"grid_power": 80.0, "battery_power": 0.0}, {"battery_power": 50.0}),  # at most discharge_power
        (1, {"grid_power": -20.0, "battery_power": 0.0}, {"battery_power": 0.0}),  # exporting PV: nothing to cover
        (1, {"grid_power": 30.0, "soc": 20.0}, {"battery_power": 0.0}),  # at the reserve
        (1, {"soc": 50.0, "grid_power": BAD}, {"battery_power": 0.0}),  # cannot see the grid: idle
        (1, {"grid_power": 30.0, "price": BAD}, {"battery_power": 0.0}),  # no price: idle
    ])


def test_cost_saving_keeps_a_price_set_long_ago_and_discharges_fully_without_a_grid_meter() -> None:
    run_rows("CostSaving", {"discharge_power": 25.0}, [
        (1, {"price": 0.5, "soc": 60.0}, {"battery_power": 25.0}),
        (3600, {"soc": 60.0}, {"battery_power": 25.0}),  # the tariff holds for its whole window
        (1, {"price": 0.05, "soc": 60.0}, {"battery_power": -50.0}),
    ], roles=("price", "soc"))


def test_local_control_follows_the_operator_while_the_heartbeat_changes() -> None:
    run_rows("LocalControl", {"heartbeat_timeout_s": 10.0}, [
        (0, {"local_power": 20.0, "local_heartbeat": 1, "local_reactive_power": 5.0},
         {"battery_power": 20.0, "reactive_power": 5.0}),
        (6, {"local_power": -15.0, "local_heartbeat": 2}, {"battery_power": -15.0}),
        (9, {}, {"battery_power": -15.0}),  # 9 s since the last beat: still there
        (1, {"local_heartbeat": 1}, {"battery_power": -15.0}),  # a toggling heartbeat counts as a change
        (10, {}, {"battery_power": -15.0}),  # exactly the timeout: still there (a setpoint's age does not matter)
        (0.5, {}, {"battery_power": 0.0}),  # 10.5 s without a change: gone, the battery idles
        (1, {"local_heartbeat": 2}, {"battery_power": -15.0}),  # a beat again
        (1, {"local_heartbeat": BAD}, {"battery_power": 0.0}),
        (1, {"local_heartbeat": 3, "local_power": BAD}, {"battery_power": 0.0}),
    ])


def test_local_control_hands_over_when_the_heartbeat_stops() -> None:
    clock = SteppableClock()
    image = ProcessImage(clock)
    signals = {r: ua.NodeId(r, 1) for r in ("local_power", "local_heartbeat")}
    image.set(signals["local_power"], 10.0)
    image.set(signals["local_heartbeat"], 7)
    mode = make_mode("LocalControl", {"heartbeat_timeout_s": 2.0})
    mode.activate(CycleContext(image, signals, clock.now(), 1.0, 5.0, {}))
    seen = []
    for beat in (8, 9, 9, 9, 9, 10):
        clock.step(1.0)
        image.set(signals["local_heartbeat"], beat)
        seen.append(mode.hand_over(CycleContext(image, signals, clock.now(), 1.0, 5.0, {})))
    assert [bool(s) for s in seen] == [False, False, False, False, True, False], seen
    assert "unchanged for 3 s" in seen[4]


ON_GRID = {"grid_connect": 1.0, "grid_forming": 0.0, "load_shed": 0.0}
ISLAND = {"grid_connect": 0.0, "grid_forming": 1.0}


def test_backup_islands_on_grid_loss_and_reconnects_after_the_grid_is_stable() -> None:
    params = {"reconnect_s": 10.0, "charge_power": 20.0, "soc_target": 90.0, "shed_soc": 40.0}
    run_rows("Backup", params, [
        (1, {"frequency": 50.0, "grid_voltage": 230.0, "soc": 80.0}, {**ON_GRID, "battery_power": -20.0}),
        (1, {"soc": 90.0}, {**ON_GRID, "battery_power": 0.0}),  # backup reserve full
        (1, {"grid_voltage": 0.0}, {**ISLAND, "load_shed": 0.0, "battery_power": 0.0}),  # grid lost: island at once
        (1, {"grid_voltage": 230.0}, ISLAND),  # back, but not yet stable
        (5, {"frequency": 47.0}, ISLAND),  # a dip: the stable time starts again
        (1, {"frequency": 50.0}, ISLAND),
        (9, {"soc": 40.0}, {**ISLAND, "load_shed": 1.0}),  # low SOC while islanded: non-priority loads shed
        (1, {}, {"grid_connect": 1.0, "grid_forming": 1.0, "load_shed": 0.0}),  # 10 s stable: breaker closes
        (1, {}, {**ON_GRID, "battery_power": -20.0}),  # then grid-following again, recharging
    ])


def test_backup_keeps_its_state_on_a_meter_it_cannot_read_and_runs_a_test() -> None:
    run_rows("Backup", {"reconnect_s": 5.0}, [
        (1, {"frequency": 50.0, "soc": 100.0}, ON_GRID),
        (1, {"frequency": BAD}, ON_GRID),  # no islanding blind
        (1, {"frequency": 52.0}, ISLAND),
        (1, {"frequency": 50.0}, ISLAND),  # back: the stable time starts
        (3, {"frequency": BAD}, ISLAND),  # nor reconnecting blind, and unseen time is not stable time
        (3, {"frequency": 50.0}, ISLAND),  # so 5 s from here, not from 7 s ago
        (4, {}, ISLAND),
        (5, {}, {"grid_connect": 1.0, "grid_forming": 1.0}),
        (1, {}, ON_GRID),
    ], roles=("frequency", "soc"))
    run_rows("Backup", {"reconnect_s": 5.0, "test": 1.0}, [
        (1, {"frequency": 50.0, "soc": 100.0}, ISLAND),  # a backup test islands a healthy grid
    ], roles=("frequency", "soc"))


def test_every_mode_has_its_fixed_code_and_modecode_names_them() -> None:
    from gateway.control.modes import Mode, mode_codes, mode_names, register

    # The codes a SCADA is configured with: never renumbered.
    assert mode_codes() == {"Passive": 0, "Manual": 1, "MaxSelfConsumption": 2, "PeakShaving": 3, "ChargeOnly": 4,
                            "ExternalControl": 5, "LoadMatching": 6, "CostSaving": 7, "LocalControl": 8, "Backup": 9}
    assert mode_names() == ["Passive", "Manual", "MaxSelfConsumption", "PeakShaving", "ChargeOnly", "ExternalControl",
                            "LoadMatching", "CostSaving", "LocalControl", "Backup"]

    class Clash(Mode):
        name, code = "Clash", 2

    with pytest.raises(ValueError, match="needs a code of its own"):
        register(Clash)
    assert "Clash" not in MODES
