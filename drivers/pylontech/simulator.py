"""A simulated Pylontech US2000B stack that speaks the console on a pseudo-terminal.

The console starts asleep, as a US2000B's console port does after power-up: it answers nothing until the
wake-up frame arrives, and where it can tell the line's baud rate (a pty pair of its own, whose master
shows the settings the gateway's end was given) only a frame sent at 1200 baud wakes it, and it answers
only a line set to 115200 baud. Awake, it echoes what it receives, answers an empty line with its prompt,
and `pwr` and `bat N` with the tables the firmware prints (fixed-width columns, `\\n\\r` line ends), from
a model of the stack: modules charging and discharging slowly, SOC integrating the current, cell
voltages following SOC; modules may be absent. Switches for tests: `silent` (reads, answers nothing),
`noise` (answers commands with bytes that are no console's, and no prompt), `garbled` (the rows of
these modules are cut and overwritten), `asleep` (needs the wake-up again), `pager_after` (long answers
a screenful at a time), `trickle` (answers in small pieces, lines split across reads).

`gateway --simulate` gives every `pylontech` device a pty pair made with os.openpty (no socat needed:
the master side also tells the baud rate); the tests run the console on one end of a socat pair, by path,
and open it again when socat comes back after it went away.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import select
import termios
import threading
import time
import tty
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import SplitResult

from asyncua import ua

from gateway.drivers.pylontech.console import WAKEUP_FRAME

if TYPE_CHECKING:
    from gateway.bindings import DeviceConfig

log = logging.getLogger(__name__)
NL = "\n\r"
PROMPT = "pylon>"
PAGER_LINE = "Press [Enter] to be continued,other key to exit"
CELLS = 15  # a US2000B module: 15 LFP cells in series
CAPACITY_AH = 50.0
STOP_WITHIN_S = 2.0
_BAUD = {getattr(termios, f"B{b}"): b for b in (300, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)}


@dataclass
class Module:
    number: int
    present: bool = True
    soc: float = 80.0  # %
    temperature_c: float = 22.0
    phase: float = 0.0  # of its current's swing, so modules differ a little

    def cell_mv(self, cell: int, current_a: float) -> int:
        """LFP open-circuit voltage by SOC, plus the cell's internal resistance drop, plus a fixed cell spread."""
        ocv = 3.20 + 0.0012 * self.soc + (0.08 if self.soc > 97 else 0.0) - (0.15 if self.soc < 5 else 0.0)
        return round(1000 * (ocv + current_a * 0.0008) + (cell * 7 + self.number * 3) % 9 - 4)


@dataclass
class Stack:
    """Up to `slots` modules; all carry the same current (one string), swinging between charge and discharge."""

    modules: list[Module] = field(default_factory=list)
    slots: int = 8
    swing_a: float = 12.0
    period_s: float = 600.0
    frozen: bool = False  # values stay as they are (tests compare the tables with the model)
    t0: float = field(default_factory=time.monotonic)
    _last: float = field(default_factory=time.monotonic)

    @classmethod
    def of(cls, present: int, slots: int = 8) -> Stack:
        return cls([Module(n, n <= present, soc=82.0 - 2 * n, temperature_c=21.0 + n / 2, phase=n / 3)
                    for n in range(1, slots + 1)], slots)

    def current_a(self, module: Module) -> float:
        if self.frozen:
            return -1.28 - module.number / 100
        return round(self.swing_a * math.sin(2 * math.pi * (time.monotonic() - self.t0) / self.period_s
                                             + module.phase), 2)

    def step(self) -> None:
        now = time.monotonic()
        dt, self._last = now - self._last, now
        if self.frozen:
            return
        for m in self.modules:
            if m.present:
                m.soc = min(100.0, max(0.0, m.soc + self.current_a(m) * dt / 3600 / CAPACITY_AH * 100))

    def pwr(self) -> list[str]:
        self.step()
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        lines = ["Power Volt   Curr   Tempr  Tlow   Thigh  Vlow   Vhigh  Base.St  Volt.St  Curr.St  Temp.St  "
                 "Coulomb  Time                 B.V.St   B.T.St  "]
        for m in self.modules:
            if not m.present:
                lines.append(f"{m.number:<6}-      -      -      -      -      -      -      Absent   -        "
                             f"-        -        -        -                    -        -       ")
                continue
            amps = self.current_a(m)
            cells = [m.cell_mv(c, amps) for c in range(CELLS)]
            t = round(m.temperature_c * 1000)
            lines.append(f"{m.number:<6}{sum(cells):<7}{round(amps * 1000):<7}{t:<7}{t - 1000:<7}{t + 1000:<7}"
                         f"{min(cells):<7}{max(cells):<7}{_state(amps):<9}{'Normal':<9}{'Normal':<9}{'Normal':<9}"
                         f"{round(m.soc)}%{'':<6}{stamp}  {'Normal':<9}{'Normal':<8}")
        return lines

    def bat(self, number: int) -> list[str] | None:
        self.step()
        module = next((m for m in self.modules if m.number == number and m.present), None)
        if module is None:
            return None
        amps = self.current_a(module)
        lines = ["Battery  Volt     Curr     Tempr    Base State   Volt. State  Curr. State  Temp. State  Coulomb     "]
        for c in range(CELLS):
            t = round((module.temperature_c + (c % 3) / 10) * 1000)
            lines.append(f"{c:<9}{module.cell_mv(c, amps):<9}{round(amps * 1000):<9}{t:<9}{_state(amps):<13}"
                         f"{'Normal':<13}{'Normal':<13}{'Normal':<13}{round(module.soc)}%     ")
        return lines


