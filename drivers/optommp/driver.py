"""`optommp://HOST[:PORT][?OPTIONS]`: Opto 22 controllers and I/O (groov EPIC, SNAP PAC) over OptoMMP, polled.

FieldAddress names a place in the memory map (memory.py): `analog/M/C`, `digital/M/C`, `scratchpad/int/N`,
`scratchpad/float/N` or a hex address. Per scan class the variables are read in the fewest requests
(neighbours joined within `gap` bytes, at most `max_block` bytes each): a lone quadlet with a read
quadlet request, more with a read block request. Failures follow the Modbus driver's rules: no answer,
a lost connection or a garbled packet fails the scan (the device is backed off); a NAK fails only that
request's variables, with the brain's last error (0xE005 invalid address, ...) in the log and its
status. Writes send a write quadlet (or block) request, then read the value back.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult

from asyncua import ua

from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.drivers.base import Driver, DriverError, Point, Reading, Simulation
from gateway.drivers.options import Option, parse_query
from gateway.drivers.optommp import memory, packets
from gateway.drivers.optommp.link import LinkDown, MmpLink
from gateway.drivers.registry import register

if TYPE_CHECKING:
    from gateway.bindings import DeviceConfig

log = logging.getLogger(__name__)
_S = ua.StatusCodes
DEFAULT_PORT = 2001
CONNECTION_OPTIONS = (
    Option("timeout_ms", "int", "how long one request waits for its answer", default=1000, low=1, high=600_000),
    Option("gap", "int", "unused bytes a read may span to join two variables (64 joins the points of a module)",
           default=0, low=0, high=4096),
    Option("max_block", "int", "bytes one read block request asks for at most", default=1024, low=4, high=65535),
)
POINT_OPTIONS = (
    Option("length", "int", "bytes of a String at a raw address (NUL-padded latin-1)", low=1, high=65535,
           datatype="UInt16"),
)
_BRAIN_STATUS = {0xE005: _S.BadNotFound, 0xE002: _S.BadConfigurationError, 0xE003: _S.BadOutOfRange,
                 0xE006: _S.BadConfigurationError, 0xE008: _S.BadResourceUnavailable,
                 0xE00E: _S.BadNotSupported}


def parse_connection(url: SplitResult) -> tuple[str, int, dict[str, Any]]:
    if not url.hostname:
        raise ValueError("no host: optommp://HOST[:PORT]")
    if url.path not in ("", "/"):
        raise ValueError(f"optommp://HOST[:PORT] takes no path, not '{url.path}' (addresses go in FieldAddress)")
    try:
        port = url.port or DEFAULT_PORT
    except ValueError:
        raise ValueError("the port is not a number in 1..65535") from None
    return url.hostname, port, parse_query(url, CONNECTION_OPTIONS, "OptoMMP")


def location(point: Point) -> memory.Location:
    return memory.locate(point.binding.address, point.field_type, point.binding.options.get("length"))


class _Refused(Exception):
    """A NAK: the brain's last error code says why."""

    def __init__(self, what: str, code: int | None) -> None:
        name = memory.BRAIN_ERRORS.get(code or 0, "unknown error")
        super().__init__(f"{what}: refused, {f'error {code:#06x} {name}' if code is not None else 'no last error'}")
        self.status = _BRAIN_STATUS.get(code or 0, _S.BadDeviceFailure)


