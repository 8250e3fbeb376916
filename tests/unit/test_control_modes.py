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
