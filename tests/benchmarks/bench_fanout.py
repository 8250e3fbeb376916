"""Subscription fan-out benchmark: data changes delivered to subscribed clients, the gateway beside node-opcua.

    python tests/benchmarks/bench_fanout.py                       # 10,000 variables, B C D, 2 rounds, ~15 min
    python tests/benchmarks/bench_fanout.py --variables 1000 --rounds 1 --scenarios C --settle-s 3 \\
        --measure-s 5 --servers gateway,node-opcua --out /tmp/fanout.json     # a quick look, about a minute
    python tests/benchmarks/bench_fanout.py --servers gateway --rounds 1 --profile \\
        --out tests/benchmarks/results/fanout-profile.json       # where the gateway's time goes (py-spy)

Servers, each in its own process, each serving --variables Double variables D<d>.V<v> (100 per object) that
all change every --interval-ms (100 ms: at most 10 changes per variable per second):
  gateway     `gateway --insecure --nodeset SITE`, SITE a generated sim site: every variable a sine (period
              10 s, a phase of its own) in scan class HighSpeed (100 ms), so every scan is a change;
  node-opcua  node-opcua's own server (tests/benchmarks/fanout_reference_server.mjs; node-opcua-server of the
              version of tests/interop's client, installed into a cache folder with npm), a setInterval
              rewriting every value: the reference;
  asyncua     asyncua's plain Server (this script with --asyncua-host), a task rewriting every value with
              Server.write_attribute_value, as fast as it can up to every --interval-ms.
Scenarios (clients are independent node-opcua clients, tests/benchmarks/fanout_client.mjs, one process, session
and subscription each: publishing interval 100 ms, sampling interval 0, queue size 1):
  B  1 client x 1,000 items      C  1 client x every variable (10,000)      D  5 clients x the same 1,000 items
Each scenario starts its clients, lets them settle (--settle-s), then measures --measure-s: notifications/s
(and the share of the changes the server offers), latency from each notification's SourceTimestamp to its
receipt (p50, p99, max; clocks of one machine), the server's CPU (% of one core, /proc/PID/stat) and RSS
(/proc/PID/status, largest sample), and the clients' CPU. Rounds interleave the servers (gateway, node-opcua,
asyncua, gateway, ...), so figures put side by side come from the same moments of a shared machine; the load
average at start and end is recorded. Every child has a deadline and dies with this script.

Results: tests/benchmarks/results/fanout.{json,md}. Timing is reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    HERE,
    INTEROP,
    NODE_OPCUA_VERSION,
    RESULTS,
    ROOT,
    Proc,
    connect_when_served,
    ensure_node_opcua_server,
    free_port,
)

PER_DEVICE = 100
SINE_PERIOD_S = 10
NAMESPACES = {"gateway": "urn:bench:fanout", "node-opcua": "urn:bench:fanout:reference",
              "asyncua": "urn:bench:fanout:asyncua"}
SERVER_LABELS = {"gateway": "this gateway", "node-opcua": f"node-opcua {NODE_OPCUA_VERSION}",
                 "asyncua": "asyncua {asyncua}"}
START_S = 600.0  # longest wait for a server to serve its last variable
STOP_S = 30.0  # longest wait for a server or client to end once asked


def scenarios(variables: int, items: int, clients: int) -> dict[str, tuple[int, int]]:
    """Scenario name -> (clients, items per client)."""
    return {"B": (1, min(items, variables)), "C": (1, variables), "D": (clients, min(items, variables))}


def node_id(i: int) -> str:
    return f"D{i // PER_DEVICE}.V{i % PER_DEVICE}"


# -- the servers ---------------------------------------------------------------------------------------------


def fanout_site(path: Path, n: int, interval_ms: float) -> None:
    from gateway.nodeset.yaml_build import build

    scan = "HighSpeed" if interval_ms == 100 else "FanOut"
    devices = [{"name": f"D{d}", "connection": f"sim://d{d}", "variables": [
        {"name": f"V{v}", "datatype": "Double", "scan": scan,
         "address": f"sine?period={SINE_PERIOD_S}&amplitude=10&offset=50"
                    f"&phase={2 * math.pi * (d * PER_DEVICE + v) / n:.5f}"}
        for v in range(min(PER_DEVICE, n - d * PER_DEVICE))]} for d in range(math.ceil(n / PER_DEVICE))]
    doc: dict[str, Any] = {"site": {"namespace": NAMESPACES["gateway"], "name": "FanOutBench"}, "devices": devices}
    if scan != "HighSpeed":
        doc["scan_classes"] = {scan: interval_ms}
    path.write_bytes(build(doc, "bench_fanout"))


async def asyncua_host(port: int, n: int, interval_ms: float) -> None:
    """asyncua's plain Server with the same variables, each rewritten every `interval_ms` (as fast as it can)."""
    from asyncua import Server, ua

    logging.basicConfig(level=logging.WARNING)
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace(NAMESPACES["asyncua"])
    nodes: list[ua.NodeId] = []
    for d in range(math.ceil(n / PER_DEVICE)):
        device = await server.nodes.objects.add_object(ua.NodeId(f"D{d}", ns), ua.QualifiedName(f"D{d}", ns))
        for v in range(min(PER_DEVICE, n - d * PER_DEVICE)):
            var = await device.add_variable(ua.NodeId(f"D{d}.V{v}", ns), ua.QualifiedName(f"V{v}", ns), 0.0,
                                            ua.VariantType.Double)
            nodes.append(var.nodeid)
    counters = {"rewrites": 0, "rewriteMsMax": 0.0}

    async def rewrite() -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        due = started
        while True:
            t = time.perf_counter()
            now = datetime.now(UTC)
            phase = 2 * math.pi * (loop.time() - started) / SINE_PERIOD_S
            for i, nid in enumerate(nodes):
                value = 50 + 10 * math.sin(phase + 2 * math.pi * i / n)
                await server.write_attribute_value(nid, ua.DataValue(ua.Variant(value, ua.VariantType.Double),
                                                                     SourceTimestamp=now, ServerTimestamp=now))
                if i % 1000 == 999:  # the writes never wait: let the server publish between slices of a pass
                    await asyncio.sleep(0)
            counters["rewrites"] += 1
            counters["rewriteMsMax"] = max(counters["rewriteMsMax"], (time.perf_counter() - t) * 1000)
            due = max(due + interval_ms / 1000, loop.time())  # a late pass starts the next at once, never a burst
            await asyncio.sleep(due - loop.time())

    async with server:
        print("@@" + json.dumps({"serving": True}), flush=True)
        task = asyncio.create_task(rewrite())
        reader = asyncio.StreamReader()
        await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while await reader.readline():  # each line asks for the counters; stdin's end stops
            print("@@" + json.dumps(counters), flush=True)
            counters["rewriteMsMax"] = 0.0
        task.cancel()


