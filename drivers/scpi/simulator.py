"""A programmable DC supply for `gateway --simulate` and the tests: SCPI over a raw TCP socket (port 5025 style).

It behaves as the supplies and electronic loads of an electrolysis lab do: voltage and current set
points (`VOLT`, `CURR`, with `SOUR:` and long forms), the output switch (`OUTP ON|OFF`), measured
voltage, current and power (`MEAS:VOLT?`, `MEAS:CURR?`, `MEAS:POW?`) of a resistive stack on its
output in constant-voltage or constant-current mode, `*IDN?`, `*RST`, `*CLS`, `*OPC?`, and an error
queue read with `SYST:ERR?` (`-113` an unknown header, `-222` a setting out of range, `-104`/`-109` a
bad or missing parameter, `-350` overflow). A query the instrument does not know is not answered, as
real instruments do: only the error queue says why. Several commands may share a line (`;`).

Tests reach `silent` (it reads but never answers), `garbage` (it answers every query with noise) and
`drop()` (every connection closed, nothing listening until `start()` again, on the same port).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, parse_qsl, urlencode

from asyncua import ua

from gateway.drivers.simulators.tcp import DroppableListener

if TYPE_CHECKING:
    from gateway.bindings import DeviceConfig

log = logging.getLogger(__name__)

IDN = "OPCUA-GATEWAY,SIM-DCS60-100,SN{serial:04d},1.0"
ERROR_QUEUE = 20
# Long and short forms of the nodes it knows (SCPI: either spelling, any case).
_NODES = {
    "SOUR": "SOUR", "SOURCE": "SOUR", "VOLT": "VOLT", "VOLTAGE": "VOLT", "CURR": "CURR", "CURRENT": "CURR",
    "OUTP": "OUTP", "OUTPUT": "OUTP", "STAT": "STAT", "STATE": "STAT", "MEAS": "MEAS", "MEASURE": "MEAS",
    "POW": "POW", "POWER": "POW", "SYST": "SYST", "SYSTEM": "SYST", "ERR": "ERR", "ERROR": "ERR", "NEXT": "NEXT",
    "LEV": "LEV", "LEVEL": "LEV", "IMM": "IMM", "IMMEDIATE": "IMM", "AMPL": "AMPL", "AMPLITUDE": "AMPL",
    "SCAL": "SCAL", "SCALAR": "SCAL", "DC": "DC",
}
_OPTIONAL = {"SOUR", "LEV", "IMM", "AMPL", "SCAL", "DC", "STAT", "NEXT"}  # nodes that may be left out
_MESSAGES = {-104: "Data type error", -109: "Missing parameter", -113: "Undefined header",
             -222: "Data out of range", -224: "Illegal parameter value", -350: "Queue overflow"}


class _Error(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class ScpiInstrument(DroppableListener):
    """One simulated supply: its state, the wire it listens on, and the tests' switches."""

    name: str = "PSU"
    serial: int = 1
    load_ohm: float = 0.5  # the stack on its output
    voltage_max: float = 60.0
    current_max: float = 100.0
    answer_termination: str = "\n"
    voltage_set: float = 0.0
    current_set: float = 0.0
    output: bool = False
    silent: bool = False
    garbage: bool = False
    errors: deque[int] = field(default_factory=lambda: deque(maxlen=ERROR_QUEUE))
    commands: list[str] = field(default_factory=list)  # every command received, newest last (tests)
    port: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    # -- the instrument --------------------------------------------------------------------------
    def measured(self) -> tuple[float, float]:
        """(voltage, current) at the output: constant voltage unless that needs more than the current limit."""
        if not self.output:
            return 0.0, 0.0
        if self.voltage_set / self.load_ohm <= self.current_set:
            return self.voltage_set, self.voltage_set / self.load_ohm
        return self.current_set * self.load_ohm, self.current_set

    def reset(self) -> None:
        self.voltage_set = self.current_set = 0.0
        self.output = False

    def _fail(self, code: int) -> None:
        if len(self.errors) == ERROR_QUEUE:
            self.errors[-1] = -350  # the last entry says the queue overflowed, as SCPI-99 21.8.5 has it
            return
        self.errors.append(code)

    def handle(self, line: str) -> list[str]:
        """The answers to one line of commands (none for a line of settings)."""
        answers: list[str] = []
        for command in (c.strip() for c in line.split(";")):
            if not command:
                continue
            self.commands.append(command)
            del self.commands[:-200]
            try:
                answer = self._one(command)
            except _Error as exc:
                self._fail(exc.code)
                continue
            if answer is not None:
                answers.append(answer)
        return answers

    def _one(self, command: str) -> str | None:
        header, _, argument = command.partition(" ")
        argument = argument.strip()
        upper = header.upper()
        if upper.startswith("*"):
            return self._common(upper, argument)
        query = upper.endswith("?")
        nodes = [_NODES.get(n) for n in upper.rstrip("?").lstrip(":").split(":")]
        if None in nodes:
            raise _Error(-113)
        path = tuple(n for n in nodes if n not in _OPTIONAL)
        if query:
            return self._query(path)
        self._set(path, argument)
        return None

    def _common(self, header: str, argument: str) -> str | None:
        if header == "*IDN?":
            return IDN.format(serial=self.serial)
        if header == "*RST":
            self.reset()
            return None
        if header == "*CLS":
            self.errors.clear()
            return None
        if header == "*OPC?":
            return "1"
        raise _Error(-113)

    def _query(self, path: tuple[str, ...]) -> str:
        voltage, current = self.measured()
        values = {("VOLT",): self.voltage_set, ("CURR",): self.current_set, ("MEAS", "VOLT"): voltage,
                  ("MEAS", "CURR"): current, ("MEAS", "POW"): voltage * current}
        if path in values:
            return f"{values[path]:.5E}"
        if path == ("OUTP",):
            return "1" if self.output else "0"
        if path == ("SYST", "ERR"):
            code = self.errors.popleft() if self.errors else 0
            return f'{code},"{_MESSAGES.get(code, "No error")}"'
        raise _Error(-113)

    def _set(self, path: tuple[str, ...], argument: str) -> None:
        if not argument:
            raise _Error(-109)
        if path == ("OUTP",):
            word = argument.upper()
            if word not in ("ON", "OFF", "1", "0"):
                raise _Error(-224)
            self.output = word in ("ON", "1")
            return
        limits = {("VOLT",): self.voltage_max, ("CURR",): self.current_max}
        if path not in limits:
            raise _Error(-113)
        try:
            value = float(argument)
        except ValueError:
            raise _Error(-104) from None
        if not 0.0 <= value <= limits[path]:
            raise _Error(-222)
        if path == ("VOLT",):
            self.voltage_set = value
        else:
            self.current_set = value

    # -- the wire --------------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        pending = b""
        try:
            while True:
                chunk = await reader.read(4096)
                if not chunk:
                    return
                # A command line ends with LF, CR or CR LF, whichever the device's write_termination says.
                *lines, pending = re.split(rb"\r\n|\r|\n", pending + chunk)
                for raw in lines:
                    answers = self.handle(raw.decode("latin-1"))
                    if self.silent or not answers:
                        continue
                    text = "#garbage%$" if self.garbage else ";".join(answers)
                    writer.write((text + self.answer_termination).encode("latin-1"))
                await writer.drain()
        except ConnectionError:
            return
        finally:
            self._writers.discard(writer)
            writer.close()


