"""sim:// signals: each a function of the time since the driver started, to the last bit of the double."""

from __future__ import annotations

import math
from urllib.parse import urlsplit

from asyncua import ua

from gateway.clock import SteppableClock
from gateway.drivers.base import Binding, Point
from gateway.drivers.sim import SimDriver

ADDRESSES = {
    0: "sine?period=7&amplitude=10&offset=50&phase=0.3",
    1: "ramp?min=-5&max=20&period=3",
    2: "square?period=4&low=-1&high=2.5",
    3: "constant?value=42.5",
    4: "setpoint?initial=3",
    5: "randomwalk?seed=7&step=0.5&min=-1&max=1&interval=0.5",
    6: "constant?value=on",
}


def _expected(key: int, t: float) -> object:
    """The formulas as the sim driver documents them, written out here."""
    if key == 0:
        return 50.0 + 10.0 * math.sin(2 * math.pi * t / 7.0 + 0.3)
    if key == 1:
        return -5.0 + (20.0 - -5.0) * ((t % 3.0) / 3.0)
    if key == 2:
        return 2.5 if (t % 4.0) < 4.0 / 2 else -1.0
    return {3: 42.5, 4: 3.0, 6: "on"}[key]


async def test_signals_are_their_formulas_and_a_setpoint_holds_what_is_written() -> None:
    clock = SteppableClock()
    points = [Point(key, f"P{key}", Binding(address, scan_class="Fast" if key % 2 else "Slow"), "xsd:double",
                    key == 4) for key, address in ADDRESSES.items()]
    by_class = {"Fast": [p for p in points if p.key % 2], "Slow": [p for p in points if not p.key % 2]}
    driver = SimDriver(urlsplit("sim://signals"), by_class, clock)
    walk: list[float] = []
    try:
        for step in (0.0, 0.37, 1.0, 2.05, 3.3, 6.999, 123.456):
            clock.step(step)
            t = clock.monotonic()
            readings = {**await driver.read("Fast"), **await driver.read("Slow")}
            assert set(readings) == set(ADDRESSES)
            for key, reading in readings.items():
                assert reading.status == ua.StatusCodes.Good and reading.source_time == clock.now()
                if key != 5:
                    assert reading.value == _expected(key, t), (ADDRESSES[key], t)
            walk.append(readings[5].value)
        assert all(-1.0 <= v <= 1.0 for v in walk) and len(set(walk)) > 2
        assert await driver.write(points[4], 17) == 17
        assert (await driver.read("Slow"))[4].value == 17
    finally:
        await driver.stop()
    again = SimDriver(urlsplit("sim://signals"), by_class, clock := SteppableClock())  # same seed, same walk
    try:
        replay = []
        for step in (0.0, 0.37, 1.0, 2.05, 3.3, 6.999, 123.456):
            clock.step(step)
            replay.append((await again.read("Fast"))[5].value)
        assert replay == walk
    finally:
        await again.stop()
