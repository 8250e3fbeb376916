"""Runs one device: its driver, one polling task per scan class, and its writes.

Polling is drift-free (each period is scheduled from the previous deadline, missed deadlines are
skipped, not bunched). A failed scan marks that scan class's variables BadCommunicationError
(values and source timestamps kept) and backs the device off exponentially, capped; the first
good scan restores Good. Driver calls are serialised per device: one connection, one request
at a time, as fieldbuses need.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Mapping
from typing import Any

from asyncua import ua

from gateway.bindings import DeviceConfig
from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.diagnostics import DiagnosticsNodes
from gateway.drivers.base import DeviceHealth, Driver, DriverError, Point, Reading
from gateway.tags import Tag, TagTable

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0


class DeviceRunner:
    def __init__(
        self, cfg: DeviceConfig, tags: TagTable, scan_classes: Mapping[str, float],
        diagnostics: DiagnosticsNodes | None = None, clock: Clock = SYSTEM_CLOCK, timeout_s: float = 5.0,
    ) -> None:
        self.cfg = cfg
        self.tags = tags
        self.scan_classes = scan_classes
        self.diagnostics = diagnostics
        self.clock = clock
        self.timeout_s = timeout_s
        self.health = DeviceHealth()
        self.points: dict[int, Point] = {}
        self.tag_of: dict[int, Tag] = {}
        self.key_of: dict[ua.NodeId, int] = {}
        by_class: dict[str, list[Point]] = {}
        for key, var in enumerate(cfg.variables):
            pt = Point(key, var.name, var.binding, var.field_type, var.writable)
            self.points[key] = pt
            self.tag_of[key] = tags.add(var, cfg.nodeid)
            self.key_of[var.nodeid] = key
            by_class.setdefault(var.binding.scan_class, []).append(pt)
        self.driver: Driver = cfg.driver(cfg.url, by_class, clock)
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._failures = 0
        self._own_errors = 0  # failures the driver did not count: timeouts, driver bugs

    async def start(self) -> None:
        self.health.state = "Connecting"
        for tag in self.tag_of.values():
            await self.tags.mark_waiting(tag)
        await self._report()
        await self.driver.start()
        for sc in self.driver.points_by_class:
            self._tasks.append(asyncio.create_task(self._poll(sc, self.scan_classes[sc] / 1000.0),
                                                   name=f"poll {self.cfg.name} {sc}"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.driver.stop()
        self.health.state = "Stopped"
        await self._report()

    async def _poll(self, scan_class: str, period: float) -> None:
        # Each device keeps a phase of its own inside the period, derived from its name, so a hundred
        # devices of one scan class do not all scan in the same instant: bunched, their work held the
        # event loop for 300 ms each second at 10,000 values/s (bench_history); spread, it is a few ms
        # at a time. The first scans are spread over at most a second, so initial data comes soon.
        fraction = (zlib.crc32(f"{self.cfg.name}/{scan_class}".encode()) % 1000) / 1000
        await self.clock.sleep(fraction * min(period, 1.0))
        deadline = self.clock.monotonic() + fraction * max(0.0, period - 1.0) - period
        while True:
            ok = await self.scan(scan_class)
            if ok:
                deadline += period
                now = self.clock.monotonic()
                if deadline < now:  # overran: skip the missed periods rather than burst
                    deadline = now + period - ((now - deadline) % period)
                delay = deadline - now
            else:
                delay = min(MAX_BACKOFF_S, period * 2 ** min(self._failures, 16))
                deadline = self.clock.monotonic() + delay
            await self.clock.sleep(max(0.0, delay))

    async def scan(self, scan_class: str) -> bool:
        """One read of a scan class; returns False when the device failed."""
        started = time.perf_counter()
        try:
            async with self._lock:
                readings: Mapping[int, Reading] = await asyncio.wait_for(
                    self.driver.read(scan_class), self.driver.call_timeout(self.timeout_s))
        except (DriverError, TimeoutError, OSError) as exc:
            status = exc.status if isinstance(exc, DriverError) else ua.StatusCodes.BadCommunicationError
            message = str(exc) or f"no answer within {self.timeout_s:g} s"
            await self._failed(scan_class, status, message, isinstance(exc, DriverError))
            return False
        except Exception as exc:  # a driver bug must not stop polling of the device
            log.exception("driver %s failed reading %s", self.cfg.name, scan_class)
            await self._failed(scan_class, ua.StatusCodes.BadInternalError, f"driver error: {exc!r}", False)
            return False
        self.health.response_ms = (time.perf_counter() - started) * 1000.0
        self.health.last_success = self.clock.now()
        if self._failures or self.health.state != "Connected":
            if self._failures:
                log.info("device %s answers again", self.cfg.name)
            self._failures = 0
            self.health.state = "Connected"
        for key, reading in readings.items():
            await self.tags.publish_raw(self.tag_of[key], reading.value, reading.status, reading.source_time)
        await self._report()
        return True

    async def _failed(self, scan_class: str, status: int, message: str, counted: bool) -> None:
        if not counted:
            self._own_errors += 1
        if self.health.last_error != message or self._failures == 0:
            log.warning("device %s: %s", self.cfg.name, message)  # once per state change, not per poll
        self.health.last_error = message
        self.health.state = "Disconnected"
        self._failures += 1
        for pt in self.driver.points_by_class.get(scan_class, ()):
            await self.tags.set_status(self.tag_of[pt.key], status)
        await self._report()

    async def _report(self) -> None:
        self.health.requests = self.driver.requests
        self.health.errors = self.driver.request_errors + self._own_errors
        if self.diagnostics is not None:
            await self.diagnostics.update(self.health)

    async def write(self, nodeid: ua.NodeId, value: Any) -> int:
        """Write an engineering value through the driver; returns the OPC UA status for the writer."""
        key = self.key_of[nodeid]
        tag, point = self.tag_of[key], self.points[key]
        raw = tag.to_raw(value)
        try:
            async with self._lock:
                readback = await asyncio.wait_for(self.driver.write(point, raw),
                                                  self.driver.call_timeout(self.timeout_s))
        except DriverError as exc:
            self.health.last_error = str(exc)
            log.warning("write to %s/%s failed: %s", self.cfg.name, point.name, exc)
            await self._report()
            return exc.status
        except (TimeoutError, OSError) as exc:
            self._own_errors += 1
            self.health.last_error = f"write to {point.name}: {exc or 'timeout'}"
            await self._report()
            return ua.StatusCodes.BadCommunicationError
        shown = tag.to_engineering(readback) if readback is not None else value
        await self.tags.publish(tag, shown, ua.StatusCodes.Good, self.clock.now(), force=True)
        await self._report()
        return ua.StatusCodes.Good
