"""Which series a stored value belongs to: measurement, tags and target (bucket or retention policy).

Tags: `site`, `device`, `variable`, `unit` and `scan_class`; the measurement is the device's name (or
one name the configuration gives). A bound variable takes its device and scan class from the tag
table. Other values of the site (parameters the gateway holds, a device's Diagnostics) are named by
their browse path below the nearest device (or below the top object of the site) and go with the
default scan class. The gateway's own diagnostics (its types namespace) and namespace 0 are not
series: they describe the gateway, and the series writer's own counters would otherwise write
points about writing points.
"""

from __future__ import annotations

from dataclasses import dataclass

from asyncua import ua
from asyncua.server.address_space import AddressSpace

from gateway.diagnostics import browse_path
from gateway.influx.config import InfluxConfig
from gateway.influx.lineproto import series_key
from gateway.values.tags import TagTable

_HAS_PROPERTY = ua.NodeId(ua.ObjectIds.HasProperty)
_EU = ua.QualifiedName("EngineeringUnits", 0)


@dataclass(frozen=True, slots=True)
class Series:
    target: str  # bucket (v2) or retention policy (v1)
    key: str  # escaped `measurement,tag=value,...`
    measurement: str
    device: str
    variable: str
    unit: str
    scan_class: str


class SeriesCatalog:
    """NodeId -> Series, resolved once per node (bound variables up front, others at their first change)."""

    def __init__(self, config: InfluxConfig, site: str, aspace: AddressSpace, tags: TagTable | None,
                 skip_namespaces: set[int]) -> None:
        self.config = config
        self.site = site
        self.aspace = aspace
        self.skip_namespaces = {0, *skip_namespaces}
        self._devices: dict[ua.NodeId, str] = {}
        self._series: dict[ua.NodeId, Series | None] = {}
        self._device_paths: dict[tuple[str, ...], str] | None = None
        self._bound: list[tuple[ua.NodeId, Series]] = []
        if tags is not None:
            for tag in tags.tags.values():
                self._devices.setdefault(tag.device, self._name(tag.device))
            for nodeid, tag in tags.tags.items():
                var = tag.var
                series = self._series[nodeid] = self.make(self._devices[tag.device], var.name.replace("/", "."),
                                                          self.unit_of(nodeid), var.binding.scan_class)
                self._bound.append((tag.nodeid, series))

    def bound(self) -> list[tuple[ua.NodeId, Series]]:
        """The bound variables' series, each with its tag's own NodeId object (the one the value path stores
        with, so a listener can recognise it by identity)."""
        return self._bound

    def get(self, node: ua.NodeId) -> Series | None:
        """The node's series, or None for a value that is not written (namespace 0, the gateway's own)."""
        try:
            return self._series[node]
        except KeyError:
            series = self._series[node] = self._resolve(node)
            return series

    def all(self) -> list[Series]:
        return [s for s in self._series.values() if s is not None]

    def make(self, device: str, variable: str, unit: str, scan_class: str) -> Series:
        measurement = device if self.config.measurement == "device" else self.config.measurement
        target = self.config.target_for(scan_class).name
        key = series_key(measurement, {"site": self.site, "device": device, "variable": variable, "unit": unit,
                                       "scan_class": scan_class})
        return Series(target, key, measurement, device, variable, unit, scan_class)

    def _resolve(self, node: ua.NodeId) -> Series | None:
        if node.NamespaceIndex in self.skip_namespaces:
            return None
        nd = self.aspace.get(node)
        if nd is None or nd.attributes.get(ua.AttributeIds.NodeClass) is None:
            return None
        path = tuple(browse_path(self.aspace, node))
        if len(path) < 2:
            return None
        if self._device_paths is None:
            self._device_paths = {tuple(browse_path(self.aspace, d)): name for d, name in self._devices.items()}
        device, variable = path[0], path[1:]
        for cut in range(len(path) - 1, 0, -1):  # the nearest device above the node
            name = self._device_paths.get(path[:cut])
            if name is not None:
                device, variable = name, path[cut:]
                break
        return self.make(device, ".".join(variable), self.unit_of(node), self.config.default_scan_class)

    def _name(self, node: ua.NodeId) -> str:
        nd = self.aspace.get(node)
        av = nd.attributes.get(ua.AttributeIds.BrowseName) if nd else None
        return av.value.Value.Value.Name if av is not None else node.to_string()

    def unit_of(self, node: ua.NodeId) -> str:
        nd = self.aspace.get(node)
        for ref in nd.references if nd else []:
            if ref.IsForward and ref.ReferenceTypeId == _HAS_PROPERTY and ref.BrowseName == _EU:
                eu_node = self.aspace.get(ref.NodeId)
                av = eu_node.attributes.get(ua.AttributeIds.Value) if eu_node else None
                eu = av.value.Value.Value if av is not None and av.value and av.value.Value else None
                if isinstance(eu, ua.EUInformation) and eu.DisplayName is not None:
                    return eu.DisplayName.Text or ""
        return ""
