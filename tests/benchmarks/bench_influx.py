"""Series writer benchmark: points/s into VictoriaMetrics from the value path, backlog replay, queue size.

    python tests/benchmarks/bench_influx.py [--vars 2000] [--rate 100000] [--seconds 60] [--backlog-rate 10000]
                                            [--out tests/benchmarks/results/influx.json]

(a) Sustained: N bound variables in a real asyncua address space (devices of --scan variables), their
    changes published a scan at a time through the tag table (`TagTable.publish_readings(tag_of, readings)`:
    engineering value, DataValue, address space, change feed) as the drivers' runners do, at --rate
    changes/s for --seconds; the series writer sends them in frames to its writer process, which spools
    them to its SQLite queue and sends them to a VictoriaMetrics started here on loopback. As in the
    gateway, what was built before is frozen out of the garbage collector's view (gc.freeze) and the
    collector's threshold set as the gateway sets it before the values flow. A 10 ms ticker on the same
    event loop measures its lateness. Reported: points offered and acknowledged by the server per second,
    the queue depth at the end and its maximum, CPU of the gateway process and of the writer process
    (user+system over wall time, 2 cores = 200 %), garbage collections and their longest pause, and the
    machine's load average (the machine is shared: a load over 2 means a process waited for a core).
(s) Stages: CPU time (of the measuring thread, so waiting for a core is not counted) per change of each
    step of the value path and of the series writer, each measured alone over 100,000 changes: where
    the time of one point goes from a driver's value to the server (the listener and the frame on the
    gateway's event loop; rendering, SQLite and HTTP in the writer process).
(b) Backlog: VictoriaMetrics is stopped, a 10-minute backlog at --backlog-rate points/s is queued (so
    10 min x rate points), the queue's bytes per point are measured, the server is started again and
    the time to replay the backlog is measured.

Writes JSON to --out and a Markdown summary next to it. Figures are reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import timeit
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import Server, ua

from gateway.bindings import BoundVariable
from gateway.drivers.base import Binding, Reading
from gateway.influx import frames
from gateway.influx.config import config_from_dict
from gateway.influx.diskqueue import DiskQueue
from gateway.influx.endpoint import Endpoint
from gateway.influx.series import SeriesCatalog
from gateway.influx.spooler import QueueWriter
from gateway.influx.writer import SeriesWriter
from gateway.values.aspace_io import StoredDataValue, store_value
from gateway.values.feed import Change
from gateway.values.tags import Tag, TagTable

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


def process_cpu_s(pid: int) -> float:
    """user+system CPU seconds of another process (the writer process), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def build_plant(n_vars: int, scan: int = 100) -> tuple[Server, TagTable, list[Any]]:
    server = Server()
    await server.init()
    idx = await server.register_namespace("urn:bench:influx")
    tags = TagTable(server.iserver.aspace)
    out = []
    for d in range(max(n_vars // scan, 1)):
        dev = await server.nodes.objects.add_object(ua.NodeId(f"Dev{d}", idx), f"Dev{d}")
        for v in range(min(scan, n_vars - d * scan)):
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
    return SeriesWriter(config, catalog, tmp / "queue.sqlite3")


def scans(plant: list[Tag], scan: int) -> list[dict[int, Tag]]:
    """The tags in scans of `scan` (a device's), keyed as a runner's `tag_of`."""
    return [dict(enumerate(plant[i:i + scan])) for i in range(0, len(plant), scan)]


async def drive(tags: TagTable, plant: list[Any], rate: float, seconds: float, writer: SeriesWriter,
                scan: int) -> dict[str, Any]:
    lateness: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            asked = time.monotonic() + SLOT_S
            await asyncio.sleep(SLOT_S)
            lateness.append(max(time.monotonic() - asked, 0.0))

    pauses: list[float] = []
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            pauses.append(time.perf_counter() - gc_started[0])

    gc.callbacks.append(on_gc)
    load0 = os.getloadavg()[0]
    tick = asyncio.create_task(ticker())
    began = time.monotonic()
    assert writer._proc is not None
    child = writer._proc.pid
    cpu0, child_cpu0, sent0 = cpu_s(), process_cpu_s(child), writer.stats.sent
    produced, max_depth, k, s = 0, 0, 0, 0
    by_scan = scans(plant, scan)
    while (elapsed := time.monotonic() - began) < seconds:
        due = int(elapsed * rate)
        while produced < due and time.monotonic() - began < seconds:
            tag_of = by_scan[s % len(by_scan)]
            s += 1
            k += 1
            value = float(k)
            # A driver's readings of one scan: new objects each time, as a driver decodes them.
            produced += tags.publish_readings(tag_of, {key: Reading(value + key) for key in tag_of})
            await asyncio.sleep(0)  # what a runner does between two scans
        max_depth = max(max_depth, writer.depth)
        await asyncio.sleep(SLOT_S / 2)
    wall = time.monotonic() - began
    cpu = cpu_s() - cpu0
    child_cpu = process_cpu_s(child) - child_cpu0
    sent = writer.stats.sent - sent0
    done.set()
    await tick
    gc.callbacks.remove(on_gc)
    ms = sorted(x * 1000 for x in lateness)
    return {"seconds": round(wall, 1), "offered": produced, "offered_per_s": round(produced / wall),
            "acknowledged_per_s": round(sent / wall), "depth_end": writer.depth, "depth_max": max_depth,
            "cpu_percent": round(100 * cpu / wall, 1), "writer_process_cpu_percent": round(100 * child_cpu / wall, 1),
            "lateness_ms_max": round(ms[-1], 1),
            "lateness_ms_p99": round(ms[int(len(ms) * 0.99)], 1), "ticks_over_50ms": sum(1 for x in ms if x > 50),
            "ticks": len(ms), "lateness_ms_median": round(statistics.median(ms), 2),
            "gc_collections": len(pauses), "gc_pause_ms_max": round(max(pauses, default=0.0) * 1000, 1),
            "gc_ms_total": round(sum(pauses) * 1000), "load_average_1min": [load0, os.getloadavg()[0]]}


def thread_us(run: Any, n: int) -> float:
    """Best of 5 of `run()` (which does n changes), in microseconds of this thread's CPU per change."""
    return min(timeit.repeat(run, number=1, repeat=5, timer=time.thread_time)) / n * 1e6


async def stage_costs(tmp: Path, url: str, n_vars: int, batch: int) -> dict[str, float]:
    """CPU per change of each step from a driver's value to the server, each step measured alone."""
    n = 100_000
    server, tags, plant = await build_plant(n_vars)
    gc.freeze()
    tag, aspace = plant[0], server.iserver.aspace
    now = datetime.now(UTC)
    variant, status = ua.Variant(1.5, ua.VariantType.Double), ua.StatusCode(0)
    dv = StoredDataValue(variant, StatusCode=status, SourceTimestamp=now, ServerTimestamp=now)

    def each(fn: Any) -> Any:
        return lambda: [fn() for _ in range(n)]

    async def timed(coro_fn: Any, calls: int = n) -> float:
        best = float("inf")
        for _ in range(5):
            t = time.thread_time()
            for k in range(calls):
                await coro_fn(k)
            best = min(best, time.thread_time() - t)
        return best / calls * 1e6

    out: dict[str, float] = {}
    out["values: datetime.now(UTC) (a driver's source time)"] = thread_us(each(lambda: datetime.now(UTC)), n)
    out["values: Tag.changed"] = thread_us(each(lambda: tag.changed(1.5, 0)), n)
    out["values: clock.now() (server time)"] = thread_us(each(tags.clock.now), n)
    out["values: ua.Variant(value, Double)"] = thread_us(each(lambda: ua.Variant(1.5, ua.VariantType.Double)), n)
    out["values: ua.StatusCode(status)"] = thread_us(each(lambda: ua.StatusCode(0)), n)
    out["values: StoredDataValue(...)"] = thread_us(each(lambda: StoredDataValue(
        variant, StatusCode=status, SourceTimestamp=now, ServerTimestamp=now)), n)
    out["values: Change(node, dv)"] = thread_us(each(lambda: Change(tag.nodeid, dv)), n)
    out["values: store_value (address space, no monitored items)"] = thread_us(
        each(lambda: store_value(aspace, tag.nodeid, dv)), n)
    out["values: await ChangeFeed.store (no subscribers)"] = await timed(lambda k: tags.feed.store(tag.nodeid, dv))
    out["values: await TagTable.publish (no subscribers), total"] = await timed(
        lambda k: tags.publish(plant[k % len(plant)], float(k) + 0.5, source_time=datetime.now(UTC)))
    by_scan = scans(plant, 100)

    async def scan_of(k: int) -> None:
        tags.publish_readings(by_scan[k % len(by_scan)], {key: Reading(float(k) + key) for key in range(100)})
    out["values: publish_readings, a scan of 100 (no subscribers), per value"] = await timed(scan_of, n // 100) / 100
    # The gateway's part: the listener on the event loop, and the frame every SPOOL_EVERY_S.
    writer = make_writer(tmp, url, tags, server, batch)
    writer.number_bound()
    sub = tags.feed.listen(writer._on_change)
    arrays = (writer._series, writer._status, writer._ts, writer._values)

    async def scan_with_listener(k: int) -> None:
        await scan_of(k)
        if len(writer._series) >= 10_000:  # as the frames take them
            for a in arrays:
                del a[:]
    out["influx: publish_readings with the writer's listener, per value"] = (
        await timed(scan_with_listener, n // 100) / 100)
    out["influx: the listener's share (event loop)"] = (
        out["influx: publish_readings with the writer's listener, per value"]
        - out["values: publish_readings, a scan of 100 (no subscribers), per value"])
    change = Change(tag.nodeid, dv)

    def listener_alone() -> None:
        for _ in range(n):
            writer._on_change(change)
        for a in arrays:
            del a[:]
    out["influx: the listener alone, a bound variable's change (event loop)"] = thread_us(listener_alone, n)
    for k in range(100):  # a frame's worth at 100,000 changes/s
        await scan_of(k)
    sub.close()
    message = b""

    def frame() -> None:
        nonlocal message
        message = frames.data_message(1, writer._series, writer._status, writer._ts, writer._values, writer._defs,
                                      {}, [])
    out["influx: frame of the arrays' bytes (event loop, per point)"] = thread_us(frame, len(writer._series))
    # The writer process's part.
    payload = message[frames.HEADER.size:]
    parsed: list[frames.Frame] = []
    out["writer process: frame parsed (per point)"] = thread_us(lambda: parsed.append(frames.parse_data(payload)),
                                                                len(writer._series))
    config = writer.config
    queue = DiskQueue(tmp / "stages.sqlite3", config.queue_max_bytes, int(config.queue_max_age_s * 1e9))
    queue.open()
    spooler = QueueWriter(config, queue, Endpoint(config))
    spooler.take_series(writer._defs)
    spooler._rows([], spooler._series)  # the series, once
    rows: list[Any] = []
    out["writer process: spooler render (per point)"] = thread_us(lambda: rows.append(spooler._rows(parsed[:1])),
                                                                  len(parsed[0]))
    t = time.thread_time()
    queue.append_ids(rows[0])
    out["writer process: spooler SQLite insert, executemany (per point)"] = ((time.thread_time() - t)
                                                                             / len(rows[0]) * 1e6)
    sent = posted = 0
    read = post = 0.0
    while True:
        t = time.thread_time()
        batches = queue.head_batches(batch)
        if not batches:
            break
        read += time.thread_time() - t
        for target, ids, text in batches:
            t = time.thread_time()
            spooler.endpoint.write(target, text.encode())
            post += time.thread_time() - t
            t = time.thread_time()
            queue.ack(ids)
            read += time.thread_time() - t
            sent += len(ids)
            posted += 1
    out["writer process: sender queue read + ack (per point)"] = read / sent * 1e6
    out["writer process: sender HTTP request, influxdb-client (per point)"] = post / sent * 1e6
    queue.close()
    spooler.endpoint.close()
    gc.unfreeze()
    return {k: round(v, 2) for k, v in out.items()}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-influx-"))
    vm = VictoriaMetrics(tmp / "vm")
    vm.start()
    server, tags, plant = await build_plant(args.vars, args.scan)
    writer = make_writer(tmp, vm.url, tags, server, args.batch)
    await writer.start(tags.feed)
    gc.freeze()  # as Gateway.start does once the site is loaded
    gc.set_threshold(10_000, 10, 10)
    result: dict[str, Any] = {"when": datetime.now(UTC).isoformat(timespec="seconds"),
                              "command": " ".join(["python tests/benchmarks/bench_influx.py", *sys.argv[1:]]),
                              "python": platform.python_version(), "cpus": os.cpu_count(), "vars": args.vars,
                              "batch": args.batch, "scan": args.scan}
    if args.stages:
        result["stages_us_per_change"] = await stage_costs(tmp / "stages", vm.url, args.vars, args.batch)
        print("stages", json.dumps(result["stages_us_per_change"], indent=1), flush=True)
        gc.freeze()
        if args.stages_only:
            await writer.stop(2.0)
            vm.stop()
            return result
    sustained = await drive(tags, plant, args.rate, args.seconds, writer, args.scan)
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
    await until(lambda: writer.stats.queue_depth >= backlog_points, 600)
    spool_s = time.monotonic() - t
    await asyncio.sleep(1.5)
    depth = writer.stats.queue_depth
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
    await writer.stop(2.0)
    vm.stop()
    return result


def write_results(result: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    stages = "".join(f"| {name} | {us} |\n" for name, us in result.get("stages_us_per_change", {}).items())
    if "sustained" not in result:
        out.with_suffix(".md").write_text(f"# Series writer: CPU per change\n\n| step | us |\n|---|---|\n{stages}")
        return
    s, b = result["sustained"], result["backlog"]
    md = f"""# Series writer benchmark

`{result.get('command', 'python tests/benchmarks/bench_influx.py')}` on {result['when']}
(CPython {result['python']}, {result['cpus']} CPUs),
{result['vars']} bound variables in scans of {result['scan']}, batches of {result['batch']}, VictoriaMetrics on
loopback.

| measure | value |
|---|---|
| changes offered through the tag table | {s['offered_per_s']:,}/s for {s['seconds']} s ({s['offered']:,}) |
| points acknowledged by VictoriaMetrics | {s['acknowledged_per_s']:,}/s |
| queue depth max / at the end / drained after | {s['depth_max']:,} / {s['depth_end']:,} / {s['drain_after_s']} s |
| CPU of the gateway process / of the writer process (2 cores = 200 %) | {s['cpu_percent']} % / \
{s['writer_process_cpu_percent']} % |
| machine load average (1 min) at start / end (2 cores; shared) | {s['load_average_1min'][0]:.1f} / \
{s['load_average_1min'][1]:.1f} |
| garbage collections / longest pause / total | {s['gc_collections']} / {s['gc_pause_ms_max']} ms / \
{s['gc_ms_total']} ms |
| event-loop lateness max / p99 / median | {s['lateness_ms_max']} / {s['lateness_ms_p99']} / \
{s['lateness_ms_median']} ms |
| 10 ms ticks later than 50 ms | {s['ticks_over_50ms']} of {s['ticks']} |
| 10-minute backlog | {b['points']:,} points queued in {b['queued_in_s']} s |
| queue on disk | {b['queue_bytes']:,} bytes, {b['bytes_per_point']} bytes/point |
| backlog replay (from the first send; that came {b['first_send_after_restart_s']} s after the restart) | \
{b['replay_s']} s, {b['replay_points_per_s']:,} points/s |
"""
    if stages:
        md += f"""
CPU per change (microseconds of the measuring thread, each step alone, best of 5 x 100,000):

| step | us |
|---|---|
{stages}"""
    out.with_suffix(".md").write_text(md)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--vars", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=100_000)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--backlog-rate", type=float, default=10_000)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--scan", type=int, default=100, help="variables per device: the readings of one scan")
    ap.add_argument("--no-stages", dest="stages", action="store_false", help="skip the CPU-per-step measurement")
    ap.add_argument("--stages-only", action="store_true", help="only the CPU-per-step measurement")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "influx.json")
    a = ap.parse_args()
    res = asyncio.run(main(a))
    write_results(res, a.out)
    print(a.out.with_suffix(".md").read_text())
