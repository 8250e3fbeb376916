"""The series writer: every value change of the site becomes a point, on disk first, then on the server.

The gateway's part is small and runs on the event loop; the disk queue and the HTTP side run in a
writer process of their own (`python -m gateway.influx.child`, see child.py and spooler.py), with its
own interpreter and GIL. In one process they could not keep up: with the event loop's thread busy
(97,700 changes/s offered), only 10,456 points/s were acknowledged and the process used 101 % of its
200 %: each time the spooler or sender thread let the GIL go (every SQLite row step, every socket call)
it waited a switch interval (5 ms) to get it back, and the second core idled (28,500/s with a 0.5 ms
switch interval).

- The change feed listener (event loop) appends four numbers to four `array.array`s: series number,
  status, timestamp (ns) and value. No object per change that the garbage collector tracks (a tuple
  per change was 240 collections/s, ~15 % of the loop's time). A bound variable's series number is
  found by the identity of its NodeId object (the tag's own, which the value path stores with), not
  by NodeId's hash, a Python function; other nodes go through a dict. A value that is not a finite
  float (a string, an integer, a boolean, None, bytes, NaN) has its fields rendered here, on a slower
  side path. Measured alone it costs 0.56-0.84 us per change (`bench_influx.py`, stages). The same
  kind of listener on the event service takes each condition's event (alarms.py).
- Every `SPOOL_EVERY_S` the arrays' bytes become a numbered frame written to the writer process's
  stdin (frames.py), with the series defined since the last one and the alarm states.
- The writer process reports, a JSON line per spool, the last frame committed to the queue on disk
  and its counters. A frame is kept here until it is committed: a writer process that died is
  restarted (backoff, logged, State "Dead" meanwhile) and is sent the uncommitted frames again (a
  point queued twice is harmless: the database keeps one per series and timestamp).

Memory is bounded: while more than `MAX_UNCOMMITTED` points are sent and not committed (a slow disk, a
dead writer process), new points stay in the arrays, and beyond `MAX_IN_MEMORY` the oldest of them are
dropped and counted. A point is safe once the writer process committed it: `kill -9` of the gateway
closes the pipe, the writer process spools what it read and exits, and the next start sends the
queue. Points not yet committed (about `SPOOL_EVERY_S` of them) are lost then.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import sys
import time
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from asyncua import ua

from gateway.events.event import GatewayEvent
from gateway.events.service import EventService
from gateway.influx import frames
from gateway.influx.alarms import AlarmSeries, alarm_fields
from gateway.influx.config import InfluxConfig
from gateway.influx.lineproto import fields, timestamp_ns
from gateway.influx.series import SeriesCatalog
from gateway.values.feed import Change, ChangeFeed, Subscription

log = logging.getLogger(__name__)

SPOOL_EVERY_S = 0.1
MAX_IN_MEMORY = 2_000_000  # points not yet committed by the writer process; beyond, the oldest go, counted
MAX_UNCOMMITTED = 500_000  # points sent and not yet committed: beyond, new points wait in the arrays
RESTART_INITIAL_S = 0.5
RESTART_MAX_S = 30.0
HEALTHY_AFTER_S = 60.0  # a writer process that ran this long starts the restart backoff anew
_INF = math.inf


@dataclass
class WriterStats:
    """The writer process's counters as last reported, summed over the processes this writer started."""

    state: str = "Stopped"  # Connecting, Writing, Unreachable, Refusing, Throttled, Stopped; Dead: no process
    sent: int = 0
    rejected: int = 0  # single points the server refused (malformed), dropped
    dropped_memory: int = 0  # here, and in the writer process while its disk failed
    queue_dropped: int = 0  # removed by the queue's bounds
    last_error: str = ""
    queue_depth: int = 0  # on disk
    restarts: int = 0


