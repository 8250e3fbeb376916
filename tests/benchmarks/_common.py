"""What several benchmarks share: paths, free ports, percentiles, child processes, node-opcua's server."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
INTEROP = ROOT / "tests" / "interop"
NODE_OPCUA_VERSION = "2.182.0"  # the version of tests/interop's client
NODE_OPCUA_CACHE = Path.home() / ".cache" / "gateway-bench" / f"node-opcua-server-{NODE_OPCUA_VERSION}"
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, math.ceil(q * len(s)) - 1)]


def med(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def _die_with_parent() -> None:
    """In the child before exec: the kernel kills it when the benchmark dies, so none outlives a killed run."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the deadlines in Proc still end every child
        pass


class Proc:
    """A child process answering "@@{json}" lines (a gateway host, node's server or client)."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    async def start(cls, name: str, *argv: str, log: Path, env: dict[str, str] | None = None) -> Proc:
        with log.open("w") as err:
            proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.PIPE,
                                                        stdout=asyncio.subprocess.PIPE, stderr=err,
                                                        env={**os.environ, **(env or {})}, limit=2**24,
                                                        preexec_fn=_die_with_parent)
        return cls(proc, name)

    async def line(self, within_s: float, match: Callable[[dict[str, Any]], bool] = lambda m: True,
                   prefix: str = "@@") -> dict[str, Any]:
        assert self.proc.stdout is not None
        async with asyncio.timeout(within_s):
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    raise RuntimeError(f"{self.name} ended (exit {await self.proc.wait()})")
                text = raw.decode().strip()
                if prefix == "" and text:
                    return {"line": text}
                if text.startswith(prefix):
                    msg = json.loads(text[len(prefix):])
                    if match(msg):
                        return msg

    async def send(self, msg: str | dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(((msg if isinstance(msg, str) else json.dumps(msg)) + "\n").encode())
        await self.proc.stdin.drain()

    async def ask(self, cmd: str | dict[str, Any], within_s: float = 30,
                  match: Callable[[dict[str, Any]], bool] = lambda m: True) -> dict[str, Any]:
        await self.send(cmd)
        return await self.line(within_s, match)

    async def close(self, within_s: float = 30, sig: int | None = None) -> None:
        """Close its stdin (or send `sig`) and wait; killed when it has not ended within `within_s`."""
        if self.proc.returncode is None:
            try:
                if sig is not None:
                    self.proc.send_signal(sig)
                elif self.proc.stdin is not None:
                    self.proc.stdin.close()
            except (BrokenPipeError, ConnectionResetError, ProcessLookupError):
                pass
            await self.wait(within_s)

    async def wait(self, within_s: float) -> int:
        """Its exit code; killed when it has not ended within `within_s`."""
        try:
            async with asyncio.timeout(within_s):
                return await self.proc.wait()
        except TimeoutError:
            self.kill()
            return await self.proc.wait()

    def kill(self) -> None:
        if self.proc.returncode is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass


async def ensure_node_opcua_server(log: Path) -> Path | None:
    """node-opcua-server in a cache folder (npm install once); None when npm or the registry is not there."""
    if (NODE_OPCUA_CACHE / "node_modules" / "node-opcua-server").is_dir():
        return NODE_OPCUA_CACHE
    if shutil.which("npm") is None:
        return None
    NODE_OPCUA_CACHE.mkdir(parents=True, exist_ok=True)
    (NODE_OPCUA_CACHE / "package.json").write_text('{"name": "bench-reference", "private": true}\n')
    done = await asyncio.to_thread(
        subprocess.run, ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error",
                         *(f"{p}@{NODE_OPCUA_VERSION}" for p in ("node-opcua-server", "node-opcua-address-space",
                                                                 "node-opcua-nodesets", "node-opcua-variant",
                                                                 "node-opcua-data-model", "node-opcua-status-code"))],
        cwd=NODE_OPCUA_CACHE, capture_output=True, timeout=600)
    log.write_bytes(done.stdout + done.stderr)
    return NODE_OPCUA_CACHE if done.returncode == 0 else None


async def connect_when_served(url: str, proc: Proc, namespace: str, node: str | None,
                              within_s: float) -> tuple[Any, int]:
    """A connected asyncua Client and the index of `namespace`, once the server in `proc` serves it and a read of
    its node `node` (a string identifier; None: no read) succeeds. Raises if the process ends first."""
    from asyncua import Client, ua

    async with asyncio.timeout(within_s):
        while True:
            if proc.proc.returncode is not None:
                raise RuntimeError(f"{proc.name} ended (exit {proc.proc.returncode})")
            # asyncua's client drops a connection whose 1 s keep-alive probe is late (a busy server)
            client = Client(url, timeout=30, watchdog_intervall=60)
            try:
                await client.connect()
            except (OSError, TimeoutError, ua.UaError):
                await asyncio.sleep(0.2)
                continue
            try:
                ns = await client.get_namespace_index(namespace)
                if node is not None:
                    await client.get_node(ua.NodeId(node, ns)).read_value()
                return client, ns
            except (ValueError, ua.UaError):  # namespace or node not there yet
                with contextlib.suppress(Exception):
                    await client.disconnect()
                await asyncio.sleep(0.2)

