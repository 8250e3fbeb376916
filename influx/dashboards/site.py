"""What the dashboards show, read from the site the way the gateway reads it at start-up.

The site is loaded into an asyncua server that is never started, the devices get their Diagnostics
nodes as at start-up, and every series is named by the writer's own SeriesCatalog: a dashboard
cannot ask for a measurement, tag or bucket the writer would name differently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from asyncua import Server, ua
from asyncua.server.address_space import AddressSpace

from gateway.bindings import SiteBindings
from gateway.diagnostics import FIELDS as DIAGNOSTIC_FIELDS
from gateway.diagnostics import ensure_diagnostics
from gateway.influx.config import InfluxConfig
from gateway.influx.series import Series, SeriesCatalog
from gateway.nodesets import GATEWAY_NAMESPACE
from gateway.values.aspace_io import read_value
from gateway.values.feed import ChangeFeed
from gateway.values.tags import TagTable

_FIELD_DEVICE_TYPE = "FieldDeviceType"  # the gateway's generic device type: devices of it are typed by their variables
# A device's role in the power flow: from its simulator's model, else from its name.
_ROLE_BY_SIMULATOR = {"battery": "battery", "pv": "pv", "meter": "meter", "load": "load"}
_ROLE_BY_NAME = (("meter", re.compile(r"grid|meter|poc", re.I)), ("pv", re.compile(r"pv|solar|photovolt", re.I)),
                 ("battery", re.compile(r"batt|bess|storage", re.I)), ("load", re.compile(r"load|consum", re.I)))
_POWER_UNITS = {"W", "kW", "MW"}


@dataclass(frozen=True)
class Variable:
    series: Series
    kind: str  # "number" (field `value`), "boolean" (field `value`, 1/0) or "text" (field `text`)
    description: str = ""
    eurange: tuple[float, float] | None = None
    writable: bool = False
    limits: dict[str, float] = field(default_factory=dict)  # the site's alarm limits on this variable

    @property
    def field(self) -> str:
        return "text" if self.kind == "text" else "value"


@dataclass
class Device:
    name: str
    type_name: str  # the device's own ObjectType, or "" for the generic FieldDeviceType
    simulator: str
    variables: list[Variable]
    diagnostics: list[Variable]
    machines: list[Variable] = field(default_factory=list)  # the variables of its state machines (Part 16)

    @property
    def signature(self) -> tuple[tuple[str, str, str], ...]:
        return tuple((v.series.variable, v.series.unit, v.kind) for v in self.variables)

    @property
    def role(self) -> str:
        kind = re.split(r"[?:/]", self.simulator, maxsplit=1)[0].lower()
        if kind in _ROLE_BY_SIMULATOR:
            return _ROLE_BY_SIMULATOR[kind]
        return next((role for role, pattern in _ROLE_BY_NAME if pattern.search(self.name)), "")

    def power(self) -> Variable | None:
        """The device's active power: `ActivePower`, else one read-only power variable named ...Power."""
        numbers = [v for v in self.variables if v.kind == "number" and v.series.unit in _POWER_UNITS]
        exact = [v for v in numbers if v.series.variable.lower() == "activepower"]
        if exact:
            return exact[0]
        loose = [v for v in numbers if v.series.variable.lower().endswith("power") and not v.writable]
        return loose[0] if len(loose) == 1 else None


@dataclass
class DeviceType:
    label: str
    devices: list[Device]

    @property
    def variables(self) -> list[Variable]:
        return self.devices[0].variables


@dataclass
class SiteModel:
    name: str  # the `site` tag
    devices: list[Device]
    config: InfluxConfig

    def device_types(self) -> list[DeviceType]:
        groups: dict[object, DeviceType] = {}
        for dev in self.devices:
            key = dev.type_name or dev.signature
            if key in groups:
                groups[key].devices.append(dev)
            else:
                groups[key] = DeviceType(dev.type_name, [dev])
        for group in groups.values():
            group.label = group.label or ", ".join(d.name for d in group.devices)
        return list(groups.values())

    def power_flow(self) -> dict[str, list[tuple[Device, Variable]]]:
        """role -> (device, power variable), for a site with a grid meter and PV or a battery; else empty."""
        roles: dict[str, list[tuple[Device, Variable]]] = {}
        for dev in self.devices:
            power = dev.power()
            if dev.role and power is not None:
                roles.setdefault(dev.role, []).append((dev, power))
        if "meter" not in roles or not ({"pv", "battery"} & roles.keys()):
            return {}
        return roles