class SeriesWriter:
    def __init__(self, config: InfluxConfig, catalog: SeriesCatalog, queue_path: Path,
                 python: str = sys.executable) -> None:
        self.config = config
        self.catalog = catalog
        self.queue_path = Path(queue_path)
        self.python = python
        self.stats = WriterStats()
        self.alarms = AlarmSeries(config, catalog.site, catalog.aspace)
        self.queue_full = False
        self.queue_bytes = 0
        # The points since the last frame (event loop only): appended to, and emptied in place at each frame.
        self._series = array("I")
        self._status = array("I")
        self._ts = array("q")
        self._values = array("d")
        self._rendered: dict[int, str] = {}  # index -> fields of a value that is not a finite float
        self._alarm_buffer: list[tuple[str, GatewayEvent]] = []
        self._numbers: dict[ua.NodeId, int] = {}  # node -> series number, -1: not a series
        self._by_identity: dict[int, tuple[ua.NodeId, int]] = {}  # id(bound variable's NodeId) -> (it, number)
        self._defs: list[tuple[int, str, str]] = []  # number, target, key of every series numbered
        self._new_defs: list[tuple[int, str, str]] = []  # not yet in a frame
        self._last_t: datetime | None = None  # a scan's values share their timestamp object: converted once
        self._last_ts = 0
        self._frame_number = 0
        self._uncommitted: deque[tuple[int, int, bytes]] = deque()  # frame number, points, message
        self._uncommitted_points = 0
        self._child_counts: dict[str, int] = {}  # the running process's counters as last reported
        self._proc: asyncio.subprocess.Process | None = None
        self._alive = False  # a writer process runs and has been sent the uncommitted frames
        self._stopping = False
        self._subscription: Subscription | None = None
        self._stop_events: Callable[[], None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None

    # -- counters shown in Gateway/Diagnostics/Influx ------------------------------------------------
    @property
    def dropped(self) -> int:
        return self.stats.rejected + self.stats.dropped_memory + self.stats.queue_dropped

    @property
    def depth(self) -> int:
        return (self.stats.queue_depth + self._uncommitted_points + len(self._series) + len(self._alarm_buffer))

    @property
    def state(self) -> str:
        if not self._alive and not self._stopping and self._supervisor is not None:
            return "Dead"
        return self.stats.state

    @property
    def last_error(self) -> str:
        return self.stats.last_error

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self, feed: ChangeFeed, events: EventService | None = None) -> None:
        """Start the writer process, listen to the values (and the alarm states of `events`)."""
        self.number_bound()
        self.stats.state = "Connecting"
        self._subscription = feed.listen(self._on_change, name="influx series writer")
        if events is not None:
            self._stop_events = events.listen(self._on_event)
        await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise(), name="influx writer process")
        self._flusher = asyncio.create_task(self._flush_loop(), name="influx frames")

    async def stop(self, within_s: float) -> None:
        """Send the last frame, let the writer process spool it and send what `within_s` allows; the rest
        stays queued on disk for the next start. The process is killed at the deadline."""
        deadline = time.monotonic() + within_s
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None
        if self._stop_events is not None:
            self._stop_events()
            self._stop_events = None
        self._stopping = True
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.wait([self._flusher])
            self._flusher = None
        proc = self._proc
        if self._alive and proc is not None and proc.stdin is not None:
            self._send_frame(force=True)
            # The process's own margin: its last request ends before the gateway's deadline.
            proc.stdin.write(frames.stop_message(max(within_s - 0.5, 0.0)))
            proc.stdin.close()
        elif self._uncommitted_points or len(self._series):
            log.warning("influx: no writer process at the stop: %d points in memory are lost",
                        self._uncommitted_points + len(self._series))
        if self._supervisor is not None:
            try:
                async with asyncio.timeout(max(deadline - time.monotonic(), 0.0)):
                    await asyncio.shield(self._supervisor)
            except TimeoutError:
                if proc is not None and proc.returncode is None:
                    log.warning("influx: the writer process did not end by the stop deadline; killed")
                    proc.kill()
                    await self._reap(proc, 1.0)
                self._supervisor.cancel()
                await asyncio.wait([self._supervisor])
            self._supervisor = None
        if self.stats.queue_depth:
            log.info("influx: %d points stay queued for the next start", self.stats.queue_depth)
        self.stats.state = "Stopped"

    def number_bound(self) -> None:
        """Number the bound variables' series up front, each found by its NodeId object's identity."""
        for node, series in self.catalog.bound():
            if node not in self._numbers:
                number = self._define(series.target, series.key)
                self._numbers[node] = number
                self._by_identity[id(node)] = (node, number)  # the tuple holds the node: its id stays its own

    # -- event loop: the listeners -------------------------------------------------------------------
    def _on_change(self, change: Change) -> None:
        node = change.node
        known = self._by_identity.get(id(node))
        if known is not None and known[0] is node:
            number = known[1]
        else:
            number = self._numbers.get(node)  # type: ignore[assignment]
            if number is None:
                number = self._number(node)
            if number < 0:
                return
        dv = change.dv
        t = dv.SourceTimestamp or dv.ServerTimestamp
        ts = self._last_ts if t is self._last_t and t is not None else self._timestamp(t)
        sc = dv.StatusCode
        status = sc.value if sc is not None else 0
        value = dv.Value.Value
        if type(value) is not float or not -_INF < value < _INF:  # not a finite float: rendered here
            self._rendered[len(self._series)] = fields(value, status)
            value = 0.0
        self._series.append(number)
        self._status.append(status)
        self._ts.append(ts)
        self._values.append(value)

    def _timestamp(self, t: datetime | None) -> int:
        ts = timestamp_ns(t)
        if t is not None:
            self._last_t, self._last_ts = t, ts
        return ts

    def _number(self, node: ua.NodeId) -> int:
        series = self.catalog.get(node)
        number = -1 if series is None else self._define(series.target, series.key)
        self._numbers[node] = number
        return number

    def _define(self, target: str, key: str) -> int:
        number = len(self._defs)
        self._defs.append((number, target, key))
        self._new_defs.append((number, target, key))
        return number

    def _on_event(self, event: GatewayEvent) -> None:
        key = self.alarms.key(event)
        if key is not None:
            self._alarm_buffer.append((key, event))

    # -- event loop: frames to the writer process ------------------------------------------------------
    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(SPOOL_EVERY_S)
            self._send_frame()

    def _send_frame(self, force: bool = False) -> None:
        """The points since the last frame as one frame to the writer process, unless it is not there or
        too far behind (then they wait here, bounded)."""
        n = len(self._series)
        if not n and not self._alarm_buffer and not self._new_defs:
            return
        proc = self._proc
        if (not self._alive or proc is None or proc.stdin is None or proc.stdin.is_closing()
                or (self._uncommitted_points >= MAX_UNCOMMITTED and not force)):
            self._bound_memory()
            return
        target = self.alarms.target
        alarm_rows = [(target, key, timestamp_ns(event.time), alarm_fields(event)) for key, event in self._alarm_buffer]
        self._frame_number += 1
        data = frames.data_message(self._frame_number, self._series, self._status, self._ts, self._values,
                                   self._new_defs, self._rendered, alarm_rows)
        count = n + len(alarm_rows)
        self._uncommitted.append((self._frame_number, count, data))
        self._uncommitted_points += count
        del self._series[:], self._status[:], self._ts[:], self._values[:]
        self._rendered.clear()
        self._alarm_buffer.clear()
        self._new_defs = []
        proc.stdin.write(data)

    def _bound_memory(self) -> None:
        excess = len(self._series) + self._uncommitted_points - MAX_IN_MEMORY
        if excess <= 0:
            return
        excess = min(excess, len(self._series))
        del self._series[:excess], self._status[:excess], self._ts[:excess], self._values[:excess]
        self._rendered = {i - excess: f for i, f in self._rendered.items() if i >= excess}
        self.stats.dropped_memory += excess
        log.error("influx: the writer process is not keeping up: %d points dropped from memory (%d since start)",
                  excess, self.stats.dropped_memory)

    # -- event loop: the writer process --------------------------------------------------------------
    async def _spawn(self) -> None:
        proc = self._proc = await asyncio.create_subprocess_exec(
            self.python, "-m", "gateway.influx.child", str(self.queue_path),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert proc.stdin is not None
        self._child_counts = {}
        proc.stdin.write(frames.config_message(self.config))
        proc.stdin.write(frames.series_message(self._defs))
        for _, _, data in self._uncommitted:  # what the previous process had not committed
            proc.stdin.write(data)
        self._alive = True

    async def _supervise(self) -> None:
        failures = 0
        while True:
            proc = self._proc
            assert proc is not None
            began = time.monotonic()
            await self._read_reports(proc)
            code = await self._reap(proc, None if self._stopping else 5.0)
            self._alive = False
            if self._stopping:
                return
            failures = 1 if time.monotonic() - began >= HEALTHY_AFTER_S else failures + 1
            wait = min(RESTART_INITIAL_S * 2 ** (failures - 1), RESTART_MAX_S) * random.uniform(0.75, 1.0)
            self.stats.last_error = f"the writer process exited ({_exit_text(code)})"
            self.stats.restarts += 1
            log.error("influx: the writer process exited (%s); %d points not yet committed; restarting in %.1f s",
                      _exit_text(code), self._uncommitted_points, wait)
            await asyncio.sleep(wait)
            if self._stopping:
                return
            try:
                await self._spawn()
            except OSError as exc:
                log.error("influx: cannot start the writer process: %s", exc)
                self._proc = proc  # the exited one: the loop waits again and retries

    async def _reap(self, proc: asyncio.subprocess.Process, within_s: float | None) -> int | None:
        try:
            async with asyncio.timeout(within_s):
                return await proc.wait()
        except TimeoutError:
            proc.kill()
            async with asyncio.timeout(5.0):
                return await proc.wait()

    async def _read_reports(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while True:
            try:
                line = await proc.stdout.readline()
            except (ValueError, asyncio.LimitOverrunError):  # a line too long: not from the writer process
                continue
            if not line:
                return
            try:
                self._take_report(json.loads(line))
            except (ValueError, KeyError, TypeError):
                log.warning("influx: the writer process said %r", line[:200])

    def _take_report(self, r: dict[str, Any]) -> None:
        last = self._child_counts
        s = self.stats
        s.sent += r["sent"] - last.get("sent", 0)
        s.rejected += r["rejected"] - last.get("rejected", 0)
        s.queue_dropped += r["queue_dropped"] - last.get("queue_dropped", 0)
        s.dropped_memory += r["dropped_memory"] - last.get("dropped_memory", 0)
        self._child_counts = {k: r[k] for k in ("sent", "rejected", "queue_dropped", "dropped_memory")}
        s.state, s.last_error, s.queue_depth = r["state"], r["last_error"], r["queue_depth"]
        self.queue_bytes, self.queue_full = r["queue_bytes"], r["queue_full"]
        committed = r["committed"]
        pending = self._uncommitted
        while pending and pending[0][0] <= committed:
            self._uncommitted_points -= pending.popleft()[1]


def _exit_text(code: int | None) -> str:
    if code is None:
        return "still running"
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"
