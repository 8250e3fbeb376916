"""SCPI and OptoMMP benchmark: queries and memory-map reads per second at a 100 ms scan, and event-loop lateness.

    python tests/benchmarks/bench_instruments.py [--supplies 8] [--controllers 2] [--seconds 30]
                                                [--out results/instruments.json]

A real gateway serves a generated site under --simulate: `supplies` SCPI supplies (each its own simulated
instrument on a loopback TCP port, reached through pyvisa-py in the device's worker thread), each asked
MEAS:VOLT?, MEAS:CURR?, MEAS:POW? and OUTP? every 100 ms; and `controllers` Opto 22 controllers, each with
4 modules x 16 analog points (gap=64: one read block per module) and 256 scratchpad floats (one 1 KiB
block), read every 100 ms. A 10 ms ticker on the event loop measures its lateness. Reported: SCPI queries
and OptoMMP requests per second, values read per second, scans that kept their period, lateness, CPU.
Timing is reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gateway.nodeset.yaml_build import build
from gateway.server import Gateway, GatewayConfig

ROOT = Path(__file__).resolve().parents[2]
TICK_S = 0.010
SCAN_MS = 100
QUERIES = ("MEAS:VOLT?", "MEAS:CURR?", "MEAS:POW?", "OUTP?")


def site(supplies: int, controllers: int) -> bytes:
    devices: list[dict[str, Any]] = []
    for i in range(supplies):
        devices.append({"name": f"Supply{i + 1}", "connection": "visa://TCPIP0::10.0.0.1::5025::SOCKET?timeout_ms=1000"
                        .replace("10.0.0.1", f"10.0.1.{i + 1}"),
                        "variables": [{"name": q.split(":")[-1].rstrip("?").title(), "address": q, "scan": "Bench",
                                       **({"datatype": "Boolean"} if q == "OUTP?" else {})} for q in QUERIES]})
    for i in range(controllers):
        analog = [{"name": f"A{m}_{p}", "address": f"analog/{m}/{p}", "scan": "Bench", "range": [0, 100]}
                  for m in range(4) for p in range(16)]
        scratch = [{"name": f"F{n}", "address": f"scratchpad/float/{n}", "scan": "Bench"} for n in range(256)]
        devices.append({"name": f"Controller{i + 1}", "connection": f"optommp://10.0.2.{i + 1}?gap=64",
                        "variables": analog + scratch})
    doc = {"site": {"namespace": "urn:bench:instruments", "name": "Bench"}, "scan_classes": {"Bench": SCAN_MS},
           "devices": devices}
    return build(doc, "bench-instruments.yaml")


async def run(supplies: int, controllers: int, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "site.xml"
        path.write_bytes(site(supplies, controllers))
        gw = Gateway(GatewayConfig(nodesets=[path], endpoint="opc.tcp://127.0.0.1:0", data_dir=Path(tmp) / "d",
                                   insecure=True, simulate=True))
        await gw.load()
        await gw.start()
        try:
            await asyncio.sleep(3.0)  # every device connected
            runners = list(gw.runners.values())
            scpi = [r for r in runners if r.cfg.url.scheme == "visa"]
            opto = [r for r in runners if r.cfg.url.scheme == "optommp"]
            lateness: list[float] = []
            stop = asyncio.Event()

            async def ticker() -> None:
                loop = asyncio.get_running_loop()
                while not stop.is_set():
                    expected = loop.time() + TICK_S
                    await asyncio.sleep(TICK_S)
                    lateness.append(max(0.0, loop.time() - expected))

            def counts() -> tuple[int, int, int, int]:
                return (sum(r.driver.requests for r in scpi), sum(r.driver.requests for r in opto),
                        sum(r.driver.request_errors for r in runners), gw.tags.stored)

            q0, o0, e0, s0 = counts()
            cpu0, wall0 = time.process_time(), time.perf_counter()
            tick = asyncio.create_task(ticker())
            await asyncio.sleep(seconds)
            stop.set()
            await tick
            wall = time.perf_counter() - wall0
            cpu = time.process_time() - cpu0
            q1, o1, e1, s1 = counts()
            good = sum(t.status == 0 for t in gw.tags.tags.values())
            lat_ms = sorted(x * 1000 for x in lateness)
            scans_per_s = 1000 / SCAN_MS
            return {
                "supplies": supplies, "controllers": controllers, "scan_ms": SCAN_MS, "seconds": round(wall, 1),
                "scpi_queries_per_s": round((q1 - q0) / wall),
                "scpi_queries_asked_per_s": round(supplies * len(QUERIES) * scans_per_s),
                "optommp_requests_per_s": round((o1 - o0) / wall),
                "optommp_requests_asked_per_s": round(controllers * 5 * scans_per_s),
                # One value per query; an OptoMMP scan is 5 requests for 320 values.
                "values_read_per_s": round(((q1 - q0) + (o1 - o0) * 320 / 5) / wall),
                "values_stored_per_s": round((s1 - s0) / wall),
                "request_errors": e1 - e0,
                "variables_good_at_end": f"{good}/{len(gw.tags.tags)}",
                "loop_lateness_ms": {"p50": round(statistics.median(lat_ms), 2),
                                     "p99": round(lat_ms[int(len(lat_ms) * 0.99) - 1], 2),
                                     "max": round(lat_ms[-1], 2), "over_50ms": sum(x > 50 for x in lat_ms)},
                "process_cpu_percent_of_one_core": round(100 * cpu / wall, 1),
                "load_average_1min": round(os.getloadavg()[0], 2),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            }
        finally:
            await gw.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--supplies", type=int, default=8)
    parser.add_argument("--controllers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "benchmarks" / "results" / "instruments.json")
    args = parser.parse_args()
    r = asyncio.run(run(args.supplies, args.controllers, args.seconds))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(r, indent=2) + "\n", encoding="utf-8")
    lat = r["loop_lateness_ms"]
    md = (f"# SCPI and OptoMMP benchmark\n\n`python tests/benchmarks/bench_instruments.py --supplies {args.supplies} "
          f"--controllers {args.controllers} --seconds {args.seconds:g}`\n\n"
          f"- {r['supplies']} SCPI supplies x 4 queries every {r['scan_ms']} ms: **{r['scpi_queries_per_s']:,} "
          f"queries/s** answered of {r['scpi_queries_asked_per_s']:,} asked\n"
          f"- {r['controllers']} Opto 22 controllers x 320 values (64 analog points, 256 scratchpad floats) every "
          f"{r['scan_ms']} ms: **{r['optommp_requests_per_s']:,} requests/s** of {r['optommp_requests_asked_per_s']:,} "
          f"asked\n"
          f"- {r['values_read_per_s']:,} values read/s, {r['values_stored_per_s']:,} changes stored/s, "
          f"{r['request_errors']} request errors; {r['variables_good_at_end']} variables Good at the end\n"
          f"- event-loop lateness p50 {lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms, "
          f"{lat['over_50ms']} ticks over 50 ms\n"
          f"- process CPU {r['process_cpu_percent_of_one_core']} % of one core, load average "
          f"{r['load_average_1min']} ({r['machine']})\n")
    args.out.with_suffix(".md").write_text(md, encoding="utf-8")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
