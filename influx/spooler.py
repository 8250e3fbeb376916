"""The writer process's queue side: frames of points from the gateway go to the on-disk queue, and from
there to the server. It runs in its own process (`gateway.influx.child`), see writer.py for why.

Two threads, so reading the gateway's frames never waits for a disk or a network:
- the spooler thread takes the frames that came every `SPOOL_EVERY_S`, renders the points (a float,
  the usual value, in one f-string; the gateway rendered the others) and commits them to the on-disk
  queue in one transaction (executemany, the series as the queue's integer id), then reports the last
  committed frame to the gateway, and applies the queue's size and age bounds;
- the sender thread sends the head of the queue in batches (read as one text per target, see
  DiskQueue.head_batches) and deletes a batch only once the server acknowledged it. A failure keeps
  the batch on disk: no answer, 5xx, 401/403/404 and 413
  are retried with exponential backoff and jitter; 429 and 503 wait for Retry-After; a 400 or 422
  (a point the server refuses) splits the batch in halves until the refused point is alone, which
  is then dropped, counted and logged, and the rest is written.

A point is safe once its spool transaction committed: `kill -9` after that loses nothing; a batch the
server took whose deletion did not happen is sent again, and the database keeps one point per series
and timestamp. Frames not yet committed are still held by the gateway, which sends them again to the
next writer process.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.influx.config import InfluxConfig
from gateway.influx.diskqueue import Batch, DiskQueue, QueuedPoint
from gateway.influx.endpoint import Endpoint, WriteFailed
from gateway.influx.frames import Frame

log = logging.getLogger(__name__)

SPOOL_EVERY_S = 0.1
MAX_IN_MEMORY = 2_000_000  # points waiting for the spooler (a failing disk); beyond, the oldest frames go, counted
LOG_EVERY_S = 60.0
# "Queue full" ends when the queue is back under this share of its size and age bounds: a bound trims a
# tenth at once, so clearing at the bound itself would flap while the server stays away.
FULL_CLEARS_BELOW = 0.8
_RETRY_STATUSES_SPLIT = (400, 422)
_RETRY_AFTER_STATUSES = (429, 503)


@dataclass
class QueueWriterStats:
    state: str = "Stopped"  # Connecting, Writing, Unreachable, Refusing, Throttled, Stopped
    sent: int = 0
    rejected: int = 0  # single points the server refused (malformed), dropped
    dropped_memory: int = 0
    last_error: str = ""
    requests: int = 0
    failures: int = 0
    last_failure_log: float = field(default=float("-inf"))


class QueueWriter:
    """Frames in (`take`, from the process's reading thread), the queue on disk, batches out."""

    def __init__(self, config: InfluxConfig, queue: DiskQueue, endpoint: Endpoint | None = None,
                 now_ns: Callable[[], int] = time.time_ns,
                 on_spooled: Callable[[QueueWriter], None] | None = None) -> None:
        self.config = config
        self.queue = queue
        self.endpoint = endpoint or Endpoint(config)
        self.now_ns = now_ns
        self.on_spooled = on_spooled  # after each spool: the process reports counters and `committed`
        self.stats = QueueWriterStats()
        self.committed = 0  # the last frame number whose points are in the queue on disk
        self._frames: list[Frame] = []
        self._frames_lock = threading.Lock()  # the reading thread adds frames and series, the spooler takes them
        self._series: dict[int, tuple[str, str]] = {}  # series number -> (target, key), from the gateway
        self._series_ids: dict[int, int] = {}  # series number -> the queue's series id (spooler thread)
        self.queue_full = False  # points were dropped by a bound and the queue has not come back under it
        self._stopping = threading.Event()
        self._flush_by = float("inf")  # monotonic deadline for the sender at stop
        self._spool_wake = threading.Event()
        self._send_wake = threading.Event()
        self._spooler: threading.Thread | None = None
        self._sender: threading.Thread | None = None
        self._spooler_error = ""
        self.queue_bytes = 0  # pages the queue uses, measured by the spooler
        self._drop_logged = float("-inf")

    # -- counters shown in Gateway/Diagnostics/Influx ------------------------------------------------
    @property
    def state(self) -> str:
        if self._sender is not None and not self._sender.is_alive() and not self._stopping.is_set():
            return "Dead"
        return self.stats.state

    @property
    def last_error(self) -> str:
        return self._spooler_error or self.stats.last_error

    def counters(self) -> dict[str, object]:
        return {"state": self.state, "queue_depth": self.queue.depth, "queue_bytes": self.queue_bytes,
                "sent": self.stats.sent, "dropped_memory": self.stats.dropped_memory, "rejected": self.stats.rejected,
                "last_error": self.last_error, "queue_full": self.queue_full, "committed": self.committed,
                "queue_dropped": self.queue.dropped}

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Open the queue (blocking), start both threads."""
        self.queue.open()
        self.stats.state = "Connecting"
        self._spooler = threading.Thread(target=self._spool_loop, name="influx-spooler", daemon=True)
        self._sender = threading.Thread(target=self._send_loop, name="influx-sender", daemon=True)
        self._spooler.start()
        self._sender.start()
        if self.queue.depth:
            log.info("influx: %d points queued from before, sending them first", self.queue.depth)

    def take_series(self, defs: list[tuple[int, str, str]]) -> None:
        """Series numbers the gateway uses from now on (reading thread; before the frames that use them)."""
        with self._frames_lock:
            for number, target, key in defs:
                self._series[number] = (target, key)

    def take(self, frame: Frame) -> None:
        """A frame from the gateway (reading thread): spooled at the next `SPOOL_EVERY_S`."""
        self.take_series(frame.series_defs)
        with self._frames_lock:
            self._frames.append(frame)

    def stop(self, within_s: float) -> None:
        """Blocking: spool what came, send what the deadline allows; the rest stays queued on disk for the
        next start. `within_s` 0: spool only."""
        deadline = time.monotonic() + within_s
        self._flush_by = deadline - 0.1 if within_s > 0 else float("-inf")
        self._stopping.set()
        self._spool_wake.set()
        self._send_wake.set()
        if self._spooler is not None:
            self._spooler.join()  # a transaction is not cut short: a killed gateway's points are spooled
        if self._sender is not None:
            self._sender.join(max(deadline - time.monotonic(), 0.0))
        left = self.queue.depth
        if self._sender is not None and self._sender.is_alive():
            log.warning("influx: the last request was still running at the stop deadline; %d points stay "
                        "queued for the next start", left)
        elif left:
            log.info("influx: %d points stay queued for the next start", left)
        self.stats.state = "Stopped"
        self.endpoint.close()

    # -- spooler thread ------------------------------------------------------------------------------
    def _spool_loop(self) -> None:
        while True:
            stopping = self._stopping.is_set()
            self._spool_once()
            if self.on_spooled is not None:
                self.on_spooled(self)
            if stopping:
                return
            self._spool_wake.wait(SPOOL_EVERY_S)

    def _spool_once(self) -> None:
        with self._frames_lock:
            frames, self._frames = self._frames, []
            series = dict(self._series) if len(self._series) > len(self._series_ids) else None
        if frames:
            try:
                rows = self._rows(frames, series)
                self.queue.append_ids(rows)
                self.committed = frames[-1].number
                self._spooler_error = ""
            except Exception as exc:  # a full or failing disk: keep the frames in memory and retry
                self._spooler_error = f"queue on disk: {exc}"
                self._keep_in_memory(frames)
                self._log_failure(self._spooler_error)
                return
            if self.queue.depth >= self.config.batch_size:
                self._send_wake.set()
        try:
            now_ns = self.now_ns()
            removed = self.queue.enforce_bounds(now_ns)
            self.queue_bytes = self.queue.bytes_used()
            if removed:
                self.queue_full = True
            elif self.queue_full:
                oldest = self.queue.oldest_queued_ns()
                age_ns = now_ns - oldest if oldest is not None else 0
                self.queue_full = not (self.queue_bytes < FULL_CLEARS_BELOW * self.config.queue_max_bytes
                                       and age_ns < FULL_CLEARS_BELOW * self.queue.max_age_ns)
        except Exception as exc:
            self._log_failure(f"queue bounds: {exc}")
            return
        if removed:
            now = time.monotonic()
            if now - self._drop_logged >= LOG_EVERY_S:
                self._drop_logged = now
                log.error("influx: queue over its bound (%d bytes, %.0f days): the %d oldest points were dropped "
                          "(%d since start)", self.config.queue_max_bytes, self.config.queue_max_age_s / 86400,
                          removed, self.queue.dropped)

    def _rows(self, frames: list[Frame], series: dict[int, tuple[str, str]] | None = None
              ) -> list[tuple[int, int, str]]:
        """(queue series id, timestamp ns, fields) of each point: this loop is the spooler's cost per point.
        `series`: the series the gateway defined, when some are new since the last spool."""
        ids = self._series_ids
        if series is not None:  # series new since the last spool: added to the queue in one transaction
            new = [n for n in series if n not in ids]
            ids.update(zip(new, self.queue.series_ids([series[n] for n in new]), strict=True))
        rows: list[tuple[int, int, str]] = []
        for frame in frames:
            fields = [f"value={v!r},quality={s}i" for v, s in zip(frame.values, frame.status, strict=True)]
            for i, rendered in frame.rendered.items():
                fields[i] = rendered
            rows += zip(map(ids.__getitem__, frame.series), frame.ts_ns, fields, strict=True)
            if frame.alarms:
                rows += [(self.queue.series_id(target, key), ts, text) for target, key, ts, text in frame.alarms]
        return rows

    def _keep_in_memory(self, frames: list[Frame]) -> None:
        with self._frames_lock:
            self._frames[:0] = frames
            excess = sum(len(f) for f in self._frames) - MAX_IN_MEMORY
            while excess > 0 and len(self._frames) > 1:
                # The gateway holds these uncommitted frames too and bounds them; this is the process's own bound.
                lost = self._frames.pop(0)
                self.stats.dropped_memory += len(lost)
                excess -= len(lost)

    # -- sender thread -------------------------------------------------------------------------------
    def _send_loop(self) -> None:
        failures = 0
        while True:
            stopping = self._stopping.is_set()
            if stopping and time.monotonic() >= self._flush_by:
                return
            # Read before the queue: a spooler that ends between the two has committed its last rows, and
            # an empty queue read before that would send the stop off without them.
            spooled_all = stopping and (self._spooler is None or not self._spooler.is_alive())
            try:
                batches = self.queue.head_batches(self.config.batch_size)
                head = self.queue.head(self.config.batch_size) if batches is None else []
            except Exception as exc:
                self._log_failure(f"reading the queue: {exc}")
                batches, head = [], []
            count = len(head) if batches is None else sum(len(ids) for _, ids, _ in batches)
            if not count:
                if spooled_all:
                    return
                self._send_wake.clear()
                self._send_wake.wait(0.05 if stopping else self.config.flush_interval_s)
                continue
            try:
                if batches is None:
                    self._send(head)
                else:
                    self._send_batches(batches)
            except WriteFailed as exc:
                failures += 1
                wait = self._on_failure(exc, failures)
                if stopping:
                    return
                self._stopping.wait(wait)
                continue
            failures = 0
            if count < self.config.batch_size and not stopping:
                # A partial batch: wait for more (or the flush interval) instead of a request per spool.
                self._send_wake.clear()
                self._send_wake.wait(self.config.flush_interval_s)

    def _send(self, head: list[QueuedPoint]) -> None:
        """Send the head grouped by target, in order; acknowledged groups leave the queue at once."""
        if head[0][1] == head[-1][1] and all(p[1] == head[0][1] for p in head):
            self._send_points(head[0][1], head)  # one target: the usual case
            return
        by_target: dict[str, list[QueuedPoint]] = {}
        for p in head:
            by_target.setdefault(p[1], []).append(p)
        for target, points in by_target.items():
            self._send_points(target, points)

    def _send_batches(self, batches: list[Batch]) -> None:
        """Send each target's batch as one body; a refused point is looked for row by row."""
        for target, ids, body in batches:
            try:
                self._post_body(target, body.encode("utf-8"))
            except WriteFailed as exc:
                if exc.status not in _RETRY_STATUSES_SPLIT:
                    raise
                self._send_points(target, self.queue.points(ids))
                continue
            self._acked(ids)

    def _send_points(self, target: str, points: list[QueuedPoint]) -> None:
        try:
            self._post(target, points)
        except WriteFailed as exc:
            if exc.status not in _RETRY_STATUSES_SPLIT:
                raise
            if len(points) == 1:
                self.stats.rejected += 1
                self.stats.last_error = f"point refused and dropped: {exc}"
                log.warning("influx: %s refused a point, dropped (%d so far): %s: %s", target,
                            self.stats.rejected, points[0][2][:300], exc)
                self.queue.ack([points[0][0]])
                return
            half = len(points) // 2
            self._send_points(target, points[:half])
            self._send_points(target, points[half:])
            return
        self._acked([p[0] for p in points])

    def _acked(self, ids: list[int]) -> None:
        self.queue.ack(ids)
        self.stats.sent += len(ids)
        if self.stats.state != "Writing":
            if self.stats.state not in ("Connecting", "Stopped"):
                log.info("influx: writing again (%d points queued)", self.queue.depth)
            self.stats.state = "Writing"

    def _post(self, target: str, points: list[QueuedPoint]) -> None:
        self._post_body(target, "\n".join([p[2] for p in points]).encode("utf-8"))

    def _post_body(self, target: str, body: bytes) -> None:
        timeout = None
        if self._stopping.is_set():
            timeout = max(self._flush_by - time.monotonic(), 0.05)
        self.stats.requests += 1
        self.endpoint.write(target, body, timeout)

    def _on_failure(self, exc: WriteFailed, failures: int) -> float:
        self.stats.failures += 1
        self.stats.last_error = str(exc)
        if exc.status == 0:
            self.stats.state = "Unreachable"
        elif exc.status in _RETRY_AFTER_STATUSES:
            self.stats.state = "Throttled"
        else:
            self.stats.state = "Refusing"
        if exc.status in _RETRY_AFTER_STATUSES and exc.retry_after_s is not None:
            wait = min(exc.retry_after_s, self.config.backoff_max_s * 5)
        else:
            base = min(self.config.backoff_initial_s * 2 ** min(failures - 1, 30), self.config.backoff_max_s)
            wait = base * random.uniform(0.5, 1.0)  # jitter: gateways restarted together do not retry together
        self._log_failure(f"{exc}; {self.queue.depth} points queued, retrying in {wait:.1f} s", state=True)
        return wait

    def _log_failure(self, message: str, state: bool = False) -> None:
        now = time.monotonic()
        if now - self.stats.last_failure_log >= LOG_EVERY_S:
            self.stats.last_failure_log = now
            log.warning("influx: %s%s", f"{self.stats.state}: " if state else "", message)
