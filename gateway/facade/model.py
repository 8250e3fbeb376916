"""What a site's Modbus facade is: its listener, its register map, its watchdog (no I/O).

A mapping shows one variable at one table and address with the Modbus driver's vocabulary
(`holding/100`, `input/0`, `coil/3`, `discrete/0`, Modicon `40101`; field types `xsd:*`, byte and word
order, `Scale`/`Offset` with engineering value = raw x Scale + Offset). `RegisterMap` places every
mapping, status register, watchdog and heartbeat register and the SunSpec block in its table and
names each overlap, so a site whose map collides is refused before anything listens.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from asyncua import ua

from gateway.drivers.modbus.address import BIT_TABLES, WRITABLE_TABLES
from gateway.security.roles import Role

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_PORT = 502
DEFAULT_ALLOWED = "127.0.0.1/8, ::1"  # loopback only until the site names its SCADA's addresses
DEFAULT_MAX_CONNECTIONS = 32
DEFAULT_IDLE_TIMEOUT_MS = 60_000.0
SUNSPEC_BASE = 40000  # protocol offset of "SunS": register 40001 in the one-based numbering of SunSpec's documents
SUNSPEC_COMMON_LENGTH = 66  # registers of model 1 after its id and length
SUNSPEC_REGISTERS = 2 + 2 + SUNSPEC_COMMON_LENGTH + 2  # "SunS", id and length, model 1, end model (0xFFFF, 0)


class Register(NamedTuple):
    table: str
    offset: int

    def __str__(self) -> str:
        return f"{self.table}/{self.offset}"


@dataclass(frozen=True, slots=True)
class Mapping:
    """One variable shown in the facade."""

    nodeid: ua.NodeId
    name: str  # the variable's browse path from Objects, for the map table and messages
    table: str
    offset: int
    count: int  # registers (or bits in a bit table)
    field_type: str
    vtype: ua.VariantType
    byte_order: str = "big"
    word_order: str = "big"
    length: int | None = None  # xsd:string bytes
    scale: float = 1.0
    value_offset: float = 0.0  # the FacadeOffset property: engineering = raw x scale + value_offset
    writable: bool = False
    fallback: Any = None  # written when the watchdog expires; None: not guarded by the watchdog
    status: tuple[Register, int] | None = None  # the status register and bit showing this value's quality
    unit: str = ""
    eurange: tuple[float, float] | None = None
    names: tuple[str, ...] = ()  # a MultiStateDiscrete's EnumStrings: the name of each value from 0

    @property
    def register(self) -> Register:
        return Register(self.table, self.offset)

    @property
    def guarded(self) -> bool:
        return self.fallback is not None


@dataclass(slots=True)
class FacadeConfig:
    nodeid: ua.NodeId  # the facade object
    name: str
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    unit: int = 1
    default_orders: tuple[str, str] = ("big", "big")  # byte and word order of mappings that state none
    allowed: list[IpNetwork] = field(default_factory=lambda: parse_allowed(DEFAULT_ALLOWED))
    write_role: Role | None = None  # None: every write is refused (BadUserAccessDenied, exception 0x01)
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_MS / 1000.0
    bad_value: float | None = None  # raw sentinel answered for a Bad value instead of exception 0x04
    watchdog: Register | None = None
    watchdog_timeout_s: float = 0.0
    heartbeat: Register | None = None
    sunspec_common: bool = False
    mappings: list[Mapping] = field(default_factory=list)

    def allows(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.allowed)


def parse_allowed(text: str) -> list[IpNetwork]:
    """`10.0.0.5, 10.1.0.0/16, ::1` -> networks; ValueError names the entry that is not an address."""
    nets: list[IpNetwork] = []
    for part in (p.strip() for p in text.replace(";", ",").split(",")):
        if not part:
            continue
        try:
            nets.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"'{part}' is not an IP address or network (10.0.0.5, 10.0.0.0/24, ::1)") from None
    return nets


class Cell(NamedTuple):
    """What one register (or bit) of a table is."""

    kind: str  # value | status | watchdog | heartbeat | sunspec
    index: int  # the register's position inside its value (0 = first)
    mapping: Mapping | None = None


class RegisterMap:
    """Every occupied register of the four tables, and the overlaps found while placing them."""

    def __init__(self) -> None:
        self.cells: dict[str, dict[int, Cell]] = {t: {} for t in ("coil", "discrete", "input", "holding")}
        self.owner: dict[tuple[str, int], str] = {}
        self.overlaps: list[tuple[str, str]] = []  # (what was placed, what it collided with)

    def place(self, what: str, table: str, offset: int, count: int, kind: str, mapping: Mapping | None = None,
              shared_ok: bool = False) -> None:
        collided: str | None = None
        for i in range(count):
            key = (table, offset + i)
            held = self.cells[table].get(offset + i)
            if held is not None and not (shared_ok and held.kind == kind):
                collided = collided or self.owner[key]
                continue
            self.cells[table][offset + i] = Cell(kind, i, mapping)
            self.owner.setdefault(key, what)
        if collided is not None:
            self.overlaps.append((what, collided))

    def cell(self, table: str, offset: int) -> Cell | None:
        return self.cells[table].get(offset)


def build_register_map(config: FacadeConfig) -> RegisterMap:
    rmap = RegisterMap()
    for m in config.mappings:
        rmap.place(f"{m.name} at {m.register}", m.table, m.offset, m.count, "value", m)
    # Several mappings share one status register (a bit each), so status cells may repeat.
    for m in config.mappings:
        if m.status is not None:
            reg, _ = m.status
            rmap.place(f"the status register {reg}", reg.table, reg.offset, 1, "status", shared_ok=True)
    if config.watchdog is not None:
        rmap.place(f"the watchdog register {config.watchdog}", config.watchdog.table, config.watchdog.offset, 1,
                   "watchdog")
    if config.heartbeat is not None:
        rmap.place(f"the heartbeat register {config.heartbeat}", config.heartbeat.table, config.heartbeat.offset, 1,
                   "heartbeat")
    if config.sunspec_common:
        rmap.place(f"the SunSpec Common model at holding/{SUNSPEC_BASE}", "holding", SUNSPEC_BASE,
                   SUNSPEC_REGISTERS, "sunspec")
    return rmap


def status_bits(mappings: Iterable[Mapping]) -> dict[Register, list[tuple[int, Mapping]]]:
    """Status register -> (bit, mapping) of the values it shows."""
    out: dict[Register, list[tuple[int, Mapping]]] = {}
    for m in mappings:
        if m.status is not None:
            out.setdefault(m.status[0], []).append((m.status[1], m))
    return out


def is_bit_table(table: str) -> bool:
    return table in BIT_TABLES


def is_writable_table(table: str) -> bool:
    return table in WRITABLE_TABLES
