"""Stop benchmark: how long `gateway` takes to exit after SIGTERM, at scale, round after round.

    python tests/benchmarks/bench_stop.py                       # 10,000 vars @100 ms, 5 clients, 5 rounds
    python tests/benchmarks/bench_stop.py --vars 2000 --rounds 3

Each round starts the gateway on a sim site of N variables scanned every 100 ms, connects C
asyncua clients in a separate process (each subscribed to the same I variables, publishing
100 ms), lets it run under that load, then sends SIGTERM and times the exit. Two more rounds stop
it after the clients vanished without closing their sessions (SIGKILL), and during start-up. A
stop that takes more than 30 s counts as hung (the gateway is then killed). Target: every stop
under 5 s with exit code 0. Results: tests/benchmarks/results/stop.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "tests" / "benchmarks" / "results"
HUNG_AFTER_S = 30.0

CLIENTS = """
import asyncio, sys
from asyncua import Client, ua
url, n_clients, n_items = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
async def one(nodes_ns):
    c = Client(url, timeout=30)
    await c.connect()
    ns = await c.get_namespace_index("urn:bench:stop")
    nodes = [c.get_node(ua.NodeId(f"D{i // 100}.V{i % 100}", ns)) for i in range(n_items)]
    sub = await c.create_subscription(100, None)
    for k in range(0, len(nodes), 500):
        await sub.subscribe_data_change(nodes[k:k + 500], queuesize=1)
    return c
async def main():
    clients = [await one(None) for _ in range(n_clients)]
    print("subscribed", flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_site(path: Path, n_vars: int) -> None:
    from gateway.nodeset.yaml_build import build

    devices = [{"name": f"D{d}", "connection": f"sim://d{d}", "variables": [
        {"name": f"V{v}", "datatype": "Double", "scan": "HighSpeed", "address": f"sine?period={5 + v}&amplitude=100"}
        for v in range(100)]} for d in range(n_vars // 100)]
    path.write_bytes(build({"site": {"namespace": "urn:bench:stop", "name": "StopBench"}, "devices": devices},
                           "bench_stop"))


async def read_until(stream: asyncio.StreamReader, text: str, within: float) -> None:
    async with asyncio.timeout(within):
        while True:
            line = await stream.readline()
            if not line:
                raise RuntimeError(f"stream ended before '{text}'")
            if text.encode() in line:
                return


async def one_round(site: Path, workdir: Path, scenario: str, clients: int, items: int, load_s: float
                    ) -> dict[str, Any]:
    port = free_port()
    url = f"opc.tcp://127.0.0.1:{port}"
    gw = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "--nodeset", str(site), "--endpoint", url,
        "--data-dir", str(workdir / f"data-{port}"), "--insecure",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    assert gw.stderr is not None
    cl = None
    try:
        if scenario == "start-up":
            await read_until(gw.stderr, "starting", 60)
        else:
            await read_until(gw.stderr, "serving", 300)
            cl = await asyncio.create_subprocess_exec(sys.executable, "-c", CLIENTS, url, str(clients), str(items),
                                                      stdout=asyncio.subprocess.PIPE,
                                                      stderr=asyncio.subprocess.DEVNULL)
            assert cl.stdout is not None
            await read_until(cl.stdout, "subscribed", 300)
            await asyncio.sleep(load_s)
            if scenario == "clients vanished":
                cl.kill()
                await cl.wait()
                await asyncio.sleep(1.0)
        drain = asyncio.ensure_future(gw.stderr.read())
        gw.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(HUNG_AFTER_S):
                code = await gw.wait()
            took: float | None = time.monotonic() - t0
        except TimeoutError:
            took, code = None, None
            gw.kill()
            await gw.wait()
        log = (await drain).decode()
    finally:
        if gw.returncode is None:
            gw.kill()
            await gw.wait()
        if cl is not None and cl.returncode is None:
            cl.kill()
            await cl.wait()
    overran = [ln for ln in log.splitlines() if "left behind" in ln]
    return {"scenario": scenario, "stop_s": took, "exit_code": code, "hung": took is None,
            "watchdog": "stopping took longer" in log, "overran": overran}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vars", type=int, default=10_000)
    ap.add_argument("--clients", type=int, default=5)
    ap.add_argument("--items", type=int, default=1_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--load-s", type=float, default=10.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        site = work / "site.xml"
        make_site(site, args.vars)
        rounds = []
        scenarios = ["under load"] * args.rounds + ["clients vanished", "start-up"]
        for i, scenario in enumerate(scenarios, 1):
            res = await one_round(site, work, scenario, args.clients, args.items, args.load_s)
            outcome = "HUNG" if res["hung"] else f"{res['stop_s']:.2f} s, exit {res['exit_code']}"
            print(f"round {i}/{len(scenarios)} {scenario}: {outcome}", flush=True)
            rounds.append(res)
    out = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "machine": f"{platform.machine()}, "
           f"{os.cpu_count()} CPU, Python {platform.python_version()}", "vars": args.vars, "clients": args.clients,
           "items_per_client": args.items, "load_s": args.load_s, "rounds": rounds}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "stop.json").write_text(json.dumps(out, indent=1))
    lines = [f"# Stop benchmark ({out['when']}, {out['machine']})", "",
             f"Site: {args.vars} sim variables scanned every 100 ms; {args.clients} clients each subscribed to "
             f"{args.items} of them (publishing 100 ms); {args.load_s:g} s under load, then SIGTERM.", "",
             "| round | scenario | stop (s) | exit code | stage overruns |", "|---|---|---|---|---|"]
    for i, r in enumerate(rounds, 1):
        stop = "hung (> 30 s)" if r["hung"] else f"{r['stop_s']:.2f}"
        lines.append(f"| {i} | {r['scenario']} | {stop} | {r['exit_code']} | {len(r['overran'])} |")
    (RESULTS / "stop.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
