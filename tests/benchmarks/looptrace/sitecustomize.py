"""Event-loop tracer for the benchmarks: which callbacks hold an event loop, and whether they ran or waited.

    LOOPTRACE=/tmp/trace PYTHONPATH=tests/benchmarks/looptrace python tests/benchmarks/bench_alarms.py --no-flood

Python imports `sitecustomize` at start-up from PYTHONPATH, in this process and every Python process it starts
(the gateway of bench_alarms runs in its own), so nothing in the gateway changes. With LOOPTRACE set, each
process appends to `$LOOPTRACE.<pid>`:
- every event-loop callback that ran longer than LOOPTRACE_MS (default 15): wall time, the thread's CPU time,
  the garbage collection inside it, and the task (name and where it waits). Wall time many times the CPU
  time means the loop's thread waited for a core or for the GIL, not that the callback had that much work;
- every garbage collection over 5 ms: generation, wall and CPU time, objects collected, frozen objects;
- at exit, per generation: collections, CPU in all, longest (counted once more than LOOPTRACE_FROZEN
  objects are frozen, i.e. after the gateway's start).
"""

from __future__ import annotations

import os

if os.environ.get("LOOPTRACE"):
    import asyncio.events
    import atexit
    import gc
    import time
    from typing import Any

    _LIMIT_S = float(os.environ.get("LOOPTRACE_MS", "15")) / 1000
    _FROZEN = int(os.environ.get("LOOPTRACE_FROZEN", "1"))
    _out = open(f"{os.environ['LOOPTRACE']}.{os.getpid()}", "a", buffering=1)  # open till the process exits
    _run_handle = asyncio.events.Handle._run
    _gc_wall = [0.0, 0.0, 0.0]  # started (wall), started (thread CPU), wall in collections so far
    _by_generation: dict[int, list[float]] = {}  # generation -> [collections, CPU s, longest CPU s]

    def _collection(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            _gc_wall[0], _gc_wall[1] = time.perf_counter(), time.thread_time()
            return
        wall, cpu = time.perf_counter() - _gc_wall[0], time.thread_time() - _gc_wall[1]
        _gc_wall[2] += wall
        if gc.get_freeze_count() >= _FROZEN:
            st = _by_generation.setdefault(info["generation"], [0, 0.0, 0.0])
            st[0], st[1], st[2] = st[0] + 1, st[1] + cpu, max(st[2], cpu)
        if wall > 0.005:
            _out.write(f"{time.time():.3f} gc gen{info['generation']} {wall * 1000:.1f} ms cpu {cpu * 1000:.1f} ms "
                       f"collected {info['collected']} frozen {gc.get_freeze_count()}\n")

    def _traced_run(self: asyncio.events.Handle) -> None:
        gc_before, started, cpu_started = _gc_wall[2], time.perf_counter(), time.thread_time()
        _run_handle(self)
        took = time.perf_counter() - started
        if took > _LIMIT_S:
            owner = getattr(self._callback, "__self__", None)  # the Task of a task step
            what = repr(owner)[:400] if owner is not None else repr(self)[:300]
            _out.write(f"{time.time():.3f} callback {took * 1000:.1f} ms cpu "
                       f"{(time.thread_time() - cpu_started) * 1000:.1f} ms gc {(_gc_wall[2] - gc_before) * 1000:.1f} "
                       f"ms {what}\n")

    @atexit.register
    def _summary() -> None:
        for generation, (n, cpu, longest) in sorted(_by_generation.items()):
            _out.write(f"gc summary gen{generation}: {n:.0f} collections, cpu {cpu * 1000:.0f} ms in all, longest "
                       f"{longest * 1000:.1f} ms\n")

    gc.callbacks.append(_collection)
    asyncio.events.Handle._run = _traced_run  # type: ignore[method-assign]