def _state(amps: float) -> str:
    return "Charge" if amps > 0.05 else "Dischg" if amps < -0.05 else "Idle"


class ConsoleSimulator:
    """The console on one end of a line: `path` (opened, and opened again when it goes away) or `fd` (a pty
    master: the baud rate of the other end is known then)."""

    def __init__(self, stack: Stack, path: str | None = None, fd: int | None = None, name: str = "stack") -> None:
        self.stack = stack
        self.path = path
        self.fd = fd
        self.knows_baud = fd is not None
        self.name = name
        self.asleep = True
        self.silent = False
        self.noise = False
        self.garbled: set[int] = set()
        self.pager_after: int | None = None  # lines of an answer per screen; None: no pager
        self.trickle: tuple[int, float] | None = None  # (bytes, pause in s): answers in pieces, lines split up
        self._held: list[str] | None = None  # the rest of an answer held at the pager
        self.wakeups = 0
        self.commands: list[str] = []  # commands received, newest last (at most 100)
        self._line = bytearray()
        self._sleeping_input = bytearray()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"Pylontech console {name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(STOP_WITHIN_S)
        if self.path is not None and self.fd is not None:
            _close(self.fd)
            self.fd = None

    # -- the line ---------------------------------------------------------------------------------
    def _open(self) -> bool:
        if self.fd is not None:
            return True
        try:
            fd = os.open(self.path or "", os.O_RDWR | os.O_NOCTTY)
            tty.setraw(fd)
        except OSError:
            return False
        self.fd = fd
        return True

    def _peer_baud(self) -> int | None:
        if not self.knows_baud or self.fd is None:
            return None
        try:
            return _BAUD.get(termios.tcgetattr(self.fd)[4])
        except termios.error:
            return None

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not self._open():
                self._stop.wait(0.1)
                continue
            fd = self.fd
            assert fd is not None
            try:
                ready, _, _ = select.select([fd], [], [], 0.05)
                if not ready:
                    continue
                data = os.read(fd, 4096)
                if not data:
                    raise OSError("end of file")
                self._received(data)
            except OSError as exc:  # the line went away (socat ended): open it again when it returns
                if self.path is None:
                    log.warning("simulated Pylontech console %s: %s", self.name, exc)
                    self._stop.wait(0.1)
                    continue
                _close(fd)
                self.fd = None  # the battery stays awake: only the cable went
                self._stop.wait(0.1)

    def _write(self, text: str | bytes) -> None:
        data = text.encode("ascii") if isinstance(text, str) else text
        fd = self.fd
        deadline = time.monotonic() + 2.0
        while data and fd is not None and time.monotonic() < deadline:
            _, writable, _ = select.select([], [fd], [], 0.1)
            if writable:
                piece = data[: self.trickle[0]] if self.trickle else data
                data = data[os.write(fd, piece):]
                if self.trickle:
                    time.sleep(self.trickle[1])

    # -- the console ------------------------------------------------------------------------------
    def _received(self, data: bytes) -> None:
        baud = self._peer_baud()
        if self.asleep:
            if baud not in (None, 1200):
                return  # bytes at another rate are framing errors to the sleeping port
            self._sleeping_input = (self._sleeping_input + data)[-64:]
            if WAKEUP_FRAME in self._sleeping_input:
                self.asleep = False
                self.wakeups += 1
                self._sleeping_input.clear()
                self._line.clear()
            return
        if baud not in (None, 115200) or self.silent:
            return
        for byte in data:
            if self._held is not None:
                self._paged(byte)
            elif byte in (0x0D, 0x0A):
                self._run(self._line.decode("ascii", errors="replace").strip())
                self._line.clear()
            elif 0x20 <= byte < 0x7F:
                self._line.append(byte)
                self._write(bytes([byte]))  # the console echoes what is typed

    def _run(self, command: str) -> None:
        if not command:
            self._write(NL + PROMPT)
            return
        self.commands.append(command)
        del self.commands[:-100]
        if self.noise:
            self._write(bytes(random.randrange(256) for _ in range(300)))
            return
        words = command.split()
        if words == ["pwr"]:
            lines = self.stack.pwr()
            for n in self.garbled:
                for i, line in enumerate(lines):
                    if line.startswith(f"{n} "):
                        lines[i] = line[:20] + "#?"  # the rest of the row lost in noise
        elif len(words) == 2 and words[0] == "bat" and words[1].isdigit():
            table = self.stack.bat(int(words[1]))
            lines = table if table is not None else [f"Power {words[1]} is absent"]
        else:
            self._write(f"{NL}Unknown command '{words[0]}' - try 'help'{NL}{PROMPT}")
            return
        self._emit(["@", *lines, "Command completed successfully", "$$"])

    def _emit(self, lines: list[str]) -> None:
        """Lines of an answer, then the prompt; with `pager_after`, a screenful at a time, each ended by the pager
        line and held until a key: Enter shows the next, any other ends the answer."""
        if self.pager_after and len(lines) > self.pager_after:
            self._held = lines[self.pager_after:]
            self._write(NL + NL.join(lines[: self.pager_after]) + NL + PAGER_LINE)
            return
        self._held = None
        self._write(NL + NL.join(lines) + NL + NL + PROMPT)

    def _paged(self, key: int) -> None:
        held, self._held = self._held or [], None
        if key in (0x0D, 0x0A):
            self._emit(held)
        else:
            self._write(NL + PROMPT)


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


