"""Real time-series servers for the series writer's tests and benchmark, each started on loopback with an
explicit configuration in a temporary directory: VictoriaMetrics (Debian `victoria-metrics`; takes
influxdb-client's v2 writes, read back with its export API) and InfluxDB 1.x (Debian `influxdb`;
`/write`, read back with InfluxQL). Plus a small HTTP proxy to put faults between writer and server.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, within_s: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=1.0):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"no answer from {url} within {within_s} s")


class Server:
    binary = ""
    proc: subprocess.Popen | None = None

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = root
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / "server.log"

    @classmethod
    def available(cls) -> bool:
        return shutil.which(cls.binary) is not None

    def command(self) -> list[str]:
        raise NotImplementedError

    def health_url(self) -> str:
        raise NotImplementedError

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        _wait_http(self.health_url(), proc=self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


class VictoriaMetrics(Server):
    binary = "victoria-metrics"

    def command(self) -> list[str]:
        # Deduplication to the millisecond: a batch sent twice (acknowledged, then the gateway killed
        # before it deleted it from its queue) is one point per series and timestamp, as in InfluxDB.
        return [self.binary, f"-httpListenAddr=127.0.0.1:{self.port}", f"-storageDataPath={self.root / 'data'}",
                "-dedup.minScrapeInterval=1ms", "-search.latencyOffset=0s", "-retentionPeriod=100y",
                "-loggerLevel=WARN", "-search.disableCache"]

    def health_url(self) -> str:
        return f"{self.url}/health"

    def export(self, match: str) -> list[dict[str, Any]]:
        """Every series matching `match` (a PromQL selector) with its samples, flushed first."""
        urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10).read()
        query = urllib.parse.urlencode({"match[]": match})
        with urllib.request.urlopen(f"{self.url}/api/v1/export?{query}", timeout=60) as resp:
            return [json.loads(line) for line in resp.read().decode().splitlines() if line.strip()]


class InfluxDB1(Server):
    binary = "influxd"

    def command(self) -> list[str]:
        conf = self.root / "influxdb.conf"
        conf.write_text(f"""reporting-disabled = true
bind-address = "127.0.0.1:{free_port()}"
[meta]
  dir = "{self.root / 'meta'}"
[data]
  dir = "{self.root / 'data'}"
  wal-dir = "{self.root / 'wal'}"
  query-log-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{self.port}"
  log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
""")
        return [self.binary, "-config", str(conf)]

    def health_url(self) -> str:
        return f"{self.url}/ping"

    def query(self, q: str, db: str = "") -> dict[str, Any]:
        data = urllib.parse.urlencode({"q": q, "db": db, "epoch": "ns"}).encode()
        with urllib.request.urlopen(f"{self.url}/query", data=data, timeout=60) as resp:
            return json.loads(resp.read())

    def write(self, database: str, policy: str, lines: str) -> None:
        query = urllib.parse.urlencode({"db": database, "rp": policy, "precision": "ns"})
        urllib.request.urlopen(f"{self.url}/write?{query}", data=lines.encode(), timeout=10).read()

    def create(self, database: str, policies: dict[str, str]) -> None:
        self.query(f'CREATE DATABASE "{database}"')
        for name, duration in policies.items():
            self.query(f'CREATE RETENTION POLICY "{name}" ON "{database}" DURATION {duration} REPLICATION 1')

    def rows(self, database: str, policy: str, measurement: str, where: str = "") -> list[dict[str, Any]]:
        result = self.query(f'SELECT * FROM "{database}"."{policy}"."{measurement}" {where}', database)
        out = []
        for series in result["results"][0].get("series", []):
            cols = series["columns"]
            out += [dict(zip(cols, row, strict=True)) for row in series["values"]]
        return out


class FaultProxy:
    """An HTTP proxy on loopback in front of a server: forwards each request, or answers with a fault
    (a status, optionally Retry-After) while `fault` is set; `delay_s` holds each answer back."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.fault: tuple[int, str | None] | None = None
        self.delay_s = 0.0
        self.requests = 0
        self.faults_answered = 0
        self.forwarded = 0  # requests the server answered
        self.answered = 0  # of those, answers passed back to the client
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                self.requests += 1
                if self.fault is not None:
                    status, retry_after = self.fault
                    self.faults_answered += 1
                    extra = f"Retry-After: {retry_after}\r\n" if retry_after is not None else ""
                    msg = b'{"error":"injected"}'
                    writer.write(f"HTTP/1.1 {status} Injected\r\nContent-Type: application/json\r\n{extra}"
                                 f"Content-Length: {len(msg)}\r\n\r\n".encode() + msg)
                    await writer.drain()
                    continue
                answer = await self._forward(head, body)
                self.forwarded += 1
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                writer.write(answer)
                await writer.drain()
                self.answered += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _forward(self, head: bytes, body: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        try:
            lines = [ln for ln in head.split(b"\r\n") if not ln.lower().startswith(b"connection:")]
            writer.write(b"\r\n".join(lines[:-2]) + b"\r\nConnection: close\r\n\r\n" + body)
            await writer.drain()
            return await reader.read()
        finally:
            writer.close()


def kill_tree(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
