"""The one interface every protocol driver implements (modelled on python-can's BusABC).

A driver owns the I/O for ONE device connection. The gateway gives it the device's points
(bound variables) grouped by scan class. Values reach the gateway in one of two ways, or both:
- polled (`polls`): the driver plans its requests per scan class once, then the device runner
  calls `read(scan_class)` on the schedule;
- pushed (`pushes`): the runner calls `run(sink)`, and the driver hands readings to the sink as
  frames or messages arrive (CAN, MQTT) until its link fails; the runner then marks the device's
  values Bad, backs off as it does for a failed scan, and calls `run` again.
`write()` serves the write path either way. Scaling, change detection, status codes and
diagnostics nodes are the gateway's job, so a driver deals only in raw field values. Each driver
declares its own connection options and binding properties (`connection_options`,
`point_options`, see options.py); the common binding is `Binding`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol
from urllib.parse import SplitResult

from asyncua import ua

from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.drivers.options import Option

if TYPE_CHECKING:
    from gateway.bindings import DeviceConfig

XSD_TYPES = (
    "xsd:boolean", "xsd:byte", "xsd:unsignedByte", "xsd:short", "xsd:unsignedShort", "xsd:int",
    "xsd:unsignedInt", "xsd:long", "xsd:unsignedLong", "xsd:float", "xsd:double", "xsd:string",
)


def os_error_text(exc: OSError) -> str:
    """What went wrong on a socket or port, in words ("connection refused"): asyncio's connect errors
    carry the errno with a text of their own ("Connect call failed ('127.0.0.1', 502)")."""
    reason = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))
    return reason[0].lower() + reason[1:] if reason else type(exc).__name__


class DriverError(Exception):
    """A field request failed; `status` is the OPC UA status the affected values get."""

    def __init__(self, message: str, status: int = ua.StatusCodes.BadCommunicationError) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Binding:
    """A variable's field binding, as written in its properties (docs/bindings.md): the properties every
    driver shares, and in `options` those its driver declares (`Driver.point_options`), parsed, by key."""

    address: str
    field_type: str | None = None  # xsd:* name; None = derived from the variable's DataType
    scale: float = 1.0
    offset: float = 0.0
    scan_class: str = "MediumSpeed"
    deadband: float = 0.0
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Point:
    """A bound variable as a driver sees it."""

    key: int
    name: str  # browse path, for messages
    binding: Binding
    field_type: str  # resolved xsd:* type
    writable: bool


@dataclass(slots=True)
class Reading:
    value: Any = None
    status: int = ua.StatusCodes.Good
    source_time: datetime | None = None


@dataclass(slots=True)
class DeviceHealth:
    """What a device object shows under Diagnostics; the poller updates the counters."""

    state: str = "Stopped"
    last_error: str = ""
    requests: int = 0
    errors: int = 0
    response_ms: float = 0.0
    last_success: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Simulation(Protocol):
    """Simulated field devices a driver started for `gateway --simulate`."""

    #: Where the gateway finds each simulated device instead of its configured connection, by device NodeId.
    urls: dict[ua.NodeId, SplitResult]

    async def stop(self) -> None: ...


class PushSink(Protocol):
    """Where a pushing driver delivers (the device runner)."""

    async def deliver(self, readings: Mapping[int, Reading]) -> None:
        """Readings by point key, as they arrive; a Good one makes the device Connected."""

    async def lost(self, message: str) -> None:
        """The device fell silent although the link is up (every message stale): Disconnected, with why."""


class Driver:
    """Base class of all drivers; subclasses register with `@register("scheme", ...)`."""

    schemes: ClassVar[tuple[str, ...]] = ()
    #: Query options of the Connection URI and binding properties beyond the common ones (options.py).
    connection_options: ClassVar[tuple[Option, ...]] = ()
    point_options: ClassVar[tuple[Option, ...]] = ()
    #: One line for the table of schemes in docs/bindings.md: the Connection form, and what it is.
    connection_form: ClassVar[str] = ""
    #: How values arrive: `read` on the scan schedule, `run` delivering as they come, or both.
    polls: ClassVar[bool] = True
    pushes: ClassVar[bool] = False

    def __init__(
        self, url: SplitResult, points_by_class: Mapping[str, Sequence[Point]], clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.url = url
        self.points_by_class = points_by_class
        self.clock = clock
        # Field requests issued and failed, shown in the device's diagnostics. The driver counts them, as
        # one read may take many requests (a Modbus device: one per block); every request that raised
        # DriverError must be counted as failed.
        self.requests = 0
        self.request_errors = 0

    @classmethod
    def validate_connection(cls, url: SplitResult) -> None:
        """Raise ValueError naming what is wrong with a connection URI."""

    @classmethod
    def validate_point(cls, url: SplitResult, point: Point) -> None:
        """Raise ValueError naming what is wrong with a variable's binding on this connection.

        Called after validate_connection accepted `url`, so the device options are known (a
        Modbus device's addressing base decides whether holding/0 exists).
        """

    @classmethod
    def point_defaults(cls, url: SplitResult, address: str, options: Mapping[str, Any]) -> dict[str, Any]:
        """What the device's own description says of a point, as YAML site keys (`unit`, `range`,
        `description`): the YAML compiler uses them where the site states nothing. `options` are the
        variable's driver options as written. A CAN driver reads them from the DBC. Raise ValueError for
        an address it cannot resolve."""
        return {}

    @classmethod
    def validate_devices(cls, urls: Sequence[SplitResult]) -> list[tuple[int, str]]:
        """Problems between devices of this driver (each URL already accepted by validate_connection):
        (index into `urls` of the device at fault, message). Two devices on one serial port that
        disagree on its line settings, for example."""
        return []

    @classmethod
    def point_warnings(cls, url: SplitResult, points: Sequence[Point]) -> list[tuple[int, str]]:
        """What is suspect but servable in one device's points, as (point key, message): bindings
        that overlap, for example. Printed by `nodeset check` and logged at start."""
        return []

    @classmethod
    async def simulate(cls, devices: Sequence[DeviceConfig], clock: Clock) -> Simulation:
        """Start simulators of these devices (all of this driver) for `gateway --simulate`."""
        raise NotImplementedError(f"the {', '.join(cls.schemes)} driver has no simulator")

    def call_timeout(self, default_s: float) -> float | None:
        """How long one `read` or `write` may take before the gateway gives up on it; None: no limit.

        A driver that bounds each of its requests itself (and may wait its turn on a link shared
        with other devices) returns None, so waiting for other devices is not taken for a dead one.
        """
        return default_s

    async def start(self) -> None:
        """Open the connection; failures are reported by read/write, not raised here."""

    async def stop(self) -> None:
        """Close the connection; must be safe to call twice."""

    async def read(self, scan_class: str) -> Mapping[int, Reading]:
        """Read every point of one scan class; raise DriverError when the device cannot be reached.
        Polling drivers (`polls`) implement it."""
        raise NotImplementedError(f"the {', '.join(self.schemes)} driver does not poll")

    async def run(self, sink: PushSink) -> None:
        """Deliver readings to `sink` as they arrive, for ever; raise DriverError (or OSError) when the link
        fails. Cancellation is the stop. Pushing drivers (`pushes`) implement it; they also mark points
        whose data went stale (a message not seen in time) by delivering a Bad Reading with no value."""
        raise NotImplementedError(f"the {', '.join(self.schemes)} driver does not push")

    async def write(self, point: Point, value: Any) -> Any:
        """Write a raw value; return the value read back, or None. Raise DriverError on failure. A read-only
        driver (ping) leaves it: its validate_point refuses writable variables, so this is never reached."""
        raise DriverError(f"{point.name}: the {', '.join(self.schemes)} driver takes no writes",
                          ua.StatusCodes.BadNotWritable)