class PylontechSimulation:
    """`--simulate`: a stack behind a pty pair of its own for every pylontech device; the device reads its slave
    end. The stack's modules are present up to the highest one the device binds (at least two), in 8 slots."""

    def __init__(self, devices: Sequence[DeviceConfig]) -> None:
        self.devices = devices
        self.urls: dict[ua.NodeId, SplitResult] = {}
        self.consoles: dict[str, ConsoleSimulator] = {}
        self._slaves: list[int] = []

    def start(self) -> None:
        from gateway.drivers.pylontech.driver import parse_address

        for dev in self.devices:
            addresses = [parse_address(v.binding.address) for v in dev.variables]
            bound = [a.row if a.command == "pwr" else int(a.command.split()[1]) for a in addresses]
            master, slave = os.openpty()
            tty.setraw(slave)
            self._slaves.append(slave)  # held open: the master reads EIO while no one has the slave open
            console = ConsoleSimulator(Stack.of(max([2, *bound])), fd=master, name=dev.name)
            console.start()
            self.consoles[dev.name] = console
            self.urls[dev.nodeid] = SplitResult("pylontech", "", os.ttyname(slave), dev.url.query, "")

    async def stop(self) -> None:
        for console in self.consoles.values():
            await asyncio.to_thread(console.stop)
            if console.fd is not None:
                _close(console.fd)
        for fd in self._slaves:
            _close(fd)
        self._slaves.clear()
