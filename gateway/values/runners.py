"""Runs one device: its driver, one polling task per scan class, and its writes.

Polling is drift-free (each period is scheduled from the previous deadline, missed deadlines are
skipped, not bunched). A failed scan marks that scan class's variables BadCommunicationError
(values and source timestamps kept) and backs that scan class off exponentially, capped; the
first good scan restores Good, and a failing class that answers again makes the classes sleeping
in backoff retry at once, so a device that returns is Good everywhere within one period. Driver
calls are serialised per device: one connection, one request at a time, as fieldbuses need.

A pushing driver (CAN, MQTT) delivers readings itself: the runner runs it in one task and its
readings take the same way into the tag table. When its link fails, its variables turn Bad and it
is started again after the same backoff as a failed scan (the device's shortest scan period,
doubled per failure, capped); the first good reading makes the device Connected again.

Every driver call is bounded with `asyncio.timeout`, not wait_for: on Python 3.11 wait_for
returns the inner result and swallows a cancellation that arrives as the call finishes,
which left cancelled poll tasks looping for ever and stop() waiting on them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from asyncua import ua

from gateway.bindings import DeviceConfig
from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.diagnostics import DiagnosticsNodes
from gateway.drivers.base import DeviceHealth, Driver, DriverError, Point, Reading, os_error_text
from gateway.values.tags import ConversionError, Tag, TagTable

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0
STOP_WITHIN_S = 1.0  # how long stop() waits for the poll tasks, then for the driver to close
TASK_RESTART_S = 1.0  # pause before a poll task that failed is started again
PUSH_REPORT_S = 1.0  # a pushing device's diagnostics are refreshed at most this often (and on every change)


@dataclass(slots=True)
class _ScanClassState:
    period_s: float
    failures: int = 0  # consecutive failed scans: this class's backoff, not the device's
    last_error: str = ""
    retry_now: asyncio.Event = field(default_factory=asyncio.Event)


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
        self._classes = {sc: _ScanClassState(scan_classes[sc] / 1000.0) for sc in by_class}
        self.task_failures = 0  # poll tasks that ended with an error (shown on Gateway/Diagnostics)
        self.last_task_error = ""
        self._own_errors = 0  # failures the driver did not count: timeouts, driver bugs
        self._push_failures = 0  # consecutive failed runs of a pushing driver: its backoff
        self._push_period = min((s.period_s for s in self._classes.values()), default=1.0)
        self._push_reported = -math.inf

    async def start(self) -> None:
        self.health.state = "Connecting"
        for tag in self.tag_of.values():
            await self.tags.mark_waiting(tag)
        await self._report()
        await self.driver.start()
        if self.driver.polls:
            for sc in self.driver.points_by_class:
                self._tasks.append(asyncio.create_task(self._poll_supervised(sc), name=f"poll {self.cfg.name} {sc}"))
        if self.driver.pushes:
            self._tasks.append(asyncio.create_task(self._listen(), name=f"listen {self.cfg.name}"))

    async def stop(self, within_s: float = STOP_WITHIN_S) -> None:
        """Cancel polling and close the driver; each step waits at most `within_s`, then is left behind."""
        await self.stop_polling(within_s)
        await self.close(within_s)

    async def stop_polling(self, within_s: float = STOP_WITHIN_S) -> None:
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=within_s)
            if pending:
                log.error("device %s: %d poll task(s) still running %g s after stop; left behind",
                          self.cfg.name, len(pending), within_s)

    async def close(self, within_s: float = STOP_WITHIN_S) -> None:
        """Close the driver (after stop_polling); a driver that hangs is left behind after `within_s`."""
        try:
            async with asyncio.timeout(within_s):
                await self.driver.stop()
        except TimeoutError:
            log.error("device %s: driver did not close within %g s", self.cfg.name, within_s)
        except Exception:
            log.exception("device %s: driver failed while closing", self.cfg.name)
        self.health.state = "Stopped"
        await self._report()

    async def _poll_supervised(self, scan_class: str) -> None:
        """Poll; if polling itself fails (a bug: driver errors are handled in scan), say so, mark the
        values Bad, and start again after a pause instead of leaving the device silently unpolled."""
        while True:
            try:
                await self._poll(scan_class)
            except Exception as exc:
                self.task_failures += 1
                self.last_task_error = f"polling {self.cfg.name}/{scan_class} failed: {exc!r}"
                log.exception("polling %s/%s failed; restarting it in %g s", self.cfg.name, scan_class,
                              TASK_RESTART_S)
                now = self.clock.now()
                for pt in self.driver.points_by_class.get(scan_class, ()):
                    self.tags.put_status(self.tag_of[pt.key], ua.StatusCodes.BadInternalError, now)
                await self.clock.sleep(TASK_RESTART_S)

    async def _poll(self, scan_class: str) -> None:
        state = self._classes[scan_class]
        period = state.period_s
        # Each device keeps a phase of its own inside the period, derived from its name, so a hundred
        # devices of one scan class do not all scan in the same instant: bunched, their work held the
        # event loop for 300 ms each second at 10,000 values/s (bench_history); spread, it is a few ms
        # at a time. The first scans are spread over at most a second, so initial data comes soon.
        fraction = (zlib.crc32(f"{self.cfg.name}/{scan_class}".encode()) % 1000) / 1000
        await self.clock.sleep(fraction * min(period, 1.0))
        deadline = self.clock.monotonic() + fraction * max(0.0, period - 1.0) - period
        while True:
            if await self.scan(scan_class):
                deadline += period
                now = self.clock.monotonic()
                if deadline < now:  # overran: skip the missed periods rather than burst
                    deadline = now + period - ((now - deadline) % period)
                await self.clock.sleep(max(0.0, deadline - now))
            else:
                delay = min(MAX_BACKOFF_S, period * 2 ** min(state.failures, 16))
                await self._backoff(state, delay)
                deadline = self.clock.monotonic() - period

    async def _backoff(self, state: _ScanClassState, delay: float) -> None:
        """Sleep `delay`, or less if another scan class of the device gets an answer meanwhile."""
        if state.retry_now.is_set():  # the device answered another class while this one was failing
            state.retry_now.clear()
            return
        sleeper = asyncio.ensure_future(self.clock.sleep(delay))
        woken = asyncio.ensure_future(state.retry_now.wait())
        try:
            await asyncio.wait((sleeper, woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            woken.cancel()
        state.retry_now.clear()

    async def scan(self, scan_class: str) -> bool:
        """One read of a scan class; returns False when the device failed."""
        started = time.perf_counter()
        limit = self.driver.call_timeout(self.timeout_s)
        try:
            async with self._lock:
                async with asyncio.timeout(limit):
                    readings: Mapping[int, Reading] = await self.driver.read(scan_class)
        except TimeoutError as exc:
            await self._failed(scan_class, ua.StatusCodes.BadTimeout, _timeout_text(limit, exc), False)
            return False
        except (DriverError, OSError) as exc:
            status = exc.status if isinstance(exc, DriverError) else ua.StatusCodes.BadCommunicationError
            message = str(exc) if isinstance(exc, DriverError) else os_error_text(exc)
            await self._failed(scan_class, status, message, isinstance(exc, DriverError))
            return False
        except Exception as exc:  # a driver bug must not stop polling of the device
            log.exception("driver %s failed reading %s", self.cfg.name, scan_class)
            await self._failed(scan_class, ua.StatusCodes.BadInternalError, f"driver error: {exc!r}", False)
            return False
        self.health.response_ms = (time.perf_counter() - started) * 1000.0
        self.health.last_success = self.clock.now()
        state = self._classes[scan_class]
        if state.failures:
            state.failures, state.last_error = 0, ""
            # This class was failing and answers again: the device is back, so the classes sleeping in
            # backoff retry now rather than in up to MAX_BACKOFF_S. (A class that never failed does not
            # wake them: one block that always fails must not be polled at another class's rate.)
            for other in self._classes.values():
                if other.failures:
                    other.retry_now.set()
        if self.health.state != "Connected":
            if self.health.state == "Disconnected":
                log.info("device %s answers again", self.cfg.name)
            self.health.state = "Connected"
        self.tags.publish_readings(self.tag_of, readings)
        await self._report()
        return True

    async def _failed(self, scan_class: str, status: int, message: str, counted: bool) -> None:
        if not counted:
            self._own_errors += 1
        state = self._classes[scan_class]
        if state.last_error != message:
            log.warning("device %s: %s", self.cfg.name, message)  # once per change, not per poll
        state.last_error = self.health.last_error = message
        state.failures += 1
        if all(c.failures for c in self._classes.values()):  # one failing block is not a lost device
            self.health.state = "Disconnected"
        now = self.clock.now()
        for pt in self.driver.points_by_class.get(scan_class, ()):
            self.tags.put_status(self.tag_of[pt.key], status, now)
        await self._report()

    # -- pushing drivers ----------------------------------------------------------------------
    async def _listen(self) -> None:
        """Run the pushing driver; when its link fails (or the driver fails), mark its values Bad and run it
        again after a backoff."""
        while True:
            try:
                await self.driver.run(self)
                raise DriverError("the link closed")
            except (DriverError, OSError) as exc:
                status = exc.status if isinstance(exc, DriverError) else ua.StatusCodes.BadCommunicationError
                message = str(exc) if isinstance(exc, DriverError) else os_error_text(exc)
                counted = isinstance(exc, DriverError)
            except Exception as exc:  # a driver bug must not end the device's updates
                log.exception("driver %s failed", self.cfg.name)
                status, message, counted = ua.StatusCodes.BadInternalError, f"driver error: {exc!r}", False
            self._push_failures += 1
            if not counted:
                self._own_errors += 1
            await self.lost(message)
            now = self.clock.now()
            for tag in self.tag_of.values():
                self.tags.put_status(tag, status, now)
            await self._report()
            await self.clock.sleep(min(MAX_BACKOFF_S, self._push_period * 2 ** min(self._push_failures - 1, 16)))

    async def deliver(self, readings: Mapping[int, Reading]) -> None:
        """Readings a pushing driver received (PushSink): into the tag table as a scan's readings go."""
        good = any(ua.StatusCode(r.status).is_good() for r in readings.values())
        changed = False
        if good:
            self._push_failures = 0
            self.health.last_success = self.clock.now()
            if self.health.state != "Connected":
                if self.health.state == "Disconnected":
                    log.info("device %s answers again", self.cfg.name)
                self.health.state, self.health.last_error, changed = "Connected", "", True
        self.tags.publish_readings(self.tag_of, readings)
        now = self.clock.monotonic()
        if changed or now - self._push_reported >= PUSH_REPORT_S:
            self._push_reported = now
            await self._report()

    async def lost(self, message: str) -> None:
        """A pushing driver's device went silent or its link failed (PushSink): Disconnected, logged once."""
        if self.health.last_error != message or self.health.state != "Disconnected":
            log.warning("device %s: %s", self.cfg.name, message)
        self.health.state, self.health.last_error = "Disconnected", message
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
        try:
            raw = tag.to_raw(value)
        except ConversionError as exc:  # the field type cannot hold it exactly: refused, never rounded
            log.info("write to %s/%s refused: %s", self.cfg.name, point.name, exc)
            return ua.StatusCodes.BadOutOfRange
        limit = self.driver.call_timeout(self.timeout_s)
        try:
            async with self._lock:
                async with asyncio.timeout(limit):
                    readback = await self.driver.write(point, raw)
        except DriverError as exc:
            self.health.last_error = str(exc)
            log.warning("write to %s/%s failed: %s", self.cfg.name, point.name, exc)
            await self._report()
            return exc.status
        except (TimeoutError, OSError) as exc:
            self._own_errors += 1
            cause = _timeout_text(limit, exc) if isinstance(exc, TimeoutError) else os_error_text(exc)
            self.health.last_error = f"write to {point.name}: {cause}"
            log.warning("write to %s/%s failed: %s", self.cfg.name, point.name, cause)
            await self._report()
            return ua.StatusCodes.BadCommunicationError
        shown = tag.to_engineering(readback) if readback is not None else value
        await self.tags.publish(tag, shown, ua.StatusCodes.Good, self.clock.now(), force=True)
        await self._report()
        return ua.StatusCodes.Good


def _timeout_text(limit: float | None, exc: TimeoutError) -> str:
    """A timeout in words: the gateway's own bound, or one the driver raised itself (limit None)."""
    return f"no answer within {limit:g} s" if limit is not None else (str(exc) or "the request timed out")
