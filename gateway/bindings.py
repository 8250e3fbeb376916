"""Find the devices, bound variables and scan classes of a loaded site.

A device is an Object with a `Connection` property (gateway namespace). A bound variable is a
Variable below a device with a `FieldAddress` property, either its own or inherited: when the
device's ObjectType (a device profile) declares a variable with binding properties at the same
browse path, the instance uses them and only overrides what it states itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, urlsplit

from asyncua import ua
from asyncua.server.address_space import AddressSpace

from gateway.diagnostics import expanded, planned_nodeids
from gateway.drivers.base import XSD_TYPES, Binding, Driver, Point
from gateway.drivers.options import parse_point_options
from gateway.drivers.registry import driver_for, unknown_scheme
from gateway.nodeset.loader import LoadedSite
from gateway.nodeset.model import Problem
from gateway.nodeset.nodedata import attribute_value
from gateway.nodeset.typecheck import TypeIndex

DEFAULT_SCAN_CLASSES = {"HighSpeed": 100.0, "MediumSpeed": 1000.0, "LowSpeed": 10000.0}
# The binding properties every driver shares; a driver adds its own (Driver.point_options).
BINDING_PROPERTIES = ("FieldAddress", "FieldType", "Scale", "Offset", "ScanClass", "Deadband")
_HIERARCHICAL = {
    ua.NodeId(i) for i in (ua.ObjectIds.HasComponent, ua.ObjectIds.HasProperty, ua.ObjectIds.Organizes,
                           ua.ObjectIds.HasOrderedComponent)
}
_HAS_PROPERTY = ua.NodeId(ua.ObjectIds.HasProperty)
_HAS_TYPEDEF = ua.NodeId(ua.ObjectIds.HasTypeDefinition)
_HAS_SUBTYPE = ua.NodeId(ua.ObjectIds.HasSubtype)
_HAS_MODELLING_RULE = ua.NodeId(ua.ObjectIds.HasModellingRule)
DEFAULT_FIELD_TYPE = {
    ua.VariantType.Boolean: "xsd:boolean", ua.VariantType.SByte: "xsd:byte", ua.VariantType.Byte: "xsd:unsignedByte",
    ua.VariantType.Int16: "xsd:short", ua.VariantType.UInt16: "xsd:unsignedShort", ua.VariantType.Int32: "xsd:int",
    ua.VariantType.UInt32: "xsd:unsignedInt", ua.VariantType.Int64: "xsd:long",
    ua.VariantType.UInt64: "xsd:unsignedLong", ua.VariantType.Float: "xsd:float",
    ua.VariantType.Double: "xsd:double", ua.VariantType.String: "xsd:string",
}


@dataclass(slots=True)
class BoundVariable:
    nodeid: ua.NodeId
    name: str
    binding: Binding
    field_type: str
    vtype: ua.VariantType
    writable: bool
    historizing: bool
    eurange: tuple[float, float] | None = None


@dataclass(slots=True)
class DeviceConfig:
    nodeid: ua.NodeId
    name: str
    connection: str
    url: SplitResult
    driver: type[Driver]
    variables: list[BoundVariable] = field(default_factory=list)
    simulator: str = ""  # the Simulator property: a physical model for `gateway --simulate`


@dataclass(slots=True)
class SiteBindings:
    scan_classes: dict[str, float]  # name -> interval in ms
    devices: list[DeviceConfig]
    warnings: list[Problem] = field(default_factory=list)  # servable but suspect (overlapping bindings)
    alarms: list[Any] = field(default_factory=list)  # the site's alarm declarations (gateway.alarms.config)
    facade: Any = None  # the site's Modbus facade (gateway.facade.model.FacadeConfig), if it declares one
    state_machines: list[Any] = field(default_factory=list)  # the site's machines (gateway.statemachines.config)


class SiteView:
    """Read helpers over the address space."""

    def __init__(self, aspace: AddressSpace, gw_ns: int) -> None:
        self.aspace = aspace
        self.gw_ns = gw_ns

    def attr(self, nid: ua.NodeId, a: ua.AttributeIds) -> Any:
        nd = self.aspace.get(nid)
        dv = attribute_value(nd, a) if nd else None  # read without making an AttributeValue of it
        return dv.Value.Value if dv is not None and dv.Value else None

    def name(self, nid: ua.NodeId) -> str:
        bn = self.attr(nid, ua.AttributeIds.BrowseName)
        return bn.Name if bn else nid.to_string()

    def nodeclass(self, nid: ua.NodeId) -> ua.NodeClass | None:
        v = self.attr(nid, ua.AttributeIds.NodeClass)
        return ua.NodeClass(v) if v is not None else None

    def refs(self, nid: ua.NodeId) -> list[ua.ReferenceDescription]:
        nd = self.aspace.get(nid)
        return nd.references if nd else []

    def gw_props(self, nid: ua.NodeId) -> dict[str, Any]:
        out = {}
        for r in self.refs(nid):
            if r.IsForward and r.ReferenceTypeId == _HAS_PROPERTY and r.BrowseName.NamespaceIndex == self.gw_ns:
                out[r.BrowseName.Name] = self.attr(r.NodeId, ua.AttributeIds.Value)
        return out

    def children(self, nid: ua.NodeId) -> Iterable[ua.ReferenceDescription]:
        return (r for r in self.refs(nid) if r.IsForward and r.ReferenceTypeId in _HIERARCHICAL)

    def is_declaration(self, nid: ua.NodeId) -> bool:
        return any(r.IsForward and r.ReferenceTypeId == _HAS_MODELLING_RULE for r in self.refs(nid))

    def typedef(self, nid: ua.NodeId) -> ua.NodeId | None:
        return next((r.NodeId for r in self.refs(nid) if r.IsForward and r.ReferenceTypeId == _HAS_TYPEDEF), None)

    def supertypes(self, nid: ua.NodeId | None) -> list[ua.NodeId]:
        chain = []
        while nid is not None and len(chain) < 32:
            chain.append(nid)
            nid = next((r.NodeId for r in self.refs(nid) if not r.IsForward and r.ReferenceTypeId == _HAS_SUBTYPE),
                       None)
        return chain


def resolve_bindings(
    aspace: AddressSpace, site: LoadedSite, gw_ns: int
) -> tuple[SiteBindings, list[Problem]]:
    view = SiteView(aspace, gw_ns)
    problems: list[Problem] = []

    warnings: list[Problem] = []

    def problem(nid: ua.NodeId, message: str, into: list[Problem] = problems) -> None:
        path, line, written = site.origins.get(nid, ("<gateway>", 0, nid.to_string()))
        into.append(Problem(path, line or None, written, message))

    scan_classes = dict(DEFAULT_SCAN_CLASSES)
    devices: list[DeviceConfig] = []
    connection_holders: list[ua.NodeId] = []
    bound_anywhere: set[ua.NodeId] = set()
    for nid in site.new_nodes:
        nc = view.nodeclass(nid)
        if nc == ua.NodeClass.Object and not view.is_declaration(nid):
            props = view.gw_props(nid)
            if "Connection" in props:
                connection_holders.append(nid)
            if "Interval" in props and view.name(view.typedef(nid) or ua.NodeId()) == "ScanClassType":
                try:
                    interval = float(props["Interval"])
                    if not 0 < interval < math.inf:
                        raise ValueError
                except (TypeError, ValueError):
                    problem(nid, f"scan class Interval must be a positive number of ms, not {props['Interval']!r}")
                else:
                    scan_classes[view.name(nid)] = interval
        elif nc == ua.NodeClass.Variable and not view.is_declaration(nid) and "FieldAddress" in view.gw_props(nid):
            bound_anywhere.add(nid)

    devices_set = set(connection_holders)
    reached: set[ua.NodeId] = set()
    types = TypeIndex(aspace, {})
    for dev in connection_holders:
        conn = view.gw_props(dev)["Connection"]
        try:
            url = urlsplit(str(conn or ""))
            driver = driver_for(url.scheme)
            if driver is None:
                raise ValueError(unknown_scheme(url.scheme))
            driver.validate_connection(url)
        except ValueError as exc:
            problem(dev, f"Connection '{conn}': {exc}")
            # One problem per device: its variables are not reported again as bound outside a device.
            reached.update(var for var, _ in _walk(view, dev, devices_set))
            continue
        cfg = DeviceConfig(dev, view.name(dev), str(conn), url, driver,
                           simulator=str(view.gw_props(dev).get("Simulator") or ""))
        binding_props = binding_properties(driver)
        declared = _profile_declarations(view, dev, binding_props)
        for var, path in _walk(view, dev, devices_set):
            own = view.gw_props(var)
            inherited = declared.get(path, {})
            props = {**inherited, **{k: v for k, v in own.items() if k in binding_props}}
            if "FieldAddress" not in props:
                continue
            reached.add(var)
            bv = _bound_variable(view, types, var, "/".join(name for _, name in path), props, scan_classes, driver,
                                 url, lambda m, v=var: problem(v, m))
            if bv is not None:
                cfg.variables.append(bv)
        devices.append(cfg)
    for var in sorted(bound_anywhere - reached, key=str):
        problem(var, "has a FieldAddress but is not below a device object with a Connection property")
    for driver in {d.driver for d in devices}:
        own = [d for d in devices if d.driver is driver]
        for index, message in driver.validate_devices([d.url for d in own]):
            problem(own[index].nodeid, f"Connection '{own[index].connection}': {message}")
    _check_diagnostics_ids(aspace, devices, gw_ns, problem)
    for dev in devices:
        points = [Point(i, v.name, v.binding, v.field_type, v.writable) for i, v in enumerate(dev.variables)]
        for key, message in dev.driver.point_warnings(dev.url, points):
            problem(dev.variables[key].nodeid, message, warnings)
    warnings.sort(key=lambda w: (w.file, w.line or 0))
    return SiteBindings(scan_classes, devices, warnings), problems


def _check_diagnostics_ids(aspace: AddressSpace, devices: list[DeviceConfig], gw_ns: int, problem: Any) -> None:
    """The NodeIds the gateway will add for each device's diagnostics must be free, or start-up would fail."""
    planned: dict[ua.NodeId, DeviceConfig] = {}
    for dev in devices:
        for nid in planned_nodeids(aspace, dev.nodeid, gw_ns):
            other = planned.setdefault(nid, dev)
            where = expanded(aspace, nid)
            if nid in aspace:
                problem(dev.nodeid, f"the gateway adds this device's diagnostics as {where}, a NodeId the site "
                                    f"already uses (rename that node, or declare the device's Diagnostics)")
                break
            if other is not dev:
                problem(dev.nodeid, f"the gateway would add this device's diagnostics as {where}, as it does for "
                                    f"{other.name}: give one of them a String NodeId or another browse path")
                break


