"""BMS racks on a virtual CAN bus for `gateway --simulate`, driven by the battery physics.

Each `can://` device becomes a rack: its connection is moved to a python-can virtual bus of the
simulation (same DBC, same options), and a thread of the simulation sends the messages the device
reads at their DBC cycle times, encoded with cantools from a battery model (simulators/physics.py):
SOC, SOH, current, voltage, cell voltage min/max/avg, temperatures, charge/discharge limits, state and
alarms, module voltages by multiplexer, all cell voltages in one CAN FD frame. Signals of other
names keep their DBC initial value. Messages the device writes are received: a `PowerSetpoint`
signal drives the battery, and a rack that has not seen its command message within 10 cycle times
drops to 0 kW, as a real BMS does. Tests reach a rack with `racks[device name]` to silence it, make
it send garbage, or change its battery.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult

import can
from asyncua import ua
from cantools.database.can import Message

from gateway.drivers.canbus import dbc
from gateway.drivers.canbus.driver import _initial, parse_connection
from gateway.drivers.simulators.physics import Battery, Plant, parse_model

if TYPE_CHECKING:
    from gateway.bindings import DeviceConfig

log = logging.getLogger(__name__)

SIM_INTERFACE = "virtual"
STOP_WITHIN_S = 2.0
CELLS_IN_SERIES = 216
MODULES = 4


@dataclass
class Rack:
    """One simulated rack: its battery, the messages it sends and receives, and test switches."""

    name: str
    battery: Battery
    sends: list[tuple[Message, int, float]]  # message, frame id on the bus, period in s
    receives: dict[int, Message]  # frame id -> message written by the gateway
    silent: bool = False  # sends nothing (a rack unplugged)
    garbage: bool = False  # sends frames too short to decode
    soh: float = 98.5
    module_index: int = 0
    commands: list[dict[str, Any]] = field(default_factory=list)  # decoded commands received, newest last
    last_command: float = 0.0  # time.monotonic() of the last command frame
    command_timeout_s: float | None = None

    def signals(self) -> dict[str, Any]:
        """Values by signal name, from the battery's state."""
        b = self.battery
        out = b.outputs()
        voltage = float(out["DcVoltage"])
        cell = voltage / CELLS_IN_SERIES
        chg, dis = b.limits()
        state = "Fault" if b.fault else "Discharging" if b.power > 0.5 else "Charging" if b.power < -0.5 else "Idle"
        values: dict[str, Any] = {
            "StateOfCharge": b.soc, "StateOfHealth": self.soh, "Voltage": voltage,
            "Current": b.power * 1000.0 / voltage, "CellVoltageAvg": cell, "CellVoltageMin": cell - 0.015,
            "CellVoltageMax": cell + 0.015, "CellTemperatureMin": b.temperature - 3.0,
            "CellTemperatureMax": b.temperature, "MaxChargePower": chg, "MaxDischargePower": dis,
            "MaxChargeCurrent": chg * 1000.0 / voltage, "MaxDischargeCurrent": dis * 1000.0 / voltage,
            "State": state, "AlarmLevel": "Protection" if b.fault else "Warning" if b.temperature > 45 else "None",
            "OverTemperature": int(b.temperature >= 55.0), "FaultCode": b.fault, "ModuleIndex": self.module_index,
        }
        for i in range(MODULES):
            values[f"Module{i}Voltage"] = voltage / MODULES + 0.05 * i
            values[f"Module{i}Temperature"] = b.temperature - 0.5 * i
        for i in range(1, 100):
            values[f"CellVoltage{i:02d}"] = cell + 0.001 * (i % 7) - 0.003
        return values


def _encode(message: Message, values: dict[str, Any]) -> bytes:
    data = {}
    for s in message.signals:
        v = values.get(s.name)
        if v is None:
            v = _initial(s)
        elif isinstance(v, float | int) and not isinstance(v, bool):
            low, high = s.minimum, s.maximum
            v = max(low, v) if low is not None else v
            v = min(high, v) if high is not None else v
        data[s.name] = v
    return message.encode(data, scaling=True, strict=False)


