"""The `facade:` section of a YAML site: checked with its lines, compiled to the facade's properties.

```yaml
facade:
  endpoint: modbus+tcp://0.0.0.0:1502/1     # listen address, port, unit id (byte_order, word_order, addressing)
  allowed_clients: [10.0.0.5, 10.0.1.0/24]  # default: loopback only
  write_role: operator                      # none (default: every write refused), operator or admin
  max_connections: 32
  idle_timeout_ms: 60000
  bad_value: -32768                         # raw sentinel for a Bad value (default: exception 0x04)
  watchdog: {address: holding/900, timeout_ms: 5000}
  heartbeat: input/900
  sunspec_common: true                      # SunSpec Common model (1) at holding/40000
  map:
    - {node: Battery1.ActivePower, address: input/0, type: xsd:float, status: input/100, status_bit: 0}
    - {node: ExportLimit, address: holding/0, type: xsd:short, writable: true, fallback: 100}
```

What needs the whole map (overlaps, values that cannot fit the field) is checked by `nodeset check`
on the compiled site, the same check that start-up runs.
"""

from __future__ import annotations

from typing import Any

from gateway.bindings import field_type_mismatch
from gateway.drivers.base import XSD_TYPES
from gateway.drivers.modbus.address import parse_address
from gateway.facade.model import parse_allowed
from gateway.security.roles import Role

FACADE_KEYS = {"endpoint", "allowed_clients", "write_role", "max_connections", "idle_timeout_ms", "bad_value",
               "watchdog", "heartbeat", "sunspec_common", "map", "description"}
WATCHDOG_KEYS = {"address", "timeout_ms"}
MAP_KEYS = {"node", "address", "type", "byte_order", "word_order", "length", "scale", "offset", "writable",
            "fallback", "status", "status_bit"}
_MAP_PROPS = (  # YAML key, property, DataType, XML value tag
    ("address", "FacadeAddress", "String", "String"), ("type", "FacadeType", "String", "String"),
    ("byte_order", "FacadeByteOrder", "String", "String"), ("word_order", "FacadeWordOrder", "String", "String"),
    ("length", "FacadeLength", "i=5", "UInt16"), ("scale", "FacadeScale", "Double", "Double"),
    ("offset", "FacadeOffset", "Double", "Double"), ("writable", "FacadeWritable", "Boolean", "Boolean"),
    ("status", "FacadeStatus", "String", "String"), ("status_bit", "FacadeStatusBit", "i=3", "Byte"),
)
_DATATYPE_IDS = {"Boolean": "i=1", "SByte": "i=2", "Byte": "i=3", "Int16": "i=4", "UInt16": "i=5", "Int32": "i=6",
                 "UInt32": "i=7", "Int64": "i=8", "UInt64": "i=9", "Float": "i=10", "Double": "i=11",
                 "String": "i=12"}


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def check(b: Any, doc: Any, variables: dict[str, Any]) -> dict[str, Any] | None:
    """Check the section (problems go to the builder `b` with their lines); `variables`: path -> _Var."""
    spec = doc.get("facade")
    if spec is None:
        return None
    where = "facade"
    if not b.check_keys(spec, FACADE_KEYS, where, "the facade"):
        return None
    b.text(spec, where, "description")
    endpoint = spec.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint.startswith("modbus+tcp://"):
        b.problem(spec, where, "the facade needs endpoint: modbus+tcp://HOST:PORT/UNIT (0.0.0.0 listens everywhere)",
                  "endpoint" if "endpoint" in spec else None)
    allowed = spec.get("allowed_clients")
    if allowed is not None:
        text = ", ".join(str(a) for a in allowed) if isinstance(allowed, list) else str(allowed)
        try:
            parse_allowed(text)
        except ValueError as exc:
            b.problem(spec, where, f"allowed_clients: {exc}", "allowed_clients")
    role = spec.get("write_role")
    if role is not None and str(role).lower() != "none":
        try:
            Role.parse(str(role))
        except ValueError as exc:
            b.problem(spec, where, f"write_role: {exc}, or none", "write_role")
    for key in ("max_connections", "idle_timeout_ms", "bad_value"):
        if key in spec and not _number(spec[key]):
            b.problem(spec, where, f"{key} must be a number, got {spec[key]!r}", key)
    if "sunspec_common" in spec and not isinstance(spec["sunspec_common"], bool):
        b.problem(spec, where, f"sunspec_common must be true or false, got {spec['sunspec_common']!r}",
                  "sunspec_common")
    watchdog = spec.get("watchdog")
    if watchdog is not None and b.check_keys(watchdog, WATCHDOG_KEYS, "facade.watchdog", "the watchdog"):
        if not isinstance(watchdog.get("address"), str) or not _number(watchdog.get("timeout_ms")):
            b.problem(watchdog, "facade.watchdog", "the watchdog needs address (a holding register) and timeout_ms")
    if "heartbeat" in spec and not isinstance(spec["heartbeat"], str):
        b.problem(spec, where, f"heartbeat must be a register address such as input/900, got {spec['heartbeat']!r}",
                  "heartbeat")
    for m in b.sequence(spec, where, "map"):
        _check_mapping(b, m, variables, watchdog is not None)
    return spec


