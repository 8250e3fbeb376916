"""Value path benchmark: CPU per change from a device's scan to the stored value, in a real gateway.

    python tests/benchmarks/bench_valuepath.py [--variables 10000] [--passes 20] [--no-history]
                                               [--out tests/benchmarks/results/valuepath.json]
    python tests/benchmarks/bench_valuepath.py --compare BEFORE.json AFTER.json ...   # runs side by side

The gateway (`Gateway.load` + `start`: address space, history store, diagnostics, alarms, change feed) serves
the fan-out benchmark's site, historized (unless --no-history): --variables sim Double variables, 100 per
device, each a sine with a phase of its own in scan class HighSpeed, so every scan changes every value.
Its polling is stopped, then every device's `DeviceRunner.scan` is called in turn, --passes times over the
whole site: the driver's read, scaling and casting, the change check, the DataValue, the address space, the
change feed (with the gateway's own listeners) and the history queue, and each device's diagnostics.
No client is connected: the notification side is not measured.

CPU is this thread's (time.thread_time: the history writer's thread and time spent waiting for a core are
not counted, so the figure holds on a shared, loaded machine). Reported: microseconds per stored change
for the whole scan, the best and the median pass, and alone the sim driver's read and the step from its
readings to the stored values; and the whole process's CPU (every thread: the history writer encodes and
commits each value in a thread of its own) from the first measured scan until history is flushed. The
site offers variables x 10 changes/s at 100 ms; the share of one core those would take (the event loop's
scans) is reported too.

Writes JSON to --out and a Markdown summary next to it. Figures are reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, free_port

from gateway.nodeset.yaml_build import build
from gateway.server import Gateway, GatewayConfig

SCAN_CLASS = "HighSpeed"
PER_DEVICE = 100
SINE_PERIOD_S = 10


def site_xml(n: int, historize: bool) -> bytes:
    """bench_fanout's site (sines of phases of their own, so every scan changes every value), historized."""
    devices = [{"name": f"D{d}", "connection": f"sim://d{d}", "variables": [
        {"name": f"V{v}", "datatype": "Double", "scan": SCAN_CLASS, "historize": historize,
         "address": f"sine?period={SINE_PERIOD_S}&amplitude=10&offset=50"
                    f"&phase={2 * math.pi * (d * PER_DEVICE + v) / n:.5f}"}
        for v in range(min(PER_DEVICE, n - d * PER_DEVICE))]} for d in range(math.ceil(n / PER_DEVICE))]
    return build({"site": {"namespace": "urn:bench:valuepath", "name": "ValuePathBench"}, "devices": devices},
                 "bench_valuepath")


async def measure(site: Path, data: Path, passes: int) -> dict[str, Any]:
    gw = Gateway(GatewayConfig(nodesets=[site], endpoint=f"opc.tcp://127.0.0.1:{free_port()}", data_dir=data,
                               insecure=True))
    t0 = time.monotonic()
    await gw.load()
    await gw.start()
    started_s = time.monotonic() - t0
    try:
        runners = list(gw.runners.values())
        for runner in runners:
            await runner.stop_polling()
        tags, history = gw.tags, gw.history
        assert tags is not None and history is not None
        n = len(tags.tags)
        for runner in runners:  # one pass first: every variable has a value, the caches are warm
            await runner.scan(SCAN_CLASS)

        scans: list[float] = []
        await history.flush()
        stored0, written0 = tags.stored, history.written + history.dropped
        process0 = time.process_time()
        for _ in range(passes):
            t = time.thread_time()
            for runner in runners:
                await runner.scan(SCAN_CLASS)
            scans.append(time.thread_time() - t)
            await asyncio.sleep(0)  # what the loop does between two scans: let the history writer take its share
        stored = tags.stored - stored0
        await history.flush()
        process_s = time.process_time() - process0
        historized = history.written + history.dropped - written0

        reads: list[float] = []
        for _ in range(passes):
            t = time.thread_time()
            for runner in runners:
                await runner.driver.read(SCAN_CLASS)
            reads.append(time.thread_time() - t)
        changes_per_pass = stored / passes
        best, median = min(scans) / changes_per_pass * 1e6, statistics.median(scans) / changes_per_pass * 1e6
        read_us = min(reads) / n * 1e6
        return {
            "variables": n, "devices": len(runners), "passes": passes, "start_s": round(started_s, 1),
            "changes_stored": stored, "changes_offered": n * passes, "historized": historized,
            "scan_us_per_change_best": round(best, 2), "scan_us_per_change_median": round(median, 2),
            "sim_read_us_per_value": round(read_us, 2),
            "readings_to_stored_us_per_change": round(best - read_us, 2),
            "process_us_per_change": round(process_s / stored * 1e6, 2),
            "core_share_at_10hz_percent": round(best * n * 10 / 1e4, 1),
        }
    finally:
        await gw.stop()