BrowsePath = tuple[tuple[int, str], ...]  # (namespace index, name) per step


def _walk(view: SiteView, root: ua.NodeId, devices: set[ua.NodeId]) -> Iterable[tuple[ua.NodeId, BrowsePath]]:
    """Variables below a device (not entering nested devices), with their browse paths."""
    stack = [(root, ())]
    seen = {root}
    while stack:
        nid, path = stack.pop()
        for r in view.children(nid):
            child = r.NodeId
            if child in seen or child in devices or (r.BrowseName.NamespaceIndex == view.gw_ns and \
                    r.ReferenceTypeId == _HAS_PROPERTY):
                continue
            seen.add(child)
            cpath = (*path, (r.BrowseName.NamespaceIndex, r.BrowseName.Name))
            if r.NodeClass == ua.NodeClass.Variable:
                yield child, cpath
            if r.NodeClass in (ua.NodeClass.Variable, ua.NodeClass.Object):
                stack.append((child, cpath))


def binding_properties(driver: type[Driver]) -> frozenset[str]:
    """The property names that make up a binding on a device of this driver."""
    return frozenset(BINDING_PROPERTIES) | {o.prop for o in driver.point_options}


def _profile_declarations(view: SiteView, device: ua.NodeId, binding_props: frozenset[str]
                          ) -> dict[BrowsePath, dict[str, Any]]:
    """Binding properties declared by the device's type and its supertypes, by browse path."""
    declared: dict[BrowsePath, dict[str, Any]] = {}
    for t in reversed(view.supertypes(view.typedef(device))):  # subtypes override supertypes
        for var, path in _walk(view, t, set()):
            props = {k: v for k, v in view.gw_props(var).items() if k in binding_props}
            if props:
                declared[path] = {**declared.get(path, {}), **props}
    return declared


