"""History benchmark: append load on the event loop, and HistoryRead against asyncua's HistorySQLite.

    python tests/benchmarks/bench_history.py [--vars 10000] [--minutes 10] [--out tests/benchmarks/results/history.json]

(a) A real gateway serves a site of N historized variables (sim devices of 100 sines each, polled
    every second, so every variable changes at 1 Hz) and runs in this process: the whole value path
    (driver, tag table, address space, history) is measured, not the store alone. A 10 ms ticker
    on the same event loop measures its lateness (max, p99, count over 50 ms). Retention runs
    during the load (retention = half the run, a pass every 60 s), so deletes are measured too.
    Reported: changes, writer throughput, rows written, dropped, largest queue, DB size.
(b) 10,000 values of one variable read with HistoryRead through a real asyncua Client: from the
    gateway store (install_history) and from asyncua's HistorySQLite holding the same values
    (written through its own save_node_value), each on its own loopback server.

Writes JSON to --out and a short Markdown summary next to it (same name, .md). Timing is reported,
never asserted: speed is measured by benchmarks, not by timed tests.
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

from gateway.history.service import install_history
from gateway.history.store import HistoryStore
from gateway.nodeset.yaml_build import build
from gateway.server import Gateway, GatewayConfig

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


def _load_site(n_vars: int, out: Path) -> None:
    """A site of n_vars historized sim variables in devices of 100, each a sine that changes on every scan."""
    per_device = 100
    devices = []
    for d in range(math.ceil(n_vars / per_device)):
        count = min(per_device, n_vars - d * per_device)
        devices.append({"name": f"D{d}", "connection": f"sim://d{d}", "variables": [
            {"name": f"V{v}", "datatype": "Double", "historize": True, "scan": "MediumSpeed",
             "address": f"sine?period={60 + v}&amplitude=100&phase={d / 10}"} for v in range(count)]})
    doc = {"site": {"namespace": "urn:bench:history", "name": "HistoryBench"}, "devices": devices}
    out.write_bytes(build(doc, "bench_history"))


async def append_load(n_vars: int, seconds: float, workdir: Path) -> dict[str, Any]:
    site = workdir / "load-site.xml"
    _load_site(n_vars, site)
    retention_s = max(60.0, seconds / 2)
    config = GatewayConfig(nodesets=[site], endpoint=f"opc.tcp://127.0.0.1:{free_port()}", data_dir=workdir / "load",
                           insecure=True, history_retention=timedelta(seconds=retention_s))
    gw = Gateway(config)
    t_setup = time.perf_counter()
    await gw.load()
    await gw.start()
    setup_s = time.perf_counter() - t_setup
    store = gw.history
    assert store is not None and gw.tags is not None
    store.retention_every_s = 60.0
    stop = asyncio.Event()
    lateness: list[float] = []
    tick = asyncio.create_task(ticker(stop, lateness))
    samples: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    stored0 = gw.tags.stored
    while loop.time() - start < seconds:
        await asyncio.sleep(1.0)
        samples.append({"t": round(loop.time() - start, 1), "queued": store.queued, "written": store.written})
    load_s = loop.time() - start
    changes = gw.tags.stored - stored0
    stop.set()
    await tick
    written_during_load = store.written
    f0 = time.perf_counter()
    await store.flush(within_s=600)
    flush_s = time.perf_counter() - f0
    await gw.stop()
    db = workdir / "load" / "history" / "history.sqlite3"
    late_ms = [x * 1000 for x in lateness]
    return {
        "vars": n_vars,
        "rate_hz_per_var": 1,
        "seconds": round(load_s, 1),
        "setup_load_and_start_s": round(setup_s, 1),
        "changes": changes,
        "rows_written_during_load": written_during_load,
        "rows_written_total": store.written,
        "dropped": store.dropped,
        "writer_rows_per_s_during_load": round(written_during_load / load_s),
        "max_queued": max((s["queued"] for s in samples), default=0),
        "flush_after_load_s": round(flush_s, 3),
        "batches": store.batches,
        "max_batch_commit_s": round(store.max_batch_s, 3),
        "retention_s": retention_s,
        "retention_deleted": store.retention_deleted,
        "db_bytes": db_bytes(db),
        "loop_ticks": len(late_ms),
        "loop_lateness_max_ms": round(max(late_ms, default=0), 2),
        "loop_lateness_p99_ms": round(percentile(late_ms, 0.99), 2),
        "loop_lateness_p999_ms": round(percentile(late_ms, 0.999), 2),
        "loop_stalls_over_50ms": sum(1 for x in late_ms if x > 50),
        "queue_samples": samples[:: max(1, len(samples) // 60)],
    }


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
        ReleaseContinuationPoints=False,  # asyncua's default is True: "free the points", reading nothing
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
| values stored by the gateway (changes) | {a["changes"]} |
| rows written (during load / total) | {a["rows_written_during_load"]} / {a["rows_written_total"]} |
| dropped | {a["dropped"]} |
| writer throughput during load | {a["writer_rows_per_s_during_load"]} rows/s |
| largest queue seen | {a["max_queued"]} |
| slowest batch commit | {a["max_batch_commit_s"]} s ({a["batches"]} batches) |
| retention ({a["retention_s"]} s, pass every 60 s) deleted | {a["retention_deleted"]} rows |
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
