"""The facade's register map as a table for the SCADA integrator: Markdown or CSV.

Addresses are shown both as protocol offsets (`holding/100`, what goes on the wire) and as the
one-based Modicon reference (`40101`) that most SCADA configuration tools ask for.
"""

from __future__ import annotations

import csv
import io

from gateway.facade.model import SUNSPEC_BASE, SUNSPEC_REGISTERS, FacadeConfig, Register

COLUMNS = ("table", "offset", "modicon", "registers", "node", "type", "byte order", "word order", "scale",
           "value offset", "unit", "range", "access", "watchdog fallback", "status bit")
_MODICON_DIGIT = {"coil": "0", "discrete": "1", "input": "3", "holding": "4"}
_TABLE_ORDER = {"coil": 0, "discrete": 1, "input": 2, "holding": 3}


def modicon(reg: Register) -> str:
    number = reg.offset + 1
    return f"{_MODICON_DIGIT[reg.table]}{number:04d}" if number <= 9999 else f"{_MODICON_DIGIT[reg.table]}{number:05d}"


def rows(config: FacadeConfig) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for m in config.mappings:
        rng = f"{m.eurange[0]:g}..{m.eurange[1]:g}" if m.eurange else \
            ", ".join(f"{i} {name}" for i, name in enumerate(m.names) if name)
        status = f"{m.status[0]} bit {m.status[1]}" if m.status else ""
        multi = m.count > 1 and m.table not in ("coil", "discrete")
        out.append((m.table, str(m.offset), modicon(m.register), str(m.count), m.name, m.field_type,
                    m.byte_order if multi or m.field_type == "xsd:string" else "",
                    m.word_order if multi and m.field_type != "xsd:string" else "", f"{m.scale:g}",
                    f"{m.value_offset:g}", m.unit, rng, "read/write" if m.writable else "read",
                    "" if m.fallback is None else str(m.fallback), status))
    for reg, bits in _status_registers(config).items():
        shown = ", ".join(f"bit {b}: {name}" for b, name in sorted(bits))
        out.append((reg.table, str(reg.offset), modicon(reg), "1", f"status (1 = not Good): {shown}",
                    "xsd:unsignedShort", "", "", "1", "0", "", "", "read", "", ""))
    if config.watchdog is not None:
        reg = config.watchdog
        out.append((reg.table, str(reg.offset), modicon(reg), "1",
                    f"watchdog: change within {config.watchdog_timeout_s:g} s or setpoints are withdrawn",
                    "xsd:unsignedShort", "", "", "1", "0", "", "", "read/write", "", ""))
    if config.heartbeat is not None:
        reg = config.heartbeat
        out.append((reg.table, str(reg.offset), modicon(reg), "1", "heartbeat: the gateway counts up every second",
                    "xsd:unsignedShort", "", "", "1", "0", "", "", "read", "", ""))
    if config.sunspec_common:
        reg = Register("holding", SUNSPEC_BASE)
        out.append((reg.table, str(reg.offset), modicon(reg), str(SUNSPEC_REGISTERS),
                    "SunSpec: 'SunS', Common model (1), end model", "", "", "", "", "", "", "", "read", "", ""))
    out.sort(key=lambda r: (_TABLE_ORDER[r[0]], int(r[1])))
    return out


def _status_registers(config: FacadeConfig) -> dict[Register, list[tuple[int, str]]]:
    out: dict[Register, list[tuple[int, str]]] = {}
    for m in config.mappings:
        if m.status is not None:
            out.setdefault(m.status[0], []).append((m.status[1], m.name))
    return out


def markdown(config: FacadeConfig) -> str:
    head = (f"Modbus TCP facade `{config.name}`: {config.host}:{config.port}, unit {config.unit}; "
            f"writes {'as ' + config.write_role.name if config.write_role else 'refused (no WriteRole)'}\n\n")
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows(config):
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    return head + "\n".join(lines) + "\n"


def csv_text(config: FacadeConfig) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(rows(config))
    return buf.getvalue()
