"""History benchmark: append load on the event loop, and HistoryRead against asyncua's HistorySQLite.

    python tests/benchmarks/bench_history.py [--vars 10000] [--minutes 10] [--out tests/benchmarks/results/history.json]

(a) N historized variables change at 1 Hz, spread evenly over each second in 10 ms slots as the
    tag table delivers them: each change is written into a plain asyncua server's address space
    (`gateway.aspace_io.store_value`, as the tag table does) and appended to the HistoryStore. A separate
    10 ms ticker measures event-loop lateness (max, p99, count over 50 ms). Retention runs during the
    load (retention = half the run, a pass every 60 s) so deletes are part of what is measured.
    Reported: writer throughput, rows written, dropped, DB size, the writer's burst capacity.
(b) 10,000 values of one variable read with HistoryRead through a real asyncua Client: from the
    gateway store (install_history) and from asyncua's HistorySQLite holding the same values
    (written through its own save_node_value), each on its own loopback server.

Writes JSON to --out and a short Markdown summary next to it (same name, .md). Timing is reported,
never asserted (DESIGN.md, Testing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from asyncua import Client, Server, ua
from asyncua.server.history_sql import HistorySQLite
from asyncua.ua.ua_binary import struct_to_binary

from gateway.aspace_io import store_value
from gateway.history.service import install_history
from gateway.history.store import HistoryStore

SLOT_S = 0.010  # load slots and ticker period
READ_VALUES = 10_000
READ_REPEATS = 5


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def db_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, math.ceil(q * len(s)) - 1)]


async def ticker(stop: asyncio.Event, lateness: list[float]) -> None:
    """Sleep SLOT_S again and again; how late each wake-up is shows how long the loop was blocked."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t0 = loop.time()
        await asyncio.sleep(SLOT_S)
        lateness.append(loop.time() - t0 - SLOT_S)


