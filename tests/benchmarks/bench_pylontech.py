"""Pylontech console benchmark: scans per second through the driver, decode time, and what a real line allows.

    python tests/benchmarks/bench_pylontech.py [--modules 8] [--seconds 20] [--out results/pylontech.json]

The simulated console (8 slots, all modules present) answers on a pty pair of its own; the driver reads
`pwr` and `bat N` for every module back to back, as a scan class binding every module and cell would, in
its worker thread (pyserial), and decodes the tables on the event loop, whose lateness a 10 ms ticker
measures. A pty has no baud rate, so the scan rate here is the driver's and the simulator's cost; a real
RS-232 line at 115200 8N1 moves 11,520 bytes/s, and the answer sizes give the time a scan needs there.
Reported: scans and commands per second, decode time per table, bytes per scan and its line time at
115200 baud, loop lateness, process CPU. Timing is reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway.drivers.base import Binding, Point
from gateway.drivers.pylontech.driver import PylontechDriver
from gateway.drivers.pylontech.simulator import CELLS, ConsoleSimulator, Stack

ROOT = Path(__file__).resolve().parents[2]
TICK_S = 0.010
LINE_BYTES_PER_S = 115200 / 10  # 8N1: 10 bits a byte


def points(modules: int) -> list[Point]:
    addresses = [f"pwr/{m}/{f}" for m in range(1, modules + 1) for f in ("Volt", "Curr", "Tempr", "SOC")]
    addresses += [f"bat/{m}/{c}/Volt" for m in range(1, modules + 1) for c in range(CELLS)]
    return [Point(i, a, Binding(a, scan_class="HighSpeed"), "xsd:double", False) for i, a in enumerate(addresses)]


async def run(modules: int, seconds: float) -> dict[str, Any]:
    master, slave = os.openpty()
    sim = ConsoleSimulator(Stack.of(modules, slots=max(8, modules)), fd=master, name="bench")
    sim.asleep = False
    sim.start()
    pts = points(modules)
    driver = PylontechDriver(urlsplit(f"pylontech://{os.ttyname(slave)}?wakeup=never"), {"HighSpeed": pts})
    await driver.start()
    try:
        first = await driver.read("HighSpeed")
        assert all(r.status == 0 for r in first.values()), "the first scan is not all Good"
        pwr = await driver.worker.call(driver.console.command, "pwr", deadline_s=5)  # type: ignore[union-attr]
        bat = await driver.worker.call(driver.console.command, "bat 1", deadline_s=5)  # type: ignore[union-attr]
        scan_bytes = len(pwr) + modules * len(bat)
        decode_us = {}
        for command, text in (("pwr", pwr), ("bat 1", bat)):
            n, t0 = 2000, time.perf_counter()
            for _ in range(n):
                driver.decode(command, text)
            decode_us[command] = round((time.perf_counter() - t0) / n * 1e6, 1)

        lateness: list[float] = []
        stop = asyncio.Event()

        async def ticker() -> None:
            loop = asyncio.get_running_loop()
            while not stop.is_set():
                expected = loop.time() + TICK_S
                await asyncio.sleep(TICK_S)
                lateness.append(max(0.0, loop.time() - expected))

        tick = asyncio.create_task(ticker())
        scans, requests0 = 0, driver.requests
        scan_ms: list[float] = []
        cpu0, wall0 = time.process_time(), time.perf_counter()
        while time.perf_counter() - wall0 < seconds:
            t0 = time.perf_counter()
            readings = await driver.read("HighSpeed")
            scan_ms.append((time.perf_counter() - t0) * 1000)
            scans += 1
            assert all(r.status == 0 for r in readings.values())
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        stop.set()
        await tick
        lat = sorted(x * 1000 for x in lateness)
        scan_ms.sort()
        return {
            "modules": modules, "values_per_scan": len(pts), "seconds": round(wall, 1),
            "scans_per_s": round(scans / wall, 1), "commands_per_s": round((driver.requests - requests0) / wall, 1),
            "scan_ms": {"p50": round(statistics.median(scan_ms), 1), "p99": round(scan_ms[int(len(scan_ms) * 0.99)
                                                                                             - 1], 1)},
            "decode_us": decode_us, "bytes_per_scan": scan_bytes,
            "line_time_at_115200_s": round(scan_bytes / LINE_BYTES_PER_S, 2),
            "loop_lateness_ms": {"p50": round(statistics.median(lat), 2),
                                 "p99": round(lat[int(len(lat) * 0.99) - 1], 2), "max": round(lat[-1], 2)},
            "process_cpu_percent_of_one_core": round(100 * cpu / wall, 1),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        }
    finally:
        await driver.stop()
        await asyncio.to_thread(sim.stop)
        os.close(master)
        os.close(slave)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "benchmarks" / "results" / "pylontech.json")
    args = parser.parse_args()
    result = asyncio.run(run(args.modules, args.seconds))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    lat = result["loop_lateness_ms"]
    md = (f"# Pylontech console benchmark\n\n`python tests/benchmarks/bench_pylontech.py --modules {args.modules} "
          f"--seconds {args.seconds:g}`\n\n"
          f"- {result['modules']} modules, `pwr` + `bat N` each ({result['values_per_scan']} values a scan) on a pty: "
          f"**{result['scans_per_s']} scans/s** ({result['commands_per_s']} commands/s), scan p50 "
          f"{result['scan_ms']['p50']} ms, p99 {result['scan_ms']['p99']} ms\n"
          f"- decode (in the worker thread): `pwr` {result['decode_us']['pwr']} µs, `bat` "
          f"{result['decode_us']['bat 1']} µs a table; event-loop lateness p50 {lat['p50']} ms, p99 {lat['p99']} ms, "
          f"max {lat['max']} ms\n"
          f"- {result['bytes_per_scan']:,} bytes a scan: **{result['line_time_at_115200_s']} s on a real line at "
          f"115200 baud**, so such a scan class needs a period of a few seconds, not HighSpeed\n"
          f"- process CPU {result['process_cpu_percent_of_one_core']} % of one core ({result['machine']})\n")
    args.out.with_suffix(".md").write_text(md, encoding="utf-8")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
