"""`visa://RESOURCE[?OPTIONS]`: SCPI instruments through pyvisa (pyvisa-py), polled on the scan classes.

RESOURCE is a VISA resource name: `TCPIP0::10.0.0.5::5025::SOCKET` (raw socket), `TCPIP0::10.0.0.5::INSTR`
(VXI-11) or `::hislip0::INSTR`, `ASRL/dev/ttyUSB0::INSTR` (serial). FieldAddress is the query
(`MEAS:VOLT?`); `Index` picks one element of a comma-separated answer. A writable variable has a
`Write` template (`VOLT {value}`); after the command the driver reads the error queue (`SYST:ERR?`)
and an entry fails the write with the instrument's code and message, then reads the value back with
the variable's query. Every pyvisa call runs in the device's own worker thread, each bounded by the
device's timeout. A query not answered in time fails the scan (the instrument is silent, or does not
know the query); the session is closed then, so a late answer cannot be taken for the next query's,
and opened again on the next scan. An answer that is not what the variable expects turns that
variable BadDataEncodingInvalid, logged once when it starts and once when it ends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult

import pyvisa
import pyvisa.constants
import pyvisa.highlevel
import pyvisa.rname
from asyncua import ua

from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.drivers.base import Driver, DriverError, Point, Reading, Simulation, os_error_text
from gateway.drivers.options import Option, parse_query
from gateway.drivers.registry import register
from gateway.drivers.scpi import answers
from gateway.drivers.worker import BlockingWorker

if TYPE_CHECKING:
    from gateway.bindings import DeviceConfig

log = logging.getLogger(__name__)
_S = ua.StatusCodes

_TERMINATIONS = {"lf": "\n", "cr": "\r", "crlf": "\r\n", "none": None}
INTERFACES = ("TCPIP", "ASRL", "USB", "GPIB")
CONNECTION_OPTIONS = (
    Option("read_termination", "choice", "what ends an answer", default="lf", choices=tuple(_TERMINATIONS)),
    Option("write_termination", "choice", "what ends a command", default="lf", choices=tuple(_TERMINATIONS)),
    Option("timeout_ms", "int", "how long one query waits for its answer", default=2000, low=1, high=600_000),
    Option("error_query", "text", "the query that reads one entry of the error queue", default="SYST:ERR?"),
    Option("check_errors", "bool", "read the error queue before and after every write; an entry fails the write",
           default=True),
    Option("baud", "int", "serial line speed (ASRL only, as the three below)", default=9600, low=50, high=4_000_000),
    Option("parity", "choice", "serial parity", default="none", choices=("none", "even", "odd"), default_text="`none`"),
    Option("stop_bits", "choice", "serial stop bits", default="1", choices=("1", "2")),
    Option("data_bits", "int", "serial data bits", default=8, low=5, high=8),
    Option("visa_library", "text", "the VISA implementation: `@py` is pyvisa-py; a path loads another (NI-VISA)",
           default="@py"),
)
POINT_OPTIONS = (
    Option("write", "text", "the command a write sends, `{value}` replaced by the value (`VOLT {value}`, "
           "`OUTP {value}` sends 1 or 0 for a Boolean); needed by a writable variable"),
    Option("index", "int", "element of a comma-separated answer, 0 first", low=0, high=1023, datatype="UInt16"),
)
OPEN_WITHIN_S = 5.0
CLOSE_WITHIN_S = 0.5  # within the device runner's 1 s for closing a driver; a stuck thread is left behind
MAX_ERROR_ENTRIES = 20  # a queue that never says 0 is read this far, then the write fails


@dataclass(frozen=True, slots=True)
class Connection:
    resource: str
    interface: str
    read_termination: str | None
    write_termination: str | None
    timeout_ms: int
    error_query: str
    check_errors: bool
    serial: dict[str, Any]
    visa_library: str


def parse_connection(url: SplitResult) -> Connection:
    """The instrument of a `visa://` connection; ValueError names the bad part."""
    resource = url.netloc + url.path
    if not resource:
        raise ValueError("no resource: visa://RESOURCE (TCPIP0::HOST::PORT::SOCKET, TCPIP0::HOST::INSTR, "
                         "ASRL/dev/ttyUSB0::INSTR)")
    try:
        parsed = pyvisa.rname.parse_resource_name(resource)
    except pyvisa.rname.InvalidResourceName as exc:
        raise ValueError(f"'{resource}' is not a VISA resource name: {exc}") from None
    if parsed.interface_type not in INTERFACES:
        raise ValueError(f"interface {parsed.interface_type} is not one of {', '.join(INTERFACES)}")
    o = parse_query(url, CONNECTION_OPTIONS, "VISA")
    library = o["visa_library"]
    if library.startswith("@") and library[1:] not in pyvisa.highlevel.list_backends():
        raise ValueError(f"VISA library '{library}' is not installed (installed: "
                         f"{', '.join('@' + b for b in pyvisa.highlevel.list_backends())})")
    if "\n" in o["error_query"] or "?" not in o["error_query"]:
        raise ValueError(f"error_query '{o['error_query']}' is not a query")
    serial = {}
    if parsed.interface_type == "ASRL":
        stop_bits = pyvisa.constants.StopBits.one if o["stop_bits"] == "1" else pyvisa.constants.StopBits.two
        serial = {"baud_rate": o["baud"], "data_bits": o["data_bits"], "stop_bits": stop_bits,
                  "parity": getattr(pyvisa.constants.Parity, o["parity"])}
    return Connection(resource, parsed.interface_type, _TERMINATIONS[o["read_termination"]],
                      _TERMINATIONS[o["write_termination"]], o["timeout_ms"], o["error_query"], o["check_errors"],
                      serial, o["visa_library"])


class _InstrumentRefused(Exception):
    def __init__(self, entries: list[tuple[int, str]]) -> None:
        super().__init__(entries)
        self.entries = entries


@register("visa")
class ScpiDriver(Driver):
    connection_options = CONNECTION_OPTIONS
    point_options = POINT_OPTIONS
    connection_form = "`visa://RESOURCE[?OPTIONS]`: SCPI queries and write templates through pyvisa " \
                      "(TCPIP SOCKET/INSTR, ASRL)"

    def __init__(
        self, url: SplitResult, points_by_class: Mapping[str, Sequence[Point]], clock: Clock = SYSTEM_CLOCK
    ) -> None:
        super().__init__(url, points_by_class, clock)
        self.conn = parse_connection(url)
        self.timeout_s = self.conn.timeout_ms / 1000.0
        self.where = f"visa://{self.conn.resource}"
        self.worker = BlockingWorker(f"VISA {self.conn.resource}")
        self._session: Any = None  # the pyvisa resource, touched only in the worker thread
        self._bad: dict[int, str] = {}  # point key -> why its last answer did not decode (logged on change)

    # -- checks ----------------------------------------------------------------------------------
    @classmethod
    def validate_connection(cls, url: SplitResult) -> None:
        parse_connection(url)

    @classmethod
    def validate_point(cls, url: SplitResult, point: Point) -> None:
        query = point.binding.address.strip()
        if not query or "\n" in query or "\r" in query:
            raise ValueError(f"the address must be one query line (MEAS:VOLT?), not {point.binding.address!r}")
        if "?" not in query:
            raise ValueError(f"the address is the query that reads the value, with its '?' (MEAS:VOLT?), "
                             f"not '{query}'")
        template = point.binding.options.get("write")
        if point.writable and not template:
            raise ValueError("a writable SCPI variable needs a Write template (VOLT {value})")
        if template and not point.writable:
            raise ValueError("Write is given but the variable is not writable")
        if template:
            answers.check_template(template)

    @classmethod
    def validate_devices(cls, urls: Sequence[SplitResult]) -> list[tuple[int, str]]:
        seen: dict[str, int] = {}
        out = []
        for i, url in enumerate(urls):
            resource = parse_connection(url).resource.upper()
            j = seen.setdefault(resource, i)
            if j != i:
                out.append((i, f"resource {parse_connection(url).resource} is also the device at {urls[j].geturl()}: "
                               f"one device per instrument (bind all its variables to one device)"))
        return out

    @classmethod
    async def simulate(cls, devices: Sequence[DeviceConfig], clock: Clock) -> Simulation:
        from gateway.drivers.scpi.simulator import ScpiSimulation  # instruments start only when simulating

        sim = ScpiSimulation(devices)
        await sim.start()
        return sim

    def call_timeout(self, default_s: float) -> float | None:
        return None  # every query is bounded by the device's timeout_ms, in the worker and around it

    # -- the session (worker thread only) ---------------------------------------------------------
    def _open(self) -> Any:
        if self._session is None:
            manager = pyvisa.ResourceManager(self.conn.visa_library)
            # Shared per library by pyvisa: only this device's session is ever closed, never the manager.
            self._session = manager.open_resource(
                self.conn.resource, read_termination=self.conn.read_termination,
                write_termination=self.conn.write_termination, timeout=self.conn.timeout_ms, **self.conn.serial)
        return self._session

    def _close(self) -> None:
        session, self._session = self._session, None
        _close_quietly(session, self.where)

    def _in_session(self, work: Callable[[Any], Any]) -> Any:
        """`work(session)` in the worker; any failure closes the session (a late answer must never be read as
        the next query's), and the next call opens it again."""
        session = self._open()
        try:
            return work(session)
        except _InstrumentRefused:  # the instrument answered as it should: the session is fine
            raise
        except BaseException:
            if self._session is session:
                self._session = None
            _close_quietly(session, self.where)
            raise

    async def _run(self, work: Callable[[Any], Any], requests: int, what: Callable[[], str]) -> Any:
        deadline = OPEN_WITHIN_S + requests * (self.timeout_s + 0.5)
        try:
            return await self.worker.call(self._in_session, work, deadline_s=deadline)
        except DriverError as exc:
            # Hung inside the library: that thread and its session are left to end on their own; a fresh
            # thread and session serve the next call.
            hung, self._session = self._session, None
            self.worker.close_soon(lambda: _close_quietly(hung, self.where))
            self.worker = BlockingWorker(f"VISA {self.conn.resource}")
            self.request_errors += 1
            raise DriverError(f"{self.where}: {what()}: {exc}", exc.status) from exc
        except pyvisa.errors.VisaIOError as exc:
            self.request_errors += 1
            if exc.error_code == pyvisa.constants.StatusCode.error_timeout:
                raise DriverError(f"{self.where}: {what()} not answered within {self.timeout_s:g} s (instrument "
                                  f"silent, or a query it does not know)", _S.BadTimeout) from exc
            raise DriverError(f"{self.where}: {what()}: {exc.description}", _S.BadCommunicationError) from exc
        except OSError as exc:
            self.request_errors += 1
            raise DriverError(f"{self.where}: {what()}: {os_error_text(exc)}", _S.BadCommunicationError) from exc
        except (pyvisa.errors.Error, ValueError) as exc:  # a resource pyvisa-py cannot open, a bad setting
            self.request_errors += 1
            raise DriverError(f"{self.where}: {what()}: {exc}", _S.BadCommunicationError) from exc

    async def stop(self) -> None:
        await self.worker.close(CLOSE_WITHIN_S, last=self._close)

    # -- reads -----------------------------------------------------------------------------------
    async def read(self, scan_class: str) -> Mapping[int, Reading]:
        points = self.points_by_class.get(scan_class, ())
        queries = list(dict.fromkeys(pt.binding.address.strip() for pt in points))  # one query serves many indexes
        texts: dict[str, str] = {}
        asking = [queries[0] if queries else ""]

        def ask_all(session: Any) -> dict[str, str]:
            for query in queries:
                asking[0] = query
                texts[query] = session.query(query)
            return texts

        self.requests += len(queries)
        await self._run(ask_all, len(queries), lambda: asking[0])
        now = self.clock.now()
        out: dict[int, Reading] = {}
        for pt in points:
            answer = texts[pt.binding.address.strip()]
            try:
                value = answers.decode(answer, pt.field_type, pt.binding.options.get("index"))
            except answers.AnswerError as exc:
                self._answer_state(pt, str(exc))
                out[pt.key] = Reading(None, _S.BadDataEncodingInvalid, now)
                continue
            self._answer_state(pt, None)
            out[pt.key] = Reading(value, _S.Good, now)
        return out

    def _answer_state(self, pt: Point, problem: str | None) -> None:
        before = self._bad.get(pt.key)
        if problem == before:
            return
        if problem is None:
            del self._bad[pt.key]
            log.info("%s: %s answers as %s again", self.where, pt.binding.address, pt.field_type)
        else:
            self._bad[pt.key] = problem
            self.request_errors += 1
            log.warning("%s: %s answered %s (%s is %s; BadDataEncodingInvalid until it answers in form)",
                        self.where, pt.binding.address, problem, pt.name, pt.field_type)

    # -- writes ----------------------------------------------------------------------------------
    async def write(self, point: Point, value: Any) -> Any:
        template = point.binding.options.get("write")
        if not template:
            raise DriverError(f"{point.name}: no Write template", _S.BadNotWritable)
        try:
            command = answers.render(template, value)
        except (ValueError, TypeError) as exc:
            raise DriverError(f"{point.name}: {value!r} does not fit '{template}': {exc}", _S.BadOutOfRange) from exc
        query = point.binding.address.strip()
        check = self.conn.check_errors

        def send(session: Any) -> str:
            if check:
                earlier = self._drain(session)
                if earlier:
                    log.warning("%s: error queue held %s before writing %s", self.where, _entries(earlier), point.name)
            session.write(command)
            if check:
                refused = self._drain(session)
                if refused:
                    raise _InstrumentRefused(refused)
            return session.query(query)

        self.requests += 1
        try:
            answer = await self._run(send, 3 if check else 2, lambda: f"writing '{command}'")
        except _InstrumentRefused as exc:
            self.request_errors += 1
            code = exc.entries[0][0]
            raise DriverError(f"{point.name}: the instrument refused '{command}': {_entries(exc.entries)}",
                              answers.error_status(code)) from None
        except answers.AnswerError as exc:
            raise DriverError(f"{point.name}: after '{command}' the error queue answered {exc}",
                              _S.BadCommunicationError) from None
        try:
            return answers.decode(answer, point.field_type, point.binding.options.get("index"))
        except answers.AnswerError as exc:
            log.warning("%s: wrote '%s', but reading it back with %s: %s", self.where, command, query, exc)
            return None

    def _drain(self, session: Any) -> list[tuple[int, str]]:
        """Every entry of the error queue (worker thread); an empty list when it holds none."""
        entries = []
        for _ in range(MAX_ERROR_ENTRIES):
            code, message = answers.error_entry(session.query(self.conn.error_query))
            if code == 0:
                return entries
            entries.append((code, message))
        entries.append((0, f"... the queue still not empty after {MAX_ERROR_ENTRIES} reads"))
        return entries


def _close_quietly(session: Any, where: str) -> None:
    if session is not None:
        try:
            session.close()
        except Exception as exc:  # closing a broken session may fail itself; it is gone either way
            log.debug("%s: closing: %s", where, exc)


def _entries(entries: list[tuple[int, str]]) -> str:
    return "; ".join(f'{code},"{message}"' if code else message for code, message in entries)
