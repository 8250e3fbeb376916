"""Event-loop lateness, and for each late tick what the machine took from the loop's thread.

A tick sleeps `slot_s` on the loop; its lateness is how much later than asked it woke. A late tick has
two kinds of cause. The gateway's own: its callbacks ran on the loop's thread (CPU), or the thread
waited for the GIL held by one of its other threads. The machine's: the thread was runnable but no CPU
ran it (another process, or the gateway's other thread, had both cores), or the hypervisor ran
something else on the virtual CPUs ("steal"; measured on this machine: 0.7-9.8 s of a minute, in bursts
of 10-130 ms, and a tick 145 ms late in which the loop's thread ran 1.8 ms).

Each tick reads the thread's scheduler counters (/proc/self/task/TID/schedstat: time on a CPU, time
runnable on a run queue) and the machine's steal (/proc/stat, all CPUs, in 10 ms units): about 20 us a
tick, 0.2 % of a core at 100 ticks a second. Where Linux does not give them, only lateness is measured.
"""

from __future__ import annotations

import asyncio
import os
import threading
from dataclasses import dataclass
from typing import Any

from _common import percentile

_TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


@dataclass(slots=True)
class Tick:
    late_ms: float
    cpu_ms: float  # the loop's thread on a CPU during the tick
    queued_ms: float  # runnable, waiting for a CPU
    steal_ms: float  # the hypervisor's, on any of the machine's CPUs


def _schedstat() -> tuple[int, int] | None:
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/schedstat", "rb") as f:
            on_cpu, queued, _ = f.read().split()
        return int(on_cpu), int(queued)
    except (OSError, ValueError):
        return None


def _steal_ns() -> int | None:
    try:
        with open("/proc/stat", "rb") as f:
            fields = f.readline().split()  # "cpu  user nice system idle iowait irq softirq steal ..."
        return int(fields[8]) * _TICK_NS
    except (OSError, ValueError, IndexError):
        return None


class LoopProbe:
    def __init__(self, slot_s: float = 0.01) -> None:
        self.slot_s = slot_s
        self.ticks: list[Tick] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="loop probe")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def reset(self) -> None:
        self.ticks.clear()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        sched, steal = _schedstat(), _steal_ns()
        while True:
            t = loop.time()
            await asyncio.sleep(self.slot_s)
            late_ms = (loop.time() - t - self.slot_s) * 1000
            sched_now, steal_now = _schedstat(), _steal_ns()
            cpu = queued = stolen = 0.0
            if sched is not None and sched_now is not None:
                cpu, queued = (sched_now[0] - sched[0]) / 1e6, (sched_now[1] - sched[1]) / 1e6
            if steal is not None and steal_now is not None:
                stolen = (steal_now - steal) / 1e6
            self.ticks.append(Tick(late_ms, cpu, queued, stolen))
            sched, steal = sched_now, steal_now

    def stats(self, over_ms: float = 50.0, worst: int = 5) -> dict[str, Any]:
        late = [t.late_ms for t in self.ticks]
        # What the machine did not give the loop's thread in a tick: queued for a CPU, or CPUs stolen.
        # Steal is machine-wide (some of it may have been the other CPU's), so what is left is a lower
        # bound of the gateway's own part; the tick's CPU time, reported with the latest ticks, is the check.
        own = [max(0.0, t.late_ms - t.queued_ms - t.steal_ms) for t in self.ticks]
        slow = sorted(self.ticks, key=lambda t: t.late_ms, reverse=True)[:worst]
        return {
            "loop_ticks": len(late),
            "loop_lateness_max_ms": round(max(late, default=0.0), 2),
            "loop_lateness_p99_ms": round(percentile(late, 0.99), 2),
            "loop_lateness_p999_ms": round(percentile(late, 0.999), 2),
            "loop_stalls_over_50ms": sum(1 for x in late if x > over_ms),
            "loop_lateness_own_max_ms": round(max(own, default=0.0), 2),
            "loop_stalls_own_over_50ms": sum(1 for x in own if x > over_ms),
            "loop_queued_s": round(sum(t.queued_ms for t in self.ticks) / 1000, 2),
            "machine_steal_s": round(sum(t.steal_ms for t in self.ticks) / 1000, 2),
            "loop_latest_ticks": [{"late_ms": round(t.late_ms, 1), "cpu_ms": round(t.cpu_ms, 1),
                                   "queued_ms": round(t.queued_ms, 1), "steal_ms": round(t.steal_ms, 1)}
                                  for t in slow],
        }
