"""Modbus polling benchmark: N simulated devices x M registers, polled by a real gateway, watched by a client.

    python tests/benchmarks/bench_modbus.py                 # both target cases, 30 s each
    python tests/benchmarks/bench_modbus.py --case 50x200@1000 --seconds 60

Three processes, so the gateway's CPU and memory are its own:
- the simulators: N pymodbus servers on loopback (one per device, as N devices on a LAN), each with M
  holding registers; they change registers at a steady rate and log when (wall clock) each change
  was made and when each read request arrived;
- the gateway (`gateway --nodeset site.xml`), polling every device in one scan class of period P;
- this process: an asyncua client subscribed to all N x M variables (publishing interval 100 ms),
  logging when each notification arrives.
Measured: requests per scan (against one request per variable), scan period jitter (intervals
between a device's scans, from the simulator's side), end-to-end latency from a register change to
its notification at the client (p50, p99, max), notifications lost, gateway CPU (% of one core) and
memory (RSS, peak RSS). Target: p99 latency <= P + publishing interval + 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import signal
import socket
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PUBLISH_MS = 100.0
CHANGES_PER_S = 200.0


def free_ports(n: int) -> list[int]:
    """n distinct free ports (the sockets stay bound until all are chosen, so none repeats)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


# -- the simulator process ---------------------------------------------------------------------
async def serve_simulators(spec: dict[str, Any]) -> None:
    from gateway.drivers.modbus.simulators.server import SimulatorServer, UnitMemory

    ports, regs = spec["ports"], spec["registers"]
    reads: list[list[tuple[float, int]]] = [[] for _ in ports]  # per device: (time, start address) of each read
    changes: list[tuple[float, int, int, int]] = []
    servers = []
    for d, port in enumerate(ports):
        mem = UnitMemory(1)
        mem.define("holding", 0, regs)
        server = SimulatorServer([mem], port=port)
        inner = server.context.async_getValues

        async def logged(device_id: int, fc: int, address: int, count: int = 1, _d: int = d, _inner=inner) -> Any:
            reads[_d].append((time.time(), address))
            return await _inner(device_id, fc, address, count)

        server.context.async_getValues = logged  # type: ignore[method-assign]
        await server.start()
        servers.append((server, mem))
    print("ready", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    n, seq = len(servers), 0
    period = 1.0 / spec["changes_per_s"]
    next_t = time.monotonic()
    while not stop.is_set():
        next_t += period
        await asyncio.sleep(max(0.0, next_t - time.monotonic()))
        d, r = seq % n, (seq // n * 7) % regs
        value = seq % 65000 + 1
        servers[d][1].set("holding", r, [value])
        changes.append((time.time(), d, r, value))
        seq += 1
    for server, _ in servers:
        await server.stop()
    Path(spec["log"]).write_text(json.dumps({"changes": changes, "reads": reads}))


# -- the benchmark process ---------------------------------------------------------------------
def build_site(n: int, m: int, period_ms: float, ports: list[int], out: Path) -> None:
    from gateway.nodeset.yaml_build import build

    doc = {
        "site": {"namespace": "urn:bench:modbus", "name": "Bench"},
        "scan_classes": {"Bench": period_ms},
        "devices": [{"name": f"D{d}", "connection": f"modbus+tcp://127.0.0.1:{ports[d]}/1?timeout_ms=1000",
                     "variables": [{"name": f"R{r}", "datatype": "UInt16", "address": f"holding/{r}", "scan": "Bench"}
                                   for r in range(m)]} for d in range(n)],
    }
    out.write_bytes(build(doc, "bench"))


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_mem_mb(pid: int) -> tuple[float, float]:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


async def wait_port(port: int, within: float) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def run_case(n: int, m: int, period_ms: float, seconds: float, workdir: Path) -> dict[str, Any]:
    from asyncua import Client, ua

    *ports, endpoint_port = free_ports(n + 1)
    site = workdir / f"bench-{n}x{m}.xml"
    build_site(n, m, period_ms, ports, site)
    log = workdir / f"sim-{n}x{m}.json"
    sims = await asyncio.create_subprocess_exec(sys.executable, __file__, "--serve", json.dumps(
        {"ports": ports, "registers": m, "changes_per_s": CHANGES_PER_S, "log": str(log)}),
        stdout=asyncio.subprocess.PIPE)
    assert sims.stdout is not None and (await sims.stdout.readline()).strip() == b"ready"
    endpoint = f"opc.tcp://127.0.0.1:{endpoint_port}"
    gw = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "--nodeset", str(site), "--endpoint", endpoint,
        "--data-dir", str(workdir / f"data-{n}x{m}"), "--insecure", "--log-level", "WARNING")
    notes: dict[tuple[int, int], list[tuple[float, int]]] = {}
    try:
        await wait_port(endpoint_port, 120)

        class Handler:
            def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
                notes.setdefault(index[node.nodeid], []).append((time.time(), val))

        async with Client(endpoint, timeout=60) as client:
            ns = await client.get_namespace_index("urn:bench:modbus")
            nodes, index = [], {}
            for d in range(n):
                for r in range(m):
                    node = client.get_node(ua.NodeId(f"D{d}.R{r}", ns))
                    nodes.append(node)
                    index[node.nodeid] = (d, r)
            sub = await client.create_subscription(PUBLISH_MS, Handler())
            for i in range(0, len(nodes), 2000):
                await sub.subscribe_data_change(nodes[i:i + 2000], queuesize=10)
            await asyncio.sleep(max(3.0, 3 * period_ms / 1000))  # initial values, connections settled
            t_start, cpu_start = time.time(), proc_cpu_s(gw.pid)
            await asyncio.sleep(seconds)
            t_end, cpu_end = time.time(), proc_cpu_s(gw.pid)
            rss, hwm = proc_mem_mb(gw.pid)
            await asyncio.sleep(period_ms / 1000 + 1.0)  # let the last changes arrive
    finally:
        gw.send_signal(signal.SIGTERM)  # the gateway first, so it does not log the simulators going away
        async with asyncio.timeout(60):
            await gw.wait()
        sims.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            await sims.wait()
    logged = json.loads(log.read_text())
    latencies, lost = [], 0
    for t, d, r, value in logged["changes"]:
        if not t_start <= t <= t_end:
            continue
        # A value overwritten before the next scan is never seen; only the last change per scan counts.
        arrived = next((ta for ta, v in notes.get((d, r), []) if v == value and ta >= t), None)
        if arrived is None:
            lost += 1
        else:
            latencies.append((arrived - t) * 1000)
    intervals, scans, requests = [], 0, 0
    for device_reads in logged["reads"]:
        in_window = [(t, a) for t, a in device_reads if t_start <= t <= t_end]
        starts = [t for t, a in in_window if a == 0]  # a scan's first request reads from register 0
        scans += len(starts)
        requests += len(in_window)
        intervals += [(b - a) * 1000 for a, b in itertools.pairwise(starts)]
    jitter = [abs(i - period_ms) for i in intervals]
    target = period_ms + PUBLISH_MS + 50
    return {
        "devices": n, "registers": m, "period_ms": period_ms, "seconds": round(t_end - t_start, 1),
        "requests_per_scan_per_device": round(requests / max(scans, 1), 2), "one_request_per_variable": m,
        "scans_measured": scans, "scans_expected": round(n * (t_end - t_start) / (period_ms / 1000)),
        "changes": len(latencies) + lost, "notifications_matched": len(latencies), "lost": lost,
        "latency_p50_ms": round(percentile(latencies, 0.5), 1), "latency_p99_ms": round(percentile(latencies, 0.99), 1),
        "latency_max_ms": round(max(latencies, default=float("nan")), 1), "latency_target_ms": target,
        "meets_target": percentile(latencies, 0.99) <= target,
        "interval_mean_ms": round(statistics.mean(intervals), 2) if intervals else None,
        "jitter_p50_ms": round(percentile(jitter, 0.5), 2), "jitter_p99_ms": round(percentile(jitter, 0.99), 2),
        "jitter_max_ms": round(max(jitter, default=float("nan")), 2),
        "gateway_cpu_percent_of_one_core": round(100 * (cpu_end - cpu_start) / (t_end - t_start), 1),
        "gateway_rss_mb": round(rss, 1), "gateway_peak_rss_mb": round(hwm, 1),
    }


def markdown(res: dict[str, Any]) -> str:
    rows = "\n".join(
        f"| {c['devices']} x {c['registers']} @ {c['period_ms']:g} ms | {c['requests_per_scan_per_device']} "
        f"(vs {c['one_request_per_variable']}) | {c['jitter_p50_ms']} / {c['jitter_p99_ms']} / {c['jitter_max_ms']} | "
        f"{c['latency_p50_ms']} / {c['latency_p99_ms']} / {c['latency_max_ms']} | {c['latency_target_ms']:g} "
        f"{'met' if c['meets_target'] else 'MISSED'} | {c['lost']} of {c['changes']} | "
        f"{c['gateway_cpu_percent_of_one_core']} % | {c['gateway_rss_mb']} / {c['gateway_peak_rss_mb']} MB |"
        for c in res["cases"])
    return f"""# Modbus polling benchmark

`{res["command"]}` on {res["when"]} ({res["machine"]}). Simulators, gateway and client in three
processes on loopback; {CHANGES_PER_S:g} register changes/s spread over all devices; client subscribed
to every variable with a {PUBLISH_MS:g} ms publishing interval.

| case | requests per scan per device | scan jitter p50 / p99 / max (ms) | latency p50 / p99 / max (ms) \
| p99 target (ms) | changes not seen | gateway CPU (one core) | gateway RSS / peak |
|---|---|---|---|---|---|---|---|
{rows}

Latency: from the simulator changing a register (wall clock) to the client receiving the
notification with that value. A change is "not seen" when no notification with its value arrived
(a register changed twice within one scan shows only its last value).
"""


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", action="append", help="NxM@PERIOD_MS (default: 50x200@1000 and 10x100@100)")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--out", type=Path, default=ROOT / "tests/benchmarks/results/modbus.json")
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        await serve_simulators(json.loads(args.serve))
        return
    cases = args.case or ["50x200@1000", "10x100@100"]
    res: dict[str, Any] = {
        "command": "python " + " ".join(sys.argv),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs",
        "cases": [],
    }
    with tempfile.TemporaryDirectory(prefix="bench-modbus-") as tmp:
        for case in cases:
            size, period = case.split("@")
            n, m = (int(x) for x in size.split("x"))
            print(f"case {case} ...", flush=True)
            result = await run_case(n, m, float(period), args.seconds, Path(tmp))
            print(json.dumps(result, indent=1), flush=True)
            res["cases"].append(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(res))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