async def append_load(n_vars: int, seconds: float, workdir: Path) -> dict[str, Any]:
    server = Server()
    await server.init()
    ns = await server.register_namespace("urn:bench:history")
    t_setup = time.perf_counter()
    nodeids = []
    for i in range(n_vars):
        var = await server.nodes.objects.add_variable(ua.NodeId(f"V{i}", ns), f"V{i}", 0.0)
        nodeids.append(var.nodeid)
    setup_s = time.perf_counter() - t_setup
    aspace = server.iserver.aspace

    db = workdir / "load" / "history.sqlite3"
    retention_s = max(60.0, seconds / 2)
    store = HistoryStore(db, retention=timedelta(seconds=retention_s))
    store.retention_every_s = 60.0
    await store.start()

    slots = round(1.0 / SLOT_S)
    by_slot = [nodeids[s::slots] for s in range(slots)]
    stop = asyncio.Event()
    lateness: list[float] = []
    tick = asyncio.create_task(ticker(stop, lateness))
    samples: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    k = 0
    changes = 0
    append_s = 0.0
    next_sample = start + 1.0
    while True:
        due = start + k * SLOT_S
        if due - start >= seconds:
            break
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        now = datetime.now(UTC)
        second = k // slots
        for j, nid in enumerate(by_slot[k % slots]):
            dv = ua.DataValue(ua.Variant(math.sin(second / 10 + j), ua.VariantType.Double),
                              SourceTimestamp=now, ServerTimestamp=now)
            await store_value(aspace, nid, dv)  # what the tag table does with each change
            a0 = time.perf_counter()
            store.append(nid, dv)
            append_s += time.perf_counter() - a0
            changes += 1
        k += 1
        if loop.time() >= next_sample:
            next_sample += 1.0
            samples.append({"t": round(loop.time() - start, 1), "queued": store.queued, "written": store.written})
    load_s = loop.time() - start
    stop.set()
    await tick
    written_during_load = store.written
    f0 = time.perf_counter()
    await store.flush(within_s=600)
    flush_s = time.perf_counter() - f0

    # Burst capacity: 200k values appended at once, timed until committed.
    burst = 200_000
    t_burst = datetime.now(UTC)
    b0 = time.perf_counter()
    for i in range(burst):
        store.append(nodeids[i % n_vars], ua.DataValue(ua.Variant(float(i), ua.VariantType.Double),
                                                       SourceTimestamp=t_burst + timedelta(microseconds=i),
                                                       ServerTimestamp=t_burst))
    await store.flush(within_s=600)
    burst_s = time.perf_counter() - b0
    await store.stop()
    late_ms = [x * 1000 for x in lateness]
    result = {
        "vars": n_vars,
        "rate_hz_per_var": 1,
        "seconds": round(load_s, 1),
        "setup_add_variables_s": round(setup_s, 1),
        "changes": changes,
        "rows_written_during_load": written_during_load,
        "rows_written_total": store.written,
        "dropped": store.dropped,
        "writer_rows_per_s_during_load": round(written_during_load / load_s),
        "max_queued": max((s["queued"] for s in samples), default=0),
        "flush_after_load_s": round(flush_s, 3),
        "append_mean_us": round(append_s / max(changes, 1) * 1e6, 2),
        "batches": store.batches,
        "max_batch_commit_s": round(store.max_batch_s, 3),
        "retention_s": retention_s,
        "retention_deleted": store.retention_deleted,
        "burst_values": burst,
        "burst_append_and_commit_s": round(burst_s, 2),
        "burst_rows_per_s": round(burst / burst_s),
        "db_bytes": db_bytes(db),
        "loop_ticks": len(late_ms),
        "loop_lateness_max_ms": round(max(late_ms, default=0), 2),
        "loop_lateness_p99_ms": round(percentile(late_ms, 0.99), 2),
        "loop_lateness_p999_ms": round(percentile(late_ms, 0.999), 2),
        "loop_stalls_over_50ms": sum(1 for x in late_ms if x > 50),
        "queue_samples": samples[:: max(1, len(samples) // 60)],
    }
    await server.stop()
    return result


async def _history_server(port: int, historizing: bool = True) -> tuple[Server, ua.NodeId]:
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}")
    ns = await server.register_namespace("urn:bench:history")
    # Numeric id: HistorySQLite refuses string ids ("2_'Hist'" is not a valid table name for it).
    var = await server.nodes.objects.add_variable(ua.NodeId(1001, ns), "Hist", 0.0)
    historizing_dv = ua.DataValue(ua.Variant(historizing, ua.VariantType.Boolean))
    await var.write_attribute(ua.AttributeIds.Historizing, historizing_dv)
    await var.set_attr_bit(ua.AttributeIds.AccessLevel, ua.AccessLevel.HistoryRead)
    return server, var.nodeid


async def _timed_reads(url: str, nodeid: ua.NodeId, start: datetime, end: datetime) -> tuple[list[float], list[Any]]:
    times = []
    values: list[Any] = []
    async with Client(url, timeout=120) as client:
        node = client.get_node(nodeid)
        for _ in range(READ_REPEATS):
            t0 = time.perf_counter()
            got = await node.read_raw_history(start, end, numvalues=0, return_bounds=False)
            times.append(time.perf_counter() - t0)
            values = [(v.SourceTimestamp.replace(tzinfo=None), v.Value.Value) for v in got]
    return times, values


async def _server_side(server: Server, nodeid: ua.NodeId, start: datetime, end: datetime) -> tuple[list[float], float]:
    """What the server spends answering: the HistoryRead service plus encoding the response, no network or client.

    Also returns the longest event-loop block seen meanwhile (a 10 ms ticker runs alongside).
    """
    params = ua.HistoryReadParameters(
        HistoryReadDetails=ua.ReadRawModifiedDetails(IsReadModified=False, StartTime=start, EndTime=end,
                                                     NumValuesPerNode=0, ReturnBounds=False),
        TimestampsToReturn=ua.TimestampsToReturn.Both,
        NodesToRead=[ua.HistoryReadValueId(NodeId=nodeid)])
    stop = asyncio.Event()
    lateness: list[float] = []
    tick = asyncio.create_task(ticker(stop, lateness))
    times = []
    for _ in range(READ_REPEATS):
        t0 = time.perf_counter()
        results = await server.iserver.isession.history_read(params)
        if not results[0].StatusCode.is_good() or not results[0].HistoryData:
            raise RuntimeError(f"server-side HistoryRead failed: {results[0]}")
        struct_to_binary(ua.HistoryReadResponse(Results=results))
        times.append(time.perf_counter() - t0)
        await asyncio.sleep(0.05)
    stop.set()
    await tick
    return times, max(lateness, default=0.0)


async def history_read(workdir: Path) -> dict[str, Any]:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    data = [ua.DataValue(ua.Variant(math.sin(i / 100), ua.VariantType.Double), ua.StatusCode(ua.StatusCodes.Good),
                         SourceTimestamp=t0 + timedelta(seconds=i), ServerTimestamp=t0 + timedelta(seconds=i))
            for i in range(READ_VALUES)]
    start, end = t0 - timedelta(seconds=1), t0 + timedelta(seconds=READ_VALUES + 1)

    # The gateway store.
    port = free_port()
    ours, nid = await _history_server(port)
    store = HistoryStore(workdir / "read" / "history.sqlite3", retention=None)
    await store.start()
    install_history(ours, store)
    for dv in data:
        store.append(nid, dv)
    w0 = time.perf_counter()
    await store.flush()
    ours_fill_s = time.perf_counter() - w0
    await ours.start()

    # asyncua's HistorySQLite with the same values, written through its own save_node_value.
    port2 = free_port()
    theirs, nid2 = await _history_server(port2)
    sql = HistorySQLite(str(workdir / "read" / "asyncua_history.sqlite3"))
    await sql.init()
    theirs.iserver.history_manager.set_storage(sql)
    await sql.new_historized_node(nid2, period=None)
    w0 = time.perf_counter()
    for dv in data:
        # Naive UTC: HistorySQLite's PARSE_DECLTYPES cannot read back the "+00:00" of aware datetimes
        # (ValueError in sqlite3's convert_timestamp, a BadInternalError for the client).
        await sql.save_node_value(nid2, ua.DataValue(dv.Value, dv.StatusCode,
                                                     SourceTimestamp=dv.SourceTimestamp.replace(tzinfo=None),
                                                     ServerTimestamp=dv.ServerTimestamp.replace(tzinfo=None)))
    theirs_fill_s = time.perf_counter() - w0
    await theirs.start()

    try:
        ours_srv, ours_block = await _server_side(ours, nid, start, end)
        theirs_srv, theirs_block = await _server_side(theirs, nid2, start, end)
        ours_t, ours_v = await _timed_reads(f"opc.tcp://127.0.0.1:{port}", nid, start, end)
        theirs_t, theirs_v = await _timed_reads(f"opc.tcp://127.0.0.1:{port2}", nid2, start, end)
        ours_t2, _ = await _timed_reads(f"opc.tcp://127.0.0.1:{port}", nid, start, end)  # again, after theirs
    finally:
        await ours.stop()
        await theirs.stop()
        await store.stop()
    ours_all = ours_t + ours_t2
    same = ours_v == theirs_v
    ours_med, theirs_med = statistics.median(ours_all), statistics.median(theirs_t)
    return {
        "values": READ_VALUES,
        "repeats": READ_REPEATS,
        "same_values_returned": same,
        "returned_ours": len(ours_v),
        "returned_asyncua": len(theirs_v),
        "ours_s": [round(t, 4) for t in ours_all],
        "asyncua_history_sqlite_s": [round(t, 4) for t in theirs_t],
        "ours_median_s": round(ours_med, 4),
        "asyncua_median_s": round(theirs_med, 4),
        "speedup_median": round(theirs_med / ours_med, 1),
        "speedup_best": round(min(theirs_t) / min(ours_all), 1),
        "server_side_ours_s": [round(t, 4) for t in ours_srv],
        "server_side_asyncua_s": [round(t, 4) for t in theirs_srv],
        "server_side_ours_median_s": round(statistics.median(ours_srv), 4),
        "server_side_asyncua_median_s": round(statistics.median(theirs_srv), 4),
        "server_side_speedup_median": round(statistics.median(theirs_srv) / statistics.median(ours_srv), 1),
        "server_side_loop_block_max_ms_ours": round(ours_block * 1000, 1),
        "server_side_loop_block_max_ms_asyncua": round(theirs_block * 1000, 1),
        "fill_ours_s": round(ours_fill_s, 3),
        "fill_asyncua_s": round(theirs_fill_s, 2),
    }


def markdown(res: dict[str, Any]) -> str:
    head = f"""# History benchmark

`{res["command"]}` on {res["when"]} ({res["machine"]}).
"""
    load = md_load(res["append_load"]) if "append_load" in res else ""
    read = md_read(res["history_read"]) if "history_read" in res else ""
    return head + load + read


def md_load(a: dict[str, Any]) -> str:
    return f"""
## (a) {a["vars"]} historized variables at 1 Hz for {a["seconds"]} s

| measure | value |
|---|---|
| changes appended | {a["changes"]} |
| rows written (during load / total with burst) | {a["rows_written_during_load"]} / {a["rows_written_total"]} |
| dropped | {a["dropped"]} |
| writer throughput during load | {a["writer_rows_per_s_during_load"]} rows/s |
| largest queue seen | {a["max_queued"]} |
| slowest batch commit | {a["max_batch_commit_s"]} s ({a["batches"]} batches) |
| append() mean | {a["append_mean_us"]} us |
| retention ({a["retention_s"]} s, pass every 60 s) deleted | {a["retention_deleted"]} rows |
| burst: {a["burst_values"]} values appended and committed | {a["burst_append_and_commit_s"]} s \
({a["burst_rows_per_s"]} rows/s) |
| DB size (with WAL) | {a["db_bytes"] / 1e6:.1f} MB |
| event-loop lateness max / p99 / p99.9 | {a["loop_lateness_max_ms"]} / {a["loop_lateness_p99_ms"]} / \
{a["loop_lateness_p999_ms"]} ms |
| 10 ms ticks later than 50 ms | {a["loop_stalls_over_50ms"]} of {a["loop_ticks"]} |
"""


def md_read(b: dict[str, Any]) -> str:
    return f"""
## (b) HistoryRead of {b["values"]} values of one variable, asyncua Client over loopback

| | median | all runs (s) |
|---|---|---|
| gateway store | {b["ours_median_s"]} s | {b["ours_s"]} |
| asyncua HistorySQLite | {b["asyncua_median_s"]} s | {b["asyncua_history_sqlite_s"]} |

Server side only (HistoryRead service + encoding the response, in process, no network, no client decoding):
gateway {b["server_side_ours_median_s"]} s, HistorySQLite {b["server_side_asyncua_median_s"]} s median:
**{b["server_side_speedup_median"]}x**. Longest event-loop block meanwhile: gateway
{b["server_side_loop_block_max_ms_ours"]} ms, HistorySQLite {b["server_side_loop_block_max_ms_asyncua"]} ms.

End to end through the asyncua Client (which spends about 90 ms decoding 10,000 DataValues whichever
server answers): **{b["speedup_median"]}x** median (best run against best run {b["speedup_best"]}x);
same values returned: {b["same_values_returned"]}. Filling 10,000 values took {b["fill_ours_s"]} s in the
gateway store and {b["fill_asyncua_s"]} s through HistorySQLite.save_node_value.
"""


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vars", type=int, default=10_000)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=Path("tests/benchmarks/results/history.json"))
    ap.add_argument("--workdir", type=Path, default=None, help="where the databases go (default: a temp dir)")
    ap.add_argument("--skip-load", action="store_true", help="only the HistoryRead comparison")
    ap.add_argument("--skip-read", action="store_true", help="only the append load")
    args = ap.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-history-"))
    res: dict[str, Any] = {
        "command": "python " + " ".join(sys.argv),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs",
    }
    try:
        if not args.skip_read:
            print("HistoryRead comparison ...", flush=True)
            res["history_read"] = await history_read(workdir)
            print(json.dumps(res["history_read"], indent=1), flush=True)
        if not args.skip_load:
            print(f"append load: {args.vars} variables for {args.minutes} min ...", flush=True)
            res["append_load"] = await append_load(args.vars, args.minutes * 60, workdir)
            print(json.dumps({k: v for k, v in res["append_load"].items() if k != "queue_samples"}, indent=1),
                  flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1, default=str) + "\n")
    args.out.with_suffix(".md").write_text(markdown(res))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