def _kind(vtype: ua.VariantType) -> str:
    if vtype == ua.VariantType.Boolean:
        return "boolean"
    if vtype in (ua.VariantType.String, ua.VariantType.LocalizedText, ua.VariantType.DateTime,
                 ua.VariantType.ByteString, ua.VariantType.Guid, ua.VariantType.NodeId):
        return "text"
    return "number"


def variant_type(aspace: AddressSpace, node: ua.NodeId) -> ua.VariantType:
    """The VariantType a variable holds: from its DataType when that is a built-in type (a variable may
    have no value yet), else from its value."""
    nd = aspace.get(node)
    av = nd.attributes.get(ua.AttributeIds.DataType) if nd is not None else None
    dt = av.value.Value.Value if av is not None and av.value is not None and av.value.Value is not None else None
    if isinstance(dt, ua.NodeId) and dt.NamespaceIndex == 0 and isinstance(dt.Identifier, int):
        if 0 < dt.Identifier <= 25:
            return ua.VariantType(dt.Identifier)
        if dt.Identifier == ua.ObjectIds.UtcTime:
            return ua.VariantType.DateTime
    dv = read_value(aspace, node)
    return dv.Value.VariantType if dv is not None and dv.Value is not None else ua.VariantType.Null


def _type_name(server: Server, device: ua.NodeId) -> str:
    nd = server.iserver.aspace.get(device)
    for ref in nd.references if nd else []:
        if ref.IsForward and ref.ReferenceTypeId == ua.NodeId(ua.ObjectIds.HasTypeDefinition):
            type_nd = server.iserver.aspace.get(ref.NodeId)
            av = type_nd.attributes.get(ua.AttributeIds.BrowseName) if type_nd else None
            name = av.value.Value.Value.Name if av is not None else ""
            return "" if name == _FIELD_DEVICE_TYPE else name
    return ""


def _description(server: Server, node: ua.NodeId) -> str:
    nd = server.iserver.aspace.get(node)
    av = nd.attributes.get(ua.AttributeIds.Description) if nd else None
    text = av.value.Value.Value if av is not None and av.value and av.value.Value else None
    return text.Text or "" if isinstance(text, ua.LocalizedText) else ""


async def load_site_model(nodesets: list[Path], config: InfluxConfig) -> SiteModel:
    """Load the site (raises NodesetError naming every problem) and name its series as the writer does."""
    from gateway.site import load_site

    server = Server()
    await server.init()
    site, bindings = await load_site(server, nodesets)
    return await _model(server, site.namespaces[GATEWAY_NAMESPACE], bindings, config,
                        config.site or Path(nodesets[-1]).stem)


async def _model(server: Server, gw_ns: int, bindings: SiteBindings, config: InfluxConfig,
                 site_tag: str) -> SiteModel:
    aspace = server.iserver.aspace
    feed = ChangeFeed(aspace)
    tags = TagTable(aspace, None, feed=feed)
    for dev in bindings.devices:
        for var in dev.variables:
            tags.add(var, dev.nodeid)
    diagnostics = {dev.nodeid: await ensure_diagnostics(server, dev.nodeid, gw_ns, feed) for dev in bindings.devices}
    catalog = SeriesCatalog(config, site_tag, aspace, tags, {gw_ns})
    limits: dict[ua.NodeId, dict[str, float]] = {}
    for alarm in bindings.alarms:
        if alarm.limits and alarm.setpoint is None:  # a deviation alarm's limits are relative: no line to draw
            limits.setdefault(alarm.input, {}).update(alarm.limits)
    machine_vars: dict[str, list[Variable]] = {}  # device name -> its state machines' variables
    for machine in bindings.state_machines:
        for node in machine.nodes.values():
            series = catalog.get(node)
            if series is not None:
                machine_vars.setdefault(series.device, []).append(
                    Variable(series, _kind(variant_type(aspace, node)), _description(server, node)))
    devices: list[Device] = []
    for dev in bindings.devices:
        variables = []
        for var in dev.variables:
            series = catalog.get(var.nodeid)
            assert series is not None, var.name  # bound variables are always series
            variables.append(Variable(series, _kind(var.vtype), _description(server, var.nodeid), var.eurange,
                                      var.writable, limits.get(var.nodeid, {})))
        diag = []
        for name, node in diagnostics[dev.nodeid].nodes.items():
            series = catalog.get(node)
            if series is not None:
                diag.append(Variable(series, _kind(DIAGNOSTIC_FIELDS[name]), _description(server, node)))
        devices.append(Device(dev.name, _type_name(server, dev.nodeid), dev.simulator, variables, diag,
                              machine_vars.get(dev.name, [])))
    return SiteModel(site_tag, devices, config)
