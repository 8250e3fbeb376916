"""Simulate every Modbus device of a site: `gateway --nodeset site.xml --simulate`.

For each link of the site (a host:port, or a serial port) one pymodbus server listens on loopback
and serves every unit behind that link, with exactly the registers the site binds. A device whose
`Simulator` property names a physical model (physics.py) gets its variables driven by that model;
any other device holds what is written to it, and its read-only variables with an EURange move
slowly inside the range, so a client sees live values. Serial (RTU) devices are simulated as RTU
over TCP: the frames are the same, only the wire differs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit

from asyncua import ua

from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.drivers.base import Point
from gateway.drivers.modbus.address import BIT_TABLES, DeviceOptions, parse_connection
from gateway.drivers.modbus.codec import decode, encode
from gateway.drivers.modbus.driver import FieldLayout, layout_of
from gateway.drivers.modbus.simulators.server import SimulatorServer, UnitMemory
from gateway.drivers.simulators.physics import Model, Plant, parse_model

if TYPE_CHECKING:
    from gateway.bindings import BoundVariable, DeviceConfig

log = logging.getLogger(__name__)

TICK_S = 0.1
_SERIAL_ONLY = {"baud", "parity", "stopbits", "bytesize"}
_INT_TYPES = {"xsd:byte", "xsd:unsignedByte", "xsd:short", "xsd:unsignedShort", "xsd:int", "xsd:unsignedInt",
              "xsd:long", "xsd:unsignedLong"}


def free_tcp_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class SimVariable:
    var: BoundVariable
    layout: FieldLayout
    motion_period_s: float = 0.0  # > 0: a read-only value that moves inside its EURange


@dataclass
class SimulatedDevice:
    config: DeviceConfig
    options: DeviceOptions
    memory: UnitMemory
    variables: dict[str, SimVariable] = field(default_factory=dict)
    model: Model | None = None

    def get(self, name: str) -> Any:
        """A variable's engineering value as the gateway would read it."""
        sv = self.variables[name]
        lay, b = sv.layout, sv.var.binding
        data = self.memory.get(lay.span.table, lay.span.offset, lay.span.count)
        if lay.span.table in BIT_TABLES:
            return bool(data[0])
        raw = decode(data, lay.field_type, lay.byte_order, lay.word_order, lay.bit, lay.length)
        if isinstance(raw, bool) or isinstance(raw, str):
            return raw
        return raw * b.scale + b.offset

    def set(self, name: str, value: Any) -> None:
        """Put an engineering value into the registers (scale and offset undone, as the device would hold it)."""
        sv = self.variables[name]
        lay, b = sv.layout, sv.var.binding
        span = lay.span
        if span.table in BIT_TABLES:
            self.memory.set(span.table, span.offset, [1 if value else 0])
            return
        raw = value
        if not isinstance(value, bool | str):
            raw = (value - b.offset) / b.scale
            if lay.field_type in _INT_TYPES:
                raw = round(raw)
        current = self.memory.get(span.table, span.offset, span.count) if lay.bit is not None else None
        words = encode(raw, lay.field_type, lay.byte_order, lay.word_order, lay.bit, lay.length, current=current)
        self.memory.set(span.table, span.offset, words)


