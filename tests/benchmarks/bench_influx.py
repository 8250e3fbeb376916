"""Series writer benchmark: points/s into VictoriaMetrics from the value path, backlog replay, queue size.

    python tests/benchmarks/bench_influx.py [--vars 2000] [--rate 100000] [--seconds 60] [--backlog-rate 10000]
                                            [--out tests/benchmarks/results/influx.json]

(a) Sustained: N bound variables in a real asyncua address space, each change published through the tag
    table (`TagTable.publish`: engineering value, DataValue, address space, change feed) as the drivers
    do, at --rate changes/s for --seconds; the series writer spools them to its SQLite queue and sends
    them to a VictoriaMetrics started here on loopback. A 10 ms ticker on the same event loop measures
    its lateness. Reported: points offered and acknowledged by the server per second, the queue depth
    at the end and its maximum, CPU of this process (user+system over wall time, 2 cores = 200 %).
(b) Backlog: VictoriaMetrics is stopped, a 10-minute backlog at --backlog-rate points/s is queued (so
    10 min x rate points), the queue's bytes per point are measured, the server is started again and
    the time to replay the backlog is measured.

Writes JSON to --out and a Markdown summary next to it. Figures are reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import Server, ua

from gateway.bindings import BoundVariable
from gateway.drivers.base import Binding
from gateway.influx.config import config_from_dict
from gateway.influx.diskqueue import DiskQueue
from gateway.influx.series import SeriesCatalog
from gateway.influx.writer import SeriesWriter
from gateway.values.tags import TagTable

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from influx_servers import VictoriaMetrics

SLOT_S = 0.010


async def until(condition: Any, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    for _ in range(int(within_s / 0.1) + 1):
        if condition() or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.1)


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def build_plant(n_vars: int) -> tuple[Server, TagTable, list[Any]]:
    server = Server()
    await server.init()
    idx = await server.register_namespace("urn:bench:influx")
    tags = TagTable(server.iserver.aspace)
    out = []
    for d in range(max(n_vars // 100, 1)):
        dev = await server.nodes.objects.add_object(ua.NodeId(f"Dev{d}", idx), f"Dev{d}")
        for v in range(min(100, n_vars - d * 100)):
            node = await dev.add_variable(ua.NodeId(f"Dev{d}.V{v}", idx), f"V{v}", 0.0, ua.VariantType.Double)
            bv = BoundVariable(node.nodeid, f"V{v}", Binding(f"input/{v}", scan_class="HighSpeed"), "xsd:double",
                               ua.VariantType.Double, False, False)
            out.append(tags.add(bv, dev.nodeid))
    return server, tags, out


def make_writer(tmp: Path, url: str, tags: TagTable, server: Server, batch: int) -> SeriesWriter:
    config = config_from_dict({"server": {"version": 2, "url": url, "org": "bench", "token_env": "X"},
                               "site": "Bench",
                               "targets": {"HighSpeed": {"bucket": "hs"}, "LowSpeed": {"bucket": "ls"}},
                               "batch": {"size": batch, "flush_interval": "200ms"}}, "bench", {"X": "x"})
    catalog = SeriesCatalog(config, "Bench", server.iserver.aspace, tags, set())
    queue = DiskQueue(tmp / "queue.sqlite3", config.queue_max_bytes, int(config.queue_max_age_s * 1e9))
    return SeriesWriter(config, catalog, queue)


async def drive(tags: TagTable, plant: list[Any], rate: float, seconds: float, writer: SeriesWriter
                ) -> dict[str, Any]:
    lateness: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            asked = time.monotonic() + SLOT_S
            await asyncio.sleep(SLOT_S)
            lateness.append(max(time.monotonic() - asked, 0.0))

    tick = asyncio.create_task(ticker())
    began = time.monotonic()
    cpu0, sent0 = cpu_s(), writer.stats.sent
    produced, max_depth, k = 0, 0, 0
    n = len(plant)
    while (elapsed := time.monotonic() - began) < seconds:
        due = int(elapsed * rate)
        while produced < due and time.monotonic() - began < seconds:
            tag = plant[produced % n]
            k += 1
            await tags.publish(tag, float(k), source_time=datetime.now(UTC))
            produced += 1
            if produced % 500 == 0:
                await asyncio.sleep(0)  # what a driver's batch of results does between two batches
        max_depth = max(max_depth, writer.depth)
        await asyncio.sleep(SLOT_S / 2)
    wall = time.monotonic() - began
    cpu = cpu_s() - cpu0
    sent = writer.stats.sent - sent0
    done.set()
    await tick
    ms = sorted(x * 1000 for x in lateness)
    return {"seconds": round(wall, 1), "offered": produced, "offered_per_s": round(produced / wall),
            "acknowledged_per_s": round(sent / wall), "depth_end": writer.depth, "depth_max": max_depth,
            "cpu_percent": round(100 * cpu / wall, 1), "lateness_ms_max": round(ms[-1], 1),
            "lateness_ms_p99": round(ms[int(len(ms) * 0.99)], 1), "ticks_over_50ms": sum(1 for x in ms if x > 50),
            "ticks": len(ms), "lateness_ms_median": round(statistics.median(ms), 2)}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-influx-"))
    vm = VictoriaMetrics(tmp / "vm")
    vm.start()
    server, tags, plant = await build_plant(args.vars)
    writer = make_writer(tmp, vm.url, tags, server, args.batch)
    await asyncio.to_thread(writer.start, tags.feed)
    result: dict[str, Any] = {"when": datetime.now(UTC).isoformat(timespec="seconds"),
                              "python": platform.python_version(), "cpus": os.cpu_count(), "vars": args.vars,
                              "batch": args.batch}
    sustained = await drive(tags, plant, args.rate, args.seconds, writer)
    t = time.monotonic()
    await until(lambda: not writer.depth, 120)
    sustained["drain_after_s"] = round(time.monotonic() - t, 1)
    result["sustained"] = sustained
    print("sustained", sustained, flush=True)

    # (b) a 10-minute backlog while the server is down
    vm.stop()
    backlog_points = int(args.backlog_rate * 600)
    sent0 = writer.stats.sent
    t = time.monotonic()
    queued = 0
    n = len(plant)
    while queued < backlog_points:
        for _ in range(min(5000, backlog_points - queued)):
            await tags.publish(plant[queued % n], float(queued), source_time=datetime.now(UTC))
            queued += 1
        await asyncio.sleep(0.001)
    await until(lambda: writer.queue.depth >= backlog_points, 600)
    spool_s = time.monotonic() - t
    await asyncio.sleep(1.5)
    depth = writer.queue.depth
    qbytes = writer.queue_bytes
    vm.start()
    t = time.monotonic()
    # The sender retries on its backoff (up to 60 s after a long outage): replay counts from its first send.
    await until(lambda: writer.stats.sent > sent0, 120)
    first_send_s = time.monotonic() - t
    t = time.monotonic()
    await until(lambda: not writer.depth, 1200)
    replay_s = time.monotonic() - t
    result["backlog"] = {"points": backlog_points, "queued_in_s": round(spool_s, 1), "queue_depth": depth,
                         "queue_bytes": qbytes, "bytes_per_point": round(qbytes / max(depth, 1), 1),
                         "first_send_after_restart_s": round(first_send_s, 1),
                         "replay_s": round(replay_s, 1), "replay_points_per_s": round(backlog_points / replay_s),
                         "sent_during_replay": writer.stats.sent - sent0, "left": writer.depth}
    print("backlog", result["backlog"], flush=True)
    await asyncio.to_thread(writer.stop, 2.0)
    vm.stop()
    return result


def write_results(result: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    s, b = result["sustained"], result["backlog"]
    md = f"""# Series writer benchmark

