"""`pylontech:///dev/ttyUSB0[?OPTIONS]`: a Pylontech US2000B battery stack through its RS-232 console (pyserial).

The console may also be reached through a serial-to-Ethernet converter: `pylontech+rfc2217://HOST:PORT`
(RFC 2217: the converter takes the line settings, so the wake-up at 1200 baud works through it) or
`pylontech+tcp://HOST:PORT` (raw TCP: the converter's own line settings, so the console must answer at
them; the wake-up is never sent).

FieldAddress is `pwr/MODULE/FIELD` (a row of the `pwr` table: one per module of the stack, numbered as the
console numbers them from 1) or `bat/MODULE/CELL/FIELD` (a row of `bat MODULE`: one per cell, numbered
from 0 as the console prints them). FIELD names a column (tables.py lists them): numbers in V, A, °C, %
and Ah (`ConsoleUnits` true: as printed, mV, mA, m°C, mAh), the status columns as text, `BAL` and
`Present` as Booleans. The console is read-only.

Polling runs the commands a scan class needs (`pwr` once, `bat N` per module bound), each in the link's
worker thread with the command's timeout, where its answer is decoded too. The console is woken as the
connection says (`wakeup`). A command whose prompt does not come, or whose answer is cut off or noise,
turns its variables Bad and the console is re-synchronised on its prompt; after `reopen_after` such
failures in a row the port is closed and opened again (and the console woken again if it gives no
prompt). A scan none of whose commands is answered fails the device (Bad, Disconnected, backed off);
a port that fails (unplugged, gone) is closed at once and opened on the next scan.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult

from asyncua import ua

from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.drivers.base import Driver, DriverError, Point, Reading, Simulation
from gateway.drivers.options import Option, parse_query
from gateway.drivers.pylontech import tables
from gateway.drivers.pylontech.console import LINE_ERRORS, Console, ConsoleError, ConsoleSettings
from gateway.drivers.registry import register
from gateway.drivers.worker import BlockingWorker

if TYPE_CHECKING:
    from gateway.bindings import DeviceConfig

log = logging.getLogger(__name__)
_S = ua.StatusCodes

CONNECTION_OPTIONS = (
    Option("baud", "int", "the console's baud rate (8N1)", default=115200, low=1200, high=921600),
    Option("wakeup", "choice", "`auto`: wake the console (the wake-up frame at `wakeup_baud`) only when it gives no "
           "prompt at `baud`; `always`: on every opening of the port; `never`: the console is awake already",
           default="auto", choices=("auto", "always", "never")),
    Option("wakeup_baud", "int", "baud rate of the wake-up frame `~20014682C0048520FCC3` CR (8N1)", default=1200,
           low=300, high=115200),
    Option("wakeup_wait_ms", "int", "pause after the wake-up frame before the console is spoken to at `baud`",
           default=1000, low=0, high=10_000),
    Option("timeout_ms", "int", "how long one command may take until the console's prompt", default=2000, low=100,
           high=60_000),
    Option("reopen_after", "int", "failed commands in a row after which the port is closed and opened again",
           default=3, low=1, high=100),
    Option("prompt", "text", "the console's prompt, which ends every answer", default="pylon>"),
)
POINT_OPTIONS = (
    Option("console_units", "bool", "true: numbers as the console prints them (mV, mA, m°C, mAh) instead of V, A, "
           "°C, Ah", default=False, datatype="Boolean"),
)
MODULES = (1, 16)  # a US2000B stack holds up to 16 modules (8 per console on older firmware)
CELLS = (0, 31)
_GRACE_S = 1.0  # the worker's deadline beyond a console call's own bound
CLOSE_WITHIN_S = 1.0


@dataclass(frozen=True, slots=True)
class Address:
    command: str  # "pwr" or "bat N": the console command whose answer holds the value
    row: int  # module (pwr) or cell (bat) number
    field: str


def parse_address(text: str) -> Address:
    """`pwr/MODULE/FIELD` or `bat/MODULE/CELL/FIELD`; ValueError naming what is wrong."""
    parts = text.split("/")
    forms = "pwr/MODULE/FIELD or bat/MODULE/CELL/FIELD"
    if parts[0] == "pwr" and len(parts) == 3:
        module, field_name, known = parts[1], parts[2], tables.PWR_FIELDS
    elif parts[0] == "bat" and len(parts) == 4:
        module, field_name, known = parts[1], parts[3], tables.BAT_FIELDS
    else:
        raise ValueError(f"Pylontech address '{text}' is not {forms}")
    number = _number(module, "module", MODULES, text)
    if field_name not in known:
        close = difflib.get_close_matches(field_name, known, n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ValueError(f"'{field_name}' is not a column of the {parts[0]} table in '{text}' "
                         f"({hint}known: {', '.join(known)})")
    if parts[0] == "pwr":
        return Address("pwr", number, field_name)
    return Address(f"bat {number}", _number(parts[2], "cell", CELLS, text), field_name)


def _number(text: str, what: str, bounds: tuple[int, int], address: str) -> int:
    if not text.isdigit() or not bounds[0] <= int(text) <= bounds[1]:
        raise ValueError(f"{what} '{text}' in '{address}' is not a number in {bounds[0]}..{bounds[1]}")
    return int(text)


# Scheme -> pyserial URL handler of a serial-to-Ethernet converter (None: a local serial port, by path).
CONVERTERS = {"pylontech": None, "pylontech+rfc2217": "rfc2217", "pylontech+tcp": "socket"}


def parse_connection(url: SplitResult) -> tuple[ConsoleSettings, dict[str, Any]]:
    handler = CONVERTERS[url.scheme]
    if handler is None:
        if url.netloc or not url.path.startswith("/"):
            raise ValueError("the console's serial port is a path: pylontech:///dev/ttyUSB0[?OPTIONS]")
        port = url.path
    else:
        try:
            number = url.port
        except ValueError:
            raise ValueError("the port is not a number in 1..65535") from None
        if not url.hostname or number is None or url.path not in ("", "/"):
            raise ValueError(f"a converter is {url.scheme}://HOST:PORT[?OPTIONS]")
        port = f"{handler}://{url.hostname}:{number}"
    options = parse_query(url, CONNECTION_OPTIONS, "Pylontech")
    if handler == "socket" and options["wakeup"] == "always":
        raise ValueError("a raw TCP converter keeps its own line settings, so it cannot send the wake-up at "
                         f"{options['wakeup_baud']} baud: use pylontech+rfc2217, or wakeup=auto or never")
    settings = ConsoleSettings(port, options["baud"], options["wakeup"], options["wakeup_baud"],
                               options["wakeup_wait_ms"] / 1000.0, options["timeout_ms"] / 1000.0, options["prompt"],
                               sets_baud=handler != "socket")
    return settings, options


@register("pylontech", "pylontech+rfc2217", "pylontech+tcp")
class PylontechDriver(Driver):
    connection_options = CONNECTION_OPTIONS
    point_options = POINT_OPTIONS
    connection_form = "`pylontech:///dev/ttyUSB0[?OPTIONS]`, `pylontech+rfc2217://HOST:PORT[?OPTIONS]`, " \
                      "`pylontech+tcp://HOST:PORT[?OPTIONS]`: the `pwr` and `bat` tables of a Pylontech battery " \
                      "stack's RS-232 console (`pwr/MODULE/FIELD`, `bat/MODULE/CELL/FIELD`)"

    def __init__(
        self, url: SplitResult, points_by_class: Mapping[str, Sequence[Point]], clock: Clock = SYSTEM_CLOCK
    ) -> None:
        super().__init__(url, points_by_class, clock)
        self.settings, options = parse_connection(url)
        self.reopen_after: int = options["reopen_after"]
        self.addresses = {pt.key: parse_address(pt.binding.address) for pts in points_by_class.values() for pt in pts}
        # The commands of each scan class, pwr first, and the points each command's answer holds.
        self.commands: dict[str, list[str]] = {}
        self.targets: dict[str, list[Point]] = {}
        for scan_class, pts in points_by_class.items():
            for pt in pts:
                command = self.addresses[pt.key].command
                self.targets.setdefault(command, []).append(pt)
                wanted = self.commands.setdefault(scan_class, [])
                if command not in wanted:
                    wanted.append(command)
            self.commands.get(scan_class, []).sort(key=lambda c: (c != "pwr", len(c), c))
        self.console = Console(self.settings)
        self.worker: BlockingWorker | None = None
        self.failures = 0  # failed commands in a row
        self._problems: dict[str, str] = {}  # command -> what was last wrong with its answer, for logging changes

    # -- checks ----------------------------------------------------------------------------------
    @classmethod
    def validate_connection(cls, url: SplitResult) -> None:
        parse_connection(url)

    @classmethod
    def validate_point(cls, url: SplitResult, point: Point) -> None:
        address = parse_address(point.binding.address)
        if point.writable:
            raise ValueError("the Pylontech console is read-only: make the variable read-only")
        kind = tables.FIELDS[address.field][0]
        if kind == "text" and point.field_type != "xsd:string":
            raise ValueError(f"{address.field} is text: bind it to a String variable")
        if kind == "bool" and point.field_type != "xsd:boolean":
            raise ValueError(f"{address.field} is a Boolean (Y/N, present or not): bind it to a Boolean variable")
        if kind == "number" and point.field_type in ("xsd:string", "xsd:boolean"):
            raise ValueError(f"{address.field} is a number: bind it to a numeric variable")
        if point.binding.options.get("console_units") is not None and kind != "number":
            raise ValueError(f"ConsoleUnits applies to numbers, not to {address.field}")

    @classmethod
    def validate_devices(cls, urls: Sequence[SplitResult]) -> list[tuple[int, str]]:
        """One console, one device: two devices on one port would interleave their commands' answers."""
        seen: dict[str, int] = {}
        out: list[tuple[int, str]] = []
        for i, url in enumerate(urls):
            port = parse_connection(url)[0].port
            if port in seen:
                out.append((i, f"the console on {port} is already read by another device: bind all of "
                               f"the stack's modules to one device"))
            seen.setdefault(port, i)
        return out

    @classmethod
    async def simulate(cls, devices: Sequence[DeviceConfig], clock: Clock) -> Simulation:
        from gateway.drivers.pylontech.simulator import PylontechSimulation

        sim = PylontechSimulation(devices)
        sim.start()
        return sim

    def call_timeout(self, default_s: float) -> float | None:
        return None  # every console call has its own deadline (open, each command); a scan's count varies

    # -- the link --------------------------------------------------------------------------------
    async def start(self) -> None:
        self.worker = BlockingWorker(f"Pylontech console {self.settings.port}")

    async def stop(self) -> None:
        worker, self.worker = self.worker, None
        if worker is not None:
            await worker.close(CLOSE_WITHIN_S, last=self.console.close)

    def _worker(self) -> BlockingWorker:
        if self.worker is None or self.worker.closed:
            raise DriverError("driver not started", _S.BadCommunicationError)
        return self.worker

    def _abandon(self, why: str) -> None:
        """A console call overran its deadline: its thread is stuck in pyserial. Leave it to close the port when
        the call returns; the next scan opens the port with a new thread and console."""
        log.warning("Pylontech console %s: %s; opening it afresh", self.settings.port, why)
        worker, console = self.worker, self.console
        self.worker, self.console = BlockingWorker(f"Pylontech console {self.settings.port}"), Console(self.settings)
        if worker is not None:
            worker.close_soon(last=console.close)

    async def _ensure_open(self) -> None:
        if self.console.is_open:
            return
        worker = self._worker()
        try:
            await worker.call(self.console.open, deadline_s=self.settings.open_bound_s() + _GRACE_S)
        except ConsoleError as exc:
            raise DriverError(str(exc), _S.BadNoCommunication) from exc
        except LINE_ERRORS as exc:
            raise DriverError(f"cannot open {self.settings.port}: {exc}", _S.BadCommunicationError) from exc
        except DriverError as exc:
            self._abandon(str(exc))
            raise
        self.failures = 0

    async def _failed_command(self) -> None:
        """After a command that was not answered: sync on the prompt, or after `reopen_after` failures close the
        port so the next scan opens it (and wakes the console) again."""
        self.failures += 1
        worker = self._worker()
        if self.failures >= self.reopen_after:
            log.warning("Pylontech console %s: %d commands in a row failed; opening the port again",
                        self.settings.port, self.failures)
            self.failures = 0
            await worker.call(self.console.close, deadline_s=CLOSE_WITHIN_S)
            return
        try:
            await worker.call(self.console.sync, deadline_s=self.settings.sync_bound_s() + _GRACE_S)
        except LINE_ERRORS as exc:  # the port went away meanwhile: the next scan opens it again
            log.warning("Pylontech console %s: %s", self.settings.port, exc)
            await worker.call(self.console.close, deadline_s=CLOSE_WITHIN_S)
        except DriverError as exc:
            self._abandon(str(exc))

    # -- reading ---------------------------------------------------------------------------------
    async def read(self, scan_class: str) -> Mapping[int, Reading]:
        commands = self.commands.get(scan_class, [])
        await self._ensure_open()
        out: dict[int, Reading] = {}
        errors: list[str] = []
        silent = 0  # commands that got nothing back at all
        for i, command in enumerate(commands):
            if not self.console.is_open:  # closed after repeated failures: the next scan opens it again
                for rest in commands[i:]:
                    out.update({pt.key: Reading(None, _S.BadCommunicationError) for pt in self.targets[rest]})
                    errors.append(f"'{rest}': not asked, the port is being opened again")
                break
            self.requests += 1
            try:
                readings, problem = await self._worker().call(self._ask, self.console, command,
                                                              deadline_s=self.settings.timeout_s + _GRACE_S)
            except ConsoleError as exc:
                self.request_errors += 1
                errors.append(str(exc))
                status = _S.BadTimeout if exc.silent else _S.BadCommunicationError
                silent += exc.silent
                out.update({pt.key: Reading(None, status) for pt in self.targets[command]})
                self._report(command, "no answer" if exc.silent else "noise, no prompt", str(exc))
                await self._failed_command()
                continue
            except LINE_ERRORS as exc:
                self.request_errors += 1
                await self._worker().call(self.console.close, deadline_s=CLOSE_WITHIN_S)
                raise DriverError(f"{self.settings.port}: {exc}", _S.BadCommunicationError) from exc
            except DriverError as exc:
                self.request_errors += 1
                self._abandon(str(exc))
                raise
            out.update(readings)
            self._report(command, problem)
            if problem is not None and problem.startswith("cut off"):
                self.request_errors += 1
                errors.append(f"'{command}': {problem}")
                await self._failed_command()
            else:
                self.failures = 0
        if commands and len(errors) == len(commands):
            raise DriverError("; ".join(errors), _S.BadTimeout if silent == len(commands) else _S.BadCommunicationError)
        return out

    def _ask(self, console: Console, command: str) -> tuple[dict[int, Reading], str | None]:
        """In the worker thread: run the command and decode its answer there, off the event loop."""
        return self.decode(command, console.command(command))

    def _report(self, command: str, problem: str | None, detail: str | None = None) -> None:
        """Log what is wrong with a command's answers when it changes (`problem`; `detail` says it in full), not
        on every scan."""
        before = self._problems.get(command)
        if problem == before:
            return
        if problem is None:
            self._problems.pop(command, None)
            log.info("Pylontech console %s: '%s' is answered again", self.settings.port, command)
        else:
            self._problems[command] = problem
            log.warning("Pylontech console %s: '%s': %s", self.settings.port, command, detail or problem)

    def decode(self, command: str, text: str) -> tuple[dict[int, Reading], str | None]:
        """The readings of `command`'s points in its answer `text`, and what was wrong with the answer, if
        anything ("cut off ..." when the answer is no whole table: the console was interrupted or noisy)."""
        table = tables.parse(text, command.split()[0], self.settings.prompt)
        now = self.clock.now()
        points = self.targets[command]
        if not table.complete:
            status = _S.BadCommunicationError
            return {pt.key: Reading(None, status, now) for pt in points}, "cut off: no end of the table"
        if not table.has_header:
            said = f": the console says {table.message!r}" if table.message else ""
            return {pt.key: Reading(None, _S.BadNotFound, now) for pt in points}, f"no table{said}"
        out: dict[int, Reading] = {}
        problems: list[str] = []
        for pt in points:
            address = self.addresses[pt.key]
            out[pt.key] = self._reading(table, address, pt, now, problems)
        return out, ("; ".join(problems) if problems else None)

    def _reading(self, table: tables.Table, address: Address, pt: Point, now: Any, problems: list[str]) -> Reading:
        row_no, field_name = address.row, address.field
        what = f"module {row_no}" if table.kind == "pwr" else f"cell {row_no}"
        if row_no in table.broken:
            if table.broken[row_no] not in problems:
                problems.append(table.broken[row_no])
            return Reading(None, _S.BadDataEncodingInvalid, now)
        row = table.rows.get(row_no)
        if row is None:
            problems.append(f"no row for {what}")
            return Reading(None, _S.BadNotFound, now)
        absent = table.kind == "pwr" and row.get("BaseState") == tables.ABSENT
        if field_name == "Present":
            return Reading(not absent, _S.Good, now)
        cell = row.get(field_name)
        if absent and field_name != "BaseState":
            return Reading(None, _S.BadOutOfService, now)
        if cell is None:
            if row_no in table.short:
                problems.append(f"{what}: its row is cut short before {field_name}")
                return Reading(None, _S.BadDataEncodingInvalid, now)
            return Reading(None, _S.BadNotSupported, now)  # this firmware prints no such column
        try:
            value = tables.convert(field_name, cell, bool(pt.binding.options.get("console_units")))
        except tables.FieldError as exc:
            problems.append(f"{what}: {exc}")
            return Reading(None, _S.BadDataEncodingInvalid, now)
        return Reading(value, _S.Good, now)
