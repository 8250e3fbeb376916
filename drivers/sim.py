"""`sim://` devices: values from deterministic functions of time, like Kepware's simulator driver.

FieldAddress is a function with query parameters:
  constant?value=5              sine?period=60&amplitude=1&offset=0&phase=0
  ramp?min=0&max=100&period=60  square?period=10&low=0&high=1
  randomwalk?seed=1&step=1&min=-inf&max=inf&interval=1   (seeded; same seed, same walk)
  setpoint?initial=0            (writable: holds what is written)
Time is measured from the driver's start on the gateway's clock, so a steppable clock gives
reproducible values. `latency_ms` in the connection query delays every request (for tests and
demos of slow devices); `SimDriver.instances[name].offline = True` makes a device stop answering.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import SplitResult, parse_qsl, urlsplit

from asyncua import ua

from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.drivers.base import Driver, DriverError, Point, Reading, Simulation
from gateway.drivers.options import Option, parse_query
from gateway.drivers.registry import register

if TYPE_CHECKING:
    from gateway.bindings import DeviceConfig

_PARAMS: dict[str, dict[str, float]] = {
    "constant": {"value": 0.0},
    "sine": {"period": 60.0, "amplitude": 1.0, "offset": 0.0, "phase": 0.0},
    "ramp": {"min": 0.0, "max": 100.0, "period": 60.0},
    "square": {"period": 10.0, "low": 0.0, "high": 1.0},
    "randomwalk": {"seed": 0.0, "step": 1.0, "min": -math.inf, "max": math.inf, "interval": 1.0, "start": 0.0},
    "setpoint": {"initial": 0.0},
}


def parse_function(address: str) -> tuple[str, dict[str, Any]]:
    """Split 'sine?period=10' into ('sine', {...}) with defaults; raise ValueError on anything unknown."""
    parts = urlsplit(address)
    name = parts.path.strip("/")
    if name not in _PARAMS:
        raise ValueError(f"unknown sim function '{name}' (known: {', '.join(_PARAMS)})")
    params: dict[str, Any] = dict(_PARAMS[name])
    for key, raw in parse_qsl(parts.query, keep_blank_values=True):
        if key not in params:
            raise ValueError(f"sim function '{name}' has no parameter '{key}' (has: {', '.join(params)})")
        if name in ("constant", "setpoint") and key in ("value", "initial"):
            params[key] = _literal(raw)
            continue
        try:
            params[key] = float(raw)
        except ValueError:
            raise ValueError(f"sim parameter {key}='{raw}' is not a number") from None
    for key in ("period", "interval"):
        if key in params and params[key] <= 0:
            raise ValueError(f"sim parameter {key} must be > 0")
    return name, params


def _literal(raw: str) -> Any:
    low = raw.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return float(raw)
    except ValueError:
        return raw


class _Walk:
    """A seeded random walk advanced in whole intervals, so the value is a function of time."""

    def __init__(self, p: dict[str, Any]) -> None:
        self.p = p
        self.rng = random.Random(int(p["seed"]))
        self.n = 0
        self.value = float(p["start"])

    def at(self, t: float) -> float:
        target = int(t // self.p["interval"])
        while self.n < target:
            self.value = min(self.p["max"], max(self.p["min"], self.value + self.rng.uniform(-1, 1) * self.p["step"]))
            self.n += 1
        return self.value


_TWO_PI = 2 * math.pi
_GOOD = ua.StatusCodes.Good


def _signal(name: str, p: dict[str, Any]) -> Callable[[float], Any]:
    # Parameters bound as locals: a value costs no dict lookups. Each formula is evaluated in the same
    # order as written out (2 * pi * t / period, not t * (2 * pi / period)), so a value is the same double.
    if name == "constant":
        value = p["value"]
        return lambda t: value
    if name == "sine":
        offset, amplitude, period, phase = p["offset"], p["amplitude"], p["period"], p["phase"]
        sin = math.sin
        return lambda t: offset + amplitude * sin(_TWO_PI * t / period + phase)
    if name == "ramp":
        low, span, period = p["min"], p["max"] - p["min"], p["period"]
        return lambda t: low + span * ((t % period) / period)
    if name == "square":
        high, low, period = p["high"], p["low"], p["period"]
        half = period / 2
        return lambda t: high if (t % period) < half else low
    if name == "randomwalk":
        return _Walk(p).at
    raise AssertionError(name)


class _AlreadySimulated:
    def __init__(self) -> None:
        self.urls: dict[ua.NodeId, SplitResult] = {}

    async def stop(self) -> None:
        pass


_CONNECTION_OPTIONS = (
    Option("latency_ms", "number", "delay of every request (tests and demos of slow devices)", default=0.0, low=0),
)


@register("sim")
class SimDriver(Driver):
    instances: ClassVar[dict[str, SimDriver]] = {}
    connection_options = _CONNECTION_OPTIONS
    connection_form = "`sim://NAME[?latency_ms=N]`: values from functions of time, see below"

    def __init__(
        self, url: SplitResult, points_by_class: Mapping[str, Sequence[Point]], clock: Clock = SYSTEM_CLOCK
    ) -> None:
        super().__init__(url, points_by_class, clock)
        self.latency = parse_query(url, _CONNECTION_OPTIONS, "sim")["latency_ms"] / 1000.0
        self.offline = False
        self._t0 = clock.monotonic()
        self._held: dict[int, Any] = {}
        # Per scan class, its points' keys and signals (None: a setpoint, read from _held).
        self._plan: dict[str, list[tuple[int, Callable[[float], Any] | None]]] = {}
        for scan_class, points in points_by_class.items():
            plan = self._plan.setdefault(scan_class, [])
            for pt in points:
                name, params = parse_function(pt.binding.address)
                if name == "setpoint":
                    self._held[pt.key] = params["initial"]
                    plan.append((pt.key, None))
                else:
                    plan.append((pt.key, _signal(name, params)))
        self.name = url.netloc or url.path
        SimDriver.instances[self.name] = self

    @classmethod
    def validate_connection(cls, url: SplitResult) -> None:
        parse_query(url, _CONNECTION_OPTIONS, "sim")

    @classmethod
    def validate_point(cls, url: SplitResult, point: Point) -> None:
        name, _ = parse_function(point.binding.address)
        if point.writable and name != "setpoint":
            raise ValueError(f"sim function '{name}' is a signal; only 'setpoint' takes writes (or make it read-only)")

    @classmethod
    async def simulate(cls, devices: Sequence[DeviceConfig], clock: Clock) -> Simulation:
        return _AlreadySimulated()  # sim:// devices are simulations already

    async def _answer(self) -> None:
        self.requests += 1
        if self.latency:
            await self.clock.sleep(self.latency)
        if self.offline:
            self.request_errors += 1
            raise DriverError(f"sim device {self.name} is offline", ua.StatusCodes.BadCommunicationError)

    async def read(self, scan_class: str) -> Mapping[int, Reading]:
        await self._answer()
        t = self.clock.monotonic() - self._t0
        now = self.clock.now()
        held = self._held
        return {key: Reading(held[key] if signal is None else signal(t), _GOOD, now)
                for key, signal in self._plan.get(scan_class, ())}

    async def write(self, point: Point, value: Any) -> Any:
        await self._answer()
        if point.key not in self._held:
            raise DriverError(
                f"{point.name}: sim address '{point.binding.address}' is a signal, not a setpoint",
                ua.StatusCodes.BadNotWritable,
            )
        self._held[point.key] = value
        return value

    async def stop(self) -> None:
        if SimDriver.instances.get(self.name) is self:
            del SimDriver.instances[self.name]
