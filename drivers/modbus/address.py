"""Modbus field addresses and device connection options (pure parsing, no I/O).

FieldAddress syntax (one variable):
  explicit   TABLE/N      table = holding | input | coil | discrete (aliases hr, ir, co, di, the W3C WoT
                          entity names HoldingRegister, InputRegister, Coil, DiscreteInput, and the
                          instrument-file names HRegister, IRegister, DInput; case-insensitive).
                          N is decimal or 0x-hex, zero-based unless the device says addressing=1.
  Modicon    40001..49999 holding, 30001.. input, 10001.. discrete, 00001.. coil (always 5 or 6 digits);
             400001..465536 (and 3/1/0 with six digits) for the whole 16-bit range.
             Modicon numbers are one-based by definition, so the device's `addressing` does not apply.

Connection URI (one device), W3C WoT Modbus binding form plus query options:
  modbus+tcp://HOST[:PORT]/UNIT?OPTIONS      Modbus TCP (port 502 by default)
  modbus+rtutcp://HOST[:PORT]/UNIT?OPTIONS   RTU frames over a TCP socket (serial-to-Ethernet converters)
  modbus+rtu:///dev/ttyUSB0/UNIT?OPTIONS     RTU on a serial port; the last path segment is the unit
See DeviceOptions for the options, their defaults and limits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import NamedTuple
from urllib.parse import SplitResult, parse_qsl, urlsplit

from gateway.drivers.options import Option

TABLES = ("coil", "discrete", "input", "holding")
BIT_TABLES = frozenset({"coil", "discrete"})
WRITABLE_TABLES = frozenset({"coil", "holding"})

_ALIASES = {
    "holding": "holding", "hr": "holding", "holdingregister": "holding", "holdingregisters": "holding",
    "hregister": "holding",
    "input": "input", "ir": "input", "inputregister": "input", "inputregisters": "input", "iregister": "input",
    "coil": "coil", "co": "coil", "coils": "coil",
    "discrete": "discrete", "di": "discrete", "discreteinput": "discrete", "discreteinputs": "discrete",
    "dinput": "discrete",
}
# Modicon notation: the leading digit names the table (2 was never assigned).
_MODICON = {"0": "coil", "1": "discrete", "3": "input", "4": "holding"}
_MODICON_KIND = {"coil": "coil", "discrete": "discrete input", "input": "register", "holding": "register"}
_EXPLICIT = re.compile(r"^\s*([A-Za-z_]+)\s*/\s*(\S+)\s*$")
_NUMBER = re.compile(r"^(?:[0-9]+|0[xX][0-9A-Fa-f]+)$")

SCHEMES = ("modbus+tcp", "modbus+rtutcp", "modbus+rtu")
# Modbus Application Protocol v1.1b3 limits per request (PDU of 253 bytes).
MAX_READ_REGISTERS = 125  # FC03/FC04
MAX_WRITE_REGISTERS = 123  # FC16
MAX_READ_BITS = 2000  # FC01/FC02
MAX_WRITE_BITS = 1968  # FC15


class ModbusAddress(NamedTuple):
    """Where a value lives: the table and the zero-based protocol offset (what goes on the wire)."""

    table: str
    offset: int


def parse_address(address: str, addressing: int = 0) -> ModbusAddress:
    """Parse a FieldAddress; `addressing` (0 or 1) is the device's base for the explicit TABLE/N form.

    Raises ValueError naming the problem.
    """
    if addressing not in (0, 1):
        raise ValueError(f"addressing must be 0 or 1, not {addressing!r}")
    text = address.strip()
    if not text:
        raise ValueError("empty Modbus address")
    match = _EXPLICIT.match(text)
    if match:
        return _parse_explicit(text, match.group(1), match.group(2), addressing)
    if text.isdigit():
        return _parse_modicon(text)
    raise ValueError(
        f"address '{address}' is not a Modbus address (expected TABLE/N with TABLE one of "
        f"holding, input, coil, discrete, or a Modicon number such as 40001)"
    )


def _parse_explicit(text: str, name: str, number: str, addressing: int) -> ModbusAddress:
    table = _ALIASES.get(name.lower())
    if table is None:
        raise ValueError(f"address '{text}': unknown Modbus table '{name}' (known: holding, input, coil, discrete)")
    if not _NUMBER.match(number):
        raise ValueError(f"address '{text}': '{number}' is not a register number (decimal or 0x-hex)")
    n = int(number, 0) if number[:2].lower() == "0x" else int(number, 10)
    if n < addressing or n > 0xFFFF + addressing:
        base = "one-based (addressing=1)" if addressing else "zero-based (addressing=0)"
        raise ValueError(
            f"address '{text}': {n} is outside {addressing}..{0xFFFF + addressing}, the {base} range of the device"
        )
    return ModbusAddress(table, n - addressing)


def _parse_modicon(text: str) -> ModbusAddress:
    if len(text) < 5:
        # A short bare number is ambiguous (coil 17 written without its zeros? holding register 17?),
        # and a wrong guess reads the wrong table without any error: make the user say which.
        raise ValueError(
            f"address {text} is ambiguous: write TABLE/N (holding/{text}) or a 5- or 6-digit Modicon number "
            f"(0{int(text):04d} for coil {text}, 4{int(text):04d} for holding register {text})"
        )
    if len(text) > 6:
        raise ValueError(f"address {text} has more than 6 digits; not a Modicon address")
    digit, rest = text[0], int(text[1:])
    table = _MODICON.get(digit)
    if table is None:
        raise ValueError(
            f"address {text} is not a Modicon address (the first digit names the table: 0 coil, "
            f"1 discrete input, 3 input register, 4 holding register)"
        )
    tail = "x" * (len(text) - 1)
    if rest == 0:
        first = digit + "0" * (len(text) - 2) + "1"
        raise ValueError(f"address {text} is not a Modicon {_MODICON_KIND[table]} ({digit}{tail} starts at {first})")
    if rest > 0x10000:
        raise ValueError(f"address {text} is beyond the last Modicon {table} address {digit}65536")
    return ModbusAddress(table, rest - 1)


@dataclass(frozen=True, slots=True)
class DeviceOptions:
    """One device's connection and polling options, parsed from its Connection URI.

    The defaults work without any query; every option can be given in the query string.
    """

    scheme: str = "modbus+tcp"
    host: str = ""  # tcp / rtutcp
    port: int = 502  # tcp / rtutcp
    serial_port: str = ""  # rtu: /dev/ttyUSB0, COM3, or a pyserial URL's path
    unit: int = 1  # Modbus unit (slave) id; WoT puts it in the path
    byte_order: str = "big"  # byte order inside each 16-bit register; variables may override
    word_order: str = "big"  # order of the registers of a 32/64-bit value; variables may override
    addressing: int = 0  # base of the explicit TABLE/N form: 0 = protocol offsets, 1 = one-based docs
    max_read_registers: int = MAX_READ_REGISTERS
    max_write_registers: int = MAX_WRITE_REGISTERS
    max_read_bits: int = MAX_READ_BITS
    max_write_bits: int = MAX_WRITE_BITS
    # Unused registers (or bits) the planner may read to join two blocks into one request. 0 by default:
    # many devices answer IllegalDataAddress when a read touches an unmapped register.
    gap: int = 0
    timeout_ms: int = 1000
    min_interval_ms: int = 0  # silence between two requests, for slow converters and RS-485 buses
    # 6: FC06 (FC05 for coils) for one register, FC16 (FC15) for more; 16: always FC16 (FC15).
    # 6 by default, as Kepware does: FC06 is the function nearly every device implements.
    write_function: int = 6
    # Serial line (rtu only). Defaults per Modbus over Serial Line v1.02 section 2.5.1: 19200 baud, even parity.
    baud: int = 19200
    parity: str = "E"
    stopbits: int = 1
    bytesize: int = 8

    @property
    def transport(self) -> str:
        """'tcp', 'rtutcp' or 'rtu'."""
        return self.scheme.split("+", 1)[1]

    @property
    def link_key(self) -> tuple[str, str, int]:
        """Identity of the physical link: devices with the same key share one connection, in turn."""
        if self.transport == "rtu":
            return ("rtu", self.serial_port, 0)
        return (self.transport, self.host.lower(), self.port)

    @property
    def line_settings(self) -> str:
        """The serial line as one text (19200 8E1); every device on one serial port must agree on it."""
        return f"{self.baud} {self.bytesize}{self.parity}{self.stopbits}"


def link_conflicts(devices: list[DeviceOptions]) -> list[tuple[int, int]]:
    """(i, j) for each device i whose serial line settings differ from those of device j, the first one
    on the same port: a port opens with one setting, so one of the two would never be understood."""
    first: dict[tuple[str, str, int], int] = {}
    out = []
    for i, o in enumerate(devices):
        j = first.setdefault(o.link_key, i)
        if j != i and o.transport == "rtu" and o.line_settings != devices[j].line_settings:
            out.append((i, j))
    return out


_ORDER = ("big", "little")
_INT_OPTIONS: dict[str, tuple[int, int, str]] = {
    # name: (min, max, why the bound)
    "addressing": (0, 1, "0 = zero-based offsets, 1 = one-based"),
    "max_read_registers": (1, MAX_READ_REGISTERS, "the Modbus limit of FC03/FC04"),
    "max_write_registers": (1, MAX_WRITE_REGISTERS, "the Modbus limit of FC16"),
    "max_read_bits": (1, MAX_READ_BITS, "the Modbus limit of FC01/FC02"),
    "max_write_bits": (1, MAX_WRITE_BITS, "the Modbus limit of FC15"),
    "gap": (0, MAX_READ_BITS, "registers or bits"),
    "timeout_ms": (1, 600_000, "milliseconds"),
    "min_interval_ms": (0, 600_000, "milliseconds"),
    "baud": (50, 4_000_000, "bits per second"),
    "bytesize": (7, 8, "data bits"),
}
_SERIAL_OPTIONS = frozenset({"baud", "parity", "stopbits", "bytesize"})
_QUERY_OPTIONS = tuple(f.name for f in fields(DeviceOptions) if f.name not in ("scheme", "host", "port",
                                                                                 "serial_port", "unit"))


POINT_OPTIONS = (
    Option("byte_order", "choice", "byte order inside a 16-bit register", choices=_ORDER,
           default_text="the device's `byte_order`"),
    Option("word_order", "choice", "register order of 32/64-bit values (`little` = low word first, \"CDAB\")",
           choices=_ORDER, default_text="the device's `word_order`"),
    Option("bit", "int", "bit of an integer field, 0 = least significant", low=0, high=63, datatype="Byte"),
    Option("length", "int", "string length in bytes", low=1, high=65535, datatype="UInt16"),
)
# Parsed by parse_connection (its checks and messages predate the declarations); the declarations name them
# for the documentation, and a test holds the two to the same keys.
CONNECTION_OPTIONS = (
    Option("byte_order", "choice", "byte order inside each register; a variable's `ByteOrder` overrides it",
           default="big", choices=_ORDER),
    Option("word_order", "choice", "register order of 32/64-bit values (`little` = low word first, \"CDAB\"); "
           "`WordOrder` overrides it", default="big", choices=_ORDER),
    Option("addressing", "int", "base of the `TABLE/N` form: 0 = protocol offsets, 1 = one-based as many manuals "
           "number registers", default=0, low=0, high=1),
    Option("max_read_registers", "int", "registers per FC03/FC04 request (the protocol's maximum)",
           default=MAX_READ_REGISTERS, low=1, high=MAX_READ_REGISTERS),
    Option("max_write_registers", "int", "registers per FC16 request", default=MAX_WRITE_REGISTERS, low=1,
           high=MAX_WRITE_REGISTERS),
    Option("max_read_bits", "int", "coils or discrete inputs per FC01/FC02 request", default=MAX_READ_BITS, low=1,
           high=MAX_READ_BITS),
    Option("max_write_bits", "int", "coils per FC15 request", default=MAX_WRITE_BITS, low=1, high=MAX_WRITE_BITS),
    Option("gap", "int", "unused registers a read may span to join two blocks (0: many devices refuse unmapped "
           "registers)", default=0, low=0, high=MAX_READ_BITS),
    Option("timeout_ms", "int", "answer timeout of one request", default=1000, low=1, high=600_000),
    Option("min_interval_ms", "int", "silence between two requests on the link (slow converters, RS-485)",
           default=0, low=0, high=600_000),
    Option("write_function", "choice", "6: FC06 (FC05 for a coil) for one register, FC16 (FC15) for more; "
           "16: always FC16 (FC15)", default="6", choices=("6", "16")),
    Option("baud", "int", "serial line speed (`modbus+rtu` only, as the three below; defaults of Modbus over "
           "Serial Line v1.02); every device on one serial port must state the same line, or the site is "
           "refused", default=19200, low=50, high=4_000_000),
    Option("parity", "choice", "serial parity (`n`, `none`, `e`, `even`, `o`, `odd` in any case)", default="E",
           choices=("n", "e", "o")),
    Option("stopbits", "choice", "serial stop bits", default="1", choices=("1", "2")),
    Option("bytesize", "int", "serial data bits", default=8, low=7, high=8),
)


def parse_connection(url: str | SplitResult) -> DeviceOptions:
    """Parse a modbus+tcp / modbus+rtutcp / modbus+rtu Connection URI; ValueError names the bad part."""
    parts = urlsplit(url) if isinstance(url, str) else url
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"connection scheme '{parts.scheme}' is not Modbus (known: {', '.join(SCHEMES)})")
    values: dict[str, object] = {"scheme": scheme}
    segments = [s for s in parts.path.split("/") if s]
    if scheme == "modbus+rtu":
        # The serial device is a path itself (/dev/ttyUSB0), so the unit is the last segment, when numeric.
        if segments and segments[-1].isdigit() and (len(segments) > 1 or parts.netloc):
            unit_text: str | None = segments.pop()
        else:
            unit_text = None
        device = (parts.netloc + "/" + "/".join(segments)) if parts.netloc else "/" + "/".join(segments)
        if device in ("", "/"):
            raise ValueError(f"connection '{parts.geturl()}' names no serial port (modbus+rtu:///dev/ttyUSB0/1)")
        values["serial_port"] = device.rstrip("/")
        max_unit = 247  # RTU: 248..255 are reserved by the serial line spec
    else:
        if not parts.hostname:
            raise ValueError(f"connection '{parts.geturl()}' names no host ({scheme}://HOST:PORT/UNIT)")
        values["host"] = parts.hostname
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"connection '{parts.geturl()}': the port is not a number in 1..65535") from None
        if port is not None:
            if port == 0:
                raise ValueError(f"connection '{parts.geturl()}': port 0 is not a TCP port")
            values["port"] = port
        if len(segments) > 1:
            raise ValueError(f"connection '{parts.geturl()}': the path must be just the unit id (/1)")
        unit_text = segments[0] if segments else None
        max_unit = 255  # TCP gateways use 0 and 255 too
    if unit_text is not None:
        if not unit_text.isdigit() or int(unit_text) > max_unit:
            raise ValueError(f"connection '{parts.geturl()}': unit id '{unit_text}' is not in 0..{max_unit}")
        values["unit"] = int(unit_text)

    seen: set[str] = set()
    for key, raw in parse_qsl(parts.query, keep_blank_values=True):
        if key in seen:
            raise ValueError(f"option '{key}' is given twice")
        seen.add(key)
        values[key] = _option(key, raw, scheme)
    return DeviceOptions(**values)  # type: ignore[arg-type]


def _option(key: str, raw: str, scheme: str) -> object:
    if key not in _QUERY_OPTIONS:
        raise ValueError(f"unknown Modbus option '{key}' (known: {', '.join(_QUERY_OPTIONS)})")
    if key in _SERIAL_OPTIONS and scheme != "modbus+rtu":
        raise ValueError(f"option '{key}' applies only to modbus+rtu (a serial line), not {scheme}")
    value = raw.strip()
    if key in ("byte_order", "word_order"):
        if value.lower() not in _ORDER:
            raise ValueError(f"option {key}='{raw}' must be big or little")
        return value.lower()
    if key == "parity":
        parity = {"n": "N", "none": "N", "e": "E", "even": "E", "o": "O", "odd": "O"}.get(value.lower())
        if parity is None:
            raise ValueError(f"option parity='{raw}' must be N, E or O")
        return parity
    if key == "stopbits":
        if value not in ("1", "2"):
            raise ValueError(f"option stopbits='{raw}' must be 1 or 2")
        return int(value)
    if key == "write_function":
        if value not in ("6", "16"):
            raise ValueError(f"option write_function='{raw}' must be 6 (FC06 for one register) or 16 (always FC16)")
        return int(value)
    low, high, why = _INT_OPTIONS[key]
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"option {key}='{raw}' is not an integer") from None
    if not low <= number <= high:
        raise ValueError(f"option {key}={number} is out of range {low}..{high} ({why})")
    return number
