"""Per `Communication` kind of an instrument file: its device's connection URI and each channel's binding.

The fields each kind reads are those the instrument servers of the seed's format read:
- ModbusTcpGeneric: `Connection.IP`, `Connection.Unit`, `PortNum`, `ByteOrder`, `WordOrder`; channels
  `Type` (HRegister, IRegister, Coil, DInput), `IOPoint`, `DataType`, `Registers`;
- SCPI: `VISA_address`, `ReadTerminalChar`, `WriteTerminalChar`; a channel's query is `RequestText` +
  `IOPoint` + `?`, its write `RequestText` + `IOPoint` + ` {value}`, `ArrayPos` one element of a list
  answer, `DataType` NR1/NR2/Bool/int16/float;
- Opto: `Connection.IP` (the controller itself, 127.0.0.1, when absent: its server ran on it), `PortNum`;
  channels `Type` Analog or Digital, `Module`, `Channel`;
- MQTT: `DataReadTopic` (a JSON document of channel values), `DataWriteTopic` (writes publish
  `{"CHANNEL": value}`); the broker from `Connection.IP` and `PortNum`, or the command line's --mqtt-broker;
- Ping: `TargetIP`; a channel is `Reachable`, or `RoundTrip` when its `IOPoint` says so.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.nodeset.model import Problem

_NAME = re.compile(r"[^A-Za-z0-9_]+")


@dataclass(frozen=True)
class Where:
    """The file and instrument (and channel) a problem or note is about."""

    src: str
    node: str
    problems: list[Problem]
    notes: list[str]

    def channel(self, cname: str) -> Where:
        return Where(self.src, f"{self.node}.{cname}", self.problems, self.notes)

    def problem(self, message: str) -> None:
        self.problems.append(Problem(self.src, None, self.node, message))

    def note(self, message: str) -> None:
        self.notes.append(f"{self.src}: {self.node}: {message}")


@dataclass(frozen=True)
class Kind:
    connection: Callable[[dict[str, Any], Where, str | None], str | None]
    variable: Callable[[str, dict[str, Any], dict[str, Any], Where], dict[str, Any] | None]


def name(text: str) -> str:
    """An instrument's or channel's name as a browse name and YAML key."""
    out = _NAME.sub("_", text.strip()).strip("_") or "Unnamed"
    return f"_{out}" if out[0].isdigit() else out


# Register type in the instrument file -> the table in the gateway's Modbus address syntax.
TABLES = {"hregister": "holding", "holding": "holding", "iregister": "input", "input": "input",
          "coil": "coil", "coils": "coil", "dinput": "discrete", "discrete": "discrete", "discreteinput": "discrete"}
# DataType -> (OPC UA DataType, field type)
TYPES = {
    "bool": ("Boolean", "xsd:boolean"), "int16": ("Int16", "xsd:short"), "uint16": ("UInt16", "xsd:unsignedShort"),
    "int32": ("Int32", "xsd:int"), "uint32": ("UInt32", "xsd:unsignedInt"), "int64": ("Int64", "xsd:long"),
    "uint64": ("UInt64", "xsd:unsignedLong"), "float32": ("Float", "xsd:float"), "float": ("Float", "xsd:float"),
    "float64": ("Double", "xsd:double"), "double": ("Double", "xsd:double"), "string": ("String", "xsd:string"),
}


def _whole(value: Any) -> int | None:
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


# -- Modbus ----------------------------------------------------------------------------------------
def _modbus_connection(tags: dict[str, Any], where: Where, _: str | None) -> str | None:
    conn = tags.get("Connection") or {}
    ip, unit, port = conn.get("IP"), _whole(conn.get("Unit", 1)), _whole(tags.get("PortNum", 502))
    if not ip:
        where.problem("EquipmentTags.Connection.IP is missing")
        return None
    if unit is None or port is None:
        where.problem(f"Connection.Unit and PortNum must be numbers, not {conn.get('Unit')!r} and "
                      f"{tags.get('PortNum')!r}")
        return None
    order = {k: str(tags.get(k, "Big")).lower() for k in ("ByteOrder", "WordOrder")}
    for key, value in order.items():
        if value not in ("big", "little"):
            where.problem(f"{key} must be Big or Little, not '{tags.get(key)}'")
    return f"modbus+tcp://{ip}:{port}/{unit}?byte_order={order['ByteOrder']}" \
           f"&word_order={order['WordOrder']}"


def _modbus_variable(cname: str, ch: dict[str, Any], tags: dict[str, Any], where: Where
                     ) -> dict[str, Any] | None:
    table = TABLES.get(str(ch.get("Type", "")).lower())
    dtype = TYPES.get(str(ch.get("DataType", "")).lower())
    if table is None:
        where.problem(f"register Type '{ch.get('Type')}' is not a Modbus table (HRegister, IRegister, Coil, DInput)")
        return None
    if dtype is None:
        where.problem(f"DataType '{ch.get('DataType')}' is not supported (known: {', '.join(TYPES)})")
        return None
    point = ch.get("IOPoint")
    if not isinstance(point, int) or isinstance(point, bool) or point < 0:
        where.problem(f"IOPoint must be a register number >= 0, not {point!r}")
        return None
    datatype, field_type = dtype
    var: dict[str, Any] = {"name": name(cname), "datatype": datatype, "field_type": field_type,
                           "address": f"{table}/{point}"}
    if datatype == "String":
        registers = _whole(ch.get("Registers", 1))
        if not registers:
            where.problem(f"Registers must be a number of registers, not {ch.get('Registers')!r}")
            return None
        var["length"] = 2 * registers
    return var


# -- SCPI ------------------------------------------------------------------------------------------
_TERMINATION = {"\n": "lf", "\r": "cr", "\r\n": "crlf", "": "none", "lf": "lf", "cr": "cr", "crlf": "crlf",
                "none": "none", "\\n": "lf", "\\r": "cr", "\\r\\n": "crlf"}
_SCPI_TYPES = {"nr1": ("Int32", "xsd:int"), "int16": ("Int32", "xsd:int"), "int32": ("Int32", "xsd:int"),
               "nr2": ("Double", "xsd:double"), "nr3": ("Double", "xsd:double"), "float": ("Double", "xsd:double"),
               "float32": ("Double", "xsd:double"), "float64": ("Double", "xsd:double"),
               "bool": ("Boolean", "xsd:boolean"), "string": ("String", "xsd:string")}


def _scpi_connection(tags: dict[str, Any], where: Where, _: str | None) -> str | None:
    resource = tags.get("VISA_address")
    if not isinstance(resource, str) or not resource.strip():
        where.problem("EquipmentTags.VISA_address is missing (TCPIP0::HOST::PORT::SOCKET, ASRL/dev/ttyUSB0::INSTR)")
        return None
    options = []
    for key, option in (("ReadTerminalChar", "read_termination"), ("WriteTerminalChar", "write_termination")):
        if key in tags:
            raw = tags[key]
            name = _TERMINATION.get(raw.lower() if isinstance(raw, str) else None)  # type: ignore[arg-type]
            if name is None:
                where.problem(f"{key} {raw!r} is not a line ending (\\n, \\r, \\r\\n or empty)")
                return None
            options.append(f"{option}={name}")
    return f"visa://{resource.strip()}" + (f"?{'&'.join(options)}" if options else "")


def _scpi_variable(cname: str, ch: dict[str, Any], tags: dict[str, Any], where: Where) -> dict[str, Any] | None:
    point = ch.get("IOPoint")
    if not isinstance(point, str) or not point.strip():
        where.problem(f"IOPoint must be the SCPI command (MEAS:VOLT, VOLT), not {point!r}")
        return None
    dtype = _SCPI_TYPES.get(str(ch.get("DataType", "NR2")).lower())
    if dtype is None:
        where.problem(f"DataType '{ch.get('DataType')}' is not an SCPI answer type (known: {', '.join(_SCPI_TYPES)})")
        return None
    command = f"{ch.get('RequestText') or ''}{point.strip()}".rstrip("?")
    var: dict[str, Any] = {"name": name(cname), "datatype": dtype[0], "field_type": dtype[1],
                           "address": f"{command}?"}
    if "ArrayPos" in ch:
        index = ch["ArrayPos"]
        if isinstance(index, str) and index.isdigit():
            index = int(index)
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            where.problem(f"ArrayPos must be an element number >= 0, not {ch['ArrayPos']!r}")
            return None
        var["index"] = index
    if "W" in str(ch.get("ReadWrite", "R")).upper():
        if str(ch.get("Type", "")).lower() == "analog":
            where.problem("a writable 'Analog' SCPI channel sends six comma-separated parameters: not supported "
                          "(set ReadWrite R, or bind a Write template by hand in the YAML)")
            return None
        var["write"] = f"{command} {{value}}"
    if ch.get("Init_Func"):
        where.note(f"Init_Text '{ch.get('Init_Text', '')}' is not sent: the gateway sends only the query")
    return var


# -- Opto ------------------------------------------------------------------------------------------
def _opto_connection(tags: dict[str, Any], where: Where, _: str | None) -> str | None:
    conn = tags.get("Connection") or {}
    host = conn.get("IP") if isinstance(conn, dict) else None
    if not host:
        host = "127.0.0.1"
        where.note("no EquipmentTags.Connection.IP: the controller itself (127.0.0.1), as its server ran on it")
    port = tags.get("PortNum", 2001)
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        where.problem(f"PortNum must be a port number, not {port!r}")
        return None
    return f"optommp://{host}:{port}"


def _opto_variable(cname: str, ch: dict[str, Any], tags: dict[str, Any], where: Where) -> dict[str, Any] | None:
    kind = str(ch.get("Type", "Digital")).lower()
    if kind == "feature":
        where.problem("Type 'Feature' (a digital point's feature value) is not mapped: bind its memory-map address "
                      "by hand in the YAML")
        return None
    if kind not in ("analog", "digital"):
        where.problem(f"Type '{ch.get('Type')}' is not Analog or Digital")
        return None
    module, channel = _whole(ch.get("Module")), _whole(ch.get("Channel"))
    if module is None or channel is None:
        where.problem(f"Module and Channel must be numbers >= 0, not {ch.get('Module')!r} and {ch.get('Channel')!r}")
        return None
    datatype = "Double" if kind == "analog" else "Boolean"
    return {"name": name(cname), "datatype": datatype, "address": f"{kind}/{module}/{channel}"}


# -- MQTT ------------------------------------------------------------------------------------------
def _mqtt_connection(tags: dict[str, Any], where: Where, broker: str | None) -> str | None:
    if not isinstance(tags.get("DataReadTopic"), str) or not tags["DataReadTopic"].strip():
        where.problem("EquipmentTags.DataReadTopic is missing (the topic its readings are published on)")
        return None
    conn = tags.get("Connection") or {}
    host = conn.get("IP") if isinstance(conn, dict) else None
    if host:
        port = _whole(tags.get("PortNum", 1883))
        if port is None:
            where.problem(f"PortNum must be a port number, not {tags.get('PortNum')!r}")
            return None
        return f"mqtt://{host}:{port}/"
    if broker:
        return f"mqtt://{broker}/"
    where.problem("no broker: the file names none (EquipmentTags.Connection.IP): give --mqtt-broker HOST[:PORT]")
    return None


def _pointer(name: str) -> str:
    return "/" + name.replace("~", "~0").replace("/", "~1")


def _mqtt_variable(cname: str, ch: dict[str, Any], tags: dict[str, Any], where: Where) -> dict[str, Any] | None:
    topic = str(tags.get("DataReadTopic") or "").strip()
    if not topic:
        return None  # the device's problem says why
    dtype = TYPES.get(str(ch.get("DataType", "float64")).lower())
    if dtype is None:
        where.problem(f"DataType '{ch.get('DataType')}' is not supported (known: {', '.join(TYPES)})")
        return None
    var: dict[str, Any] = {"name": name(cname), "datatype": dtype[0], "address": f"{topic}#{_pointer(cname)}"}
    if "W" in str(ch.get("ReadWrite", "R")).upper():
        command = tags.get("DataWriteTopic")
        if not isinstance(command, str) or not command.strip():
            where.problem("a writable MQTT channel needs EquipmentTags.DataWriteTopic")
            return None
        var["command_topic"], var["command_key"] = command.strip(), cname
    return var


# -- Ping ------------------------------------------------------------------------------------------
def _ping_connection(tags: dict[str, Any], where: Where, _: str | None) -> str | None:
    target = tags.get("TargetIP")
    if not isinstance(target, str) or not target.strip():
        where.problem("EquipmentTags.TargetIP is missing (the host to ping)")
        return None
    return f"ping://{target.strip()}"


def _ping_variable(cname: str, ch: dict[str, Any], tags: dict[str, Any], where: Where) -> dict[str, Any] | None:
    if "W" in str(ch.get("ReadWrite", "R")).upper():
        where.note("a ping is not started by a write: the gateway pings on the scan; imported read-only")
    if str(ch.get("IOPoint", "")).lower() == "roundtrip":
        return {"name": name(cname), "datatype": "Double", "address": "RoundTrip", "unit": "ms", "read_only": True}
    where.note("Reachable is true while the host answers (the instrument server's value was 1 after a missed ping)")
    return {"name": name(cname), "datatype": "Boolean", "address": "Reachable", "read_only": True}


KINDS = {
    "modbustcpgeneric": Kind(_modbus_connection, _modbus_variable),
    "modbustcp": Kind(_modbus_connection, _modbus_variable),
    "scpi": Kind(_scpi_connection, _scpi_variable),
    "opto": Kind(_opto_connection, _opto_variable),
    "mqtt": Kind(_mqtt_connection, _mqtt_variable),
    "ping": Kind(_ping_connection, _ping_variable),
}
KIND_NAMES = ("ModbusTcpGeneric", "SCPI", "Opto", "MQTT", "Ping")
