"""`gateway nodeset build site.yaml -o site.xml`: a hand-written YAML site compiled to NodeSet2.

The YAML names devices, their connection, and their variables with data type, unit, range and
field binding; the output is an ordinary NodeSet2 file that `nodeset check` and any modelling
tool accept. Every problem is reported with the YAML file, line and the device or variable, and
nothing is written unless the whole site is valid. Format: docs/yaml-sites.md.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from asyncua import ua
from lxml import etree

from gateway.bindings import field_type_mismatch
from gateway.drivers.base import XSD_TYPES, Binding, Point
from gateway.drivers.options import Option
from gateway.drivers.registry import driver_for, known_schemes, unknown_scheme
from gateway.drivers.simulators.physics import parse_model
from gateway.facade import yaml_section as facade_section
from gateway.files import write_atomically
from gateway.nodeset.model import NodesetError, Problem
from gateway.nodeset.units import UNITS, eu_information
from gateway.nodeset.values import INT_RANGES
from gateway.nodeset.yaml_alarms import Alarm, check_alarm, severity_classes
from gateway.nodeset.yaml_statemachines import StateMachines, check_state_machines, emit_state_machines
from gateway.nodesets import GATEWAY_NAMESPACE
from gateway.nodesets import HERE as NODESETS_DIR

UA_NS = "http://opcfoundation.org/UA/2011/03/UANodeSet.xsd"
TYPES_NS = "http://opcfoundation.org/UA/2008/02/Types.xsd"
GATEWAY_TYPES_VERSION = "0.1.0"
DEFAULT_SCAN_CLASSES = ("HighSpeed", "MediumSpeed", "LowSpeed")

DATA_TYPES: dict[str, int] = {
    "Boolean": 1, "SByte": 2, "Byte": 3, "Int16": 4, "UInt16": 5, "Int32": 6, "UInt32": 7, "Int64": 8,
    "UInt64": 9, "Float": 10, "Double": 11, "String": 12, "DateTime": 13, "ByteString": 15,
}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

SITE_KEYS = {"site", "scan_classes", "profiles", "devices", "variables", "severity_classes", "facade", "control",
             "state_machines"}
SITE_INFO_KEYS = {"namespace", "name", "version", "description"}
DEVICE_KEYS = {"name", "profile", "connection", "description", "variables", "simulator", "alarms"}
PROFILE_KEYS = {"description", "source", "variables"}
# A device variable's keys: these, and the binding options its driver declares (Driver.point_options).
VARIABLE_KEYS = {
    "name", "datatype", "unit", "range", "address", "field_type", "scale", "offset", "scan", "deadband", "writable",
    "historize", "description", "initial", "alarms",
}
SITE_VARIABLE_KEYS = {"name", "datatype", "unit", "range", "writable", "historize", "description", "initial"}


# -- YAML with line numbers ------------------------------------------------------------------
class _Map(dict):
    line: int = 0
    key_lines: dict[str, int]
    raw: dict[str, str]  # a scalar value's text as written (`40001`, `0x10`), for messages about it


class _Seq(list):
    line: int = 0


# libyaml's parser where PyYAML has it (5-10x faster on a large site); the same safe constructors either way.
class _LineLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    pass


def _construct_map(loader: _LineLoader, node: yaml.MappingNode) -> _Map:
    m = _Map()
    m.line = node.start_mark.line + 1
    m.key_lines = {}
    m.raw = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:  # `? [a, b]: c` is valid YAML, but no key of a site
            raise yaml.constructor.ConstructorError("while constructing a mapping", node.start_mark,
                                                    "found an unhashable key", key_node.start_mark) from None
        m[key] = loader.construct_object(value_node, deep=True)
        m.key_lines[key] = key_node.start_mark.line + 1
        if isinstance(value_node, yaml.ScalarNode):
            m.raw[key] = value_node.value
    return m


def _construct_seq(loader: _LineLoader, node: yaml.SequenceNode) -> _Seq:
    s = _Seq(loader.construct_object(child, deep=True) for child in node.value)
    s.line = node.start_mark.line + 1
    return s


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_seq)


def _line(obj: Any, key: str | None = None) -> int | None:
    if isinstance(obj, _Map) and key is not None and key in obj.key_lines:
        return obj.key_lines[key]
    return getattr(obj, "line", None) or None


# -- the checked model -----------------------------------------------------------------------
@dataclass
class _Var:
    name: str
    path: str  # Device.Variable, or Variable for site-level ones
    spec: _Map
    datatype: str
    options: tuple[Option, ...] = ()  # the binding options of its device's driver


def point_options_of(driver: Any) -> tuple[Option, ...]:
    """The binding options of a device's driver; of every driver when the connection is unusable (so the
    variables are still checked, and the one problem is the connection)."""
    if driver is not None:
        return driver[0].point_options
    by_key: dict[str, Option] = {}
    for scheme in known_schemes():
        for option in driver_for(scheme).point_options:  # type: ignore[union-attr]
            by_key.setdefault(option.key, option)
    return tuple(by_key.values())


class _Builder:
    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[Problem] = []

    def problem(self, where: Any, node: str | None, message: str, key: str | None = None) -> None:
        self.problems.append(Problem(self.source, _line(where, key), node, message))

    # -- validation ----------------------------------------------------------------------------
    def sequence(self, m: Any, node: str | None, key: str) -> list[Any]:
        """m[key] as a list (absent or empty: []); anything else is a problem."""
        value = m.get(key) if isinstance(m, dict) else None
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(m, node, f"{key} must be a list, not {type(value).__name__}", key)
            return []
        return list(value)

    def text(self, m: Any, node: str | None, key: str) -> bool:
        """Is m[key], if present, text that XML can carry? Reports why not."""
        value = m.get(key) if isinstance(m, dict) else None
        if value is None:
            return False
        if not isinstance(value, str):
            self.problem(m, node, f"{key} must be text, not {type(value).__name__} {value!r}", key)
            return False
        bad = next((ch for ch in value if not _xml_char(ch)), None)
        if bad is not None:
            self.problem(m, node, f"{key} contains the character {bad!r}, which XML cannot carry", key)
            return False
        return True

    def check_keys(self, m: Any, allowed: set[str], node: str | None, what: str) -> bool:
        if not isinstance(m, dict):
            self.problem(m, node, f"{what} must be a mapping, not {type(m).__name__}")
            return False
        for key in m:
            if key not in allowed:
                self.problem(m, node, f"unknown key '{key}' in {what} (known: {', '.join(sorted(allowed))})", key)
        return True

    def check_name(self, m: _Map, node_hint: str | None, what: str) -> str | None:
        name = m.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            self.problem(m, node_hint, f"{what} needs a name of letters, digits and _ (not starting with a digit), "
                                       f"got {name!r}", "name")
            return None
        return name

    def check_variable(self, v: _Map, path: str, scan_classes: set[str], bound: bool, driver: Any) -> str | None:
        datatype = v.get("datatype", "Double")
        if not isinstance(datatype, str) or datatype not in DATA_TYPES:
            self.problem(v, path, f"unknown datatype {datatype!r} (known: {', '.join(DATA_TYPES)})", "datatype")
            datatype = None
        if "unit" in v and (not isinstance(v["unit"], str) or v["unit"] not in UNITS):
            self.problem(v, path, f"unknown unit {v['unit']!r} (known: {', '.join(UNITS)})", "unit")
        if "range" in v:
            r = v["range"]
            if (not isinstance(r, list) or len(r) != 2 or not all(_is_number(x) for x in r) or not r[0] < r[1]):
                self.problem(v, path, f"range must be [low, high] with low < high, got {r!r}", "range")
        self.text(v, path, "description")
        if isinstance(v.get("initial"), str):
            self.text(v, path, "initial")
        for key in ("writable", "historize"):
            if key in v and not isinstance(v[key], bool):
                self.problem(v, path, f"{key} must be true or false, got {v[key]!r}", key)
        if datatype and "initial" in v and _value_problem(v["initial"], datatype):
            self.problem(v, path, f"initial {v['initial']!r} is not a {datatype}: "
                                  f"{_value_problem(v['initial'], datatype)}", "initial")
        if not bound:
            return datatype
        address = v.get("address")
        if isinstance(address, int | float) and not isinstance(address, bool):
            # YAML reads 40001 and 0x10 as numbers (00001 even as octal 1): the text written is what counts.
            raw = v.raw.get("address", str(address)) if isinstance(v, _Map) else str(address)
            self.problem(v, path, f"address {raw} is read by YAML as the number {address!r}, not as an address: "
                                  f"quote it, address: \"{raw}\"", "address")
            return datatype
        if not isinstance(address, str) or not address:
            self.problem(v, path, "a device variable needs an address (its FieldAddress)", "address")
            return datatype
        self.text(v, path, "address")
        for key in ("scale", "offset", "deadband"):
            if key in v and not _is_number(v[key]):
                self.problem(v, path, f"{key} must be a number, got {v[key]!r}", key)
        if "deadband" in v and _is_number(v["deadband"]) and v["deadband"] < 0:
            self.problem(v, path, "deadband must be >= 0", "deadband")
        if "field_type" in v and v["field_type"] not in XSD_TYPES:
            self.problem(v, path, f"unknown field_type '{v['field_type']}' (known: {', '.join(XSD_TYPES)})",
                         "field_type")
        elif datatype:
            mismatch = field_type_mismatch(ua.VariantType[datatype], v.get("field_type") or _XSD_OF[datatype])
            if mismatch:
                self.problem(v, path, mismatch, "field_type" if "field_type" in v else "datatype")
        options: dict[str, Any] = {}
        for option in point_options_of(driver):
            if option.key in v:
                try:
                    options[option.key] = _yaml_option(option, v[option.key])
                except ValueError as exc:
                    self.problem(v, path, f"{option.key} {exc}", option.key)
        scan = v.get("scan", "MediumSpeed")
        if not isinstance(scan, str) or scan not in scan_classes:
            self.problem(v, path, f"unknown scan class {scan!r} (known: {', '.join(sorted(scan_classes))})", "scan")
        if driver is not None and datatype and not any(p.node == path for p in self.problems):
            driver, url = driver
            binding = Binding(address=v["address"], field_type=v.get("field_type"),
                              scale=float(v.get("scale", 1.0)), offset=float(v.get("offset", 0.0)), scan_class=scan,
                              deadband=float(v.get("deadband", 0.0)), options=options)
            try:
                driver.validate_point(url, Point(0, path, binding, v.get("field_type") or _XSD_OF[datatype],
                                                 bool(v.get("writable"))))
            except ValueError as exc:
                self.problem(v, path, f"bad binding for {driver.schemes[0]}: {exc}", "address")
        return datatype

    def check_connection(self, d: _Map, name: str) -> Any:
        conn = d.get("connection")
        if not isinstance(conn, str) or "://" not in conn:
            self.problem(d, name, "a device needs a connection URI such as sim://name or modbus+tcp://host:502/1",
                         "connection" if "connection" in d else None)
            return None
        if not self.text(d, name, "connection"):
            return None
        try:
            url = urlsplit(conn)
        except ValueError as exc:  # e.g. an unclosed [ of an IPv6 host
            self.problem(d, name, f"bad connection '{conn}': {exc}", "connection")
            return None
        driver = driver_for(url.scheme)
        if driver is None:
            self.problem(d, name, unknown_scheme(url.scheme), "connection")
            return None
        try:
            driver.validate_connection(url)
        except ValueError as exc:
            self.problem(d, name, f"bad connection '{conn}': {exc}", "connection")
            return None
        return driver, url


def _yaml_option(option: Option, value: Any) -> Any:
    """An option as YAML typed it: numbers and booleans must be such, not text that looks like one."""
    if option.kind in ("int", "number") and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ValueError(f"must be a number, got {value!r}")
    if option.kind == "bool" and not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {value!r}")
    if option.kind in ("text", "choice"):
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ValueError(f"must be text, got {value!r}")
        return option.parse(str(value))
    return option.parse(value)


_XSD_OF = {
    "Boolean": "xsd:boolean", "SByte": "xsd:byte", "Byte": "xsd:unsignedByte", "Int16": "xsd:short",
    "UInt16": "xsd:unsignedShort", "Int32": "xsd:int", "UInt32": "xsd:unsignedInt", "Int64": "xsd:long",
    "UInt64": "xsd:unsignedLong", "Float": "xsd:float", "Double": "xsd:double", "String": "xsd:string",
    "DateTime": "xsd:string", "ByteString": "xsd:string",
}


def _xml_char(ch: str) -> bool:
    """XML 1.0's Char production: what a NodeSet2 file can hold."""
    c = ord(ch)
    return c in (0x9, 0xA, 0xD) or 0x20 <= c <= 0xD7FF or 0xE000 <= c <= 0xFFFD or 0x10000 <= c <= 0x10FFFF


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _value_problem(value: Any, datatype: str) -> str | None:
    if datatype == "Boolean":
        return None if isinstance(value, bool) else "expected true or false"
    if datatype in INT_RANGES:
        if not isinstance(value, int) or isinstance(value, bool):
            return "expected an integer"
        low, high = INT_RANGES[datatype]
        return None if low <= value <= high else f"outside {low}..{high}"
    if datatype in ("Float", "Double"):
        return None if _is_number(value) else "expected a number"
    if datatype == "String":
        return None if isinstance(value, str) else "expected a string"
    return f"initial values of {datatype} are not supported"


