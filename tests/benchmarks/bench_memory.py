"""Memory benchmark: the gateway's RSS serving a site of N bound, historized variables to a subscribed client.

    python tests/benchmarks/bench_memory.py                         # N = 0, 1,000, 10,000; about 3 minutes
    python tests/benchmarks/bench_memory.py --sizes 0,10000 --settle-s 10 --out /tmp/memory.json   # a quick look
    python tests/benchmarks/bench_memory.py --census 10000          # where the bytes go (in this process)
    python tests/benchmarks/bench_memory.py --plain --gateway /other/checkout/.venv/bin/gateway   # compare

For each N: `gateway --insecure --nodeset SITE` in its own process, SITE a generated sim site of N Double
variables (devices of 100, each variable a sine in scan class MediumSpeed, 1 s, so every scan is a change
and a row of history; Historizing, EURange, EngineeringUnits, FieldAddress and ScanClass, as a real site
binds them; --plain: without EURange and EngineeringUnits). One asyncua client subscribes to all N
(publishing and sampling 1,000 ms, queue 1) and stays subscribed while --settle-s pass; then the gateway's
VmRSS and VmHWM (peak) from /proc/PID/status, and its history rows written. N = 0 is the same gateway with
no device (the fixed cost: Python, asyncua's standard address space, the gateway's modules). Bytes per
bound variable are the slope of RSS over N (least squares).

--census N runs the gateway in this process instead, with tracemalloc on from before the load, subscribes the
same client (from a process of its own), and reports what the live objects are: Python heap by source
file (tracemalloc), a census of the objects the collector tracks, by type, and the process's RSS, each divided
by N. Results: tests/benchmarks/results/memory.{json,md} (--census: memory-census.{json,md}). Memory is
reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import platform
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, Proc, connect_when_served, free_port

PER_DEVICE = 100
NAMESPACE = "urn:bench:memory"
START_S = 600.0  # longest wait for the gateway to serve its last variable
STOP_S = 30.0


def node_id(i: int) -> str:
    return f"D{i // PER_DEVICE}.V{i % PER_DEVICE}"


def memory_site(path: Path, n: int, plain: bool = False) -> None:
    """N bound historized variables; each with EURange and EngineeringUnits unless `plain`."""
    from gateway.nodeset.yaml_build import build

    extra: dict[str, Any] = {} if plain else {"unit": "°C", "range": [0, 100]}
    devices = [{"name": f"D{d}", "connection": f"sim://d{d}", "variables": [
        {"name": f"V{v}", "datatype": "Double", "scan": "MediumSpeed", "historize": True, **extra,
         "address": f"sine?period=60&amplitude=40&offset=50&phase={(d * PER_DEVICE + v) / 100:.3f}"}
        for v in range(min(PER_DEVICE, n - d * PER_DEVICE))]} for d in range(math.ceil(n / PER_DEVICE))]
    path.write_bytes(build({"site": {"namespace": NAMESPACE, "name": "MemoryBench"}, "devices": devices},
                           "bench_memory"))


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (the peak) of a process, MB."""
    out: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = round(int(rest.split()[0]) / 1024, 1)
    return out


async def subscribe_all(url: str, n: int) -> tuple[Any, Any, dict[str, int]]:
    """An asyncua client subscribed to every variable (1 s, queue 1): client, subscription, counts."""
    from asyncua import Client, ua

    client = Client(url, timeout=60, watchdog_intervall=120)
    await client.connect()
    counts = {"notifications": 0}

    class Handler:
        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            counts["notifications"] += 1

    sub = await client.create_subscription(ua.CreateSubscriptionParameters(
        RequestedPublishingInterval=1000, RequestedLifetimeCount=600, RequestedMaxKeepAliveCount=20,
        MaxNotificationsPerPublish=0, PublishingEnabled=True, Priority=0), Handler())
    if n:
        ns = await client.get_namespace_index(NAMESPACE)
        nodes = [client.get_node(ua.NodeId(node_id(i), ns)) for i in range(n)]
        for k in range(0, n, 1000):
            await sub.subscribe_data_change(nodes[k:k + 1000], sampling_interval=1000, queuesize=1)
    return client, sub, counts


async def wait_served(url: str, n: int, proc: Proc) -> None:
    client, _ = await connect_when_served(url, proc, NAMESPACE, node_id(n - 1) if n else None, START_S)
    with contextlib.suppress(Exception):
        await client.disconnect()


async def history_rows(data: Path) -> int:
    import sqlite3

    db = data / "history" / "history.sqlite3"
    if not db.exists():
        return 0

    def count() -> int:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as con:
            tables = [r[0] for r in con.execute("select name from sqlite_master where type='table'")]
            table = "samples" if "samples" in tables else tables[0]
            return int(con.execute(f"select count(*) from {table}").fetchone()[0])

    with contextlib.suppress(Exception):
        return await asyncio.to_thread(count)
    return -1