def _bound_variable(
    view: SiteView, types: TypeIndex, var: ua.NodeId, name: str, props: dict[str, Any],
    scan_classes: dict[str, float], driver: type[Driver], url: SplitResult, problem: Any,
) -> BoundVariable | None:
    datatype = view.attr(var, ua.AttributeIds.DataType)
    base = types.builtin_base(datatype) if datatype is not None else None
    if base == 29:
        base = int(ua.VariantType.Int32)
    if base is None or not 1 <= base <= 25:
        problem(f"a bound variable needs a builtin DataType, not {datatype}")
        return None
    vtype = ua.VariantType(base)
    try:
        binding = Binding(
            address=str(props["FieldAddress"]),
            field_type=_opt_str(props, "FieldType"),
            scale=float(props.get("Scale", 1.0) if props.get("Scale") is not None else 1.0),
            offset=float(props.get("Offset", 0.0) if props.get("Offset") is not None else 0.0),
            scan_class=str(props.get("ScanClass") or "MediumSpeed"),
            deadband=float(props.get("Deadband") or 0.0),
            options=parse_point_options(driver.point_options, props),
        )
        for key, number in (("Scale", binding.scale), ("Offset", binding.offset), ("Deadband", binding.deadband)):
            if not math.isfinite(number):
                raise ValueError(f"{key} must be a finite number, not {number}")
        if binding.scale == 0:
            raise ValueError("Scale must not be 0")
        if binding.deadband < 0:
            raise ValueError("Deadband must be >= 0")
        if binding.scan_class not in scan_classes:
            raise ValueError(f"unknown ScanClass '{binding.scan_class}' (known: {', '.join(sorted(scan_classes))})")
        field_type = binding.field_type or DEFAULT_FIELD_TYPE.get(vtype)
        if field_type is None:
            raise ValueError(f"set FieldType: no default field type for DataType {vtype.name}")
        if field_type not in XSD_TYPES:
            raise ValueError(f"FieldType '{field_type}' is not one of {', '.join(XSD_TYPES)}")
        mismatch = field_type_mismatch(vtype, field_type)
        if mismatch:
            raise ValueError(mismatch)
        access = view.attr(var, ua.AttributeIds.AccessLevel) or 0
        writable = bool(access & ua.AccessLevel.CurrentWrite.mask)
        driver.validate_point(url, Point(0, name, binding, field_type, writable))
    except (TypeError, ValueError) as exc:
        problem(f"binding: {exc}")
        return None
    eurange = None
    for r in view.refs(var):
        if r.IsForward and r.ReferenceTypeId == _HAS_PROPERTY and r.BrowseName == ua.QualifiedName("EURange", 0):
            rng = view.attr(r.NodeId, ua.AttributeIds.Value)
            if isinstance(rng, ua.Range):
                eurange = (rng.Low, rng.High)
    return BoundVariable(
        nodeid=var, name=name, binding=binding, field_type=field_type, vtype=vtype,
        writable=writable,
        historizing=bool(view.attr(var, ua.AttributeIds.Historizing)), eurange=eurange,
    )