# -- XML output ------------------------------------------------------------------------------
class _Writer:
    def __init__(self) -> None:
        self.root = etree.Element(f"{{{UA_NS}}}UANodeSet", nsmap={None: UA_NS})

    def sub(self, parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
        el = etree.SubElement(parent, f"{{{UA_NS}}}{tag}", {k: v for k, v in attrs.items() if v is not None})
        if text is not None:
            el.text = text
        return el

    def node(self, tag: str, nodeid: str, browse: str, display: str, description: str | None,
             refs: list[tuple[str, str, bool]], parent: str | None = None, **attrs: str) -> etree._Element:
        el = self.sub(self.root, tag, NodeId=nodeid, BrowseName=browse, ParentNodeId=parent, **attrs)
        self.sub(el, "DisplayName", display)
        if description:
            self.sub(el, "Description", description)
        refs_el = self.sub(el, "References")
        for reftype, target, forward in refs:
            r = self.sub(refs_el, "Reference", target, ReferenceType=reftype)
            if not forward:
                r.set("IsForward", "false")
        return el

    def value(self, var: etree._Element, builder: Any) -> None:
        v = self.sub(var, "Value")
        builder(v)


def _t(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
    el = etree.SubElement(parent, f"{{{TYPES_NS}}}{tag}", nsmap={None: TYPES_NS} if parent.nsmap.get(None) != TYPES_NS
                          else None)
    if text is not None:
        el.text = text
    return el


def _scalar(tag: str, text: str) -> Any:
    return lambda v: _t(v, tag, text)


def _format(value: Any, datatype: str) -> str:
    if datatype == "Boolean":
        return "true" if value else "false"
    if datatype in ("Float", "Double"):
        return repr(float(value))
    return str(value)


def _range_value(low: float, high: float) -> Any:
    def build(v: etree._Element) -> None:
        ext = _t(v, "ExtensionObject")
        _t(_t(ext, "TypeId"), "Identifier", "i=885")
        rng = _t(_t(ext, "Body"), "Range")
        _t(rng, "Low", repr(float(low)))
        _t(rng, "High", repr(float(high)))
    return build


def _eu_value(symbol: str) -> Any:
    eu = eu_information(symbol)

    def build(v: etree._Element) -> None:
        ext = _t(v, "ExtensionObject")
        _t(_t(ext, "TypeId"), "Identifier", "i=888")
        body = _t(_t(ext, "Body"), "EUInformation")
        _t(body, "NamespaceUri", eu.NamespaceUri)
        _t(body, "UnitId", str(eu.UnitId))
        for field in ("DisplayName", "Description"):
            lt = _t(body, field)
            _t(lt, "Locale", "en")
            _t(lt, "Text", getattr(eu, field).Text)
    return build


def shipped_profiles() -> dict[str, Any]:
    """Device profiles shipped with the gateway (nodesets/profiles/*.yaml), by name."""
    return dict(_read_shipped_profiles())


@functools.cache
def _read_shipped_profiles() -> dict[str, Any]:
    # Read once per process: parsing them is most of the time of a build, and they ship with the code.
    found: dict[str, Any] = {}
    for path in sorted((NODESETS_DIR / "profiles").glob("*.yaml")):
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_LineLoader)  # a SafeLoader, with line numbers
        for name, profile in (doc.get("profiles") or {}).items():
            found[name] = profile
    return found


def build(doc: Any, source: str) -> bytes:
    """Compile a parsed YAML site (with line information) to NodeSet2 bytes; raise NodesetError."""
    b = _Builder(source)
    if not b.check_keys(doc, SITE_KEYS, None, "the site file"):
        raise NodesetError(b.problems)
    info = doc.get("site")
    if not isinstance(info, dict) or not b.check_keys(info, SITE_INFO_KEYS, "site", "site"):
        b.problem(doc, "site", "needs a 'site:' mapping with namespace and name", "site")
        raise NodesetError(b.problems)
    uri, site_name = info.get("namespace"), info.get("name")
    if not isinstance(uri, str) or not uri:
        b.problem(info, "site", "site.namespace must be a URI such as urn:example:site", "namespace")
    if not isinstance(site_name, str) or not _NAME.match(site_name):
        b.problem(info, "site", f"site.name must be letters, digits and _, got {site_name!r}", "name")
    version = str(info.get("version", "1.0.0"))
    b.text(info, "site", "description")
    for key in ("namespace", "version"):
        if key in info and isinstance(info[key], str):
            b.text(info, "site", key)

    scan_classes = set(DEFAULT_SCAN_CLASSES)
    scan_specs = doc.get("scan_classes") or {}
    if not isinstance(scan_specs, dict):
        b.problem(doc, "scan_classes", "scan_classes must map class names to milliseconds", "scan_classes")
        scan_specs = {}
    for cls, ms in scan_specs.items():
        if not isinstance(cls, str) or not _NAME.match(cls):
            b.problem(scan_specs, f"scan_classes.{cls}", "a scan class name must be letters, digits and _", cls)
        elif not _is_number(ms) or ms <= 0:
            b.problem(scan_specs, cls, f"scan class interval must be a positive number of ms, got {ms!r}", cls)
        else:
            scan_classes.add(cls)

    own_profiles = doc.get("profiles") or {}
    if not isinstance(own_profiles, dict):
        b.problem(doc, "profiles", "profiles must map profile names to {variables: [...]}", "profiles")
        own_profiles = {}
    for pname, prof in own_profiles.items():
        if b.check_keys(prof, PROFILE_KEYS, f"profiles.{pname}", "a profile"):
            b.text(prof, f"profiles.{pname}", "description")
    # The site's own profiles first, then the device profiles shipped in nodesets/profiles/.
    profiles = {**shipped_profiles(), **own_profiles}

    classes = severity_classes(b, doc)
    alarms: dict[str, list[Alarm]] = {}
    devices: list[tuple[str, _Map, list[_Var]]] = []
    connected: list[tuple[str, _Map, Any, Any]] = []  # name, spec, driver, url of devices with a valid connection
    seen_devices: set[str] = set()
    for d in b.sequence(doc, None, "devices"):
        if not b.check_keys(d, DEVICE_KEYS, None, "a device"):
            continue
        name = b.check_name(d, None, "a device")
        if name is None:
            continue
        if name in seen_devices or name == site_name:
            b.problem(d, name, f"device name '{name}' is used twice", "name")
            continue
        seen_devices.add(name)
        b.text(d, name, "description")
        driver = b.check_connection(d, name)
        if "simulator" in d and b.text(d, name, "simulator"):
            try:
                parse_model(d["simulator"])
            except ValueError as exc:
                b.problem(d, name, f"bad simulator: {exc}", "simulator")
        var_specs: list[Any] = []
        if "profile" in d:
            prof = profiles.get(d["profile"]) if isinstance(d["profile"], str) else None
            if not isinstance(prof, dict):
                b.problem(d, name, f"unknown profile {d['profile']!r} (known: {', '.join(profiles) or 'none'})",
                          "profile")
            else:
                var_specs += b.sequence(prof, f"profiles.{d['profile']}", "variables")
        own = b.sequence(d, name, "variables")
        # A device's own variable replaces the profile's variable of the same name.
        own_names = {v.get("name") for v in own if isinstance(v, dict) and isinstance(v.get("name"), str)}
        var_specs = [v for v in var_specs if not (isinstance(v, dict) and v.get("name") in own_names)] + own
        if not var_specs:
            b.problem(d, name, "a device needs at least one variable (directly or from its profile)")
        options = point_options_of(driver)
        variables = b_vars(b, var_specs, name, scan_classes, VARIABLE_KEYS | {o.key for o in options}, True, driver)
        devices.append((name, d, variables))
        alarms[name] = _device_alarms(b, d, name, variables, classes)
        if driver is not None:
            connected.append((name, d, *driver))
    for drv in {c[2] for c in connected}:
        own = [c for c in connected if c[2] is drv]
        for index, message in drv.validate_devices([c[3] for c in own]):
            b.problem(own[index][1], own[index][0], f"bad connection '{own[index][1]['connection']}': {message}",
                      "connection")
    site_vars = b_vars(b, b.sequence(doc, None, "variables"), None, scan_classes, SITE_VARIABLE_KEYS, False, None)
    taken = {v.name for v in site_vars} & seen_devices
    for clash in sorted(taken):
        b.problem(doc, clash, f"'{clash}' names both a device and a site variable", "variables")
    by_path = {v.path: v for _, _, vs in devices for v in vs} | {v.path: v for v in site_vars}
    if isinstance(doc.get("control"), dict):  # the engine's ModeCode, which a facade may show
        mode_code = _mode_code_var(site_name)
        by_path[mode_code.path] = mode_code
    facade = facade_section.check(b, doc, by_path)
    names: dict[str | None, set[str]] = {None: seen_devices | {v.name for v in site_vars}}
    names.update({name: {v.name for v in variables} | {a.name for a in alarms.get(name, ())}
                  for name, _, variables in devices})
    machines = check_state_machines(b, doc, names)
    control = doc.get("control")
    if control is not None:
        _check_control(b, doc, control, devices, site_vars, machines)
    if b.problems:
        raise NodesetError(b.problems)
    return _emit(uri, site_name, version, info.get("description"), scan_specs, devices, site_vars, alarms,
                 (facade, by_path) if facade is not None else None, control, machines)


def _device_alarms(b: _Builder, d: _Map, device: str, variables: list[_Var], classes: dict[str, int]) -> list[Alarm]:
    by_name = {v.name: v.spec for v in variables}
    taken: set[str] = set()
    out = [a for spec in b.sequence(d, device, "alarms")
           if (a := check_alarm(b, spec, device, by_name, None, classes, taken)) is not None]
    for var in variables:
        for spec in b.sequence(var.spec, var.path, "alarms"):
            alarm = check_alarm(b, spec, device, by_name, var.name, classes, taken)
            if alarm is not None:
                out.append(alarm)
    return out


def b_vars(b: _Builder, specs: list[Any], device: str | None, scan_classes: set[str], allowed: set[str],
           bound: bool, driver: Any) -> list[_Var]:
    out: list[_Var] = []
    seen: set[str] = set()
    for v in specs:
        if not b.check_keys(v, allowed, device, "a variable"):
            continue
        name = b.check_name(v, device, "a variable")
        if name is None:
            continue
        path = f"{device}.{name}" if device else name
        if name in seen:
            b.problem(v, path, f"variable '{name}' is defined twice", "name")
            continue
        seen.add(name)
        if bound and driver is not None:
            v = _with_device_defaults(v, driver)
        datatype = b.check_variable(v, path, scan_classes, bound, driver)
        out.append(_Var(name, path, v, datatype or "Double", point_options_of(driver) if bound else ()))
    return out


def _check_control(b: _Builder, doc: Any, control: Any, devices: list[tuple[str, _Map, list[_Var]]],
                   site_vars: list[_Var], machines: StateMachines) -> None:
    from gateway.control.site import parse_section
    from gateway.control.state import SystemState

    known = {v.path: v for _name, _d, variables in devices for v in variables} | {v.name: v for v in site_vars}

    # What the facade section adds: its watchdog state, a read-only Boolean a fallback may watch.
    site = doc.get("site") if isinstance(doc.get("site"), dict) else {}
    facade_flags = {f"{site.get('name')}.Facade.WatchdogExpired": (False, ua.VariantType.Boolean)} \
        if doc.get("facade") is not None else {}

    def lookup(name: str) -> tuple[bool, ua.VariantType] | None:
        var = known.get(name)
        if var is None:
            return facade_flags.get(name)
        return bool(var.spec.get("writable")), ua.VariantType[var.datatype]

    config, problems = parse_section(control, lookup, lambda name: ua.NodeId(name, 1))
    if config.state_machine is not None:  # the Part 16 machine showing the engine's state has its states
        found = {f"{m.parent}/{m.name}" if m.parent else m.name: m for m in machines.instances}
        machine = found.get(config.state_machine)
        if machine is None:
            problems.append(f"state_machine: {config.state_machine!r} is no state machine of the site "
                            f"(machines: {', '.join(sorted(found)) or 'none'})")
        else:
            missing = [s.name for s in SystemState if s.name not in {st.name for st in machine.mtype.states}]
            if missing:
                problems.append(f"state_machine: {config.state_machine} ({machine.mtype.name}) has no state "
                                f"{', '.join(missing)} of the control system state")
    for message in problems:
        b.problem(doc, "control", message, "control")


def _mode_code_var(site_name: str) -> _Var:
    return _Var("ModeCode", f"{site_name}.Control.ModeCode", _Map({"writable": True}), "UInt16")


def _emit_control(w: _Writer, site_name: str, site_id: str, control: dict) -> None:
    """The `control:` section: a Control object with the section as JSON, its ModeCode, and one variable per
    mode parameter."""
    import json

    from gateway.control.modes import load_modes, mode_names
    from gateway.control.site import CONFIG_PROPERTY

    cid = f"{site_id}.Control"
    w.node("UAObject", cid, "1:Control", "Control", "The control engine: modes, interlocks, setpoints.",
           [("HasTypeDefinition", "i=61", True), ("HasComponent", site_id, False)], parent=site_id)
    _property(w, cid, CONFIG_PROPERTY, "String", _scalar("String", json.dumps(control, sort_keys=True)),
              gateway=True)
    # Declared here (the engine shows the value) so that the facade can map it: a MultiStateDiscrete whose
    # EnumStrings name each code; operators write a code to switch modes.
    names = mode_names()
    mode = str(control.get("mode", "Passive"))
    mode_code = _mode_code_var(site_name)
    el = w.node("UAVariable", f"ns=1;s={mode_code.path}", "1:ModeCode", "ModeCode",
                "The active mode as a number (" + ", ".join(f"{i} {n}" for i, n in enumerate(names) if n) +
                "); write one to switch modes (operators).",
                [("HasTypeDefinition", "i=2376", True), ("HasComponent", cid, False)], parent=cid,
                DataType="i=5", AccessLevel="3", UserAccessLevel="3")
    w.value(el, _scalar("UInt16", str(names.index(mode) if mode in names else 0)))
    enum = w.node("UAVariable", f"ns=1;s={mode_code.path}.EnumStrings", "EnumStrings", "EnumStrings", None,
                  [("HasTypeDefinition", "i=68", True), ("HasProperty", f"ns=1;s={mode_code.path}", False)],
                  parent=f"ns=1;s={mode_code.path}", DataType="i=21", ValueRank="1", ArrayDimensions="0")

    def strings(v: etree._Element) -> None:
        lst = _t(v, "ListOfLocalizedText")
        for name in names:
            _t(_t(lst, "LocalizedText"), "Text", name)

    w.value(enum, strings)
    modes_id = f"{cid}.Modes"
    w.node("UAObject", modes_id, "1:Modes", "Modes", "Each mode's parameters (writable, kept across restarts).",
           [("HasTypeDefinition", "i=61", True), ("HasComponent", cid, False)], parent=cid)
    configured = control.get("modes") or {}
    for mode_name, cls in sorted(load_modes().items()):
        if not cls.PARAMETERS:
            continue
        mid = f"{modes_id}.{mode_name}"
        w.node("UAObject", mid, f"1:{mode_name}", mode_name, f"Parameters of the {mode_name} mode.",
               [("HasTypeDefinition", "i=61", True), ("HasComponent", modes_id, False)], parent=modes_id)
        for p in cls.PARAMETERS:
            spec = _Map({"writable": True, "range": [p.low, p.high], "description": p.description,
                         "initial": float(configured.get(mode_name, {}).get(p.name, p.default))})
            if p.unit:
                spec["unit"] = p.unit
            _variable(w, _Var(p.name, f"{site_name}.Control.Modes.{mode_name}.{p.name}", spec, "Double"), mid,
                      bound=False)
    _emit_grid_support(w, site_name, cid, control)


def _emit_grid_support(w: _Writer, site_name: str, cid: str, control: dict) -> None:
    """One writable, persisted variable per parameter of each grid-support service the section enables."""
    from gateway.control.grid_support import load_services

    enabled = control.get("grid_support") or {}
    if not enabled:
        return
    services = load_services()
    gid = f"{cid}.GridSupport"
    w.node("UAObject", gid, "1:GridSupport", "GridSupport", "Each grid-support service's parameters (writable, "
           "kept across restarts).", [("HasTypeDefinition", "i=61", True), ("HasComponent", cid, False)], parent=cid)
    for name, params in sorted(enabled.items()):
        sid = f"{gid}.{name}"
        w.node("UAObject", sid, f"1:{name}", name, f"Parameters of the {name} grid-support service.",
               [("HasTypeDefinition", "i=61", True), ("HasComponent", gid, False)], parent=gid)
        for p in services[name].PARAMETERS:
            spec = _Map({"writable": True, "range": [p.low, p.high], "description": p.description,
                         "initial": float(params.get(p.name, p.default))})
            if p.unit:
                spec["unit"] = p.unit
            _variable(w, _Var(p.name, f"{site_name}.Control.GridSupport.{name}.{p.name}", spec, "Double"), sid,
                      bound=False)


def _with_device_defaults(v: dict[str, Any], driver: Any) -> dict[str, Any]:
    """The variable with what its device says of the point (a DBC's unit, range, comment) where the site
    says nothing; a copy, as a profile's variable serves devices that may say different things."""
    cls, url = driver
    address = v.get("address")
    if not isinstance(address, str):
        return v
    options = {o.key: v[o.key] for o in cls.point_options if o.key in v}
    try:
        defaults = cls.point_defaults(url, address, options)
    except ValueError:  # a bad address is reported by the driver's own check
        return v
    if v.get("datatype") in ("Boolean", "String"):  # a flag or a state name has no unit or range
        defaults = {k: d for k, d in defaults.items() if k not in ("unit", "range")}
    if not defaults or all(k in v for k in defaults):
        return v
    copy = _Map({**{k: d for k, d in defaults.items() if k not in v}, **v})
    # A site given as plain dicts (build() from Python, not from YAML text) has no line numbers.
    copy.line = getattr(v, "line", 0)
    copy.key_lines, copy.raw = dict(getattr(v, "key_lines", {})), dict(getattr(v, "raw", {}))
    for key in defaults:
        copy.key_lines.setdefault(key, copy.key_lines.get("address", copy.line))
    return copy


def _emit(uri: str, site_name: str, version: str, description: str | None, scan_specs: dict,
          devices: list[tuple[str, _Map, list[_Var]]], site_vars: list[_Var], alarms: dict[str, list[Alarm]],
          facade: Any = None, control: dict | None = None, machines: StateMachines | None = None) -> bytes:
    w = _Writer()
    uris = w.sub(w.root, "NamespaceUris")
    w.sub(uris, "Uri", uri)
    w.sub(uris, "Uri", GATEWAY_NAMESPACE)
    models = w.sub(w.root, "Models")
    model = w.sub(models, "Model", ModelUri=uri, Version=version)
    w.sub(model, "RequiredModel", ModelUri="http://opcfoundation.org/UA/", Version="1.04")
    w.sub(model, "RequiredModel", ModelUri=GATEWAY_NAMESPACE, Version=GATEWAY_TYPES_VERSION)
    aliases = w.sub(w.root, "Aliases")
    for alias, target in (("Boolean", "i=1"), ("Double", "i=11"), ("String", "i=12"), ("Duration", "i=290"),
                          ("Range", "i=884"), ("EUInformation", "i=887"), ("Organizes", "i=35"),
                          ("HasComponent", "i=47"), ("HasProperty", "i=46"), ("HasTypeDefinition", "i=40")):
        w.sub(aliases, "Alias", target, Alias=alias)

    site_id = f"ns=1;s={site_name}"
    w.node("UAObject", site_id, f"1:{site_name}", site_name, description,
           [("HasTypeDefinition", "i=61", True), ("Organizes", "i=85", False)])
    for cls, ms in scan_specs.items():
        cid = f"ns=1;s={site_name}.ScanClasses.{cls}"
        w.node("UAObject", cid, f"1:{cls}", cls, f"Scan class, {ms:g} ms.",
               [("HasTypeDefinition", "ns=2;i=1003", True), ("HasComponent", site_id, False)], parent=site_id)
        prop = w.node("UAVariable", f"{cid}.Interval", "2:Interval", "Interval", None,
                      [("HasTypeDefinition", "i=68", True), ("HasProperty", cid, False)], parent=cid,
                      DataType="Duration")
        w.value(prop, _scalar("Double", repr(float(ms))))
    for name, d, variables in devices:
        dev_id = f"ns=1;s={name}"
        w.node("UAObject", dev_id, f"1:{name}", name, d.get("description"),
               [("HasTypeDefinition", "ns=2;i=1001", True), ("HasComponent", site_id, False)], parent=site_id)
        _property(w, dev_id, "Connection", "String", _scalar("String", d["connection"]), gateway=True)
        if d.get("simulator"):
            _property(w, dev_id, "Simulator", "String", _scalar("String", d["simulator"]), gateway=True)
        for var in variables:
            _variable(w, var, dev_id, bound=True)
        for alarm in alarms.get(name, ()):
            _alarm(w, alarm, dev_id)
    for var in site_vars:
        _variable(w, var, site_id, bound=False)
    if facade is not None:
        facade_section.emit(w, site_id, site_name, facade[0], facade[1], _property, _scalar)
    if control is not None:
        _emit_control(w, site_name, site_id, control)
    if machines is not None:
        emit_state_machines(w, machines, site_id, _property, _scalar, _nodeid_value)
    return etree.tostring(w.root, xml_declaration=True, encoding="utf-8", pretty_print=True)


def _alarm(w: _Writer, alarm: Alarm, dev_id: str) -> None:
    aid = f"{dev_id}.{alarm.name}"
    w.node("UAObject", aid, f"1:{alarm.name}", alarm.name, alarm.spec.get("message"),
           [("HasTypeDefinition", alarm.type_id, True), ("HasComponent", dev_id, False)], parent=dev_id)
    _property(w, aid, "InputNode", "i=17", _nodeid_value(f"ns=1;s={alarm.device}.{alarm.input}"), gateway=False)
    _property(w, aid, "Severity", "i=5", _scalar("UInt16", str(alarm.severity)), gateway=False)
    for browse, datatype, tag, value in alarm.props:
        gateway = browse.startswith("2:")
        name = browse.removeprefix("2:")
        builder = _nodeid_value(f"ns=1;s={value}") if tag == "NodeId" else _scalar(tag, _format(value, tag))
        _property(w, aid, name, {"NodeId": "i=17", "Int64": "i=8"}.get(datatype, datatype), builder, gateway)


def _nodeid_value(nodeid: str) -> Any:
    return lambda v: _t(_t(v, "NodeId"), "Identifier", nodeid)


def _property(w: _Writer, parent: str, name: str, datatype: str, value: Any, gateway: bool) -> None:
    pid = f"{parent}.{name}"
    ns = 2 if gateway else 0
    browse = f"{ns}:{name}" if ns else name
    prop = w.node("UAVariable", pid, browse, name, None,
                  [("HasTypeDefinition", "i=68", True), ("HasProperty", parent, False)], parent=parent,
                  DataType=datatype)
    w.value(prop, value)


_BINDING_PROPS = (  # YAML key, property, DataType, XML value tag
    ("address", "FieldAddress", "String", "String"), ("field_type", "FieldType", "String", "String"),
    ("scale", "Scale", "Double", "Double"), ("offset", "Offset", "Double", "Double"),
    ("scan", "ScanClass", "String", "String"), ("deadband", "Deadband", "Double", "Double"),
)
_OPTION_DATATYPE = {"String": "String", "Boolean": "Boolean", "Byte": "i=3", "UInt16": "i=5", "UInt32": "i=7",
                    "Double": "Double"}


def _variable(w: _Writer, var: _Var, parent: str, bound: bool) -> None:
    v = var.spec
    vid = f"ns=1;s={var.path}"
    access = 1 | (2 if v.get("writable") else 0) | (4 if v.get("historize") else 0)
    attrs: dict[str, str] = {"DataType": f"i={DATA_TYPES[var.datatype]}", "AccessLevel": str(access),
                             "UserAccessLevel": str(access)}
    if v.get("historize"):
        attrs["Historizing"] = "true"
    typedef = "i=2368" if "range" in v else "i=63"  # AnalogItemType needs its EURange
    el = w.node("UAVariable", vid, f"1:{var.name}", var.name, v.get("description"),
                [("HasTypeDefinition", typedef, True), ("HasComponent", parent, False)], parent=parent, **attrs)
    if "initial" in v:
        w.value(el, _scalar(var.datatype, _format(v["initial"], var.datatype)))
    if "range" in v:
        _property(w, vid, "EURange", "Range", _range_value(*v["range"]), gateway=False)
    if "unit" in v:
        _property(w, vid, "EngineeringUnits", "EUInformation", _eu_value(v["unit"]), gateway=False)
    if not bound:
        return
    # The driver's options after FieldType, in their declared order (where Modbus's always stood).
    props = [*_BINDING_PROPS[:2], *((o.key, o.prop, _OPTION_DATATYPE[o.datatype], o.datatype) for o in var.options),
             *_BINDING_PROPS[2:]]
    for key, prop, datatype, tag in props:
        if key in v:
            value = v[key]
            text = repr(float(value)) if tag == "Double" else str(value).lower() if tag == "Boolean" else str(value)
            _property(w, vid, prop, datatype, _scalar(tag, text), gateway=True)


def build_file(src: Path, out: Path) -> None:
    """Compile `src` to `out` atomically; raise NodesetError naming the YAML file and line."""
    source = str(src)
    try:
        text = Path(src).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else f"not UTF-8 text ({exc.reason})"
        raise NodesetError([Problem(source, None, None, f"cannot read file: {reason}")]) from None
    write_atomically(Path(out), compile_text(text, source))


def compile_text(text: str, source: str) -> bytes:
    """Compile the text of a YAML site (`source` names it in problems); raise NodesetError."""
    try:
        doc = yaml.load(text, Loader=_LineLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise NodesetError([Problem(source, mark.line + 1 if mark else None, None,
                                    f"not valid YAML: {problem}")]) from None
    return build(doc, source)
