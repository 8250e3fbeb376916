"""A device runner: it stops whatever its poll tasks are doing, and a device that returns is Good at once.

Stopping: on Python 3.11 wait_for returns the inner result, swallowing a cancellation, when the
cancel arrives in the same loop iteration as the inner call finishes: a runner built on it kept
polling after stop() and stop() waited forever. These tests make that coincidence happen on
purpose (deterministically: the driver itself asks for the stop as it answers) and by numbers
(many devices scanning every millisecond, stopped again and again).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from asyncua import ua

from gateway.bindings import BoundVariable, DeviceConfig
from gateway.clock import SYSTEM_CLOCK, Clock, SteppableClock
from gateway.drivers.base import Binding, Driver, DriverError, Point, Reading
from gateway.values.runners import DeviceRunner
from gateway.values.tags import TagTable


class _AddressSpaceStub(dict):
    """Only what TagTable needs to store values: nodes with a Value attribute."""

    def __missing__(self, nodeid: ua.NodeId) -> Any:
        from asyncua.server.address_space import AttributeValue, NodeData

        nd = NodeData(nodeid)
        nd.attributes[ua.AttributeIds.Value] = AttributeValue(ua.DataValue())
        self[nodeid] = nd
        return nd


class InstantDriver(Driver):
    """Answers at once; `on_read` runs inside each read (the test's hook into the exact moment)."""

    on_read: Any = None
    offline = False

    async def read(self, scan_class: str) -> Mapping[int, Reading]:
        self.requests += 1
        if self.offline:
            self.request_errors += 1
            raise DriverError("test device offline")
        if self.on_read is not None:
            self.on_read()
        return {p.key: Reading(float(self.requests)) for p in self.points_by_class[scan_class]}

    async def write(self, point: Point, value: Any) -> Any:
        raise DriverError("read-only test driver")


def _device(name: str, scan_classes: Sequence[str]) -> DeviceConfig:
    variables = [
        BoundVariable(nodeid=ua.NodeId(f"{name}.v{i}", 1), name=f"v{i}", binding=Binding(f"a{i}", scan_class=sc),
                      field_type="xsd:double", vtype=ua.VariantType.Double, writable=False, historizing=False)
        for i, sc in enumerate(scan_classes)
    ]
    return DeviceConfig(nodeid=ua.NodeId(name, 1), name=name, connection="test://x", url=urlsplit("test://x"),
                        driver=InstantDriver,
                        variables=variables)


def _runner(name: str, scan_classes: Sequence[str], periods: dict[str, float],
            clock: Clock = SYSTEM_CLOCK) -> DeviceRunner:
    tags = TagTable(_AddressSpaceStub(), clock=clock)  # type: ignore[arg-type]
    return DeviceRunner(_device(name, scan_classes), tags, periods, None, clock)


async def test_stop_requested_as_a_read_completes_ends_the_poll_tasks() -> None:
    runner = _runner("Dev", ["Fast"], {"Fast": 1.0})
    stopping: list[asyncio.Task[None]] = []
    stop_begun = asyncio.Event()

    def stop_now() -> None:
        # The stop begins in the next loop iteration: exactly when the read's result is handed back.
        if not stopping:
            stopping.append(asyncio.ensure_future(runner.stop()))
            stop_begun.set()

    runner.driver.on_read = stop_now  # type: ignore[attr-defined]
    await runner.start()
    async with asyncio.timeout(5):
        await stop_begun.wait()
        await stopping[0]
    assert all(t.done() for t in runner._tasks) or not runner._tasks
    reads = runner.driver.requests
    await asyncio.sleep(0.05)
    assert runner.driver.requests == reads, "the device is still polled after stop()"


async def test_many_fast_devices_stop_every_time() -> None:
    periods = {"Fast": 1.0, "Slow": 3.0}
    for _ in range(20):
        runners = [_runner(f"Dev{i}", ["Fast", "Slow"], periods) for i in range(20)]
        for r in runners:
            await r.start()
        await asyncio.sleep(0.03)
        async with asyncio.timeout(5):
            await asyncio.gather(*(r.stop() for r in runners))
        polled = sum(r.driver.requests for r in runners)
        await asyncio.sleep(0.01)
        assert sum(r.driver.requests for r in runners) == polled, "a device is still polled after stop()"


async def _advance(clock: SteppableClock, seconds: float, step: float = 0.05) -> None:
    for _ in range(round(seconds / step)):
        clock.step(step)
        for _ in range(5):  # let every woken task run its scan
            await asyncio.sleep(0)


def _good(runner: DeviceRunner) -> dict[str, bool]:
    return {sc: all(runner.tag_of[p.key].status == ua.StatusCodes.Good for p in points)
            for sc, points in runner.driver.points_by_class.items()}


async def test_a_returning_device_is_good_on_every_scan_class_within_one_period() -> None:
    clock = SteppableClock()
    runner = _runner("Dev", ["Fast", "Slow"], {"Fast": 100.0, "Slow": 1000.0}, clock)
    await runner.start()
    try:
        await _advance(clock, 2.0)
        assert _good(runner) == {"Fast": True, "Slow": True}
        runner.driver.offline = True  # type: ignore[attr-defined]
        await _advance(clock, 120.0)  # both classes back off to the cap
        assert _good(runner) == {"Fast": False, "Slow": False}
        assert runner.health.state == "Disconnected"
        runner.driver.offline = False  # type: ignore[attr-defined]
        waited = 0.0
        while not any(_good(runner).values()):
            await _advance(clock, 0.05)
            waited += 0.05
            assert waited < 31, "no scan class retried within the backoff cap"
        await _advance(clock, 0.1)  # one period of the fast class
        assert _good(runner) == {"Fast": True, "Slow": True}
        assert runner.health.state == "Connected"
    finally:
        await runner.stop()


async def test_one_failing_scan_class_neither_disconnects_the_device_nor_loses_its_backoff() -> None:
    clock = SteppableClock()
    runner = _runner("Dev", ["Fast", "Broken"], {"Fast": 100.0, "Broken": 100.0}, clock)
    driver: Any = runner.driver
    good_read = InstantDriver.read

    async def read(self: InstantDriver, scan_class: str) -> Mapping[int, Reading]:
        if scan_class == "Broken":
            self.requests += 1
            self.request_errors += 1
            raise DriverError("illegal data address")
        return await good_read(self, scan_class)

    driver.read = read.__get__(driver)
    await runner.start()
    try:
        await _advance(clock, 60.0)
        assert _good(runner) == {"Fast": True, "Broken": False}
        assert runner.health.state == "Connected"
        # Backing off: 0.1, 0.2, 0.4 ... 25.6, 30 s, about 10 tries in a minute, not 600.
        assert driver.request_errors < 15
    finally:
        await runner.stop()


async def test_a_timeout_the_driver_raises_itself_is_a_failed_scan_not_a_crash() -> None:
    # A driver that bounds its own requests has no gateway limit (call_timeout None); its TimeoutError
    # must be reported like any unanswered request, not break the poll task.
    runner = _runner("Dev", ["Fast"], {"Fast": 100.0})
    driver: Any = runner.driver

    async def read(scan_class: str) -> Mapping[int, Reading]:
        raise TimeoutError

    driver.read = read
    driver.call_timeout = lambda default_s: None
    assert not await runner.scan("Fast")
    assert _good(runner) == {"Fast": False}
    assert runner.health.last_error == "the request timed out"