_NUMERIC_FIELDS = tuple(t for t in XSD_TYPES if t != "xsd:string")
_INTEGER_FIELDS = tuple(t for t in _NUMERIC_FIELDS if t not in ("xsd:float", "xsd:double"))
# Field types each DataType can take (the value path converts between them): a Boolean is a coil, a
# discrete input or an integer that is 0 or not; a number any numeric field; a String a string field.
FIELD_TYPES_OF: dict[ua.VariantType, tuple[str, ...]] = {
    ua.VariantType.Boolean: _INTEGER_FIELDS,
    ua.VariantType.String: ("xsd:string",),
    **{vt: _NUMERIC_FIELDS for vt in (
        ua.VariantType.SByte, ua.VariantType.Byte, ua.VariantType.Int16, ua.VariantType.UInt16, ua.VariantType.Int32,
        ua.VariantType.UInt32, ua.VariantType.Int64, ua.VariantType.UInt64, ua.VariantType.Float,
        ua.VariantType.Double)},
}


def field_type_mismatch(vtype: ua.VariantType, field_type: str) -> str | None:
    """Why a variable of this DataType cannot be bound to a field of this type, or None."""
    allowed = FIELD_TYPES_OF.get(vtype)
    if allowed is None:
        supported = ", ".join(t.name for t in FIELD_TYPES_OF)
        return f"a variable of DataType {vtype.name} cannot be bound to a field (bindable: {supported})"
    if field_type not in allowed:
        return f"FieldType '{field_type}' does not fit DataType {vtype.name} (it takes {', '.join(allowed)})"
    return None


def _opt_str(props: dict[str, Any], key: str) -> str | None:
    v = props.get(key)
    return str(v) if v not in (None, "") else None
