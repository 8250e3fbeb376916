"""The one interface every protocol driver implements (modelled on python-can's BusABC).

A driver owns the I/O for ONE device connection. The gateway gives it the device's points
(bound variables) grouped by scan class; the driver plans its requests per scan class once,
then the gateway's poller calls `read(scan_class)` on the schedule and `write()` for the write
path. Scaling, change detection, status codes and diagnostics nodes are the gateway's job, so a
driver deals only in raw field values.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import SplitResult

from asyncua import ua

from gateway.clock import SYSTEM_CLOCK, Clock

XSD_TYPES = (
    "xsd:boolean", "xsd:byte", "xsd:unsignedByte", "xsd:short", "xsd:unsignedShort", "xsd:int",
    "xsd:unsignedInt", "xsd:long", "xsd:unsignedLong", "xsd:float", "xsd:double", "xsd:string",
)


class DriverError(Exception):
    """A field request failed; `status` is the OPC UA status the affected values get."""

    def __init__(self, message: str, status: int = ua.StatusCodes.BadCommunicationError) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Binding:
    """A variable's field binding, as written in its properties (see README, Binding reference)."""

    address: str
    field_type: str | None = None  # xsd:* name; None = derived from the variable's DataType
    byte_order: str | None = None  # "big" | "little"; None = the device's default
    word_order: str | None = None
    bit: int | None = None
    length: int | None = None  # string length in bytes
    scale: float = 1.0
    offset: float = 0.0
    scan_class: str = "MediumSpeed"
    deadband: float = 0.0


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


class Driver(abc.ABC):
    """Base class of all drivers; subclasses register with `@register("scheme", ...)`."""

    schemes: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self, url: SplitResult, points_by_class: Mapping[str, Sequence[Point]], clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.url = url
        self.points_by_class = points_by_class
        self.clock = clock

    @classmethod
    def validate_connection(cls, url: SplitResult) -> None:
        """Raise ValueError naming what is wrong with a connection URI."""

    @classmethod
    def validate_point(cls, binding: Binding, field_type: str) -> None:
        """Raise ValueError naming what is wrong with a variable's binding for this protocol."""

    async def start(self) -> None:
        """Open the connection; failures are reported by read/write, not raised here."""

    async def stop(self) -> None:
        """Close the connection; must be safe to call twice."""

    @abc.abstractmethod
    async def read(self, scan_class: str) -> Mapping[int, Reading]:
        """Read every point of one scan class; raise DriverError when the device cannot be reached."""

    @abc.abstractmethod
    async def write(self, point: Point, value: Any) -> Any:
        """Write a raw value; return the value read back, or None. Raise DriverError on failure."""
