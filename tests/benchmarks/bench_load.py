"""Load benchmark: a plain 25,000-node site served by the gateway vs asyncua's import_xml alone.

    python tests/benchmarks/bench_load.py [--devices 250 --vars 99] [--runs 3] [--out FILE.json]

asyncua: a fresh process runs Server.init() and then import_xml(site); the import alone is timed.
gateway: a fresh `gateway --nodeset site.xml` process is started at t0; the benchmark connects
every 20 ms until it can read the last node's BrowseName and browse its parent (t1); served = t1 - t0.
Peak RSS of each process comes from the kernel (wait4 rusage for the gateway, getrusage in the
asyncua child).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from asyncua import Client, ua

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_plain_site import NAMESPACE, make_site

ROOT = Path(__file__).resolve().parents[2]
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


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_asyncua(site: Path) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", ASYNCUA_CHILD, str(site)], capture_output=True, text=True,
                          timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - t0
    return result


async def _wait_served(url: str, last: str, proc: subprocess.Popen) -> None:
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}")
        client = Client(url, timeout=5)
        try:
            await client.connect()
        except (OSError, TimeoutError):
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


def run_gateway(site: Path, last: str, data_dir: Path) -> dict:
    port = _port()
    url = f"opc.tcp://127.0.0.1:{port}"
    gateway = str(Path(sys.executable).with_name("gateway"))
    t0 = time.perf_counter()
    proc = subprocess.Popen([gateway, "--nodeset", str(site), "--endpoint", url, "--data-dir", str(data_dir),
                             "--insecure", "--log-level", "WARNING"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        asyncio.run(_wait_served(url, last, proc))
        served = time.perf_counter() - t0
        t_stop = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        _, status, rusage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        stop_s = time.perf_counter() - t_stop
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()
    return {"served_s": served, "stop_s": stop_s, "exit_code": proc.returncode, "peak_rss_mb": rusage.ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=250)
    ap.add_argument("--vars", type=int, default=99)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "benchmarks" / "results" / "load.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "plain-site.xml"
        data, nodes, last = make_site(args.devices, args.vars)
        site.write_bytes(data)
        print(f"site: {nodes} nodes, {len(data) / 1e6:.1f} MB", flush=True)
        gw_runs = [run_gateway(site, last, Path(tmp) / f"data{i}") for i in range(args.runs)]
        for r in gw_runs:
            print(f"gateway served in {r['served_s']:.2f} s, peak RSS {r['peak_rss_mb']:.0f} MB, "
                  f"stopped in {r['stop_s']:.2f} s (exit {r['exit_code']})", flush=True)
        print("asyncua import_xml (takes minutes) ...", flush=True)
        au = run_asyncua(site)
        print(f"asyncua import_xml {au['import_s']:.1f} s, peak RSS {au['peak_rss_mb']:.0f} MB", flush=True)
    served = statistics.median(r["served_s"] for r in gw_runs)
    result = {
        "nodes": nodes, "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                    "asyncua": version("asyncua"), "platform": platform.platform()},
        "asyncua_import_xml": au, "gateway_runs": gw_runs, "gateway_served_median_s": served,
        "speedup_vs_import_xml": au["import_s"] / served,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    md = (f"# Load benchmark ({nodes} nodes, {os.cpu_count()} CPUs, asyncua {version('asyncua')})\n\n"
          "| | seconds | peak RSS |\n|---|---|---|\n"
          f"| asyncua `import_xml` alone | {au['import_s']:.1f} | {au['peak_rss_mb']:.0f} MB |\n"
          f"| gateway: process start until the last node browses (median of {len(gw_runs)}) | {served:.2f} | "
          f"{statistics.median(r['peak_rss_mb'] for r in gw_runs):.0f} MB |\n\n"
          f"Speed-up: **{result['speedup_vs_import_xml']:.0f}x**. "
          "Command: `python tests/benchmarks/bench_load.py`.\n")
    args.out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
