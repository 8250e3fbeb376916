"""Transport benchmark: the gateway's OPC UA port under hostile traffic, next to the clients it must keep serving.

    python tests/benchmarks/bench_transport.py

The gateway runs as `gateway --insecure` (a secure-only one for the write storm) on the test sim
site in its own process; attackers and clients run in this process or their own. Rounds:

- login attack: 4 sockets sending 17 wrong logins/s in total, while a client subscribed to a
  100 ms variable counts updates/s and the longest gap (before: 9.9 -> 1.4 updates/s, 1.4 s gaps);
- malformed Hellos for 10 s: how many were answered, how many bytes the log grew (before: 58 MB);
- 4 connections announcing 4 GB messages and sending 32 MB each: the gateway's RSS growth
  (before: 716 MB);
- 300 idle connections and 200 unactivated sessions from 20 loopback addresses while a client
  reads every 100 ms: the read latency, and what is left after 33 s (all closed at 30 s);
- write storm: 3 clients x 500 writes on Basic256Sha256 SignAndEncrypt as an operator (before: p99 3.8 ms).

Results: tests/benchmarks/results/transport.{json,md}.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import platform
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import Client, ua
from asyncua.client.ua_client import UaClientState
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from cryptography.x509.oid import ExtendedKeyUsageOID

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "tests" / "benchmarks" / "results"
SITE = ROOT / "tests" / "fixtures" / "sim_site.xml"
SITE_URI = "urn:test:sim-site"

ATTACKER = r"""
import asyncio, sys, time
from asyncua import Client
async def one(url, rate, until):
    c = Client(url, timeout=5)
    await c.connect_socket(); await c.send_hello(); await c.open_secure_channel(); await c.create_session()
    n = 0
    while time.monotonic() < until:
        t = time.monotonic()
        try:
            await c.activate_session("op1", "wrong-password")
        except Exception:
            n += 1
        await asyncio.sleep(max(0, 1 / rate - (time.monotonic() - t)))
    return n
async def main():
    until = time.monotonic() + float(sys.argv[2])
    print(sum(await asyncio.gather(*(one(sys.argv[1], 17 / 4, until) for _ in range(4)))), flush=True)