@register("optommp")
class OptoMmpDriver(Driver):
    connection_options = CONNECTION_OPTIONS
    point_options = POINT_OPTIONS
    connection_form = "`optommp://HOST[:PORT][?OPTIONS]`: Opto 22 memory map (analog and digital points, " \
                      "scratchpad, any address) over OptoMMP"

    def __init__(
        self, url: SplitResult, points_by_class: Mapping[str, Sequence[Point]], clock: Clock = SYSTEM_CLOCK
    ) -> None:
        super().__init__(url, points_by_class, clock)
        self.host, self.port, self.options = parse_connection(url)
        self.where = f"optommp://{self.host}:{self.port}"
        self.locations = {pt.key: location(pt) for pts in points_by_class.values() for pt in pts}
        self.plan = {sc: memory.plan(((pt.key, self.locations[pt.key]) for pt in pts), self.options["gap"],
                                     self.options["max_block"]) for sc, pts in points_by_class.items()}
        self.link: MmpLink | None = None
        self._failing: dict[int, str] = {}  # block start -> why it is refused (logged on change)

    @classmethod
    def validate_connection(cls, url: SplitResult) -> None:
        parse_connection(url)

    @classmethod
    def validate_point(cls, url: SplitResult, point: Point) -> None:
        _, _, options = parse_connection(url)
        loc = location(point)
        if loc.size > options["max_block"]:
            raise ValueError(f"{loc.size} bytes do not fit one read of max_block={options['max_block']}")
        if point.binding.options.get("length") and loc.area != "raw":
            raise ValueError("Length applies to a String at a raw address only")

    @classmethod
    def point_warnings(cls, url: SplitResult, points: Sequence[Point]) -> list[tuple[int, str]]:
        out = []
        spans = sorted(((location(p).read, location(p).size, p) for p in points), key=lambda s: s[:2])
        for (start, size, p), (next_start, _, q) in itertools.pairwise(spans):
            if next_start < start + size:
                out.append((q.key, f"{q.binding.address} overlaps {p.name} ({p.binding.address}): the same bytes "
                                   f"bound twice"))
        return out

    @classmethod
    async def simulate(cls, devices: Sequence[DeviceConfig], clock: Clock) -> Simulation:
        from gateway.drivers.optommp.simulator import MmpSimulation  # controllers start only when simulating

        sim = MmpSimulation(devices)
        await sim.start()
        return sim

    def call_timeout(self, default_s: float) -> float | None:
        return None  # every request is bounded by timeout_ms

    async def start(self) -> None:
        self.link = MmpLink(self.host, self.port, self.options["timeout_ms"] / 1000.0)

    async def stop(self) -> None:
        if self.link is not None:
            self.link.close()

    # -- requests --------------------------------------------------------------------------------
    async def _request(self, build: Any, answer: int) -> packets.Packet:
        assert self.link is not None, "driver not started"
        self.requests += 1
        try:
            return await self.link.request(build, answer)
        except LinkDown as exc:
            self.request_errors += 1
            raise DriverError(f"{self.where}: {exc}", _S.BadCommunicationError) from exc

    async def _read_bytes(self, address: int, size: int) -> bytes:
        """`size` bytes at `address`: a read quadlet request for one quadlet, a read block request otherwise."""
        what = f"reading {size} byte(s) at {address:#010x}"
        if size == 4:
            got = await self._request(lambda t: packets.read_quadlet(t, address), packets.READ_QUADLET_RESPONSE)
        else:
            got = await self._request(lambda t: packets.read_block(t, address, size), packets.READ_BLOCK_RESPONSE)
        if got.rcode != packets.ACK:
            self.request_errors += 1
            raise _Refused(what, await self._last_error())
        if len(got.data) != size:
            self.request_errors += 1
            raise DriverError(f"{self.where}: {what}: {len(got.data)} byte(s) came back", _S.BadCommunicationError)
        return got.data

    async def _last_error(self) -> int | None:
        """The brain's last error code, read after a NAK (None when that read is refused too)."""
        got = await self._request(lambda t: packets.read_quadlet(t, memory.LAST_ERROR), packets.READ_QUADLET_RESPONSE)
        if got.rcode != packets.ACK or len(got.data) != 4:
            return None
        return int.from_bytes(got.data, "big") & 0xFFFF

    # -- reads -----------------------------------------------------------------------------------
    async def read(self, scan_class: str) -> Mapping[int, Reading]:
        out: dict[int, Reading] = {}
        for block in self.plan.get(scan_class, ()):
            try:
                data = await self._read_bytes(block.start, block.size)
            except _Refused as exc:
                self._block_state(block, str(exc))
                out.update((key, Reading(None, exc.status)) for key, _, _ in block.items)
                continue
            self._block_state(block, None)
            now = self.clock.now()
            for key, offset, loc in block.items:
                out[key] = Reading(memory.decode(data[offset:offset + loc.size], loc), _S.Good, now)
        return out

    def _block_state(self, block: memory.Block, error: str | None) -> None:
        before = self._failing.get(block.start)
        if error == before:
            return
        if error is None:
            del self._failing[block.start]
            log.info("%s: %#010x.. answers again", self.where, block.start)
        else:
            self._failing[block.start] = error
            log.warning("%s: %s (%d variable(s) Bad until it answers)", self.where, error, len(block.items))

    # -- writes ----------------------------------------------------------------------------------
    async def write(self, point: Point, value: Any) -> Any:
        loc = self.locations[point.key]
        try:
            data = memory.encode(value, loc)
        except (ValueError, TypeError) as exc:
            raise DriverError(f"{point.name}: {exc}", _S.BadOutOfRange) from exc
        if loc.size == 4:
            got = await self._request(lambda t: packets.write_quadlet(t, loc.write, data), packets.WRITE_RESPONSE)
        else:
            got = await self._request(lambda t: packets.write_block(t, loc.write, data), packets.WRITE_RESPONSE)
        if got.rcode != packets.ACK:
            self.request_errors += 1
            refused = _Refused(f"writing {point.binding.address} ({loc.write:#010x})", await self._last_error())
            raise DriverError(f"{point.name}: {refused}", refused.status)
        try:
            return memory.decode(await self._read_bytes(loc.read, loc.size), loc)
        except (DriverError, _Refused) as exc:
            # Written, but the check failed: the node shows the value written (the write path's default).
            log.warning("%s: written, but reading it back failed: %s", point.name, exc)
            return None