`python tests/benchmarks/bench_influx.py` on {result['when']} (CPython {result['python']}, {result['cpus']} CPUs),
{result['vars']} bound variables, batches of {result['batch']}, VictoriaMetrics on loopback.

| measure | value |
|---|---|
| changes offered through the tag table | {s['offered_per_s']:,}/s for {s['seconds']} s ({s['offered']:,}) |
| points acknowledged by VictoriaMetrics | {s['acknowledged_per_s']:,}/s |
| queue depth max / at the end / drained after | {s['depth_max']:,} / {s['depth_end']:,} / {s['drain_after_s']} s |
| CPU of the gateway process (2 cores = 200 %) | {s['cpu_percent']} % |
| event-loop lateness max / p99 / median | {s['lateness_ms_max']} / {s['lateness_ms_p99']} / \
{s['lateness_ms_median']} ms |
| 10 ms ticks later than 50 ms | {s['ticks_over_50ms']} of {s['ticks']} |
| 10-minute backlog | {b['points']:,} points queued in {b['queued_in_s']} s |
| queue on disk | {b['queue_bytes']:,} bytes, {b['bytes_per_point']} bytes/point |
| backlog replay (from the first send; that came {b['first_send_after_restart_s']} s after the restart) | \
{b['replay_s']} s, {b['replay_points_per_s']:,} points/s |
"""
    out.with_suffix(".md").write_text(md)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--vars", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=100_000)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--backlog-rate", type=float, default=10_000)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "influx.json")
    a = ap.parse_args()
    res = asyncio.run(main(a))
    write_results(res, a.out)
    print(a.out.with_suffix(".md").read_text())