async def measure(n: int, settle_s: float, work: Path, plain: bool, gateway: str) -> dict[str, Any]:
    site = work / f"site-{n}.xml"
    memory_site(site, n, plain)
    data = work / f"data-{n}"
    data.mkdir(parents=True, exist_ok=True)
    url = f"opc.tcp://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    proc = await Proc.start("gateway", gateway, "--nodeset", str(site), "--endpoint", url, "--data-dir", str(data),
                            "--insecure", "--log-level", "WARNING", log=work / f"gateway-{n}.log")
    out: dict[str, Any] = {"variables": n}
    try:
        await wait_served(url, n, proc)
        out["start_s"] = round(time.monotonic() - t0, 1)
        out["served"] = proc_status(proc.pid)
        client, _sub, counts = await subscribe_all(url, n)
        out["subscribed"] = proc_status(proc.pid)
        samples: list[float] = []
        t1 = time.monotonic()
        while time.monotonic() - t1 < settle_s:
            await asyncio.sleep(1.0)
            samples.append(proc_status(proc.pid).get("VmRSS", 0.0))
        out["settled"] = proc_status(proc.pid)
        out["rss_max_mb"] = max(samples, default=0.0)
        out["notifications_per_s"] = round(counts["notifications"] / (time.monotonic() - t1))
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                await client.disconnect()
    finally:
        await proc.close(STOP_S, sig=signal.SIGINT)
    out["history_rows"] = await history_rows(data)
    print(f"N={n}: served after {out.get('start_s')} s; RSS {out.get('served')} -> subscribed {out.get('subscribed')}"
          f" -> settled {out.get('settled')}; {out.get('notifications_per_s')} notifications/s, "
          f"{out['history_rows']} history rows", flush=True)
    return out