def _proc_cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Server:
    """One server process under test. Its stdout is drained (its "@@{json}" answers queued); a client of
    this script stays connected to the gateway to read its devices' diagnostics."""

    def __init__(self, kind: str, proc: Proc, url: str, n: int) -> None:
        self.kind, self.proc, self.url, self.n = kind, proc, url, n
        self.answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.client: Any = None
        self._request_counts: list[Any] = []
        self._drain = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.proc.stdout is not None
        while raw := await self.proc.proc.stdout.readline():
            text = raw.decode(errors="replace").strip()
            if text.startswith("@@"):
                with contextlib.suppress(ValueError):
                    self.answers.put_nowait(json.loads(text[2:]))

    async def changes(self) -> int:
        """Changes the server has made to its variables so far: for the gateway, every device's scans (its
        diagnostics' RequestCount; a sim scan reads all of a device's variables, each a change) times its
        variables; for the references, rewrite passes times the variables."""
        if self.kind == "gateway":
            values = await self.client.read_values(self._request_counts)
            return sum(int(v) * min(PER_DEVICE, self.n - d * PER_DEVICE) for d, v in enumerate(values))
        await self.proc.send("counters")
        async with asyncio.timeout(30):
            while "rewrites" not in (answer := await self.answers.get()):  # "serving" and the like
                pass
        return int(answer["rewrites"]) * self.n

    @classmethod
    async def start(cls, kind: str, n: int, interval_ms: float, work: Path, node_dir: Path | None, tag: str) -> Server:
        port = free_port()
        url = f"opc.tcp://127.0.0.1:{port}"
        log = work / f"{kind}-{tag}.log"
        if kind == "gateway":
            site = work / f"site-{n}.xml"
            if not site.exists():
                fanout_site(site, n, interval_ms)
            data = work / f"data-{tag}"
            data.mkdir(parents=True, exist_ok=True)
            gateway = str(Path(sys.executable).with_name("gateway"))
            proc = await Proc.start(kind, gateway, "--nodeset", str(site), "--endpoint", url, "--data-dir", str(data),
                                    "--insecure", "--log-level", "WARNING", log=log)
        elif kind == "node-opcua":
            assert node_dir is not None
            proc = await Proc.start(kind, "node", str(HERE / "fanout_reference_server.mjs"), str(port), str(n),
                                    str(PER_DEVICE), str(interval_ms), log=log, env={"NODE_OPCUA_DIR": str(node_dir)})
        else:
            proc = await Proc.start(kind, sys.executable, str(Path(__file__).resolve()), "--asyncua-host", str(port),
                                    str(n), str(interval_ms), log=log, env={"PYTHONPATH": str(ROOT)})
        return cls(kind, proc, url, n)

    async def wait_served(self) -> None:
        """Until a client reads the last variable (the site is loaded and served)."""
        from asyncua import ua

        client, ns = await connect_when_served(self.url, self.proc, NAMESPACES[self.kind], node_id(self.n - 1),
                                               START_S)
        if self.kind == "gateway":
            self.client = client
            self._request_counts = [client.get_node(ua.NodeId(f"D{d}.Diagnostics.RequestCount", ns))
                                    for d in range(math.ceil(self.n / PER_DEVICE))]
            await self.changes()
        else:
            await client.disconnect()

    async def stop(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):  # a server that went away: nothing to close
                async with asyncio.timeout(10):
                    await self.client.disconnect()
        # the gateway stops on SIGINT as from a terminal; the node and asyncua hosts on stdin's end
        await self.proc.close(STOP_S, sig=signal.SIGINT if self.kind == "gateway" else None)
        self._drain.cancel()

    def cpu_s(self) -> float:
        return _proc_cpu_s(self.proc.pid)

    def rss_mb(self) -> float:
        return _proc_rss_mb(self.proc.pid)


