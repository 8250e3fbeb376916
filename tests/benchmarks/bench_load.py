"""Start benchmark: a plain 25,000-node site served by the gateway, by node-opcua's server, and loaded by
asyncua's import_xml, for two shapes of site.

    python tests/benchmarks/bench_load.py [--shapes deep,wide] [--runs 5] [--no-asyncua] [--out FILE.json]

Shapes (make_plain_site.py): deep, 250 devices x 99 variables (25,001 nodes); wide, 1,200 devices x 10
variables with a property each (25,201 nodes).

gateway: a fresh `gateway --nodeset site.xml` process is started at t0; the benchmark connects every 20 ms
until it can read the last node's BrowseName and browse its parent (t1); served = t1 - t0. Its first run
of each shape starts with an empty namespace-0 cache (reported as "cold"); the others find the cache the
first one wrote, as every start after a gateway's first does.
node-opcua: a fresh `node load_reference_server.mjs` (node-opcua-server, standard nodeset plus the same
site, installed into a cache folder with npm) timed the same way, by the same client check. Its runs and
the gateway's alternate, so both see the same machine load.
asyncua: a fresh process runs Server.init() and then import_xml(site); the import alone is timed.
Peak RSS of each process comes from the kernel (wait4 rusage; getrusage in the asyncua child).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from asyncua import Client, ua

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import HERE, NODE_OPCUA_VERSION, RESULTS, ensure_node_opcua_server, free_port
from make_plain_site import NAMESPACE, make_site

SHAPES = {"deep": (250, 99, False), "wide": (1200, 10, True)}
ASYNCUA_CHILD = """
import asyncio, json, resource, sys, time
from asyncua import Server
async def main():
    server = Server()
    await server.init()
    t0 = time.perf_counter()
    await server.import_xml(sys.argv[1])
    t1 = time.perf_counter()
    print(json.dumps({"import_s": t1 - t0, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
asyncio.run(main())
"""


def run_asyncua(site: Path) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", ASYNCUA_CHILD, str(site)], capture_output=True, text=True,
                          timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - t0
    return result


async def _wait_served(url: str, last: str, proc: subprocess.Popen, within_s: float = 300) -> None:
    async with asyncio.timeout(within_s):
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode}")
            client = Client(url, timeout=5)
            try:
                await client.connect()
            except (OSError, TimeoutError, ua.UaError):
                await asyncio.sleep(0.02)
                continue
            try:
                ns = await client.get_namespace_index(NAMESPACE)
                node = client.get_node(ua.NodeId.from_string(last.replace("ns=1;", f"ns={ns};")))
                assert (await node.read_browse_name()).Name == last.rsplit(".", 1)[1]
                parent = await node.get_parent()
                assert len(await parent.get_children()) > 0
                return
            finally:
                await client.disconnect()


def _serve(argv: list[str], url: str, last: str, stop: str, env: dict[str, str] | None = None) -> dict:
    """Start a server process, time it until the last node browses, stop it (SIGINT or stdin's end)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {})})
    try:
        asyncio.run(_wait_served(url, last, proc))
        served = time.perf_counter() - t0
        t_stop = time.perf_counter()
        if stop == "sigint":
            proc.send_signal(signal.SIGINT)
        else:
            assert proc.stdin is not None
            proc.stdin.close()
        _, status, rusage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        stop_s = time.perf_counter() - t_stop
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()
    return {"served_s": round(served, 3), "stop_s": round(stop_s, 3), "exit_code": proc.returncode,
            "peak_rss_mb": round(rusage.ru_maxrss / 1024, 1), "load_avg_1min": round(os.getloadavg()[0], 2)}


def run_gateway(site: Path, last: str, data_dir: Path, cache_dir: Path) -> dict:
    url = f"opc.tcp://127.0.0.1:{free_port()}"
    gateway = str(Path(sys.executable).with_name("gateway"))
    return _serve([gateway, "--nodeset", str(site), "--endpoint", url, "--data-dir", str(data_dir), "--insecure",
                   "--log-level", "WARNING"], url, last, "sigint", {"GATEWAY_CACHE_DIR": str(cache_dir)})


def run_node_opcua(site: Path, last: str, node_dir: Path) -> dict:
    port = free_port()
    return _serve(["node", str(HERE / "load_reference_server.mjs"), str(port), str(site)],
                  f"opc.tcp://127.0.0.1:{port}", last, "stdin", {"NODE_OPCUA_DIR": str(node_dir)})


def bench_shape(name: str, runs: int, with_asyncua: bool, node_dir: Path | None, tmp: Path) -> dict:
    devices, per, properties = SHAPES[name]
    site = tmp / f"{name}-site.xml"
    data, nodes, last = make_site(devices, per, properties)
    site.write_bytes(data)
    print(f"{name}: {devices} x {per}{' + a property each' if properties else ''}: {nodes} nodes, "
          f"{len(data) / 1e6:.1f} MB", flush=True)
    cache = tmp / f"{name}-cache"
    cold = run_gateway(site, last, tmp / f"{name}-data-cold", cache)
    print(f"  gateway, empty cache: {cold['served_s']:.2f} s", flush=True)
    gw_runs: list[dict] = []
    node_runs: list[dict] = []
    for i in range(runs):
        gw_runs.append(run_gateway(site, last, tmp / f"{name}-data{i}", cache))
        print(f"  gateway {gw_runs[-1]['served_s']:.2f} s, peak RSS {gw_runs[-1]['peak_rss_mb']:.0f} MB "
              f"(load {gw_runs[-1]['load_avg_1min']})", flush=True)
        if node_dir is not None:
            node_runs.append(run_node_opcua(site, last, node_dir))
            print(f"  node-opcua {node_runs[-1]['served_s']:.2f} s, peak RSS {node_runs[-1]['peak_rss_mb']:.0f} MB",
                  flush=True)
    result: dict = {"nodes": nodes, "devices": devices, "variables_per_device": per, "properties": properties,
                    "gateway_cold": cold, "gateway_runs": gw_runs,
                    "gateway_served_median_s": round(statistics.median(r["served_s"] for r in gw_runs), 3),
                    "node_opcua_runs": node_runs}
    if node_runs:
        result["node_opcua_served_median_s"] = round(statistics.median(r["served_s"] for r in node_runs), 3)
        result["gateway_vs_node_opcua"] = round(result["gateway_served_median_s"]
                                                / result["node_opcua_served_median_s"], 3)
    if with_asyncua:
        print("  asyncua import_xml (minutes) ...", flush=True)
        au = run_asyncua(site)
        print(f"  asyncua import_xml {au['import_s']:.1f} s, peak RSS {au['peak_rss_mb']:.0f} MB", flush=True)
        result["asyncua_import_xml"] = au
        result["speedup_vs_import_xml"] = round(au["import_s"] / result["gateway_served_median_s"], 1)
    return result


def _markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"# Start benchmark ({m['cpus']} CPUs, asyncua {m['asyncua']}, node-opcua {NODE_OPCUA_VERSION})", "",
             "Process start until a client reads the site's last node and browses its parent (seconds, median of "
             f"{result['runs']}; peak RSS).", "",
             "| site | nodes | gateway | gateway, empty cache | node-opcua | asyncua `import_xml` alone | "
             "gateway vs node-opcua | speed-up vs import_xml |",
             "|---|---|---|---|---|---|---|---|"]
    for name, s in result["shapes"].items():
        shape = f"{name}: {s['devices']} x {s['variables_per_device']}{' + property' if s['properties'] else ''}"
        gw_rss = statistics.median(r["peak_rss_mb"] for r in s["gateway_runs"])
        gw = f"{s['gateway_served_median_s']:.2f} ({gw_rss:.0f} MB)"
        node = ratio = au_cell = speedup = "-"
        if s["node_opcua_runs"]:
            node_rss = statistics.median(r["peak_rss_mb"] for r in s["node_opcua_runs"])
            node = f"{s['node_opcua_served_median_s']:.2f} ({node_rss:.0f} MB)"
            ratio = f"{s['gateway_vs_node_opcua']:.2f}x the time"
        au = s.get("asyncua_import_xml")
        if au:
            au_cell = f"{au['import_s']:.1f} ({au['peak_rss_mb']:.0f} MB)"
            speedup = f"{s['speedup_vs_import_xml']:.0f}x"
        lines.append(f"| {shape} | {s['nodes']} | {gw} | {s['gateway_cold']['served_s']:.2f} | {node} | {au_cell} "
                     f"| {ratio} | {speedup} |")
    lines += ["", f"Load average (1 min) during the runs: {result['load_avg_range']}. "
              "Command: `python tests/benchmarks/bench_load.py`.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="deep,wide", help="comma-separated: deep, wide")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-asyncua", action="store_true", help="skip asyncua's import_xml (minutes per shape)")
    ap.add_argument("--no-node-opcua", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS / "load.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        node_dir = None if args.no_node_opcua else asyncio.run(ensure_node_opcua_server(tmp / "npm.log"))
        if node_dir is None and not args.no_node_opcua:
            print("node-opcua-server could not be installed: no reference", flush=True)
        shapes = {name: bench_shape(name, args.runs, not args.no_asyncua, node_dir, tmp)
                  for name in args.shapes.split(",")}
    loads = [r["load_avg_1min"] for s in shapes.values() for r in [*s["gateway_runs"], *s["node_opcua_runs"]]]
    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "asyncua": version("asyncua"),
                          "platform": platform.platform()},
              "runs": args.runs, "load_avg_range": f"{min(loads):.1f}-{max(loads):.1f}", "shapes": shapes}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    md = _markdown(result)
    args.out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
