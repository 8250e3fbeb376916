"""The CAN driver: signals of a DBC file (cantools) on any python-can bus, pushed as frames arrive.

Connection `can://INTERFACE/CHANNEL?dbc=FILE[&OPTIONS]`: INTERFACE is a python-can interface name
(socketcan, virtual, udp_multicast, pcan, kvaser, ...), CHANNEL its channel (can0, a virtual bus name,
a multicast group). FieldAddress is `MESSAGE/SIGNAL` (message by name or frame id). Values are the
DBC's physical values (its scale and offset; a String variable gets the value table's name), or the
raw integer with `DbcScaling` false, for the site's own Scale and Offset. A message not seen within
its cycle time x `stale_factor` (or `stale_ms` for messages without one) turns its signals Bad; a
device none of whose messages arrives is Disconnected. A writable variable encodes its message (the
other signals keep what was last written, else their DBC initial value) and sends it once, or
periodically (`Send` periodic: python-can's periodic task, its data changed in place on later writes).
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult

import can
from asyncua import ua
from cantools.database.can import Message
from cantools.database.namedsignalvalue import NamedSignalValue

from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.drivers.base import Driver, DriverError, Point, PushSink, Reading, Simulation
from gateway.drivers.canbus import dbc
from gateway.drivers.canbus.link import BusSettings, CanLink
from gateway.drivers.options import Option, parse_query
from gateway.drivers.registry import register

if TYPE_CHECKING:
    from gateway.bindings import DeviceConfig

log = logging.getLogger(__name__)
_S = ua.StatusCodes

CONNECTION_OPTIONS = (
    Option("dbc", "text", "the DBC file: a path, or the name of one the driver ships (`bms_rack.dbc`)",
           default_text="(required)"),
    Option("bitrate", "int", "bus bit rate in bit/s, for interfaces that set it (not socketcan: `ip link`)", low=1,
           high=10_000_000),
    Option("fd", "bool", "CAN FD: the bus carries FD frames (a DBC message with VFrameFormat *_FD is sent as one)",
           default=False),
    Option("data_bitrate", "int", "CAN FD data phase bit rate in bit/s", low=1, high=20_000_000),
    Option("port", "int", "UDP port (udp_multicast)", low=1, high=65535),
    Option("id_offset", "int", "added to every frame id of the DBC: one DBC for several devices that differ in "
           "their ids (rack n of a BMS at n*64)", default=0, low=0, high=0x1FFFFFFF),
    Option("stale_factor", "number", "a message not seen within its DBC cycle time (GenMsgCycleTime) times this "
           "turns its signals Bad", default=3.0, low=1.0, high=1000.0),
    Option("stale_ms", "int", "the same for messages without a cycle time in the DBC", default_text="not checked",
           low=1, high=3_600_000),
)
POINT_OPTIONS = (
    Option("dbc_scaling", "bool", "false: the raw signal integer, for the site's own `Scale` and `Offset` (no value "
           "table either)", default=True, datatype="Boolean"),
    Option("send", "choice", "how a write goes out: its message `once`, or `periodic` at `PeriodMs` until the "
           "gateway stops (then the device's own timeout applies)", default="once", choices=("once", "periodic")),
    Option("period_ms", "int", "period of a periodic send", default_text="the message's DBC cycle time", low=1,
           high=3_600_000, datatype="UInt32"),
)
STALE_CHECK_S = (0.05, 1.0)  # the staleness check runs at a quarter of the shortest limit, within these bounds


def parse_connection(url: SplitResult) -> tuple[BusSettings, dict[str, Any]]:
    """Bus settings and options of a `can://` connection; ValueError names the bad part."""
    interface = url.netloc
    if interface not in can.interfaces.VALID_INTERFACES:
        close = difflib.get_close_matches(interface, can.interfaces.VALID_INTERFACES, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ValueError(f"'{interface}' is not a python-can interface "
                         f"({hint}known: {', '.join(sorted(can.interfaces.VALID_INTERFACES))})")
    channel = url.path[1:] if url.path.startswith("/") else url.path
    if not channel:
        raise ValueError(f"no channel: can://{interface}/CHANNEL (can0, a virtual bus name, a multicast group)")
    options = parse_query(url, CONNECTION_OPTIONS, "CAN")
    if options["dbc"] is None:
        raise ValueError("no DBC file: add ?dbc=FILE")
    if options["data_bitrate"] is not None and not options["fd"]:
        raise ValueError("data_bitrate needs fd=true")
    settings = BusSettings(interface, channel, options["bitrate"], options["fd"], options["data_bitrate"],
                           options["port"])
    return settings, options


def _database(options: Mapping[str, Any]) -> tuple[Any, str]:
    path = dbc.resolve(options["dbc"])
    return dbc.load(path), path.name


def _stale_limit(message: Message, options: Mapping[str, Any]) -> float | None:
    if message.cycle_time:
        return message.cycle_time / 1000.0 * options["stale_factor"]
    return options["stale_ms"] / 1000.0 if options["stale_ms"] else None


class _Target:
    """One bound point as the receive thread decodes it."""

    __slots__ = ("key", "raw", "signal", "text")

    def __init__(self, key: int, signal: str, text: bool, raw: bool) -> None:
        self.key, self.signal, self.text, self.raw = key, signal, text, raw


@register("can")
class CanDriver(Driver):
    connection_options = CONNECTION_OPTIONS
    point_options = POINT_OPTIONS
    connection_form = "`can://INTERFACE/CHANNEL?dbc=FILE[&OPTIONS]`: signals of a DBC on any python-can bus " \
                      "(socketcan, virtual, udp_multicast, ...)"
    polls, pushes = False, True

    def __init__(
        self, url: SplitResult, points_by_class: Mapping[str, Sequence[Point]], clock: Clock = SYSTEM_CLOCK
    ) -> None:
        super().__init__(url, points_by_class, clock)
        self.settings, self.options = parse_connection(url)
        self.db, self.dbc_name = _database(self.options)
        offset = self.options["id_offset"]
        self.refs: dict[int, dbc.SignalRef] = {}
        self.targets: dict[int, list[_Target]] = {}  # frame id -> its bound points
        self.limits: dict[int, float] = {}  # point key -> staleness limit in s
        self.points: dict[int, Point] = {}
        for points in points_by_class.values():
            for pt in points:
                ref = dbc.find_signal(self.db, pt.binding.address, offset, self.dbc_name)
                self.refs[pt.key], self.points[pt.key] = ref, pt
                raw = not pt.binding.options.get("dbc_scaling", True)
                self.targets.setdefault(ref.frame_id, []).append(
                    _Target(pt.key, ref.signal.name, pt.field_type == "xsd:string", raw))
                limit = _stale_limit(ref.message, self.options)
                if limit is not None and not pt.writable:  # what the gateway sends is not expected back
                    self.limits[pt.key] = limit
        self.messages: dict[int, Message] = {self.refs[k].frame_id: self.refs[k].message for k in self.refs}
        self.frame_ids = frozenset(self.targets)
        self.link: CanLink | None = None
        self._queue: asyncio.Queue[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_seen: dict[int, float] = {}
        self._stale: set[int] = set()
        self._silent_reported = False
        self._tx_values: dict[int, dict[str, Any]] = {}  # frame id -> signal values of the messages we send
        self._periodic: dict[int, Any] = {}  # frame id -> python-can periodic task

    # -- checks ----------------------------------------------------------------------------------
    @classmethod
    def validate_connection(cls, url: SplitResult) -> None:
        _, options = parse_connection(url)
        _database(options)

    @classmethod
    def validate_point(cls, url: SplitResult, point: Point) -> None:
        _, options = parse_connection(url)
        db, name = _database(options)
        ref = dbc.find_signal(db, point.binding.address, options["id_offset"], name)
        if point.field_type == "xsd:string" and not ref.signal.choices:
            raise ValueError(f"signal {ref.signal.name} has no value table in {name}: bind it to a number")
        if point.writable and (ref.message.is_multiplexed()):
            raise ValueError(f"message {ref.message.name} is multiplexed: writing its signals is not supported")
        if point.writable and ref.message.is_fd and not options["fd"]:
            raise ValueError(f"message {ref.message.name} is a CAN FD frame: writing it needs fd=true")

    @classmethod
    def point_defaults(cls, url: SplitResult, address: str, options: Mapping[str, Any]) -> dict[str, Any]:
        """The DBC's unit (when the gateway knows it), range (when it has one) and comment of the signal; no
        unit or range for a raw signal (`dbc_scaling: false`), whose counts the site scales itself."""
        from gateway.nodeset.units import UNITS

        _, connection = parse_connection(url)
        db, name = _database(connection)
        signal = dbc.find_signal(db, address, connection["id_offset"], name).signal
        out: dict[str, Any] = {"description": signal.comment} if signal.comment else {}
        if options.get("dbc_scaling") is False:
            return out
        if signal.unit and signal.unit in UNITS:
            out["unit"] = signal.unit
        low, high = signal.minimum, signal.maximum
        if low is not None and high is not None and low < high and not signal.choices:
            out["range"] = [low, high]
        return out

    @classmethod
    def validate_devices(cls, urls: Sequence[SplitResult]) -> list[tuple[int, str]]:
        """Devices on one bus must open it alike, and must not claim the same frame ids (a rack's id_offset
        that makes its frames another rack's)."""
        first: dict[tuple[str, str, int | None], tuple[int, BusSettings]] = {}
        claimed: dict[tuple[tuple[str, str, int | None], int], int] = {}
        out = []
        for i, url in enumerate(urls):
            settings, options = parse_connection(url)
            j, other = first.setdefault(settings.key, (i, settings))
            if j != i and (settings.bitrate, settings.fd, settings.data_bitrate) != \
                    (other.bitrate, other.fd, other.data_bitrate):
                out.append((i, f"{settings.describe()} is opened with bitrate={other.bitrate} fd={other.fd} "
                               f"data_bitrate={other.data_bitrate} by another device: every device on one bus "
                               f"needs the same"))
                continue
            db, name = _database(options)
            for message in db.messages:
                fid = message.frame_id + options["id_offset"]
                owner = claimed.setdefault((settings.key, fid), i)
                if owner != i:
                    out.append((i, f"frame id {fid:#x} ({message.name} of {name} at id_offset="
                                   f"{options['id_offset']}) is also a frame of the device at {urls[owner].geturl()} "
                                   f"on {settings.describe()}: give each device its own id_offset"))
                    break
        return out

    @classmethod
    async def simulate(cls, devices: Sequence[DeviceConfig], clock: Clock) -> Simulation:
        from gateway.drivers.canbus.simulators.bms import BmsSimulation  # loaded only when simulating

        sim = BmsSimulation(devices)
        await sim.start()
        return sim

    # -- receiving -------------------------------------------------------------------------------
    async def start(self) -> None:
        self.link = CanLink.acquire(self.settings)

    async def stop(self) -> None:
        link, self.link = self.link, None
        if link is None:
            return
        link.unsubscribe(self)
        for task in self._periodic.values():
            try:
                await link.in_worker(task.stop)
            except DriverError as exc:
                log.warning("%s: stopping a periodic send: %s", self.url.geturl(), exc)
        self._periodic.clear()
        await link.release()

    async def run(self, sink: PushSink) -> None:
        assert self.link is not None, "driver not started"
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        await self.link.ensure_open()
        if self._periodic:  # a failed link took its periodic tasks with it: never resumed unasked
            log.warning("%s: periodic sends stopped with the link; write again to resume", self.url.geturl())
            self._periodic.clear()
        self.link.subscribe(self)
        started = self.clock.monotonic()
        self._silent_reported = False
        check = min(self.limits.values(), default=1.0) / 4
        check = min(STALE_CHECK_S[1], max(STALE_CHECK_S[0], check))
        try:
            while True:
                try:
                    async with asyncio.timeout(check):
                        batch = await self._queue.get()
                except TimeoutError:
                    batch = None
                if isinstance(batch, DriverError):
                    raise batch
                if batch:
                    await self._deliver(batch, sink)
                await self._check_stale(sink, started)
        finally:
            if self.link is not None:
                self.link.unsubscribe(self)

    def decode(self, msg: can.Message) -> tuple[int, float, dict[int, Reading]]:
        """In the receive thread: one frame to readings of its points (frame id, arrival stamp, readings)."""
        fid = msg.arbitration_id
        message = self.messages[fid]
        targets = self.targets[fid]
        stamp = datetime.fromtimestamp(msg.timestamp, UTC) if msg.timestamp else None
        out: dict[int, Reading] = {}
        try:
            scaled = message.decode(msg.data, decode_choices=True, scaling=True)
            raw = message.decode(msg.data, decode_choices=False, scaling=False) if any(t.raw for t in targets) \
                else None
        except Exception:  # cantools raises DecodeError, ValueError, KeyError (unknown multiplexer value)
            return fid, -1.0, {t.key: Reading(None, _S.BadDataEncodingInvalid, stamp) for t in targets}
        for t in targets:
            source = raw if t.raw else scaled
            if source is None or t.signal not in source:
                continue  # a multiplexed signal this frame does not carry
            value = source[t.signal]
            if isinstance(value, NamedSignalValue):
                value = value.name if t.text else value.value
            elif t.text:
                value = str(value)
            if isinstance(value, float) and not math.isfinite(value):
                out[t.key] = Reading(value, _S.Good, stamp)  # the value path turns it BadSensorFailure
                continue
            out[t.key] = Reading(value, _S.Good, stamp)
        return fid, 0.0, out

    def post(self, items: list[Any]) -> None:
        loop, queue = self._loop, self._queue
        if loop is not None and queue is not None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, items)
            except RuntimeError:  # the loop closed
                pass

    def failed(self, error: DriverError) -> None:
        self.post(error)  # type: ignore[arg-type]

    async def _deliver(self, batch: list[tuple[int, float, dict[int, Reading]]], sink: PushSink) -> None:
        now = self.clock.monotonic()
        merged: dict[int, Reading] = {}
        for _, ok, readings in batch:
            self.requests += 1
            if ok < 0:
                self.request_errors += 1
            for key, reading in readings.items():
                merged[key] = reading  # the latest frame wins
                if reading.status == _S.Good:
                    self._last_seen[key] = now
                    self._stale.discard(key)
        self._silent_reported = False
        await sink.deliver(merged)

    async def _check_stale(self, sink: PushSink, started: float) -> None:
        if not self.limits:
            return
        now = self.clock.monotonic()
        newly = [k for k, limit in self.limits.items()
                 if k not in self._stale and now - self._last_seen.get(k, started) > limit]
        if newly:
            self._stale.update(newly)
            await sink.deliver({k: Reading(None, _S.BadCommunicationError) for k in newly})
        if len(self._stale) == len(self.limits) and not self._silent_reported:
            self._silent_reported = True
            ids = ", ".join(f"{fid:#x}" for fid in sorted(self.frame_ids))
            await sink.lost(f"no frame {ids} on {self.settings.describe()} within "
                            f"{max(self.limits.values()):g} s")

    # -- writing ---------------------------------------------------------------------------------
    async def write(self, point: Point, value: Any) -> Any:
        if self.link is None:
            raise DriverError("driver not started", _S.BadCommunicationError)
        ref = self.refs[point.key]
        message, fid = ref.message, ref.frame_id
        values = self._tx_values.get(fid) or {s.name: _initial(s) for s in message.signals}
        candidate = {**values, ref.signal.name: value}
        scaling = point.binding.options.get("dbc_scaling", True)
        try:
            data = message.encode(candidate, scaling=scaling, strict=True)
        except Exception as exc:  # cantools: EncodeError (out of range), KeyError (no such choice)
            raise DriverError(f"{point.name}: {value!r} does not encode into {message.name}.{ref.signal.name}: "
                              f"{exc}", _S.BadOutOfRange) from exc
        frame = can.Message(arbitration_id=fid, data=data, is_extended_id=message.is_extended_frame,
                            is_fd=message.is_fd,
                            bitrate_switch=message.is_fd and self.settings.data_bitrate is not None)
        self.requests += 1
        try:
            if point.binding.options.get("send", "once") == "periodic":
                task = self._periodic.get(fid)
                if task is None:
                    period_ms = point.binding.options.get("period_ms") or message.cycle_time
                    if not period_ms:
                        raise DriverError(f"{point.name}: {message.name} has no cycle time in the DBC: set PeriodMs",
                                          _S.BadConfigurationError)
                    self._periodic[fid] = await self.link.send_periodic(frame, period_ms / 1000.0)
                else:
                    await self.link.in_worker(lambda: task.modify_data(frame))
            else:
                await self.link.send(frame)
        except DriverError:
            self.request_errors += 1
            raise
        self._tx_values[fid] = candidate
        return None


def _initial(signal: Any) -> Any:
    """A signal's value before anything was written: its DBC initial value, else 0 if allowed, else its minimum."""
    if signal.initial is not None:
        return signal.initial
    low, high = signal.minimum, signal.maximum
    if (low is None or low <= 0) and (high is None or high >= 0):
        return 0
    return low if low is not None else high