_TERMINATIONS = {"lf": "\n", "cr": "\r", "crlf": "\r\n"}


class ScpiSimulation:
    """`gateway --simulate`: one simulated supply per `visa://` device, on a loopback port of its own."""

    def __init__(self, devices: Sequence[DeviceConfig]) -> None:
        self.devices = devices
        self.urls: dict[ua.NodeId, SplitResult] = {}
        self.instruments: dict[str, ScpiInstrument] = {}

    async def start(self) -> None:
        for serial, dev in enumerate(self.devices, 1):
            query = dict(parse_qsl(dev.url.query))
            # The wire is TCP now: serial settings do not apply; line endings are kept as the device states them.
            kept = [(k, v) for k, v in query.items() if k not in ("baud", "parity", "stop_bits", "data_bits")]
            termination = _TERMINATIONS.get(query.get("read_termination", "lf"), "\n")
            instrument = ScpiInstrument(name=dev.name, serial=serial, answer_termination=termination)
            await instrument.start()
            self.instruments[dev.name] = instrument
            self.urls[dev.nodeid] = SplitResult("visa", f"TCPIP0::127.0.0.1::{instrument.port}::SOCKET", "",
                                                urlencode(kept), "")

    async def stop(self) -> None:
        for instrument in self.instruments.values():
            await instrument.drop()