class SiteSimulation:
    """The simulators of a site's Modbus devices; `urls` says where the gateway finds each device."""

    def __init__(self, devices: Sequence[DeviceConfig], clock: Clock = SYSTEM_CLOCK, motion: bool = True,
                 host: str = "127.0.0.1") -> None:
        self.clock = clock
        self.motion = motion
        self.host = host
        self.devices: dict[str, SimulatedDevice] = {}
        self.servers: dict[tuple[str, str, int], SimulatorServer] = {}
        self.urls: dict[ua.NodeId, SplitResult] = {}
        self._links: dict[tuple[str, str, int], dict[int, UnitMemory]] = {}
        self._task: asyncio.Task[None] | None = None
        self._t = 0.0
        self._last_motion = -math.inf
        models: list[Model] = []
        for cfg in devices:
            options = parse_connection(cfg.url)
            units = self._links.setdefault(options.link_key, {})
            if options.unit in units:
                raise ValueError(f"device {cfg.name}: unit {options.unit} on {cfg.connection} is used by another "
                                 f"device of the site")
            memory = units[options.unit] = UnitMemory(options.unit)
            dev = SimulatedDevice(cfg, options, memory)
            for i, var in enumerate(cfg.variables):
                point = Point(i, var.name, var.binding, var.field_type, var.writable)
                lay = layout_of(i, point, options)
                memory.define(lay.span.table, lay.span.offset, lay.span.count)
                period = 30.0 + (i * 7.0) % 60.0 if (not var.writable and var.eurange) else 0.0
                dev.variables[var.name] = SimVariable(var, lay, period)
            simulator = cfg.simulator
            if simulator:
                try:
                    dev.model = parse_model(simulator)
                except ValueError as exc:
                    raise ValueError(f"device {cfg.name}: Simulator '{simulator}': {exc}") from None
                models.append(dev.model)
            self.devices[cfg.name] = dev
            self._initial_values(dev)
        self.plant = Plant(models)
        self._write_outputs()

    def _initial_values(self, dev: SimulatedDevice) -> None:
        for name, sv in dev.variables.items():
            var = sv.var
            if var.vtype == ua.VariantType.String:
                value: Any = dev.config.name[: sv.layout.length or 0]
            elif var.vtype == ua.VariantType.Boolean:
                value = False
            elif var.eurange and not var.writable:
                value = (var.eurange[0] + var.eurange[1]) / 2.0
            elif var.eurange:
                value = min(max(0.0, var.eurange[0]), var.eurange[1])
            else:
                value = 0
            self._set_quietly(dev, name, value)

    def _set_quietly(self, dev: SimulatedDevice, name: str, value: Any) -> None:
        try:
            dev.set(name, value)
        except (ValueError, TypeError) as exc:  # a value the field type cannot hold: keep the registers
            log.debug("simulator %s/%s: %s", dev.config.name, name, exc)

    def device(self, name: str) -> SimulatedDevice:
        return self.devices[name]

    # -- stepping ------------------------------------------------------------------------------
    def step(self, dt: float) -> None:
        """Advance the plant by dt seconds: inputs from the registers, models, outputs to the registers."""
        self._t += dt
        for dev in self.devices.values():
            if dev.model is None:
                continue
            for name in dev.model.inputs:
                if name in dev.variables:
                    dev.model.set_input(name, dev.get(name))
        self.plant.step(dt)
        self._write_outputs()
        if self.motion and self._t - self._last_motion >= 1.0:
            self._last_motion = self._t
            self._move()

    def _write_outputs(self) -> None:
        for dev in self.devices.values():
            if dev.model is not None:
                for name, value in dev.model.outputs().items():
                    if name in dev.variables:
                        self._set_quietly(dev, name, value)

    def _move(self) -> None:
        for dev in self.devices.values():
            outputs = dev.model.outputs() if dev.model is not None else {}
            for name, sv in dev.variables.items():
                if sv.motion_period_s and name not in outputs and sv.var.eurange:
                    lo, hi = sv.var.eurange
                    value = (lo + hi) / 2 + (hi - lo) / 4 * math.sin(2 * math.pi * self._t / sv.motion_period_s)
                    self._set_quietly(dev, name, value)

    async def _run(self) -> None:
        last = self.clock.monotonic()
        while True:
            await self.clock.sleep(TICK_S)
            now = self.clock.monotonic()
            self.step(now - last)
            last = now

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        for key, units in self._links.items():
            transport = "tcp" if key[0] == "tcp" else "rtutcp"
            port = free_tcp_port(self.host)
            server = SimulatorServer(units.values(), transport=transport, host=self.host, port=port)
            await server.start()
            self.servers[key] = server
        for dev in self.devices.values():
            self.urls[dev.config.nodeid] = self._url(dev)
        self._task = asyncio.create_task(self._run(), name="modbus simulators")
        log.info("simulating %d Modbus device(s) on %d loopback server(s)", len(self.devices), len(self.servers))

    def _url(self, dev: SimulatedDevice) -> SplitResult:
        o = dev.options
        port = self.servers[o.link_key].port
        scheme = "modbus+tcp" if o.transport == "tcp" else "modbus+rtutcp"
        query = urlencode([(k, v) for k, v in parse_qsl(dev.config.url.query) if k not in _SERIAL_ONLY])
        return urlsplit(f"{scheme}://{self.host}:{port}/{o.unit}" + (f"?{query}" if query else ""))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for server in self.servers.values():
            await server.stop()
        self.servers.clear()
