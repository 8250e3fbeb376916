"""Building blocks: PID (anti-windup, derivative on measurement, bumpless), ramp limiter, charge limiter."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from asyncua import ua

from gateway.clock import SteppableClock
from gateway.control.charge_limiter import ChargeLimiter
from gateway.control.controller import CycleContext
from gateway.control.image import ProcessImage
from gateway.control.pid import PID
from gateway.control.ramp import RampLimiter


def test_pid_clamps_and_does_not_wind_up() -> None:
    pid = PID(kp=1.0, ki=1.0, low=-10.0, high=10.0)
    for _ in range(100):  # a large error for a long time: output pinned at the limit
        assert pid.update(100.0, 0.0, 1.0) == 10.0
    # Back-calculation kept the integral where the output is the limit, so a reversed error leaves it at once.
    assert pid.update(-5.0, 0.0, 1.0) < 10.0


def test_pid_integral_without_anti_windup_would_be_huge() -> None:
    pid = PID(kp=0.0, ki=1.0, low=-10.0, high=10.0)
    for _ in range(50):
        pid.update(1.0, 0.0, 1.0)
    assert pid.integral == pytest.approx(10.0)


def test_pid_derivative_on_measurement_gives_no_kick_on_a_setpoint_step() -> None:
    pid = PID(kp=0.0, ki=0.0, kd=5.0)
    pid.update(0.0, 1.0, 1.0)
    assert pid.update(50.0, 1.0, 1.0) == 0.0  # setpoint jumped, measurement did not: no derivative
    assert pid.update(50.0, 3.0, 1.0) == pytest.approx(-10.0)  # measurement rose 2 in 1 s


def test_pid_bumpless_reset_and_tracking() -> None:
    pid = PID(kp=0.5, ki=0.1)
    pid.reset(40.0)
    assert pid.update(0.0, 0.0, 1.0) == pytest.approx(40.0)  # no error: the output stays where it was
    pid.track(25.0)  # the plant got 25 (clamped elsewhere): the next output starts from there
    assert pid.update(0.0, 0.0, 1.0) == pytest.approx(25.0)


RAMP = [  # rate, previous, target, dt, expected
    (10.0, 0.0, 100.0, 1.0, 10.0),
    (10.0, 0.0, -100.0, 0.5, -5.0),
    (10.0, 0.0, 3.0, 1.0, 3.0),
    (0.0, 0.0, 100.0, 1.0, 100.0),  # 0: no limit
    (10.0, None, 100.0, 1.0, 100.0),  # nothing to ramp from
]


@pytest.mark.parametrize(("rate", "previous", "target", "dt", "expected"), RAMP)
def test_ramp_table(rate, previous, target, dt, expected) -> None:
    assert RampLimiter(rate).step(previous, target, dt) == expected


def test_ramp_refuses_a_negative_rate() -> None:
    with pytest.raises(ValueError):
        RampLimiter(-1.0)


def _ctx(image: ProcessImage, roles: dict[str, ua.NodeId]) -> CycleContext:
    return CycleContext(image, roles, datetime(2026, 1, 1, tzinfo=UTC), 1.0, 5.0, {})


LIMITER = [  # max charge, max discharge, soc, temperature, expected (low, high)
    (100.0, 80.0, 50.0, 25.0, (-100.0, 80.0)),
    (100.0, 80.0, 4.0, 25.0, (-100.0, 0.0)),  # SOC at the minimum: no discharge
    (100.0, 80.0, 96.0, 25.0, (0.0, 80.0)),  # SOC at the maximum: no charge
    (100.0, 80.0, 50.0, 50.0, (-50.0, 40.0)),  # half-way between 45 and 55 °C: half
    (100.0, 80.0, 50.0, 60.0, (0.0, 0.0)),
    (None, 80.0, 50.0, 25.0, (0.0, 0.0)),  # a BMS limit not usable: nothing allowed
    (100.0, 80.0, None, 25.0, (0.0, 0.0)),
]


@pytest.mark.parametrize(("chg", "dis", "soc", "temp", "bounds"), LIMITER)
def test_charge_limiter_table(chg, dis, soc, temp, bounds) -> None:
    clock = SteppableClock()
    image = ProcessImage(clock)
    roles = {r: ua.NodeId(r, 1) for r in ("max_charge_power", "max_discharge_power", "soc", "temperature")}
    for role, value in zip(roles, (chg, dis, soc, temp), strict=True):
        status = ua.StatusCodes.Good if value is not None else ua.StatusCodes.BadCommunicationError
        image.set(roles[role], value, status)
    ctx = _ctx(image, roles)
    ChargeLimiter({"soc_min": 5.0, "soc_max": 95.0, "derate_from_c": 45.0, "stop_at_c": 55.0}).run(ctx)
    got = {c.op: c.value for c in ctx.constraints}
    assert (got[">="], got["<="]) == pytest.approx(bounds)


def test_charge_limiter_treats_stale_limits_as_closed() -> None:
    clock = SteppableClock()
    image = ProcessImage(clock)
    roles = {r: ua.NodeId(r, 1) for r in ("max_charge_power", "max_discharge_power")}
    image.set(roles["max_charge_power"], 100.0)
    image.set(roles["max_discharge_power"], 100.0)
    clock.step(6.0)  # older than the 5 s maximum age
    ctx = _ctx(image, roles)
    ChargeLimiter().run(ctx)
    assert {c.op: c.value for c in ctx.constraints} == {"<=": 0.0, ">=": -0.0}
    assert all(math.isfinite(c.value) for c in ctx.constraints)
