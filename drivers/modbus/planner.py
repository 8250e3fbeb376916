"""Request planning: the fewest Modbus reads per scan class, and the function code of a write (pure).

Every request pays a fixed cost on top of its bytes (turnaround, inter-frame silence, the device's
processing, a gateway's queue: tens of milliseconds on RS-485 or behind a ComBox), and devices sharing
one link wait for each other, so points are coalesced into blocks as large as the device allows:
- points are grouped by scan class and table, then sorted by offset;
- a block starts at the first unplanned point and takes every following point that ends within
  the request limit (max_read_registers / max_read_bits) and starts at most `gap` registers (or bits)
  after what the block covers so far; a point never spans two blocks;
- points may overlap (two bits of one status register, a float also read as two shorts): they share
  the registers of one block.
A point that does not fit the window of the current block (a long string next to it) is left for the
next block rather than closing the block early, so a long point in the middle costs one extra request,
not two.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from gateway.drivers.modbus.address import BIT_TABLES, TABLES, WRITABLE_TABLES, DeviceOptions, parse_address
from gateway.drivers.modbus.codec import register_count

READ_FUNCTION = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
_TABLE_ORDER = {t: i for i, t in enumerate(TABLES)}


@dataclass(frozen=True, slots=True)
class PointSpan:
    """What the planner needs of a point: where it is and how many registers (or bits) it spans."""

    key: int
    table: str
    offset: int
    count: int
    scan_class: str = "MediumSpeed"


class BlockItem(NamedTuple):
    key: int
    offset: int  # offset of the point's first register (or bit) inside the block
    count: int


@dataclass(slots=True)
class ReadBlock:
    """One read request: `count` registers (or bits) of `table` from `start`, and the points inside it."""

    table: str
    start: int
    count: int
    items: list[BlockItem] = field(default_factory=list)

    @property
    def function_code(self) -> int:
        """FC01 coils, FC02 discrete inputs, FC03 holding registers, FC04 input registers."""
        return READ_FUNCTION[self.table]


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """One write request: function code 5, 6, 15 or 16 and the values from `offset` on."""

    function_code: int
    table: str
    offset: int
    values: list[int]


def span_for(key: int, address: str, field_type: str, options: DeviceOptions, *, bit: int | None = None,
             length: int | None = None, scan_class: str = "MediumSpeed") -> PointSpan:
    """A bound variable's span on one device; ValueError names a bad address or binding."""
    table, offset = parse_address(address, options.addressing)
    count = register_count(field_type, table, bit, length)
    if offset + count > 0x10000:
        raise ValueError(f"address '{address}': {count} registers from offset {offset} run past 65535")
    return PointSpan(key, table, offset, count, scan_class)


def _limit(table: str, options: DeviceOptions) -> int:
    return options.max_read_bits if table in BIT_TABLES else options.max_read_registers


def plan_reads(points: Iterable[PointSpan], options: DeviceOptions) -> dict[str, list[ReadBlock]]:
    """Blocks per scan class, in table order (coil, discrete, input, holding) and then by start.

    Raises ValueError for a point larger than one request allows or outside the 16-bit address range.
    """
    groups: dict[str, dict[str, list[PointSpan]]] = {}
    for p in points:
        if p.table not in READ_FUNCTION:
            raise ValueError(f"point {p.key}: unknown Modbus table '{p.table}'")
        if p.count < 1:
            raise ValueError(f"point {p.key}: spans {p.count} registers; it needs at least 1")
        if p.offset < 0 or p.offset + p.count > 0x10000:
            raise ValueError(f"point {p.key}: offset {p.offset} + {p.count} is outside the Modbus address range")
        limit = _limit(p.table, options)
        if p.count > limit:
            unit = "bits" if p.table in BIT_TABLES else "registers"
            raise ValueError(f"point {p.key}: spans {p.count} {unit}, more than one read of {limit} allows")
        groups.setdefault(p.scan_class, {}).setdefault(p.table, []).append(p)
    plan: dict[str, list[ReadBlock]] = {}
    for scan_class, tables in groups.items():
        blocks: list[ReadBlock] = []
        for table in sorted(tables, key=_TABLE_ORDER.__getitem__):
            blocks += _coalesce(table, tables[table], _limit(table, options), options.gap)
        plan[scan_class] = blocks
    return plan


def _coalesce(table: str, points: Sequence[PointSpan], limit: int, gap: int) -> list[ReadBlock]:
    pending = sorted(points, key=lambda p: (p.offset, -p.count, p.key))
    blocks: list[ReadBlock] = []
    while pending:
        first = pending[0]
        start, end = first.offset, first.offset + first.count
        taken = [first]
        left: list[PointSpan] = []
        for i, p in enumerate(pending[1:], 1):
            if p.offset - end > gap:
                # Sorted by offset, so every later point is at least as far: the block is complete.
                left += pending[i:]
                break
            if p.offset + p.count - start > limit:
                left.append(p)  # too long for this window; a later, shorter point may still fit
                continue
            taken.append(p)
            end = max(end, p.offset + p.count)
        blocks.append(ReadBlock(table, start, end - start,
                                [BlockItem(p.key, p.offset - start, p.count) for p in taken]))
        pending = left
    return blocks


def plan_write(table: str, offset: int, values: Sequence[int | bool], options: DeviceOptions) -> WriteRequest:
    """The one request that writes `values` (registers, or coil states) from `offset`.

    A multi-register value is never split: splitting would let the device act on a half-written value.
    """
    if table not in WRITABLE_TABLES:
        if table in READ_FUNCTION:
            kind = "input registers" if table == "input" else "discrete inputs"
            raise ValueError(f"{kind} are read-only; only holding registers and coils take writes")
        raise ValueError(f"unknown Modbus table '{table}'")
    count = len(values)
    if count == 0:
        raise ValueError("nothing to write")
    if offset < 0 or offset + count > 0x10000:
        raise ValueError(f"write of {count} from offset {offset} is outside the Modbus address range")
    single = count == 1 and options.write_function == 6
    if table == "coil":
        if count > options.max_write_bits:
            raise ValueError(f"write of {count} coils exceeds max_write_bits {options.max_write_bits}")
        return WriteRequest(5 if single else 15, table, offset, [1 if v else 0 for v in values])
    if count > options.max_write_registers:
        raise ValueError(f"write of {count} registers exceeds max_write_registers {options.max_write_registers}")
    for v in values:
        if isinstance(v, bool) or not 0 <= v <= 0xFFFF:
            raise ValueError(f"register value {v!r} is not a 16-bit unsigned integer")
    return WriteRequest(6 if single else 16, table, offset, [int(v) for v in values])
