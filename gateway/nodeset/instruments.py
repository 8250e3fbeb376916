"""`gateway nodeset import-instruments FILE.json...`: instrument files (EquipmentTags + Channels,
the format of Node-RED/MQTT instrument servers) turned into a site.

Each file becomes a device; each active channel a variable with its Modbus binding, scaling,
unit and scan class (from the `HighSpeed`/`MediumSpeed`/`LowSpeed` tag). The result goes through
the YAML site builder, so it gets the same checks, and can also be written as YAML for editing.
Channels the gateway cannot map are reported with the file and channel, never silently dropped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.nodeset.model import NodesetError, Problem
from gateway.nodeset.units import UNITS

# Register type in the instrument file -> the table in the gateway's Modbus address syntax.
_TABLES = {"hregister": "holding", "holding": "holding", "iregister": "input", "input": "input",
           "coil": "coil", "coils": "coil", "dinput": "discrete", "discrete": "discrete", "discreteinput": "discrete"}
# DataType -> (OPC UA DataType, field type)
_TYPES = {
    "bool": ("Boolean", "xsd:boolean"), "int16": ("Int16", "xsd:short"), "uint16": ("UInt16", "xsd:unsignedShort"),
    "int32": ("Int32", "xsd:int"), "uint32": ("UInt32", "xsd:unsignedInt"), "int64": ("Int64", "xsd:long"),
    "uint64": ("UInt64", "xsd:unsignedLong"), "float32": ("Float", "xsd:float"), "float": ("Float", "xsd:float"),
    "float64": ("Double", "xsd:double"), "double": ("Double", "xsd:double"), "string": ("String", "xsd:string"),
}
_UNIT_ALIASES = {"degc": "°C", "c": "°C", "kw": "kW", "w": "W", "v": "V", "a": "A", "hz": "Hz", "%": "%",
                 "bar": "bar", "kpa": "kPa", "pa": "Pa", "rpm": "rpm", "kwh": "kWh", "s": "s", "lpm": "l/min"}
_SCANS = ("HighSpeed", "MediumSpeed", "LowSpeed")
_NAME = re.compile(r"[^A-Za-z0-9_]+")


@dataclass
class ImportResult:
    site: dict[str, Any]
    notes: list[str] = field(default_factory=list)  # things mapped approximately (unknown units, ...)


def _name(text: str) -> str:
    name = _NAME.sub("_", text.strip()).strip("_") or "Unnamed"
    return f"_{name}" if name[0].isdigit() else name


def _device(path: Path, doc: Any, problems: list[Problem], notes: list[str]) -> dict[str, Any] | None:
    src = str(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("EquipmentTags"), dict):
        problems.append(Problem(src, None, None, "not an instrument file: no 'EquipmentTags' mapping"))
        return None
    tags = doc["EquipmentTags"]
    name = _name(str(tags.get("EquipmentName") or path.stem))
    comm = str(tags.get("Communication", ""))
    if comm.lower() not in ("modbustcpgeneric", "modbustcp"):
        problems.append(Problem(src, None, name, f"Communication '{comm}' is not supported (ModbusTcpGeneric is)"))
        return None
    conn = tags.get("Connection") or {}
    ip, unit, port = conn.get("IP"), conn.get("Unit", 1), tags.get("PortNum", 502)
    if not ip:
        problems.append(Problem(src, None, name, "EquipmentTags.Connection.IP is missing"))
        return None
    order = {k: str(tags.get(k, "Big")).lower() for k in ("ByteOrder", "WordOrder")}
    for key, value in order.items():
        if value not in ("big", "little"):
            problems.append(Problem(src, None, name, f"{key} must be Big or Little, not '{tags.get(key)}'"))
    connection = f"modbus+tcp://{ip}:{int(port)}/{int(unit)}?byte_order={order['ByteOrder']}" \
                 f"&word_order={order['WordOrder']}"
    description = " / ".join(str(tags[k]) for k in ("EquipmentType", "EquipmentLocation", "Reference") if tags.get(k))
    variables = []
    channels = doc.get("Channels") or {}
    if not isinstance(channels, dict):
        problems.append(Problem(src, None, name, "'Channels' must be a mapping of channel name to channel"))
        channels = {}
    for cname, ch in channels.items():
        var = _variable(src, name, str(cname), ch, problems, notes)
        if var is not None:
            variables.append(var)
    if not variables:
        problems.append(Problem(src, None, name, "no active channel to import"))
    device: dict[str, Any] = {"name": name, "connection": connection, "variables": variables}
    if description:
        device["description"] = description
    return device


def _variable(src: str, device: str, cname: str, ch: Any, problems: list[Problem],
              notes: list[str]) -> dict[str, Any] | None:
    where = f"{device}.{cname}"
    if not isinstance(ch, dict):
        problems.append(Problem(src, None, where, "a channel must be a mapping"))
        return None
    if ch.get("Active") is False:
        return None
    table = _TABLES.get(str(ch.get("Type", "")).lower())
    dtype = _TYPES.get(str(ch.get("DataType", "")).lower())
    if table is None:
        problems.append(Problem(src, None, where, f"register Type '{ch.get('Type')}' is not a Modbus table "
                                                  f"(HRegister, IRegister, Coil, DInput)"))
        return None
    if dtype is None:
        problems.append(Problem(src, None, where, f"DataType '{ch.get('DataType')}' is not supported "
                                                  f"(known: {', '.join(_TYPES)})"))
        return None
    point = ch.get("IOPoint")
    if not isinstance(point, int) or isinstance(point, bool) or point < 0:
        problems.append(Problem(src, None, where, f"IOPoint must be a register number >= 0, not {point!r}"))
        return None
    datatype, field_type = dtype
    var: dict[str, Any] = {"name": _name(cname), "datatype": datatype, "field_type": field_type,
                           "address": f"{table}/{point}"}
    scale, offset = ch.get("Scalar", 1), ch.get("Offset", 0)
    if datatype != "Boolean" and (scale != 1 or offset != 0):
        var["scale"], var["offset"] = float(scale), float(offset)
        if datatype != "String":
            var["datatype"] = "Double"  # scaled integers are engineering values, not counts
    if datatype == "String":
        var["length"] = 2 * int(ch.get("Registers", 1))
    rw = str(ch.get("ReadWrite", "R")).upper()
    if "W" in rw:
        var["writable"] = True
    unit = str(ch.get("Units", "")).strip()
    if unit and unit.upper() != "NA":
        symbol = unit if unit in UNITS else _UNIT_ALIASES.get(unit.lower())
        if symbol:
            var["unit"] = symbol
        else:
            var["description"] = f"Unit: {unit}"
            notes.append(f"{src}: {where}: unit '{unit}' has no UNECE code here; kept in the description")
    scan = next((t for t in ch.get("Tags") or [] if t in _SCANS), None)
    if scan:
        var["scan"] = scan
    var["historize"] = True
    return var


def instruments_to_site(paths: list[Path], namespace: str, site_name: str) -> ImportResult:
    """Read instrument files into a YAML-shaped site; raise NodesetError listing every problem."""
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
        device = _device(Path(path), doc, problems, notes)
        if device is not None:
            devices.append(device)
    names = [d["name"] for d in devices]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(Problem(", ".join(str(p) for p in paths), None, dup, "two instrument files name this device"))
    if problems:
        raise NodesetError(problems)
    site = {"site": {"namespace": namespace, "name": _name(site_name)}, "devices": devices}
    return ImportResult(site, notes)
