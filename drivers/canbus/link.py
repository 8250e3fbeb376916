"""One python-can bus per CAN channel, shared by the devices on it (racks of one BMS, nodes of one bus).

The bus is opened, written and closed in the link's worker thread (gateway.drivers.worker), and read
by a receive thread of its own, so the event loop never waits on python-can. The receive thread
hands each frame to the subscriber of its frame id, which decodes it in that thread (cantools work
stays off the event loop) and queues the result for its device; a receive error fails the link for
every device on it, and the next device that runs opens it again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import can
from asyncua import ua

from gateway.drivers.base import DriverError
from gateway.drivers.worker import BlockingWorker

log = logging.getLogger(__name__)

OPEN_WITHIN_S = 5.0
SEND_WITHIN_S = 1.0
CLOSE_WITHIN_S = 1.0
RECEIVE_POLL_S = 0.1  # how long one recv waits: the receive thread's reaction time to a stop
BATCH = 256  # frames taken from the bus per hand-over, so a busy bus costs few wake-ups of the loop


@dataclass(frozen=True, slots=True)
class BusSettings:
    interface: str
    channel: str
    bitrate: int | None = None
    fd: bool = False
    data_bitrate: int | None = None
    port: int | None = None  # udp_multicast

    @property
    def key(self) -> tuple[str, str, int | None]:
        """The physical link: devices with the same key share one bus."""
        return (self.interface, self.channel, self.port)

    def bus_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"interface": self.interface, "channel": self.channel}
        for name in ("bitrate", "data_bitrate", "port"):
            if getattr(self, name) is not None:
                kwargs[name] = getattr(self, name)
        if self.fd:
            kwargs["fd"] = True
        return kwargs

    def describe(self) -> str:
        return f"{self.interface} channel {self.channel}"


class Subscriber(Protocol):
    """What a device gives the link: its frame ids, a decoder run in the receive thread, and where the results
    go (`post`, thread-safe); `failed` is told when the link fails."""

    frame_ids: frozenset[int]

    def decode(self, msg: can.Message) -> Any: ...

    def post(self, items: list[Any]) -> None: ...

    def failed(self, error: DriverError) -> None: ...


class CanLink:
    _links: ClassVar[dict[tuple[str, str, int | None], CanLink]] = {}

    def __init__(self, settings: BusSettings) -> None:
        self.settings = settings
        self.users = 0
        self.bus: can.BusABC | None = None
        self.worker: BlockingWorker | None = None
        self._subscribers: dict[int, list[Subscriber]] = {}
        self._receiver: threading.Thread | None = None
        self._stop = threading.Event()
        self._sub_lock = threading.Lock()
        self._open_lock: asyncio.Lock | None = None  # made in the loop that first opens the link

    @classmethod
    def acquire(cls, settings: BusSettings) -> CanLink:
        link = cls._links.get(settings.key)
        if link is None:
            link = cls._links[settings.key] = CanLink(settings)
        link.users += 1
        return link

    async def release(self) -> None:
        self.users -= 1
        if self.users <= 0:
            if CanLink._links.get(self.settings.key) is self:
                del CanLink._links[self.settings.key]
            await self._close()

    # -- open and close --------------------------------------------------------------------
    async def ensure_open(self) -> None:
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if self.bus is not None:
                return
            self.worker = BlockingWorker(f"CAN {self.settings.describe()}")
            try:
                bus = await self.worker.call(lambda: can.Bus(**self.settings.bus_kwargs()), deadline_s=OPEN_WITHIN_S)
            except DriverError:
                await self.worker.close(CLOSE_WITHIN_S)
                raise
            except (can.CanError, OSError, ValueError, ImportError) as exc:
                await self.worker.close(CLOSE_WITHIN_S)
                raise DriverError(f"cannot open {self.settings.describe()}: {exc}",
                                  ua.StatusCodes.BadCommunicationError) from exc
            self.bus = bus
            self._stop = threading.Event()
            self._receiver = threading.Thread(target=self._receive, args=(bus, self._stop),
                                              name=f"CAN receive {self.settings.describe()}", daemon=True)
            self._receiver.start()
            log.info("CAN %s open", self.settings.describe())

    async def _close(self) -> None:
        bus, worker, receiver = self.bus, self.worker, self._receiver
        self.bus, self.worker, self._receiver = None, None, None
        self._stop.set()
        if worker is not None:
            # The receive thread stops within RECEIVE_POLL_S; the bus closes after it (python-can's shutdown
            # while a recv runs is not safe on every interface).
            def shut() -> None:
                if receiver is not None:
                    receiver.join(RECEIVE_POLL_S * 5)
                if bus is not None:
                    bus.shutdown()

            await worker.close(CLOSE_WITHIN_S, last=shut)

    # -- subscriptions ---------------------------------------------------------------------
    def subscribe(self, sub: Subscriber) -> None:
        with self._sub_lock:
            for fid in sub.frame_ids:
                self._subscribers.setdefault(fid, []).append(sub)

    def unsubscribe(self, sub: Subscriber) -> None:
        with self._sub_lock:
            for fid in sub.frame_ids:
                subs = self._subscribers.get(fid, [])
                if sub in subs:
                    subs.remove(sub)
                if not subs:
                    self._subscribers.pop(fid, None)

    def _receive(self, bus: can.BusABC, stop: threading.Event) -> None:
        """The receive thread: frames to their subscribers' decoders, results posted in batches."""
        while not stop.is_set():
            try:
                msg = bus.recv(RECEIVE_POLL_S)
                frames: list[can.Message] = []
                while msg is not None:
                    frames.append(msg)
                    if len(frames) >= BATCH:
                        break
                    msg = bus.recv(0)
            except Exception as exc:  # python-can raises CanOperationError, OSError, interface errors
                if stop.is_set():
                    return
                self._fail(bus, DriverError(f"{self.settings.describe()}: receiving failed: {exc}",
                                            ua.StatusCodes.BadCommunicationError))
                return
            if not frames:
                continue
            out: dict[Subscriber, list[Any]] = {}
            with self._sub_lock:
                routes = [(m, list(self._subscribers.get(m.arbitration_id, ()))) for m in frames
                          if not m.is_error_frame]
            for msg, subs in routes:
                for sub in subs:
                    try:
                        out.setdefault(sub, []).append(sub.decode(msg))
                    except Exception:  # a decoder bug must not end the link for every device on it
                        log.exception("CAN %s: decoding frame %#x failed", self.settings.describe(),
                                      msg.arbitration_id)
            for sub, items in out.items():
                sub.post(items)

    def _fail(self, bus: can.BusABC, error: DriverError) -> None:
        log.warning("%s", error)
        if self.bus is bus:
            self.bus = None  # the next ensure_open opens it again; this one is shut by its worker
            worker, self.worker = self.worker, None
            if worker is not None:
                worker.close_soon(last=lambda: _shutdown_quietly(bus))
        with self._sub_lock:
            subs = {s for group in self._subscribers.values() for s in group}
        for sub in subs:
            sub.failed(error)

    # -- sending ---------------------------------------------------------------------------
    async def send(self, msg: can.Message) -> None:
        bus, worker = self._open_parts()
        try:
            await worker.call(bus.send, msg, SEND_WITHIN_S, deadline_s=SEND_WITHIN_S + 0.5)
        except can.CanError as exc:
            raise DriverError(f"{self.settings.describe()}: sending {msg.arbitration_id:#x} failed: {exc}",
                              ua.StatusCodes.BadCommunicationError) from exc

    async def send_periodic(self, msg: can.Message, period_s: float) -> Any:
        """python-can's periodic send (its own thread or the interface's hardware); returns the task."""
        bus, worker = self._open_parts()
        try:
            return await worker.call(bus.send_periodic, msg, period_s, deadline_s=SEND_WITHIN_S)
        except can.CanError as exc:
            raise DriverError(f"{self.settings.describe()}: periodic send of {msg.arbitration_id:#x} failed: {exc}",
                              ua.StatusCodes.BadCommunicationError) from exc

    async def in_worker(self, fn: Callable[[], Any]) -> Any:
        _, worker = self._open_parts()
        return await worker.call(fn, deadline_s=SEND_WITHIN_S)

    def _open_parts(self) -> tuple[can.BusABC, BlockingWorker]:
        bus, worker = self.bus, self.worker
        if bus is None or worker is None:
            raise DriverError(f"{self.settings.describe()} is not open", ua.StatusCodes.BadCommunicationError)
        return bus, worker


def _shutdown_quietly(bus: can.BusABC) -> None:
    try:
        bus.shutdown()
    except Exception as exc:
        log.debug("closing a failed CAN bus: %s", exc)