def slope(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of y over x."""
    if len({x for x, _ in points}) < 2:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)


def markdown(res: dict[str, Any]) -> str:
    lines = [
        "# Memory benchmark", "",
        f"`{res['command']}` on {res['date']} (CPython {res['python']}, asyncua {res['asyncua']}, "
        f"{res['cpus']} CPUs).", "",
        "A sim site of N Double variables, each bound (FieldAddress, ScanClass MediumSpeed 1 s), historized"
        f"{'' if res.get('plain') else ', with EURange and EngineeringUnits'}; "
        "one asyncua client subscribed to all of them (1 s, queue 1) for "
        f"{res['settle_s']} s. RSS and peak (VmHWM) of the gateway process, MB.", "",
        "| N | start (s) | RSS served | RSS subscribed | RSS settled | peak (VmHWM) | notifications/s | history rows |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res["runs"]:
        lines.append(f"| {r['variables']:,} | {r.get('start_s')} | {r['served'].get('VmRSS')} | "
                     f"{r['subscribed'].get('VmRSS')} | {r['settled'].get('VmRSS')} | {r['settled'].get('VmHWM')} | "
                     f"{r.get('notifications_per_s')} | {r.get('history_rows'):,} |")
    lines += ["", "Bytes per bound variable (least-squares slope over N):", ""]
    for key, label in (("served", "served, no client"), ("settled", "subscribed and settled"),
                       ("peak", "peak (VmHWM)")):
        b = res["bytes_per_variable"].get(key)
        lines.append(f"- {label}: {b:,.0f} B" if b is not None else f"- {label}: -")
    return "\n".join(lines) + "\n"


# -- --census: where the bytes go ----------------------------------------------------------------------------


def _census_objects() -> dict[str, tuple[int, int]]:
    """Objects the collector tracks, by type: (count, shallow bytes). Tuples of atoms and strings are not
    tracked, so they show up in tracemalloc only."""
    counts: dict[str, list[int]] = {}
    for o in gc.get_objects():
        t = type(o)
        name = f"{t.__module__}.{t.__qualname__}"
        c = counts.get(name)
        if c is None:
            c = counts[name] = [0, 0]
        c[0] += 1
        c[1] += sys.getsizeof(o)
    return {k: (v[0], v[1]) for k, v in sorted(counts.items(), key=lambda kv: -kv[1][1])}


async def census(n: int, settle_s: float, work: Path) -> dict[str, Any]:
    import tracemalloc

    tracemalloc.start(1)
    from gateway.server import Gateway, GatewayConfig

    site = work / f"site-{n}.xml"
    memory_site(site, n)
    url = f"opc.tcp://127.0.0.1:{free_port()}"
    gw = Gateway(GatewayConfig(nodesets=[site], endpoint=url, data_dir=work / "data", insecure=True))
    base = tracemalloc.take_snapshot()
    rss0 = proc_status(os.getpid())
    await gw.load()
    await gw.start()
    client = await Proc.start("client", sys.executable, str(Path(__file__).resolve()), "--client", url, str(n),
                              log=work / "client.log")
    try:
        await client.line(START_S, lambda m: m.get("subscribed", False))
        await asyncio.sleep(settle_s)
        gc.unfreeze()  # the gateway froze what it loaded: the census counts it too
        gc.collect()
        snap = tracemalloc.take_snapshot()
        rss = proc_status(os.getpid())
        by_file = snap.compare_to(base, "filename")
        files = [(str(s.traceback[0].filename).split("site-packages/")[-1].replace(str(Path.cwd()) + "/", ""),
                  s.size_diff, s.count_diff) for s in by_file[:30]]
        by_line = snap.compare_to(base, "lineno")
        lines = [(f"{str(s.traceback[0].filename).split('site-packages/')[-1]}:{s.traceback[0].lineno}",
                  s.size_diff, s.count_diff) for s in by_line[:40]]
        traced = sum(s.size_diff for s in by_file)
        objects = list(_census_objects().items())[:40]
        out = {"variables": n, "rss_before_load_mb": rss0.get("VmRSS"), "rss_mb": rss.get("VmRSS"),
               "peak_mb": rss.get("VmHWM"), "traced_bytes": traced,
               "traced_per_variable": round(traced / max(n, 1)),
               "by_file": files, "by_line": lines,
               "objects": [(name, c, b) for name, (c, b) in objects]}
    finally:
        await client.close(STOP_S)
        await gw.stop()
    tracemalloc.stop()
    return out


def census_markdown(c: dict[str, Any], command: str) -> str:
    n = max(c["variables"], 1)
    lines = ["# Memory census", "", f"`{command}`: the gateway in the benchmark's process, tracemalloc on from "
             f"before the load; {c['variables']:,} bound historized variables, one client subscribed to all.", "",
             f"RSS before the load {c['rss_before_load_mb']} MB (interpreter, imports, tracemalloc's own), after "
             f"{c['rss_mb']} MB, peak {c['peak_mb']} MB. Python heap allocated by the load and serving (tracemalloc): "
             f"{c['traced_bytes'] / 2**20:.1f} MB, {c['traced_per_variable']:,} B per variable.", "",
             "| source file | MB | B per variable | blocks |", "|---|---|---|---|"]
    for f, size, count in c["by_file"][:20]:
        lines.append(f"| {f} | {size / 2**20:.1f} | {size / n:,.0f} | {count:,} |")
    lines += ["", "| line | MB | B per variable | blocks |", "|---|---|---|---|"]
    for f, size, count in c["by_line"][:25]:
        lines.append(f"| {f} | {size / 2**20:.1f} | {size / n:,.0f} | {count:,} |")
    lines += ["", "Objects the collector tracks (shallow sizes):", "", "| type | count | per variable | MB |",
              "|---|---|---|---|"]
    for name, count, size in c["objects"][:30]:
        lines.append(f"| {name} | {count:,} | {count / n:.1f} | {size / 2**20:.1f} |")
    return "\n".join(lines) + "\n"


async def client_host(url: str, n: int) -> None:
    """--census's client, in a process of its own: subscribes, says so, and stays until stdin ends."""
    client, _sub, _counts = await subscribe_all(url, n)
    print("@@" + json.dumps({"subscribed": True}), flush=True)
    await asyncio.to_thread(sys.stdin.read)
    with contextlib.suppress(Exception):
        async with asyncio.timeout(10):
            await client.disconnect()


async def main() -> None:
    if sys.argv[1:2] == ["--client"]:
        await client_host(sys.argv[2], int(sys.argv[3]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="0,1000,10000", help="comma-separated variable counts")
    ap.add_argument("--settle-s", type=float, default=30.0, help="seconds subscribed before RSS is read")
    ap.add_argument("--plain", action="store_true", help="variables without EURange and EngineeringUnits")
    ap.add_argument("--gateway", default=str(Path(sys.executable).with_name("gateway")),
                    help="the gateway executable (another checkout's, to compare)")
    ap.add_argument("--census", type=int, default=None, metavar="N", help="break the bytes down for N variables")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    command = "python tests/benchmarks/bench_memory.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        work = Path(tmp)
        if args.census is not None:
            res = await census(args.census, args.settle_s, work)
            out = args.out or RESULTS / "memory-census.json"
            out.write_text(json.dumps(res, indent=1) + "\n")
            out.with_suffix(".md").write_text(census_markdown(res, command))
            print(census_markdown(res, command))
            return
        runs = [await measure(int(s), args.settle_s, work, args.plain, args.gateway) for s in args.sizes.split(",")]
    per_var: dict[str, float | None] = {}
    for key, pick in (("served", lambda r: r["served"].get("VmRSS")), ("settled", lambda r: r["settled"].get("VmRSS")),
                      ("peak", lambda r: r["settled"].get("VmHWM"))):
        s = slope([(r["variables"], pick(r)) for r in runs if pick(r) is not None])
        per_var[key] = round(s * 2**20) if s is not None else None
    res = {"command": command, "date": datetime.now(UTC).isoformat(timespec="seconds"),
           "python": platform.python_version(), "asyncua": version("asyncua"), "cpus": os.cpu_count(),
           "settle_s": args.settle_s, "plain": args.plain, "runs": runs, "bytes_per_variable": per_var}
    out = args.out or RESULTS / "memory.json"
    out.write_text(json.dumps(res, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    asyncio.run(main())