class BmsSimulation:
    """The racks of one site, each on a virtual bus named after its configured interface and channel."""

    #: Every message at this period (ms) instead of its DBC cycle time, for all simulations made after it is set
    #: (tests/benchmarks/bench_can.py sends at 10 ms).
    default_cycle_ms: float | None = None

    def __init__(self, devices: Sequence[DeviceConfig], cycle_ms: float | None = None) -> None:
        cycle_ms = cycle_ms or self.default_cycle_ms
        self.sent = 0  # frames sent, all racks
        self.urls: dict[ua.NodeId, SplitResult] = {}
        self.racks: dict[str, Rack] = {}
        self.channels: dict[str, list[tuple[Rack, int]]] = {}  # virtual channel -> racks, fd
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ended: asyncio.Future[None]
        self._buses: dict[str, can.BusABC] = {}
        for dev in devices:
            settings, options = parse_connection(dev.url)
            db = dbc.load(dbc.resolve(options["dbc"]))
            offset = options["id_offset"]
            channel = f"gateway-sim:{settings.interface}/{settings.channel}"
            query = dev.url.query
            self.urls[dev.nodeid] = SplitResult("can", SIM_INTERFACE, "/" + channel, query, "")
            written = {v.binding.address.partition("/")[0] for v in dev.variables if v.writable}
            read = {v.binding.address.partition("/")[0] for v in dev.variables if not v.writable}
            sends, receives = [], {}
            for ref_text in sorted(read - written):
                message = _message(db, ref_text)
                period = (cycle_ms or message.cycle_time or 100) / 1000.0
                sends.append((message, message.frame_id + offset, period))
            timeout = None
            for ref_text in written:
                message = _message(db, ref_text)
                receives[message.frame_id + offset] = message
                if message.cycle_time:
                    timeout = 10 * message.cycle_time / 1000.0
            model = parse_model(dev.simulator) if dev.simulator else Battery()
            if not isinstance(model, Battery):
                raise ValueError(f"{dev.name}: a CAN rack is simulated by a battery model, not '{dev.simulator}'")
            rack = Rack(dev.name, model, sends, receives, command_timeout_s=timeout)
            self.racks[dev.name] = rack
            self.channels.setdefault(channel, []).append((rack, int(settings.fd)))

    async def start(self) -> None:
        for channel in self.channels:
            # Opening a virtual bus takes no time; the thread sends on it from then on.
            self._buses[channel] = can.Bus(interface=SIM_INTERFACE, channel=channel)
        loop = asyncio.get_running_loop()
        self._ended = loop.create_future()

        def run() -> None:
            try:
                self._run()
            except Exception:
                log.exception("the CAN BMS simulation failed; its racks fall silent")
            finally:
                loop.call_soon_threadsafe(lambda: self._ended.done() or self._ended.set_result(None))

        self._thread = threading.Thread(target=run, name="CAN BMS simulation", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            try:
                async with asyncio.timeout(STOP_WITHIN_S):
                    await self._ended
            except TimeoutError:
                log.error("the CAN BMS simulation did not stop within %g s", STOP_WITHIN_S)
                return
        for bus in self._buses.values():
            bus.shutdown()
        self._buses.clear()

    def _run(self) -> None:
        """The simulation's thread: physics, frames due, commands received; never the event loop."""
        due: dict[tuple[str, int], float] = {}
        last = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            dt, last = now - last, now
            next_due = now + 0.05
            for channel, racks in self.channels.items():
                bus = self._buses[channel]
                self._receive(bus, racks, now)
                for rack, fd in racks:
                    if rack.command_timeout_s and now - rack.last_command > rack.command_timeout_s:
                        rack.battery.set_input("ActivePowerSetpoint", 0.0)
                    if dt > 0:
                        Plant([rack.battery]).step(dt)
                    values = rack.signals()
                    for message, fid, period in rack.sends:
                        key = (rack.name, fid)
                        at = due.setdefault(key, now)
                        if at <= now:
                            due[key] = at + period if at + period > now else now + period
                            if not rack.silent:
                                self._send(bus, rack, message, fid, values, fd)
                        next_due = min(next_due, due[key])
            self._stop.wait(max(0.0, next_due - time.monotonic()))

    def _send(self, bus: can.BusABC, rack: Rack, message: Message, fid: int, values: dict[str, Any],
              fd: int) -> None:
        if message.is_multiplexed():
            rack.module_index = (rack.module_index + 1) % MODULES
            values["ModuleIndex"] = rack.module_index
        data = b"\xff" if rack.garbage else _encode(message, values)
        self.sent += 1
        try:
            bus.send(can.Message(arbitration_id=fid, data=data, is_extended_id=message.is_extended_frame,
                                 is_fd=message.is_fd and bool(fd)))
        except can.CanError as exc:
            log.debug("simulated rack %s: %s", rack.name, exc)

    def _receive(self, bus: can.BusABC, racks: list[tuple[Rack, int]], now: float) -> None:
        while True:
            msg = bus.recv(0)
            if msg is None:
                return
            for rack, _ in racks:
                message = rack.receives.get(msg.arbitration_id)
                if message is None:
                    continue
                try:
                    decoded = message.decode(msg.data, decode_choices=True)
                except Exception as exc:
                    log.debug("simulated rack %s: undecodable command: %s", rack.name, exc)
                    continue
                rack.last_command = now
                rack.commands.append(dict(decoded))
                del rack.commands[:-50]
                if "PowerSetpoint" in decoded:
                    rack.battery.set_input("ActivePowerSetpoint", float(decoded["PowerSetpoint"]))


def _message(db: Any, text: str) -> Message:
    key = dbc.parse_message_key(text)
    return db.get_message_by_frame_id(key) if isinstance(key, int) else db.get_message_by_name(key)