asyncio.run(main())
"""


@asynccontextmanager
async def gateway(data: Path, *, insecure: bool = True) -> AsyncIterator[tuple[str, asyncio.subprocess.Process, Path]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "gateway.cli", "--data-dir", str(data), "users",
                                             "add", "op1", "--role", "operator", "--password-stdin"],
                            input=b"op-secret-1\n", check=True, capture_output=True)
    log = data / "gateway.log"
    with log.open("w") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "--nodeset", str(SITE), "--endpoint", f"opc.tcp://127.0.0.1:{port}",
            "--data-dir", str(data), *(["--insecure"] if insecure else []), stdout=subprocess.DEVNULL, stderr=err)
    try:
        async with asyncio.timeout(60):
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    await asyncio.sleep(0.2)
        await asyncio.sleep(1)
        yield f"opc.tcp://127.0.0.1:{port}", proc, log
    finally:
        proc.terminate()
        async with asyncio.timeout(30):
            await proc.wait()


async def updates_per_s(url: str, seconds: float) -> tuple[float, float]:
    times: list[float] = []

    class Handler:
        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            times.append(time.monotonic())

    async with Client(url, timeout=10) as client:
        ns = await client.get_namespace_index(SITE_URI)
        sub = await client.create_subscription(100, Handler())
        await sub.subscribe_data_change(client.get_node(ua.NodeId("Sim1.Counter", ns)))
        await asyncio.sleep(1)
        times.clear()
        await asyncio.sleep(seconds)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return len(times) / seconds, max(gaps, default=seconds)


async def login_attack(data: Path) -> dict[str, Any]:
    async with gateway(data) as (url, _, log):
        base_rate, base_gap = await updates_per_s(url, 10)
        attacker = await asyncio.create_subprocess_exec(sys.executable, "-c", ATTACKER, url, "13",
                                                        stdout=subprocess.PIPE)
        await asyncio.sleep(1.5)
        rate, gap = await updates_per_s(url, 10)
        async with asyncio.timeout(30):
            out, _ = await attacker.communicate()
        attempts = int(out.strip() or 0)
        text = log.read_text()
    return {"baseline_updates_per_s": round(base_rate, 1), "baseline_max_gap_s": round(base_gap, 2),
            "attack_updates_per_s": round(rate, 1), "attack_max_gap_s": round(gap, 2),
            "wrong_logins_sent": attempts, "log_warnings": text.count(" WARNING "),
            "log_errors": text.count(" ERROR ")}


async def malformed_hellos(data: Path) -> dict[str, Any]:
    async with gateway(data) as (url, _, log):
        port = int(url.rsplit(":", 1)[1])
        before = log.stat().st_size
        sent = answered = 0
        started = time.monotonic()
        while time.monotonic() - started < 10:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(struct.pack("<3scI", b"HEL", b"F", 20) + b"\xff" * 12)
            try:
                async with asyncio.timeout(0.2):
                    answered += (await reader.read(8))[:3] == b"ERR"
            except TimeoutError:
                pass
            writer.close()
            sent += 1
        await asyncio.sleep(0.5)
        return {"hellos_sent": sent, "answered_with_error": answered, "log_bytes": log.stat().st_size - before}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def huge_headers(data: Path) -> dict[str, Any]:
    async with gateway(data) as (url, proc, _):
        port = int(url.rsplit(":", 1)[1])
        before = rss_mb(proc.pid)
        hello = struct.pack("<3scI", b"HEL", b"F", 32 + len(url)) + struct.pack("<5I", 0, 65535, 65535, 0, 0)
        hello += struct.pack("<i", len(url)) + url.encode()

        async def flood() -> int:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(hello)
            await reader.read(28)
            writer.write(struct.pack("<3scII", b"MSG", b"F", 0xFFFFFFF0, 0))
            sent = 0
            try:
                for _ in range(512):
                    writer.write(b"\0" * 65536)
                    await writer.drain()
                    sent += 65536
            except (ConnectionError, OSError):
                pass
            writer.close()
            return sent

        sent = await asyncio.gather(*(flood() for _ in range(4)))
        await asyncio.sleep(0.5)
        return {"bytes_sent_mb": round(sum(sent) / 2**20, 1), "rss_growth_mb": round(rss_mb(proc.pid) - before, 1)}


async def _raw_session_client(url: str, source: str) -> Client:
    client = Client(url, timeout=5)
    uaclient = client.uaclient
    uaclient._set_state(UaClientState.CONNECTING)
    port = int(url.rsplit(":", 1)[1])
    await asyncio.get_running_loop().create_connection(uaclient._make_protocol, "127.0.0.1", port,
                                                       local_addr=(source, 0))
    uaclient._set_state(UaClientState.SOCKET_OPEN)
    await client.send_hello()
    await client.open_secure_channel()
    await client.create_session()
    return client


async def idle_and_unactivated(data: Path) -> dict[str, Any]:
    async with gateway(data) as (url, _, _):
        port = int(url.rsplit(":", 1)[1])
        idle = [await asyncio.open_connection("127.0.0.1", port, local_addr=(f"127.0.1.{i % 10 + 1}", 0))
                for i in range(300)]
        sessions = [await _raw_session_client(url, f"127.0.2.{i % 10 + 1}") for i in range(200)]
        latencies: list[float] = []
        started = time.monotonic()
        async with Client(url, timeout=5) as probe:
            while time.monotonic() - started < 33:
                t = time.perf_counter()
                await probe.nodes.server_state.read_value()
                latencies.append(time.perf_counter() - t)
                await asyncio.sleep(0.1)
            summary = await probe.get_node(ua.ObjectIds.Server_ServerDiagnostics_ServerDiagnosticsSummary).read_value()
        closed_by_server = sum(reader.at_eof() for reader, _ in idle)
        for _, writer in idle:
            writer.close()
        for client in sessions:
            client.disconnect_socket()
        latencies.sort()
        return {"probe_reads": len(latencies), "probe_p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 1),
                "probe_max_ms": round(latencies[-1] * 1000, 1), "idle_closed_by_server": closed_by_server,
                "sessions_after_33_s": summary.CurrentSessionCount, "cumulated_sessions": summary.CumulatedSessionCount,
                "session_aborts": summary.SessionAbortCount}


async def write_storm(data: Path) -> dict[str, Any]:
    certs = []
    (data / "pki" / "trusted").mkdir(parents=True, exist_ok=True)
    for i in range(3):
        cert, key = data / f"client{i}.der", data / f"client{i}.pem"
        await setup_self_signed_certificate(key, cert, f"urn:client{i}", "localhost", [ExtendedKeyUsageOID.CLIENT_AUTH],
                                            {"commonName": f"client{i}"})
        (data / "pki" / "trusted" / cert.name).write_bytes(cert.read_bytes())
        certs.append((cert, key))
    async with gateway(data, insecure=False) as (url, _, _):
        clients = []
        for i, (cert, key) in enumerate(certs):
            client = Client(url, timeout=10)
            client.application_uri = f"urn:client{i}"
            await client.set_security_string(f"Basic256Sha256,SignAndEncrypt,{cert},{key}")
            client.set_user("op1")
            client.set_password("op-secret-1")
            await client.connect()
            clients.append(client)
        latencies: list[float] = []

        async def storm(client: Client) -> None:
            node = client.get_node(ua.NodeId("Sim1.Setpoint", await client.get_namespace_index(SITE_URI)))
            for k in range(500):
                t = time.perf_counter()
                await node.write_value(ua.DataValue(ua.Variant(float(k % 50), ua.VariantType.Double)))
                latencies.append(time.perf_counter() - t)

        await asyncio.gather(*(storm(c) for c in clients))
        for client in clients:
            await client.disconnect()
    latencies.sort()
    return {"writes": len(latencies), "p50_ms": round(statistics.median(latencies) * 1000, 1),
            "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 1),
            "max_ms": round(latencies[-1] * 1000, 1)}


async def main() -> None:
    logging.basicConfig(level=logging.ERROR)  # the clients' warnings about every refusal are expected here
    results: dict[str, Any] = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
                               "python": platform.python_version(), "cpus": os.cpu_count()}
    for name, run in (("login_attack", login_attack), ("malformed_hellos", malformed_hellos),
                      ("huge_headers", huge_headers), ("idle_and_unactivated", idle_and_unactivated),
                      ("write_storm", write_storm)):
        with tempfile.TemporaryDirectory() as tmp:
            results[name] = await run(Path(tmp))
        print(name, results[name], flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "transport.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["# Transport benchmark", "", f"{results['date']}, Python {results['python']}, {results['cpus']} CPUs", "",
             "| round | result |", "|---|---|"]
    lines += [f"| {name} | {', '.join(f'{k} {v}' for k, v in value.items())} |"
              for name, value in results.items() if isinstance(value, dict)]
    (RESULTS / "transport.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