# -- py-spy (--profile) ----------------------------------------------------------------------------------------


async def start_profile(server: Server, seconds: float, out: Path) -> Proc | None:
    """py-spy sampling the gateway (non-blocking, 100 Hz, idle frames left out) for `seconds`; None when
    there is no py-spy."""
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if py_spy is None:
        return None
    return await Proc.start("py-spy", py_spy, "record", "--pid", str(server.proc.pid), "--duration",
                            str(max(1, round(seconds))), "--rate", "100", "--nonblocking", "--function",
                            "--format", "raw", "--output", str(out), log=out.with_suffix(".log"))


# the entry point and the event loop, under every sample: left out of "total"
_FRAMES_EVERYWHERE = ("<module> (gateway:", "main (gateway/cli.py", "run_from_args (gateway/app.py",
                      "_run (gateway/app.py", "Thread.")


def profile_summary(folded: Path, top: int = 15) -> dict[str, Any]:
    """The functions the gateway spent its sampled time in: own (leaf) and total (anywhere on the stack)."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    for line in folded.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            if not frame.startswith(_FRAMES_EVERYWHERE) and " (asyncio/" not in frame:
                total[frame] = total.get(frame, 0) + count

    def ranked(d: dict[str, int]) -> list[tuple[str, float]]:
        return [(k, round(100 * v / samples, 1)) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:top]]

    return {"samples": samples, "own_pct": ranked(own), "total_pct": ranked(total)}


# -- the clients and a scenario ------------------------------------------------------------------------------


def latency_percentiles(histograms: list[dict[str, Any]]) -> dict[str, float | None]:
    """p50, p99 and max (ms) of the merged sparse histograms the clients report."""
    merged: dict[int, int] = {}
    bucket_ms = 0.1
    for h in histograms:
        bucket_ms = h["bucketMs"]
        for bucket, count in h["latency"]:
            merged[bucket] = merged.get(bucket, 0) + count
    total = sum(merged.values())
    if not total:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    out: dict[str, float | None] = {}
    ordered = sorted(merged.items())
    for name, q in (("p50_ms", 0.50), ("p99_ms", 0.99)):
        need, seen = math.ceil(q * total), 0
        for bucket, count in ordered:
            seen += count
            if seen >= need:
                out[name] = round((bucket + 1) * bucket_ms, 1)  # the bucket's upper edge
                break
    out["max_ms"] = round((ordered[-1][0] + 1) * bucket_ms, 1)
    return out


async def run_scenario(server: Server, name: str, clients: int, items: int, args: argparse.Namespace,
                       work: Path, tag: str) -> dict[str, Any]:
    procs: list[Proc] = []
    profiler: Proc | None = None
    out: dict[str, Any] = {"scenario": name, "clients": clients, "items_per_client": items}
    try:
        for k in range(clients):
            procs.append(await Proc.start(
                f"client {k}", "node", str(HERE / "fanout_client.mjs"), server.url, str(work / f"pki-{k}"),
                NAMESPACES[server.kind], str(items), str(PER_DEVICE), log=work / f"client-{tag}-{name}-{k}.log",
                env={"INTEROP_DIR": str(INTEROP)}))
        ready_within = 120 + items / 50
        t_ready = time.monotonic()
        ready = await asyncio.gather(*(p.line(ready_within, lambda m: m.get("ready", False)) for p in procs))
        out["clients_ready_s"] = round(time.monotonic() - t_ready, 1)
        out["failed_items"] = sum(r["failed"] for r in ready)
        out["revised_sampling_interval_ms"] = ready[0]["revisedSamplingInterval"]
        out["revised_queue_size"] = ready[0]["revisedQueueSize"]
        await asyncio.sleep(args.settle_s)
        await asyncio.gather(*(p.ask({"cmd": "reset"}, 30, lambda m: m.get("reset", False)) for p in procs))
        changes0, tc0 = await server.changes(), time.monotonic()
        folded = work / f"profile-{tag}-{name}.txt"
        profiler = await start_profile(server, args.measure_s, folded) if args.profile and server.kind == "gateway" \
            else None
        cpu0, t0 = server.cpu_s(), time.monotonic()
        rss: list[float] = []
        while time.monotonic() - t0 < args.measure_s:
            rss.append(server.rss_mb())
            await asyncio.sleep(min(1.0, max(0.0, args.measure_s - (time.monotonic() - t0))))
        stats = await asyncio.gather(*(p.ask({"cmd": "stats"}, 60, lambda m: "notifications" in m) for p in procs))
        wall = time.monotonic() - t0
        cpu = server.cpu_s() - cpu0
        rss.append(server.rss_mb())
        changes1, tc1 = await server.changes(), time.monotonic()
        if profiler is not None:
            await profiler.wait(30)  # py-spy ends by itself after its duration
            profiler = None
            if folded.exists():
                out["profile"] = profile_summary(folded)
    finally:
        if profiler is not None:
            profiler.kill()
            await profiler.wait(10)
        for p in procs:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                await p.send({"cmd": "quit"})
        await asyncio.gather(*(p.close(STOP_S) for p in procs))
    # every variable changes as often as any other (the same scan class or rewrite pass)
    changes_per_variable_s = (changes1 - changes0) / server.n / (tc1 - tc0)
    out["changes_per_variable_per_s"] = round(changes_per_variable_s, 2)
    made = clients * items * changes_per_variable_s
    nominal = clients * items * 1000 / args.interval_ms
    delivered = sum(s["notifications"] / s["seconds"] for s in stats)
    out |= {
        "seconds": round(wall, 1),
        "nominal_per_s": round(nominal),
        "made_per_s": round(made),
        "notifications_per_s": round(delivered),
        "pct_of_nominal": round(100 * delivered / nominal, 1),
        "pct_of_made": round(100 * delivered / made, 1) if made else None,
        "per_client_notifications_per_s": [round(s["notifications"] / s["seconds"]) for s in stats],
        **latency_percentiles(stats),
        "server_cpu_pct": round(100 * cpu / wall, 1),
        "server_rss_mb": round(max(rss), 1),
        "client_cpu_pct": [round(s["cpuPct"], 1) for s in stats],
        "publish_responses_per_s": round(sum(s["responses"] / s["seconds"] for s in stats), 1),
        "keepalives": sum(s["keepalives"] for s in stats),
        "without_source_timestamp": sum(s["noTimestamp"] for s in stats),
        "source_timestamp_after_receipt": sum(s["early"] for s in stats),
    }
    return out


async def run_server(kind: str, rnd: int, chosen: dict[str, tuple[int, int]], args: argparse.Namespace,
                     work: Path, node_dir: Path | None) -> dict[str, Any]:
    tag = f"r{rnd}"
    t0 = time.monotonic()
    server = await Server.start(kind, args.variables, args.interval_ms, work, node_dir, tag)
    run: dict[str, Any] = {"round": rnd, "server": kind, "load_average_before": os.getloadavg()}
    try:
        await server.wait_served()
        run["start_s"] = round(time.monotonic() - t0, 1)
        run["rss_after_start_mb"] = round(server.rss_mb(), 1)
        print(f"round {rnd}, {kind}: serving {args.variables} variables after {run['start_s']} s", flush=True)
        run["scenarios"] = {}
        for name, (clients, items) in chosen.items():
            res = await run_scenario(server, name, clients, items, args, work, f"{kind}-{tag}")
            run["scenarios"][name] = res
            print(f"  {name}: {clients} x {items}: {res['notifications_per_s']}/s of {res['nominal_per_s']}/s nominal "
                  f"({res['pct_of_nominal']} %; the server made {res['made_per_s']}/s), "
                  f"latency p50 {res['p50_ms']} p99 {res['p99_ms']} ms, server CPU "
                  f"{res['server_cpu_pct']} %, RSS {res['server_rss_mb']} MB, clients' CPU {res['client_cpu_pct']} "
                  f"(ready after {res['clients_ready_s']} s)",
                  flush=True)
            await asyncio.sleep(2)  # the sessions closed, the server idle again
    finally:
        await server.stop()
    return run


# -- report ---------------------------------------------------------------------------------------------------


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, int) and x >= 10000:
        return f"{x / 1000:.1f}k"
    return f"{x:g}" if isinstance(x, float) else str(x)


def markdown(res: dict[str, Any]) -> str:
    servers = [s for s in res["servers"] if any(r["server"] == s for r in res["runs"])]
    labels = [SERVER_LABELS[s].format(asyncua=res["asyncua_version"]) for s in servers]
    la0, la1 = res["load_average_start"], res["load_average_end"]
    lines = ["# Subscription fan-out benchmark", "", f"`{res['command']}` on {res['when']} ({res['machine']}).", "",
             f"{res['variables']:,} Double variables changing every {res['interval_ms']:g} ms; node-opcua clients, one "
             f"subscription each (publishing 100 ms, sampling 0, queue 1); {res['settle_s']:g} s settling, "
             f"{res['measure_s']:g} s measured per scenario. Each cell: round 1 / round 2 / ... (rounds interleaved, "
             f"servers in turn). Load average (1, 5, 15 min) at start {la0[0]:.2f}, {la0[1]:.2f}, {la0[2]:.2f}; "
             f"at end {la1[0]:.2f}, {la1[1]:.2f}, {la1[2]:.2f}.", "",
             "| scenario | measure | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(servers)]
    measures = [("notifications/s", "notifications_per_s"), ("share of the nominal changes (%)", "pct_of_nominal"),
                ("share of the changes the server made (%)", "pct_of_made"),
                ("latency p50 (ms)", "p50_ms"), ("latency p99 (ms)", "p99_ms"), ("latency max (ms)", "max_ms"),
                ("publish responses/s (10 per client at 100 ms)", "publish_responses_per_s"),
                ("server CPU (% of one core)", "server_cpu_pct"), ("server RSS (MB)", "server_rss_mb"),
                ("clients' CPU (% of one core, summed)", "client_cpu_sum")]
    for name in res["scenarios"]:
        any_run = next((r["scenarios"][name] for r in res["runs"] if name in r.get("scenarios", {})), None)
        if any_run is None:
            continue
        clients = f"{any_run['clients']} client{'s' if any_run['clients'] > 1 else ''}"
        title = f"{name}: {clients} x {any_run['items_per_client']:,}"
        for i, (label, key) in enumerate(measures):
            cells = []
            for s in servers:
                vals = []
                for r in res["runs"]:
                    sc = r.get("scenarios", {}).get(name)
                    if r["server"] != s or sc is None:
                        continue
                    vals.append(round(sum(sc["client_cpu_pct"]), 1) if key == "client_cpu_sum" else sc.get(key))
                cells.append(" / ".join(_fmt(v) for v in vals) or "-")
            lines.append(f"| {title if i == 0 else ''} | {label} | " + " | ".join(cells) + " |")
    lines += ["", "Nominal: every item changes every interval (10/s at 100 ms). Changes made: what each server made of "
              "its variables while measured (the gateway: its devices' scans, from their diagnostics; the references: "
              "their rewrite passes); a starved server makes fewer.", "",
              "| server | round | start to last variable served (s) | RSS after start (MB) | changes per variable per "
              "s, by scenario |", "|---|---|---|---|---|"]
    for r in res["runs"]:
        rates = ", ".join(f"{n} {sc.get('changes_per_variable_per_s')}" for n, sc in r.get("scenarios", {}).items())
        lines.append(f"| {r['server']} | {r['round']} | {r.get('start_s', '-')} | {r.get('rss_after_start_mb', '-')} | "
                     f"{rates} |")
    for r in res["runs"]:
        for name, sc in r.get("scenarios", {}).items():
            prof = sc.get("profile")
            if not prof or not prof["samples"]:
                continue
            lines += ["", f"Where the gateway's time went in {name}, round {r['round']} (py-spy at 100 Hz for "
                      f"{sc['seconds']:g} s: {prof['samples']} samples of its threads running or waiting for a core, "
                      f"{prof['samples'] / sc['seconds']:.0f} per second, while the process got "
                      f"{sc['server_cpu_pct']:g} % of a core; % of samples):", "",
                      "| own time (the function itself) | % | total (the function and what it calls) | % |",
                      "|---|---|---|---|"]
            for (f_own, p_own), (f_tot, p_tot) in zip(prof["own_pct"], prof["total_pct"], strict=False):
                lines.append(f"| `{f_own}` | {p_own} | `{f_tot}` | {p_tot} |")
    if res.get("errors"):
        lines += ["", "Errors:", *(f"- {e}" for e in res["errors"])]
    return "\n".join(lines) + "\n"


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variables", type=int, default=10_000, help="variables served (and items in C)")
    ap.add_argument("--items", type=int, default=1_000, help="items per client in B and D")
    ap.add_argument("--clients", type=int, default=5, help="clients in D")
    ap.add_argument("--interval-ms", type=float, default=100.0, help="every variable changes this often")
    ap.add_argument("--scenarios", default="B,C,D", help="comma-separated, of B, C, D")
    ap.add_argument("--servers", default="gateway,node-opcua,asyncua", help="comma-separated, in turn each round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--settle-s", type=float, default=10.0, help="after the clients monitor, before measuring")
    ap.add_argument("--measure-s", type=float, default=20.0, help="measured seconds per scenario")
    ap.add_argument("--profile", action="store_true", help="sample the gateway with py-spy (pip install py-spy) "
                    "while measuring (top functions in the results; the stacks in --workdir)")
    ap.add_argument("--deadline-s", type=float, default=3600.0, help="the whole run ends (children killed) after this")
    ap.add_argument("--out", type=Path, default=RESULTS / "fanout.json")
    ap.add_argument("--workdir", type=Path, default=None, help="keep sites, logs and data here (default: a temp dir, "
                    "removed)")
    ap.add_argument("--asyncua-host", nargs=3, metavar=("PORT", "VARIABLES", "INTERVAL_MS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    logging.getLogger("asyncua").setLevel(logging.ERROR)  # the session timeout a server revises, and the like
    if args.asyncua_host:
        await asyncua_host(int(args.asyncua_host[0]), int(args.asyncua_host[1]), float(args.asyncua_host[2]))
        return
    all_scenarios = scenarios(args.variables, args.items, args.clients)
    chosen = {s: all_scenarios[s] for s in args.scenarios.upper().split(",") if s}
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = [s for s in servers if s not in NAMESPACES] + [s for s in chosen if s not in all_scenarios]
    if unknown:
        ap.error(f"unknown server or scenario: {', '.join(unknown)}")
    if not (INTEROP / "node_modules" / "node-opcua-client").is_dir() or shutil.which("node") is None:
        ap.error("needs node and tests/interop's node_modules (cd tests/interop && npm ci)")
    res: dict[str, Any] = {
        "command": "python " + " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs",
        "asyncua_version": version("asyncua"), "node_opcua_version": NODE_OPCUA_VERSION,
        "variables": args.variables, "interval_ms": args.interval_ms, "settle_s": args.settle_s,
        "measure_s": args.measure_s, "scenarios": list(chosen), "servers": servers,
        "load_average_start": os.getloadavg(), "runs": [], "errors": [],
    }
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    work.mkdir(parents=True, exist_ok=True)
    node_dir = None
    if "node-opcua" in servers:
        node_dir = await ensure_node_opcua_server(work / "npm.log")
        if node_dir is None:
            res["errors"].append("npm could not install node-opcua-server: no node-opcua reference")
            servers.remove("node-opcua")
    try:
        async with asyncio.timeout(args.deadline_s):
            for rnd in range(1, args.rounds + 1):
                for kind in servers:
                    try:
                        res["runs"].append(await run_server(kind, rnd, chosen, args, work, node_dir))
                    except (OSError, RuntimeError, TimeoutError, ValueError) as exc:  # one server failing: reported
                        res["errors"].append(f"round {rnd}, {kind}: {type(exc).__name__}: {exc}")
                        print(res["errors"][-1], flush=True)
    except TimeoutError:
        res["errors"].append(f"the run passed its deadline of {args.deadline_s:g} s")
    finally:
        res["load_average_end"] = os.getloadavg()
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1, default=str) + "\n")
    args.out.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