def _check_mapping(b: Any, m: Any, variables: dict[str, Any], has_watchdog: bool) -> None:
    node = m.get("node") if isinstance(m, dict) else None
    where = f"facade.map.{node}" if isinstance(node, str) else "facade.map"
    if not b.check_keys(m, MAP_KEYS, where, "a facade mapping"):
        return
    var = variables.get(node) if isinstance(node, str) else None
    if var is None:
        b.problem(m, where, f"node {node!r} is no variable of this site (Device.Variable or a site variable)", "node")
        return
    for key in ("address", "status"):
        if key in m:
            if not isinstance(m[key], str):
                raw = m.raw.get(key, str(m[key])) if hasattr(m, "raw") else str(m[key])
                b.problem(m, where, f"{key} {raw} is read by YAML as a number: quote it, {key}: \"{raw}\"", key)
                continue
            try:
                parse_address(m[key])
            except ValueError as exc:
                b.problem(m, where, f"{key}: {exc}", key)
    if "address" not in m:
        b.problem(m, where, "a facade mapping needs an address (holding/N, input/N, coil/N, discrete/N)")
    if "type" in m:
        if m["type"] not in XSD_TYPES:
            b.problem(m, where, f"unknown type {m['type']!r} (known: {', '.join(XSD_TYPES)})", "type")
        else:
            from asyncua import ua

            mismatch = field_type_mismatch(ua.VariantType[var.datatype], m["type"]) \
                if var.datatype in ua.VariantType.__members__ else None
            if mismatch:
                b.problem(m, where, mismatch, "type")
    for key in ("byte_order", "word_order"):
        if key in m and m[key] not in ("big", "little"):
            b.problem(m, where, f"{key} must be big or little, got {m[key]!r}", key)
    for key in ("scale", "offset"):
        if key in m and not _number(m[key]):
            b.problem(m, where, f"{key} must be a number, got {m[key]!r}", key)
    for key, high in (("length", 65535), ("status_bit", 15)):
        if key in m and (not isinstance(m[key], int) or isinstance(m[key], bool) or not 0 <= m[key] <= high):
            b.problem(m, where, f"{key} must be an integer 0..{high}, got {m[key]!r}", key)
    if "writable" in m and not isinstance(m["writable"], bool):
        b.problem(m, where, f"writable must be true or false, got {m['writable']!r}", "writable")
    if m.get("writable") and not var.spec.get("writable"):
        b.problem(m, where, f"a writable mapping of a read-only node: {node} is not writable", "writable")
    if "fallback" in m:
        if not m.get("writable"):
            b.problem(m, where, "fallback is what the watchdog writes back: the mapping must be writable", "fallback")
        if not has_watchdog:
            b.problem(m, where, "fallback needs the facade's watchdog (watchdog: {address, timeout_ms})", "fallback")
        if not (_number(m["fallback"]) or isinstance(m["fallback"], bool)):
            b.problem(m, where, f"fallback must be a number or true/false, got {m['fallback']!r}", "fallback")


def emit(w: Any, site_id: str, site_name: str, spec: dict[str, Any], variables: dict[str, Any],
         prop: Any, scalar: Any) -> None:
    """Write the facade object and the mapping properties; `prop`/`scalar` are yaml_build's helpers."""
    fid = f"{site_id}.Facade"
    w.node("UAObject", fid, "1:Facade", "Facade", spec.get("description") or "Modbus TCP facade for SCADA.",
           [("HasTypeDefinition", "i=58", True), ("HasComponent", site_id, False)], parent=site_id)

    def text(name: str, value: Any) -> None:
        prop(w, fid, name, "String", scalar("String", str(value)), gateway=True)

    text("FacadeEndpoint", spec["endpoint"])
    if "allowed_clients" in spec:
        allowed = spec["allowed_clients"]
        text("AllowedClients", ", ".join(str(a) for a in allowed) if isinstance(allowed, list) else allowed)
    if "write_role" in spec:
        text("WriteRole", str(spec["write_role"]).lower())
    for key, name in (("max_connections", "MaxConnections"), ("idle_timeout_ms", "IdleTimeout"),
                      ("bad_value", "BadValue")):
        if key in spec:
            prop(w, fid, name, "Double", scalar("Double", repr(float(spec[key]))), gateway=True)
    if spec.get("watchdog"):
        text("WatchdogAddress", spec["watchdog"]["address"])
        prop(w, fid, "WatchdogTimeout", "Duration", scalar("Double", repr(float(spec["watchdog"]["timeout_ms"]))),
             gateway=True)
        # Declared here so that a site can put an alarm on it; the gateway adds it to a site that does not.
        el = w.node("UAVariable", f"{fid}.WatchdogExpired", "2:WatchdogExpired", "WatchdogExpired",
                    "True while the SCADA has not changed the watchdog register within WatchdogTimeout; its "
                    "setpoints are withdrawn then.",
                    [("HasTypeDefinition", "i=63", True), ("HasComponent", fid, False)], parent=fid,
                    DataType="Boolean", AccessLevel="1", UserAccessLevel="1")
        w.value(el, scalar("Boolean", "true"))
    if "heartbeat" in spec:
        text("HeartbeatAddress", spec["heartbeat"])
    if "sunspec_common" in spec:
        prop(w, fid, "SunSpecCommon", "Boolean", scalar("Boolean", "true" if spec["sunspec_common"] else "false"),
             gateway=True)
    for m in spec.get("map") or ():
        var = variables[m["node"]]
        vid = f"ns=1;s={var.path}"
        for key, name, datatype, tag in _MAP_PROPS:
            if key in m:
                value = m[key]
                shown = repr(float(value)) if tag == "Double" else ("true" if value else "false") \
                    if tag == "Boolean" else str(value)
                prop(w, vid, name, datatype, scalar(tag, shown), gateway=True)
        if "fallback" in m:
            dt = var.datatype if var.datatype in _DATATYPE_IDS else "Double"
            value = m["fallback"]
            shown = ("true" if value else "false") if dt == "Boolean" else \
                repr(float(value)) if dt in ("Float", "Double") else str(int(value))
            prop(w, vid, "FacadeFallback", _DATATYPE_IDS[dt], scalar(dt, shown), gateway=True)
