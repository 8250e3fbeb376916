"""`gateway nodeset import-instruments FILE.json...`: instrument files (EquipmentTags + Channels,
the format of Node-RED/MQTT instrument servers) turned into a site.

Each file becomes a device; each active channel a variable with its binding, scaling, unit and
scan class (from the `HighSpeed`/`MediumSpeed`/`LowSpeed` tag). `EquipmentTags.Communication` picks
the driver and how a channel maps to its address (instrument_kinds.py): ModbusTcpGeneric (Modbus TCP
registers), SCPI (`visa://` queries and write templates), Opto (`optommp://` points), MQTT (members of
the instrument's JSON data topic) and Ping (`ping://` reachability). The result goes through the YAML
site builder, so it gets the same checks, and can also be written as YAML for editing. What the
gateway cannot map is reported with the file, instrument and channel, never silently dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.nodeset import instrument_kinds
from gateway.nodeset.instrument_kinds import name as _name
from gateway.nodeset.model import NodesetError, Problem
from gateway.nodeset.units import UNITS

_UNIT_ALIASES = {"degc": "°C", "c": "°C", "kw": "kW", "w": "W", "v": "V", "a": "A", "hz": "Hz", "%": "%",
                 "bar": "bar", "kpa": "kPa", "pa": "Pa", "rpm": "rpm", "kwh": "kWh", "s": "s", "lpm": "l/min"}
_SCANS = ("HighSpeed", "MediumSpeed", "LowSpeed")


@dataclass
class ImportResult:
    site: dict[str, Any]
    notes: list[str] = field(default_factory=list)  # things mapped approximately (unknown units, ...)


def _device(path: Path, doc: Any, problems: list[Problem], notes: list[str], mqtt_broker: str | None
            ) -> dict[str, Any] | None:
    src = str(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("EquipmentTags"), dict):
        problems.append(Problem(src, None, None, "not an instrument file: no 'EquipmentTags' mapping"))
        return None
    tags = doc["EquipmentTags"]
    name = _name(str(tags.get("EquipmentName") or path.stem))
    comm = str(tags.get("Communication", ""))
    kind = instrument_kinds.KINDS.get(comm.lower())
    if kind is None:
        problems.append(Problem(src, None, name, f"Communication '{comm}' is not supported (known: "
                                                 f"{', '.join(instrument_kinds.KIND_NAMES)})"))
        return None
    where = instrument_kinds.Where(src, name, problems, notes)
    before = len(problems)
    connection = kind.connection(tags, where, mqtt_broker)
    description = " / ".join(str(tags[k]) for k in ("EquipmentType", "EquipmentLocation", "Reference") if tags.get(k))
    variables = []
    channels = doc.get("Channels") or {}
    if not isinstance(channels, dict):
        problems.append(Problem(src, None, name, "'Channels' must be a mapping of channel name to channel"))
        channels = {}
    for cname, ch in channels.items():
        cwhere = where.channel(str(cname))
        if not isinstance(ch, dict):
            cwhere.problem("a channel must be a mapping")
            continue
        if ch.get("Active") is False:
            continue
        var = kind.variable(str(cname), ch, tags, cwhere)
        if var is not None:
            variables.append(common_fields(var, ch, cwhere))
    if not variables and len(problems) == before:
        problems.append(Problem(src, None, name, "no active channel to import"))
    if connection is None:
        return None
    device: dict[str, Any] = {"name": name, "connection": connection, "variables": variables}
    if description:
        device["description"] = description
    return device


def common_fields(var: dict[str, Any], ch: dict[str, Any], where: instrument_kinds.Where) -> dict[str, Any]:
    """What every kind's channel says alike: scaling, writability, unit, scan class; history on."""
    scale, offset = ch.get("Scalar", 1), ch.get("Offset", 0)
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in (scale, offset)):
        where.problem(f"Scalar and Offset must be numbers, not {scale!r} and {offset!r}")
    elif var["datatype"] not in ("Boolean", "String") and (scale != 1 or offset != 0):
        # The instrument servers computed (raw + Offset) * Scalar; the gateway's is raw * Scale + Offset.
        var["scale"], var["offset"] = float(scale), float(offset) * float(scale)
        var["datatype"] = "Double"  # scaled integers are engineering values, not counts
    read_only = var.pop("read_only", False)  # a kind whose writes the gateway does not take (ping)
    if "W" in str(ch.get("ReadWrite", "R")).upper() and not read_only:
        var["writable"] = True
    unit = str(ch.get("Units", "")).strip()
    if unit and unit.upper() != "NA":
        symbol = unit if unit in UNITS else _UNIT_ALIASES.get(unit.lower())
        if symbol:
            var["unit"] = symbol
        else:
            var["description"] = f"Unit: {unit}"
            where.note(f"unit '{unit}' has no UNECE code here; kept in the description")
    scan = next((t for t in ch.get("Tags") or [] if t in _SCANS), None)
    if scan:
        var["scan"] = scan
    var["historize"] = True
    return var


def instruments_to_site(paths: list[Path], namespace: str, site_name: str, mqtt_broker: str | None = None
                        ) -> ImportResult:
    """Read instrument files into a YAML-shaped site; raise NodesetError listing every problem. `mqtt_broker`
    (HOST[:PORT]) is where MQTT instruments publish when their file does not say (their servers were told)."""
    problems: list[Problem] = []
    notes: list[str] = []
    devices = []
    for path in paths:
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            problems.append(Problem(str(path), None, None, f"cannot read file: {exc.strerror}"))
            continue
        except json.JSONDecodeError as exc:
            problems.append(Problem(str(path), exc.lineno, None, f"not valid JSON: {exc.msg}"))
            continue
        device = _device(Path(path), doc, problems, notes, mqtt_broker)
        if device is not None:
            devices.append(device)
    names = [d["name"] for d in devices]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(Problem(", ".join(str(p) for p in paths), None, dup, "two instrument files name this device"))
    if problems:
        raise NodesetError(problems)
    site = {"site": {"namespace": namespace, "name": _name(site_name)}, "devices": devices}
    return ImportResult(site, notes)