def markdown(res: dict[str, Any]) -> str:
    r = res["result"]
    return f"""# Value path: CPU per change

`{res['command']}` on {res['when']} ({res['machine']}; git {res['git']}).

A real gateway serving {r['variables']:,} sim Double variables ({r['devices']} devices, scan class HighSpeed,
100 ms), polling stopped, every device scanned in turn {r['passes']} times; CPU of the measuring thread
(history writer and waiting for a core not counted).

| measure | value |
|---|---|
| changes stored / offered | {r['changes_stored']:,} / {r['changes_offered']:,} |
| changes historized | {r['historized']:,} |
| `DeviceRunner.scan`, whole: us per change, best pass / median | {r['scan_us_per_change_best']} / \
{r['scan_us_per_change_median']} |
| of which the sim driver's read, us per value | {r['sim_read_us_per_value']} |
| readings to stored value (scan minus read), us per change | {r['readings_to_stored_us_per_change']} |
| the process, every thread (the history writer's encoding and SQLite too), scans and flush: us per change | \
{r['process_us_per_change']} |
| one core's share for {r['variables']:,} variables at 10 changes/s | {r['core_share_at_10hz_percent']} % |
"""


_ROWS = [("historized", "changes historized"),
         ("scan_us_per_change_best", "`DeviceRunner.scan`, whole: us per change, best pass"),
         ("scan_us_per_change_median", "... median pass"),
         ("sim_read_us_per_value", "of which the sim driver's read, us per value"),
         ("readings_to_stored_us_per_change", "readings to stored value, us per change"),
         ("process_us_per_change", "the process, every thread, scans and flush: us per change"),
         ("core_share_at_10hz_percent", "one core's share at 10 changes/s per variable (%)")]


def comparison(runs: list[dict[str, Any]]) -> str:
    """Runs side by side (`--compare`: results of this script on different commits, in the order given)."""
    head = " | ".join(f"git {r['git']}, {r['when'][11:16]} UTC, load {r['load_average_start'][0]:.1f}, "
                      f"{r['result']['passes']} passes" for r in runs)
    lines = [f"| measure | {head} |", "|---" * (len(runs) + 1) + "|"]
    for key, label in _ROWS:
        lines.append(f"| {label} | " + " | ".join(f"{r['result'][key]:,}" for r in runs) + " |")
    commands = "".join(f"- git {r['git']}: `{r['command']}`\n" for r in runs)
    return f"""# Value path: CPU per change, runs side by side

{runs[0]['result']['variables']:,} sim Double variables, scanned whole the given number of times (passes) per run
({runs[0]['machine']}); see the docstring of tests/benchmarks/bench_valuepath.py. Runs:

{commands}
{chr(10).join(lines)}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variables", type=int, default=10_000)
    ap.add_argument("--passes", type=int, default=20, help="scans of the whole site measured")
    ap.add_argument("--no-history", action="store_true", help="variables not historized")
    ap.add_argument("--out", type=Path, default=RESULTS / "valuepath.json")
    ap.add_argument("--compare", type=Path, nargs="+", metavar="JSON", help="run nothing: put these results of "
                    "earlier runs side by side into --out (JSON: the runs) and its Markdown")
    args = ap.parse_args()
    if args.compare:
        runs = [json.loads(p.read_text()) for p in args.compare]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(comparison(runs))
        print(comparison(runs))
        return
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    res: dict[str, Any] = {
        "command": "python " + " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
        "when": datetime.now(UTC).isoformat(timespec="seconds"), "git": git,
        "machine": f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs",
        "load_average_start": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory(prefix="bench-valuepath-") as tmp:
        site = Path(tmp) / "site.xml"
        site.write_bytes(site_xml(args.variables, not args.no_history))
        res["result"] = asyncio.run(measure(site, Path(tmp) / "data", args.passes))
    res["load_average_end"] = os.getloadavg()
    gc.collect()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
