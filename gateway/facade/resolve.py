"""Find a site's Modbus facade and its register map in the loaded address space, and check them.

The facade is an Object with a `FacadeEndpoint` property; a mapped variable has a `FacadeAddress`
property (both in the gateway's namespace, like a device's `Connection` and a variable's
`FieldAddress`). Every problem names the file, line and node (`site.xml:40: ns=1;s=X: problem`), and
`nodeset check` and start-up refuse the site on any of them. Property reference: docs/facade.md.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from asyncua import ua
from asyncua.server.address_space import AddressSpace

from gateway.bindings import DEFAULT_FIELD_TYPE, field_type_mismatch
from gateway.diagnostics import browse_path
from gateway.drivers.modbus import codec
from gateway.drivers.modbus.address import parse_address, parse_connection
from gateway.facade.model import (
    DEFAULT_ALLOWED,
    DEFAULT_IDLE_TIMEOUT_MS,
    DEFAULT_MAX_CONNECTIONS,
    FacadeConfig,
    Mapping,
    Register,
    build_register_map,
    is_bit_table,
    is_writable_table,
    parse_allowed,
)
from gateway.facade.values import Unrepresentable, encode_sentinel, engineering, fits_field
from gateway.nodeset.loader import LoadedSite
from gateway.nodeset.model import Problem
from gateway.nodeset.nodedata import attribute_value
from gateway.nodeset.typecheck import TypeIndex
from gateway.security.roles import Role

FACADE_PROPERTIES = (
    "FacadeEndpoint", "AllowedClients", "WriteRole", "MaxConnections", "IdleTimeout", "BadValue", "WatchdogAddress",
    "WatchdogTimeout", "HeartbeatAddress", "SunSpecCommon",
)
MAPPING_PROPERTIES = (
    "FacadeAddress", "FacadeType", "FacadeByteOrder", "FacadeWordOrder", "FacadeLength", "FacadeScale",
    "FacadeOffset", "FacadeWritable", "FacadeFallback", "FacadeStatus", "FacadeStatusBit",
)
_ENDPOINT_OPTIONS = ("byte_order", "word_order", "addressing")
_HAS_PROPERTY = ua.NodeId(ua.ObjectIds.HasProperty)
_CURRENT_WRITE = ua.AccessLevel.CurrentWrite.mask
_EURANGE = ua.QualifiedName("EURange", 0)
_EU = ua.QualifiedName("EngineeringUnits", 0)

Report = Callable[[ua.NodeId, str], None]


def _value(aspace: AddressSpace, nid: ua.NodeId, aid: ua.AttributeIds = ua.AttributeIds.Value) -> Any:
    nd = aspace.get(nid)
    dv = attribute_value(nd, aid) if nd else None  # read without making an AttributeValue of it
    return dv.Value.Value if dv is not None and dv.Value is not None else None


def _properties(aspace: AddressSpace, nid: ua.NodeId, ns: int | None) -> dict[str, tuple[ua.NodeId, Any]]:
    """Properties of a node in namespace `ns` (None: the standard ones, namespace 0): name -> (node, value)."""
    nd = aspace.get(nid)
    out: dict[str, tuple[ua.NodeId, Any]] = {}
    for r in nd.references if nd else ():
        if r.IsForward and r.ReferenceTypeId == _HAS_PROPERTY and r.BrowseName.NamespaceIndex == (ns or 0):
            out[r.BrowseName.Name] = (r.NodeId, _value(aspace, r.NodeId))
    return out


def resolve_facade(aspace: AddressSpace, site: LoadedSite, gw_ns: int) -> tuple[FacadeConfig | None, list[Problem]]:
    problems: list[Problem] = []

    def problem(nid: ua.NodeId, message: str) -> None:
        path, line, written = site.origins.get(nid, ("<gateway>", 0, nid.to_string()))
        problems.append(Problem(path, line or None, written, message))

    facades: list[ua.NodeId] = []
    mapped: list[ua.NodeId] = []
    for nid in site.new_nodes:
        nc = _value(aspace, nid, ua.AttributeIds.NodeClass)
        if nc == ua.NodeClass.Object and "FacadeEndpoint" in _properties(aspace, nid, gw_ns):
            facades.append(nid)
        elif nc == ua.NodeClass.Variable and "FacadeAddress" in _properties(aspace, nid, gw_ns):
            mapped.append(nid)
    if not facades:
        for nid in mapped:
            problem(nid, "has a FacadeAddress but the site declares no facade (an Object with a FacadeEndpoint)")
        return None, problems
    for extra in facades[1:]:
        problem(extra, f"a site has one Modbus facade; {_name(aspace, facades[0])} is already one")
    config = _facade(aspace, facades[0], gw_ns, problem)
    if config is None:
        return None, problems
    addressing = config_addressing(aspace, facades[0], gw_ns)
    types = TypeIndex(aspace, {})
    for nid in mapped:
        m = _mapping(aspace, types, nid, gw_ns, config, addressing, problem)
        if m is not None:
            config.mappings.append(m)
    _check_map(aspace, config, problem)
    return (None if problems else config), problems


def config_addressing(aspace: AddressSpace, facade: ua.NodeId, gw_ns: int) -> int:
    endpoint = _properties(aspace, facade, gw_ns)["FacadeEndpoint"][1]
    try:
        return parse_connection(str(endpoint)).addressing
    except ValueError:
        return 0


def _name(aspace: AddressSpace, nid: ua.NodeId) -> str:
    return "/".join(browse_path(aspace, nid)) or nid.to_string()


def _facade(aspace: AddressSpace, nid: ua.NodeId, gw_ns: int, problem: Report) -> FacadeConfig | None:
    props = _properties(aspace, nid, gw_ns)
    ok = True

    def bad(key: str, message: str) -> None:
        nonlocal ok
        ok = False
        problem(props[key][0] if key in props else nid, f"{key}: {message}")

    config = FacadeConfig(nid, _name(aspace, nid))
    endpoint = str(props["FacadeEndpoint"][1] or "")
    try:
        url = urlsplit(endpoint)
        if url.scheme != "modbus+tcp":
            raise ValueError("the facade listens for Modbus TCP: modbus+tcp://HOST:PORT/UNIT")
        for key, _ in parse_qsl(url.query, keep_blank_values=True):
            if key not in _ENDPOINT_OPTIONS:
                raise ValueError(f"option '{key}' does not apply to the facade "
                                 f"(it takes {', '.join(_ENDPOINT_OPTIONS)})")
        options = parse_connection(url)
        config.host, config.port, config.unit = options.host, options.port, options.unit
        config.default_orders = (options.byte_order, options.word_order)
    except ValueError as exc:
        bad("FacadeEndpoint", f"'{endpoint}': {exc}")
    try:
        config.allowed = parse_allowed(str(_get(props, "AllowedClients", DEFAULT_ALLOWED)))
    except ValueError as exc:
        bad("AllowedClients", str(exc))
    role = str(_get(props, "WriteRole", "none")).strip().lower()
    if role not in ("none", ""):
        try:
            config.write_role = Role.parse(role)
        except ValueError as exc:
            bad("WriteRole", f"{exc}, or none")
    config.max_connections = _number(props, "MaxConnections", DEFAULT_MAX_CONNECTIONS, 1, 1024, bad, whole=True)
    config.idle_timeout_s = _number(props, "IdleTimeout", DEFAULT_IDLE_TIMEOUT_MS, 100, 86_400_000, bad) / 1000.0
    if "BadValue" in props and props["BadValue"][1] is not None:
        sentinel = props["BadValue"][1]
        if isinstance(sentinel, bool) or not isinstance(sentinel, int | float) or not math.isfinite(sentinel):
            bad("BadValue", f"must be a finite number, not {sentinel!r}")
        else:
            config.bad_value = float(sentinel)
    addressing = config_addressing(aspace, nid, gw_ns) if ok else 0
    if "WatchdogAddress" in props:
        reg = _register(props, "WatchdogAddress", addressing, bad)
        if reg is not None and reg.table != "holding":
            bad("WatchdogAddress", f"the watchdog is a holding register the SCADA writes, not {reg}")
        else:
            config.watchdog = reg
        if "WatchdogTimeout" not in props:
            bad("WatchdogAddress", "set WatchdogTimeout (ms): how long the SCADA may leave the watchdog unchanged")
        else:
            config.watchdog_timeout_s = _number(props, "WatchdogTimeout", 0, 100, 86_400_000, bad) / 1000.0
    elif "WatchdogTimeout" in props:
        bad("WatchdogTimeout", "set WatchdogAddress too: the register the SCADA must keep changing")
    if "HeartbeatAddress" in props:
        reg = _register(props, "HeartbeatAddress", addressing, bad)
        if reg is not None and reg.table not in ("input", "holding"):
            bad("HeartbeatAddress", f"the heartbeat is an input or holding register, not {reg}")
        else:
            config.heartbeat = reg
    sunspec = _get(props, "SunSpecCommon", False)
    if not isinstance(sunspec, bool):
        bad("SunSpecCommon", f"must be true or false, not {sunspec!r}")
    config.sunspec_common = bool(sunspec)
    return config if ok else None


def _get(props: dict[str, tuple[ua.NodeId, Any]], key: str, default: Any) -> Any:
    value = props.get(key, (None, None))[1]
    return default if value is None else value


def _number(props: dict[str, tuple[ua.NodeId, Any]], key: str, default: float, low: float, high: float,
            bad: Callable[[str, str], None], whole: bool = False) -> Any:
    value = _get(props, key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        bad(key, f"must be a number, not {value!r}")
        return default
    if whole and not float(value).is_integer():
        bad(key, f"must be a whole number, not {value!r}")
        return default
    if not low <= value <= high:
        bad(key, f"must be in {low:g}..{high:g}, not {value!r}")
        return default
    return int(value) if whole else float(value)


def _register(props: dict[str, tuple[ua.NodeId, Any]], key: str, addressing: int,
              bad: Callable[[str, str], None]) -> Register | None:
    try:
        address = parse_address(str(props[key][1] or ""), addressing)
    except ValueError as exc:
        bad(key, str(exc))
        return None
    return Register(address.table, address.offset)


def _mapping(aspace: AddressSpace, types: TypeIndex, nid: ua.NodeId, gw_ns: int, config: FacadeConfig,
             addressing: int, problem: Report) -> Mapping | None:
    props = _properties(aspace, nid, gw_ns)
    name = _name(aspace, nid)
    before = [0]

    def bad(message: str) -> None:
        before[0] += 1
        problem(nid, f"facade mapping: {message}")

    datatype = _value(aspace, nid, ua.AttributeIds.DataType)
    base = types.builtin_base(datatype) if datatype is not None else None
    if base == 29:  # an Enumeration is its Int32 value
        base = int(ua.VariantType.Int32)
    vtype = ua.VariantType(base) if base is not None and 1 <= base <= 12 else None
    if vtype is None:
        bad(f"a mapped variable needs a Boolean, numeric or String DataType, not {datatype}")
        return None
    try:
        address = parse_address(str(_get(props, "FacadeAddress", "")), addressing)
    except ValueError as exc:
        bad(str(exc))
        return None
    orders = config.default_orders
    field_type = str(_get(props, "FacadeType", "") or DEFAULT_FIELD_TYPE[vtype])
    length = _get(props, "FacadeLength", None)
    try:
        mismatch = field_type_mismatch(vtype, field_type)
        if mismatch:
            raise ValueError(mismatch)
        if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 1):
            raise ValueError(f"FacadeLength must be a whole number of bytes >= 1, not {length!r}")
        count = codec.register_count(field_type, address.table, None, length)
    except ValueError as exc:
        bad(str(exc))
        return None
    if address.offset + count > 0x10000:
        bad(f"{field_type} at {address.table}/{address.offset} runs past the last address 65535")
        return None
    byte_order = str(_get(props, "FacadeByteOrder", orders[0])).lower()
    word_order = str(_get(props, "FacadeWordOrder", orders[1])).lower()
    for key, order in (("FacadeByteOrder", byte_order), ("FacadeWordOrder", word_order)):
        if order not in ("big", "little"):
            bad(f"{key} must be big or little, not '{order}'")
    scale, offset = _get(props, "FacadeScale", 1.0), _get(props, "FacadeOffset", 0.0)
    for key, number in (("FacadeScale", scale), ("FacadeOffset", offset)):
        if isinstance(number, bool) or not isinstance(number, int | float) or not math.isfinite(number):
            bad(f"{key} must be a finite number, not {number!r}")
    if scale == 0:
        bad("FacadeScale must not be 0")
    writable = _get(props, "FacadeWritable", False)
    if not isinstance(writable, bool):
        bad(f"FacadeWritable must be true or false, not {writable!r}")
        writable = False
    node_writable = bool((_value(aspace, nid, ua.AttributeIds.AccessLevel) or 0) & _CURRENT_WRITE)
    if writable and not is_writable_table(address.table):
        bad(f"a writable mapping must be a holding register or a coil, not {address.table}")
    if writable and not node_writable:
        bad("a writable mapping of a read-only node (its AccessLevel has no CurrentWrite)")
    status = None
    if "FacadeStatus" in props:
        try:
            sreg = parse_address(str(_get(props, "FacadeStatus", "")), addressing)
        except ValueError as exc:
            bad(f"FacadeStatus: {exc}")
        else:
            bit = _get(props, "FacadeStatusBit", 0)
            if sreg.table not in ("input", "holding"):
                bad(f"FacadeStatus must be an input or holding register, not {sreg.table}")
            elif isinstance(bit, bool) or not isinstance(bit, int) or not 0 <= bit <= 15:
                bad(f"FacadeStatusBit must be 0..15, not {bit!r}")
            else:
                status = (Register(sreg.table, sreg.offset), bit)
    std = _properties(aspace, nid, None)
    eurange = None
    rng = std.get(_EURANGE.Name, (None, None))[1]
    if isinstance(rng, ua.Range):
        eurange = (rng.Low, rng.High)
    eu = std.get(_EU.Name, (None, None))[1]
    unit = eu.DisplayName.Text if isinstance(eu, ua.EUInformation) and eu.DisplayName is not None else ""
    enum = std.get("EnumStrings", (None, None))[1]
    names = tuple(t.Text or "" for t in enum if isinstance(t, ua.LocalizedText)) if isinstance(enum, list) else ()
    if before[0]:
        return None
    m = Mapping(nid, name, address.table, address.offset, count, field_type, vtype, byte_order, word_order, length,
                float(scale), float(offset), writable, None, status, unit or "", eurange, names)
    fallback = _get(props, "FacadeFallback", None)
    if fallback is not None:
        if not writable:
            bad("FacadeFallback is the value the watchdog writes back: the mapping must be writable (FacadeWritable)")
            return None
        if config.watchdog is None:
            bad("FacadeFallback needs the facade's watchdog (WatchdogAddress and WatchdogTimeout)")
            return None
        try:
            value = engineering(dataclasses.replace(m, scale=1.0, value_offset=0.0), fallback)
        except Unrepresentable as exc:
            bad(f"FacadeFallback {fallback!r} does not fit {vtype.name}: {exc}")
            return None
        if eurange is not None and isinstance(value, int | float) and not isinstance(value, bool) and \
                not eurange[0] <= value <= eurange[1]:
            bad(f"FacadeFallback {fallback!r} is outside the EURange [{eurange[0]:g}, {eurange[1]:g}]")
            return None
        m = dataclasses.replace(m, fallback=value)
    numeric = vtype not in (ua.VariantType.Boolean, ua.VariantType.String)
    if eurange is not None and numeric and not is_bit_table(m.table):
        for end in eurange:
            why = fits_field(m, end)
            if why:
                bad(f"the EURange end {end:g} cannot be shown in {field_type} at FacadeScale {scale:g}: {why}")
                return None
    return m


def _check_map(aspace: AddressSpace, config: FacadeConfig, problem: Report) -> None:
    rmap = build_register_map(config)
    by_what = {f"{m.name} at {m.register}": m for m in config.mappings}
    for what, other in rmap.overlaps:
        m = by_what.get(what)
        problem(m.nodeid if m else config.nodeid, f"facade map: {what} overlaps {other}")
    taken: dict[tuple[Register, int], Mapping] = {}
    for m in config.mappings:
        if m.status is None:
            continue
        first = taken.setdefault(m.status, m)
        if first is not m:
            problem(m.nodeid, f"facade mapping: status bit {m.status[1]} of {m.status[0]} already shows {first.name}")
    if config.bad_value is not None:
        for m in config.mappings:
            try:
                encode_sentinel(m, config.bad_value)
            except ValueError as exc:
                problem(m.nodeid, f"facade mapping: the facade's BadValue {config.bad_value:g} cannot be shown in "
                                  f"{m.field_type}: {exc}")
