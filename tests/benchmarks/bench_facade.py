"""Modbus facade soak: 16 SCADA clients polling 125 registers every 100 ms while the gateway runs its drivers.

    python tests/benchmarks/bench_facade.py                  # 16 clients, 60 s
    python tests/benchmarks/bench_facade.py --clients 32 --seconds 120

The gateway runs as its own process (`gateway --nodeset site.xml --simulate`) on a site with 4 simulated
Modbus devices of 125 registers each, polled at HighSpeed (100 ms); the facade shows the 500 values as
input registers. This process runs the clients (pymodbus), each reading one device's 125 registers
(one FC04 request, the protocol's maximum) every 100 ms. Measured: requests/s answered, response time
(p50, p99, max, from request to answer at the client), exceptions and failures, and the gateway's CPU
(% of one core, from /proc) and RSS. Results: tests/benchmarks/results/facade.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml
from pymodbus.client import AsyncModbusTcpClient

ROOT = Path(__file__).resolve().parents[2]
DEVICES = 4
REGISTERS = 125


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def site(facade_port: int) -> dict:
    devices, mapping = [], []
    for d in range(DEVICES):
        name = f"Meter{d + 1}"
        devices.append({"name": name, "connection": f"modbus+tcp://10.0.0.{d + 1}:502/1", "variables": [
            {"name": f"P{i}", "datatype": "Double", "range": [-3000, 3000], "address": f"input/{i}",
             "field_type": "xsd:short", "scale": 0.1, "scan": "HighSpeed"} for i in range(REGISTERS)]})
        mapping += [{"node": f"{name}.P{i}", "address": f"input/{d * 1000 + i}", "type": "xsd:short", "scale": 0.1}
                    for i in range(REGISTERS)]
    return {"site": {"namespace": "urn:opcua-gateway:bench:facade", "name": "FacadeBench"}, "devices": devices,
            "facade": {"endpoint": f"modbus+tcp://127.0.0.1:{facade_port}/1", "allowed_clients": ["127.0.0.1"],
                       "max_connections": 64, "map": mapping}}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


async def poll(client_no: int, port: int, period_s: float, until: float, times: list[float],
               counts: dict[str, int]) -> None:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=3, retries=0)
    await client.connect()
    base = (client_no % DEVICES) * 1000
    next_at = time.monotonic()
    try:
        while time.monotonic() < until:
            started = time.perf_counter()
            try:
                rr = await client.read_input_registers(base, count=REGISTERS, device_id=1)
            except Exception:
                counts["failed"] += 1
            else:
                times.append((time.perf_counter() - started) * 1000)
                counts["exceptions" if rr.isError() else "ok"] += 1
            next_at += period_s
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    finally:
        client.close()


async def wait_answering(port: int, within: float = 60.0) -> None:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await client.connect():
            rr = await client.read_input_registers(0, count=REGISTERS, device_id=1)
            if not rr.isError():
                client.close()
                return
        await asyncio.sleep(0.5)
    raise SystemExit("the facade did not answer with Good values within 60 s")


async def measure(port: int, pid: int, clients: int, seconds: float, period_ms: float) -> dict:
    await wait_answering(port)
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    times: list[float] = []
    counts = {"ok": 0, "exceptions": 0, "failed": 0}
    until = t0 + seconds
    await asyncio.gather(*(poll(i, port, period_ms / 1000, until, times, counts) for i in range(clients)))
    elapsed = time.monotonic() - t0
    cpu = (cpu_seconds(pid) - cpu0) / elapsed * 100
    answered = counts["ok"] + counts["exceptions"]
    return {
        "clients": clients, "registers_per_request": REGISTERS, "period_ms": period_ms, "seconds": round(elapsed, 1),
        "devices_polled": DEVICES, "device_registers": DEVICES * REGISTERS, "scan_ms": 100,
        "requests_per_s": round(answered / elapsed, 1), "target_requests_per_s": clients * 1000 / period_ms,
        "response_ms_p50": round(percentile(times, 0.5), 2), "response_ms_p99": round(percentile(times, 0.99), 2),
        "response_ms_max": round(max(times), 2) if times else None, **counts,
        "gateway_cpu_percent_of_one_core": round(cpu, 1), "gateway_rss_mb": round(rss_mb(pid), 1),
    }


def run(clients: int, seconds: float, period_ms: float) -> dict:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "site.xml"
        (Path(tmp) / "site.yaml").write_text(yaml.safe_dump(site(port), sort_keys=False))
        subprocess.run([sys.executable, "-m", "gateway.cli", "nodeset", "build", str(Path(tmp) / "site.yaml"), "-o",
                        str(xml)], check=True, capture_output=True)
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "--nodeset", str(xml), "--simulate",
                                 "--insecure", "--endpoint", f"opc.tcp://127.0.0.1:{free_port()}", "--data-dir",
                                 str(Path(tmp) / "data"), "--log-level", "WARNING"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            return asyncio.run(measure(port, proc.pid, clients, seconds, period_ms))
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--period-ms", type=float, default=100.0)
    args = parser.parse_args()
    result = run(args.clients, args.seconds, args.period_ms)
    result["machine"] = f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} cores"
    result["date"] = datetime.now(UTC).isoformat(timespec="seconds")
    out = ROOT / "tests" / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "facade.json").write_text(json.dumps(result, indent=2) + "\n")
    md = ["# Modbus facade soak", "", "| what | value |", "|---|---|",
          *(f"| {k} | {v} |" for k, v in result.items()), ""]
    (out / "facade.md").write_text("\n".join(md))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
