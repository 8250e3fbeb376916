"""CAN benchmark: frames decoded per second from 4 BMS racks at 10 ms cycle times, and event-loop lateness.

    python tests/benchmarks/bench_can.py [--racks 4] [--cycle-ms 10] [--seconds 60] [--out results/can.json]

A real gateway serves nodesets/examples/can-bms.yaml's rack profile for N racks under --simulate: the
BMS simulation sends every message each rack reads (6 messages, one of them a 48-byte CAN FD frame, one
multiplexed) every `cycle_ms` on a python-can virtual bus from its own thread; the CAN driver receives
them in its link's receive thread, decodes them with cantools there, and the device runners publish
the values through the tag table into the address space. A 10 ms ticker on the gateway's event loop
measures its lateness (p99, max, count over 50 ms). Reported: frames sent and decoded per second,
values stored per second, lateness, process CPU. Timing is reported, never asserted.
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

import yaml

from gateway.drivers.canbus.simulators.bms import BmsSimulation
from gateway.nodeset.yaml_build import build
from gateway.server import Gateway, GatewayConfig

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "nodesets" / "examples" / "can-bms.yaml"
TICK_S = 0.010


def site(racks: int) -> bytes:
    doc = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    # A minute of battery per second, so SOC, current and temperatures move and values are stored.
    doc["devices"] = [{"name": f"Rack{i + 1}", "profile": "BmsRack", "simulator": f"battery?soc={60 - i}&time_scale=60",
                       "connection": f"can://socketcan/can0?dbc=bms_rack.dbc&fd=true&id_offset={64 * i}"}
                      for i in range(racks)]
    return build(doc, "bench-can.yaml")


async def run(racks: int, cycle_ms: float, seconds: float) -> dict[str, Any]:
    BmsSimulation.default_cycle_ms = cycle_ms
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "site.xml"
        path.write_bytes(site(racks))
        gw = Gateway(GatewayConfig(nodesets=[path], endpoint="opc.tcp://127.0.0.1:0", data_dir=Path(tmp) / "d",
                                   insecure=True, simulate=True))
        await gw.load()
        await gw.start()
        try:
            await asyncio.sleep(2.0)  # racks connected, first values in
            sim = next(s for s in gw.simulations if isinstance(s, BmsSimulation))
            runners = list(gw.runners.values())
            lateness: list[float] = []
            stop = asyncio.Event()

            async def ticker() -> None:
                loop = asyncio.get_running_loop()
                while not stop.is_set():  # each tick's overshoot: one stall counts once, not once per tick missed
                    expected = loop.time() + TICK_S
                    await asyncio.sleep(TICK_S)
                    lateness.append(max(0.0, loop.time() - expected))

            for i, rack in enumerate(sim.racks.values()):  # discharging or charging, held without a command
                rack.command_timeout_s = None
                rack.battery.set_input("ActivePowerSetpoint", (-1) ** i * (40.0 + 10 * i))
            sent0, decoded0, stored0 = sim.sent, sum(r.driver.requests for r in runners), gw.tags.stored
            cpu0, wall0 = time.process_time(), time.perf_counter()
            tick = asyncio.create_task(ticker())
            await asyncio.sleep(seconds)
            stop.set()
            await tick
            wall = time.perf_counter() - wall0
            cpu = time.process_time() - cpu0
            decoded = sum(r.driver.requests for r in runners) - decoded0
            good = sum(t.status == 0 for t in gw.tags.tags.values())
            lat_ms = sorted(x * 1000 for x in lateness)
            return {
                "racks": racks, "cycle_ms": cycle_ms, "seconds": round(wall, 1),
                "frames_sent_per_s": round((sim.sent - sent0) / wall),
                "frames_decoded_per_s": round(decoded / wall),
                "values_stored_per_s": round((gw.tags.stored - stored0) / wall),
                "variables_good_at_end": f"{good}/{len(gw.tags.tags)}",
                "loop_lateness_ms": {"p50": round(statistics.median(lat_ms), 2),
                                     "p99": round(lat_ms[int(len(lat_ms) * 0.99) - 1], 2),
                                     "max": round(lat_ms[-1], 2), "over_50ms": sum(x > 50 for x in lat_ms)},
                "process_cpu_percent_of_one_core": round(100 * cpu / wall, 1),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            }
        finally:
            await gw.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--racks", type=int, default=4)
    parser.add_argument("--cycle-ms", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "benchmarks" / "results" / "can.json")
    args = parser.parse_args()
    result = asyncio.run(run(args.racks, args.cycle_ms, args.seconds))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    lat = result["loop_lateness_ms"]
    md = (f"# CAN benchmark\n\n`python tests/benchmarks/bench_can.py --racks {args.racks} --cycle-ms {args.cycle_ms:g} "
          f"--seconds {args.seconds:g}`\n\n"
          f"- {result['racks']} racks x 6 messages every {result['cycle_ms']:g} ms: "
          f"{result['frames_sent_per_s']:,} frames/s sent, **{result['frames_decoded_per_s']:,} frames/s decoded**, "
          f"{result['values_stored_per_s']:,} values/s stored; {result['variables_good_at_end']} variables Good "
          f"at the end\n"
          f"- event-loop lateness p50 {lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms, "
          f"{lat['over_50ms']} ticks over 50 ms\n"
          f"- process CPU {result['process_cpu_percent_of_one_core']} % of one core ({result['machine']})\n")
    args.out.with_suffix(".md").write_text(md, encoding="utf-8")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
