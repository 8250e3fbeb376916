"""`ping://HOST`: Reachable (Boolean) and RoundTrip (ms) of a host, polled on the scan class.

ICMP echo through icmplib where the process may send it (root, or a `net.ipv4.ping_group_range` that
includes its group); otherwise, or with `mode=tcp`, a TCP connect to `port` (the connection accepted
is an answer; refused, timed out or no route is none). An unreachable host is a value (Reachable
false), not a failed device: the device stays Connected, RoundTrip turns BadNoCommunication and keeps
its last value, so a client sees both that the host is gone and since when.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING
from urllib.parse import SplitResult

import icmplib
from asyncua import ua

from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.drivers.base import Driver, Point, Reading, Simulation
from gateway.drivers.options import Option, parse_query
from gateway.drivers.registry import register

if TYPE_CHECKING:
    from gateway.bindings import DeviceConfig

log = logging.getLogger(__name__)
_S = ua.StatusCodes

CONNECTION_OPTIONS = (
    Option("mode", "choice", "`icmp`: echo request; `tcp`: connect to `port`; `auto`: ICMP where the process may "
           "send it, else TCP", default="auto", choices=("auto", "icmp", "tcp")),
    Option("port", "int", "TCP port of the connect (mode tcp, and auto without ICMP)", default=80, low=1,
           high=65535),
    Option("timeout_ms", "int", "how long one probe waits for its answer", default=1000, low=1, high=60_000),
    Option("count", "int", "probes per scan; RoundTrip is their average, Reachable whether any answered",
           default=1, low=1, high=10),
)
ADDRESSES = {"Reachable": "xsd:boolean", "RoundTrip": "xsd:double"}


def icmp_allowed() -> bool:
    """Whether this process may send ICMP echo requests (a raw socket as root, or an ICMP datagram socket)."""
    if os.geteuid() == 0:
        return True
    try:
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP).close()
    except OSError:
        return False
    return True


@register("ping")
class PingDriver(Driver):
    connection_options = CONNECTION_OPTIONS
    connection_form = "`ping://HOST[?OPTIONS]`: `Reachable` and `RoundTrip` (ms) of a host, by ICMP echo or " \
                      "TCP connect"

    def __init__(
        self, url: SplitResult, points_by_class: Mapping[str, Sequence[Point]], clock: Clock = SYSTEM_CLOCK
    ) -> None:
        super().__init__(url, points_by_class, clock)
        self.host = _host(url)
        self.options = parse_query(url, CONNECTION_OPTIONS, "ping")
        mode = self.options["mode"]
        self.mode = ("icmp" if icmp_allowed() else "tcp") if mode == "auto" else mode
        self.timeout_s = self.options["timeout_ms"] / 1000.0
        self.privileged = os.geteuid() == 0  # raw sockets as root; ICMP datagram sockets otherwise

    @classmethod
    def validate_connection(cls, url: SplitResult) -> None:
        _host(url)
        parse_query(url, CONNECTION_OPTIONS, "ping")

    @classmethod
    def validate_point(cls, url: SplitResult, point: Point) -> None:
        wanted = ADDRESSES.get(point.binding.address)
        if wanted is None:
            raise ValueError(f"ping address '{point.binding.address}' is not one of {', '.join(ADDRESSES)}")
        if point.writable:
            raise ValueError("ping values are read-only")
        if point.binding.address == "Reachable" and point.field_type != "xsd:boolean":
            raise ValueError("Reachable is a Boolean")

    @classmethod
    async def simulate(cls, devices: Sequence[DeviceConfig], clock: Clock) -> Simulation:
        sim = _LoopbackHosts(devices)
        await sim.start()
        return sim

    def call_timeout(self, default_s: float) -> float | None:
        return self.timeout_s * self.options["count"] + default_s  # a slow answer is a value, not a hung driver

    async def read(self, scan_class: str) -> Mapping[int, Reading]:
        rtts: list[float] = []
        for _ in range(self.options["count"]):
            self.requests += 1
            rtt = await (self._icmp() if self.mode == "icmp" else self._tcp())
            if rtt is None:
                self.request_errors += 1
            else:
                rtts.append(rtt)
        now = self.clock.now()
        out: dict[int, Reading] = {}
        for pt in self.points_by_class.get(scan_class, ()):
            if pt.binding.address == "Reachable":
                out[pt.key] = Reading(bool(rtts), _S.Good, now)
            elif rtts:
                out[pt.key] = Reading(sum(rtts) / len(rtts), _S.Good, now)
            else:
                out[pt.key] = Reading(None, _S.BadNoCommunication, now)
        return out

    async def _icmp(self) -> float | None:
        try:
            host = await icmplib.async_ping(self.host, count=1, timeout=self.timeout_s, privileged=self.privileged)
        except icmplib.ICMPLibError as exc:  # name not resolved, no route, socket refused
            log.debug("ping %s: %s", self.host, exc)
            return None
        return host.avg_rtt if host.is_alive else None

    async def _tcp(self) -> float | None:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                _, writer = await asyncio.open_connection(self.host, self.options["port"])
        except (TimeoutError, OSError):
            return None
        rtt = (time.perf_counter() - started) * 1000.0
        writer.close()
        try:
            async with asyncio.timeout(self.timeout_s):
                await writer.wait_closed()
        except (TimeoutError, OSError):
            pass
        return rtt


def _host(url: SplitResult) -> str:
    host = url.hostname
    if not host:
        raise ValueError("no host: ping://HOST (a name, an IPv4 address, or [an IPv6 address])")
    if url.path not in ("", "/"):
        raise ValueError(f"ping://HOST takes no path, not '{url.path}'")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not all(part and len(part) < 64 for part in host.split(".")):
            raise ValueError(f"'{host}' is not a host name or address") from None
    return host


class _LoopbackHosts:
    """`--simulate`: every pinged host is this machine; a TCP-mode device gets a listening port of its own."""

    def __init__(self, devices: Sequence[DeviceConfig]) -> None:
        self.devices = devices
        self.urls: dict[ua.NodeId, SplitResult] = {}
        self.servers: list[asyncio.Server] = []

    async def start(self) -> None:
        for dev in self.devices:
            options = parse_query(dev.url, CONNECTION_OPTIONS, "ping")
            query = dev.url.query
            if options["mode"] == "tcp" or (options["mode"] == "auto" and not icmp_allowed()):
                server = await asyncio.start_server(_close_at_once, "127.0.0.1", 0)
                self.servers.append(server)
                port = server.sockets[0].getsockname()[1]
                query = "&".join([p for p in query.split("&") if p and not p.startswith("port=")] + [f"port={port}"])
            self.urls[dev.nodeid] = SplitResult("ping", "127.0.0.1", "", query, "")

    async def stop(self) -> None:
        for server in self.servers:
            server.close()
        self.servers.clear()


async def _close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()

