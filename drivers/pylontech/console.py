"""The console of a Pylontech battery stack on a serial port (pyserial), used from the link's worker thread only.

Every method blocks, and each is bounded by its own deadline, so the worker's deadline is only a guard.
The console answers a command with its echo, `@`, the table, `Command completed successfully`, `$$` and
its prompt (`pylon>`); an answer is complete when the prompt follows the echo. A long answer may stop
at the pager line (`Press [Enter] to be continued`), answered with a CR. Anything the console sent
before a command (a late answer, noise) is dropped before the command goes out.

Waking the console: the US2000B's console port speaks its RS-485 protocol at 1200 8N1 after power-up,
and turns into the text console at 115200 8N1 when it receives the wake-up frame at 1200 baud.
"""

from __future__ import annotations

import logging
import termios
import time
from dataclasses import dataclass

import serial

log = logging.getLogger(__name__)

WAKEUP_FRAME = b"~20014682C0048520FCC3\r"
PAGER = b"Press [Enter] to be continued"
READ_SLICE_S = 0.05  # one read waits at most this long, so every loop sees its deadline
MAX_ANSWER = 256 * 1024  # a console that streams without a prompt is noise, not an answer
SYNC_TRIES = 3  # newlines sent (one per timeout / SYNC_TRIES) to get a prompt


# What a port that went away raises (pyserial's own, the OS's, and termios' for a pty whose other end closed).
LINE_ERRORS = (serial.SerialException, OSError, termios.error)


class ConsoleError(Exception):
    """The console did not answer as a console does (no prompt in time, noise); the port may still be fine.
    `silent`: nothing at all came back."""

    def __init__(self, message: str, silent: bool = False) -> None:
        super().__init__(message)
        self.silent = silent


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    port: str
    baud: int = 115200
    wakeup: str = "auto"  # auto | always | never
    wakeup_baud: int = 1200
    wakeup_wait_s: float = 1.0
    timeout_s: float = 2.0
    prompt: str = "pylon>"
    sets_baud: bool = True  # false: a raw TCP converter, whose line settings are its own (no wake-up then)

    def open_bound_s(self) -> float:
        """The longest `Console.open` can take: a probe and a sync after the wake-up, each with its drain, and
        a converter's RFC 2217 negotiation (pyserial gives it 3 s)."""
        return 2 * self.sync_bound_s() + self.wakeup_wait_s + 4.0

    def sync_bound_s(self) -> float:
        """The longest `Console.sync` can take: newlines until the prompt, then the drain of what follows."""
        return 2 * self.timeout_s


class Console:
    def __init__(self, settings: ConsoleSettings) -> None:
        self.settings = settings
        self.port: serial.Serial | None = None
        self.woken = 0  # wake-up frames sent (logged; the tests read it)

    @property
    def is_open(self) -> bool:
        return self.port is not None

    def open(self) -> None:
        """Open the port and get the prompt, waking the console as `wakeup` says. Raises ConsoleError (closed
        again) when no prompt comes, serial.SerialException or OSError when the port cannot be opened."""
        s = self.settings
        self.close()
        line = {"baudrate": s.baud, "bytesize": 8, "parity": "N", "stopbits": 1, "timeout": READ_SLICE_S}
        if "://" in s.port:  # a converter (rfc2217://, socket://): its writes are bounded by the network's own
            self.port = serial.serial_for_url(s.port, **line)
        else:  # exclusive: a second program on the console's port would take half of each answer
            self.port = serial.Serial(s.port, exclusive=True, write_timeout=s.timeout_s, **line)
        try:
            if s.wakeup != "always" and self.sync():
                return
            if not s.sets_baud:
                raise ConsoleError(f"no {s.prompt} prompt through {s.port} within {s.timeout_s:g} s; a raw TCP "
                                   f"converter cannot send the wake-up at {s.wakeup_baud} baud")
            if s.wakeup == "never":
                raise ConsoleError(f"no {s.prompt} prompt on {s.port} at {s.baud} baud within {s.timeout_s:g} s")
            self._wake()
            if not self.sync():
                raise ConsoleError(f"no {s.prompt} prompt on {s.port} after the wake-up at {s.wakeup_baud} baud "
                                   f"(within {s.timeout_s:g} s at {s.baud} baud)")
        except BaseException:
            self.close()
            raise

    def _wake(self) -> None:
        s = self.settings
        port = self._port()
        log.info("waking the console on %s at %d baud", s.port, s.wakeup_baud)
        port.baudrate = s.wakeup_baud
        port.write(WAKEUP_FRAME)
        port.flush()
        self.woken += 1
        time.sleep(s.wakeup_wait_s)  # the console switches over meanwhile; bytes at 115200 would be lost
        port.baudrate = s.baud
        port.reset_input_buffer()

    def sync(self) -> bool:
        """Send newlines until the prompt comes back, then drop what follows it; whether it came in time."""
        s = self.settings
        port = self._port()
        prompt = s.prompt.encode()
        port.reset_input_buffer()
        deadline = time.monotonic() + s.timeout_s
        seen = b""
        for attempt in range(SYNC_TRIES):
            port.write(b"\r")
            until = min(deadline, time.monotonic() + s.timeout_s / SYNC_TRIES) if attempt < SYNC_TRIES - 1 \
                else deadline
            while time.monotonic() < until:
                seen = (seen + port.read(max(1, port.in_waiting)))[-4096:]
                if seen.rstrip().endswith(prompt):
                    self._drain()
                    return True
        return False

    def _drain(self) -> None:
        """Read until the line is quiet (a newline sent as CR LF gets two prompts), for at most the timeout."""
        port = self._port()
        deadline = time.monotonic() + self.settings.timeout_s
        while port.read(max(1, port.in_waiting)) and time.monotonic() < deadline:
            pass

    def command(self, text: str) -> str:
        """Run one command; its whole answer (from the echo to the prompt) as text. ConsoleError when the prompt
        does not follow within the timeout, or the console floods."""
        s = self.settings
        port = self._port()
        port.reset_input_buffer()
        port.write(text.encode("ascii") + b"\r")
        echo, prompt = text.encode("ascii"), s.prompt.encode()
        deadline = time.monotonic() + s.timeout_s
        got = bytearray()
        paged = 0  # where the last pager line answered ends
        while True:
            got += port.read(max(1, port.in_waiting))
            at = got.find(echo)
            if at >= 0 and got.find(prompt, at + len(echo)) >= 0:
                return got.decode("ascii", errors="replace")
            pager = got.find(PAGER, paged)
            if pager >= 0:
                port.write(b"\r")
                paged = pager + len(PAGER)
            if len(got) > MAX_ANSWER:
                raise ConsoleError(f"'{text}': {len(got)} bytes and no {s.prompt} prompt: noise on the line")
            if time.monotonic() > deadline:
                tail = got[-60:].decode("ascii", errors="replace")
                what = f"{len(got)} bytes, ending {tail!r}" if got else "nothing"
                raise ConsoleError(f"'{text}': no {s.prompt} prompt within {s.timeout_s:g} s (got {what})",
                                   silent=not got)

    def close(self) -> None:
        port, self.port = self.port, None
        if port is not None:
            try:
                port.close()
            except LINE_ERRORS as exc:
                log.debug("closing %s: %s", self.settings.port, exc)

    def _port(self) -> serial.Serial:
        if self.port is None:
            raise ConsoleError(f"{self.settings.port} is not open")
        return self.port
