"""The Diagnostics object under each device: connection state, last error, counters, response time.

A site that instantiates FieldDeviceType with its Diagnostics already has these nodes; for any
other device the gateway adds what is missing, with NodeIds that depend only on the site, never on
the order the namespaces were registered in (see `derived_nodeid` and docs/bindings.md, NodeIds):

- below a node with a String NodeId, a child is `<parent's namespace>;s=<parent's id>.<Name>`:
  device `ns=3;s=Battery1` gets `ns=3;s=Battery1.Diagnostics.ConnectionState`;
- below any other node (numeric, GUID or opaque id), the child goes in the gateway's namespace
  with the parent's browse path from Objects: `ns=<gateway>;s=Plant.Meter1.Diagnostics.ErrorCount`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asyncua import Server, ua
from asyncua.server.address_space import AddressSpace

from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.drivers.base import DeviceHealth
from gateway.nodeset.units import eu_information
from gateway.values.aspace_io import status_code, stored_datavalue
from gateway.values.feed import ChangeFeed

FIELDS: dict[str, ua.VariantType] = {
    "ConnectionState": ua.VariantType.String,
    "LastError": ua.VariantType.String,
    "RequestCount": ua.VariantType.UInt64,
    "ErrorCount": ua.VariantType.UInt64,
    "ResponseTime": ua.VariantType.Double,
    "LastSuccess": ua.VariantType.DateTime,
}
_GOOD = status_code(ua.StatusCodes.Good)
_DATATYPES = {"ResponseTime": ua.NodeId(ua.ObjectIds.Duration), "LastSuccess": ua.NodeId(ua.ObjectIds.UtcTime)}
# As the FieldDeviceType declarations in nodesets/gateway.types.xml describe them.
DESCRIPTIONS = {
    "Diagnostics": "Communication diagnostics maintained by the gateway.",
    "ConnectionState": "Connecting, Connected, Disconnected or Stopped.",
    "LastError": "The last communication error, empty when none since start.",
    "RequestCount": "Requests sent to the device since start.",
    "ErrorCount": "Requests that failed since start.",
    "ResponseTime": "Duration of the last successful request, in milliseconds.",
    "LastSuccess": "UTC time of the last successful request.",
}
_INITIAL: dict[str, Any] = {"ConnectionState": "Stopped", "LastError": "", "RequestCount": 0, "ErrorCount": 0,
                            "ResponseTime": 0.0}
RESPONSE_TIME_UNIT = "ms"  # UNECE C26
_HIERARCHICAL = {
    ua.NodeId(i) for i in (ua.ObjectIds.HasComponent, ua.ObjectIds.HasProperty, ua.ObjectIds.Organizes,
                           ua.ObjectIds.HasOrderedComponent, ua.ObjectIds.HasChild, ua.ObjectIds.Aggregates,
                           ua.ObjectIds.HasNotifier, ua.ObjectIds.HasEventSource)
}
_OBJECTS = ua.NodeId(ua.ObjectIds.ObjectsFolder)
_EU = ua.QualifiedName("EngineeringUnits", 0)


def browse_path(aspace: AddressSpace, node: ua.NodeId) -> list[str]:
    """Browse names from below Objects down to `node`. Where a node has several parents, the one with
    the smallest (namespace URI, identifier) is taken, so the path does not depend on load order."""
    uris = _namespace_array(aspace)
    names: list[str] = []
    seen: set[ua.NodeId] = set()
    current: ua.NodeId | None = node
    while current is not None and current != _OBJECTS and current not in seen and len(names) < 64:
        seen.add(current)
        nd = aspace.get(current)
        if nd is None:
            break
        names.append(nd.attributes[ua.AttributeIds.BrowseName].value.Value.Value.Name)
        parents = [r.NodeId for r in nd.references if not r.IsForward and r.ReferenceTypeId in _HIERARCHICAL]
        current = min(parents, key=lambda p: _stable_key(p, uris), default=None)
    return names[::-1]


def derived_nodeid(aspace: AddressSpace, parent: ua.NodeId, name: str, gw_ns: int) -> ua.NodeId:
    """The NodeId the gateway gives a node it adds below `parent` (module docstring)."""
    if parent.NodeIdType == ua.NodeIdType.String and parent.Identifier:
        return ua.NodeId(f"{parent.Identifier}.{name}", parent.NamespaceIndex)
    return ua.NodeId(".".join([*browse_path(aspace, parent), name]), gw_ns)


def planned_nodeids(aspace: AddressSpace, device: ua.NodeId, gw_ns: int) -> Iterator[ua.NodeId]:
    """The NodeIds ensure_diagnostics will add for this device (none for nodes the site already has)."""
    diag = _child(aspace, device, ua.QualifiedName("Diagnostics", gw_ns))
    if diag is None:
        diag = derived_nodeid(aspace, device, "Diagnostics", gw_ns)
        yield diag
        found: dict[str, ua.NodeId] = {}
    else:
        found = _fields(aspace, diag, gw_ns)
    for name in FIELDS:
        nid = found.get(name) or derived_nodeid(aspace, diag, name, gw_ns)
        if name not in found:
            yield nid
        if name == "ResponseTime" and (name not in found or _child(aspace, nid, _EU) is None):
            yield derived_nodeid(aspace, nid, "EngineeringUnits", gw_ns)


@dataclass
class DiagnosticsNodes:
    server: Server
    nodes: dict[str, ua.NodeId]
    feed: ChangeFeed
    clock: Clock = SYSTEM_CLOCK

    async def update(self, health: DeviceHealth) -> None:
        values: dict[str, Any] = {
            "ConnectionState": health.state, "LastError": health.last_error, "RequestCount": health.requests,
            "ErrorCount": health.errors, "ResponseTime": round(health.response_ms, 3),
            "LastSuccess": health.last_success,
        }
        aspace = self.server.iserver.aspace
        now = self.clock.now()
        for name, nid in self.nodes.items():
            v = values[name]
            av = aspace[nid].attributes[ua.AttributeIds.Value].value
            old = av.Value.Value if av is not None and av.Value is not None else None
            if old == v and v is not None:
                continue
            self.feed.put(nid, stored_datavalue(v, FIELDS[name], _GOOD, now, now))  # after every scan: no coroutine


async def ensure_diagnostics(server: Server, device: ua.NodeId, gw_ns: int, feed: ChangeFeed,
                             clock: Clock = SYSTEM_CLOCK) -> DiagnosticsNodes:
    """The device's Diagnostics nodes, adding what the site does not declare (ids: derived_nodeid)."""
    aspace = server.iserver.aspace
    diag_id = _child(aspace, device, ua.QualifiedName("Diagnostics", gw_ns))
    if diag_id is None:
        diag = await server.get_node(device).add_object(derived_nodeid(aspace, device, "Diagnostics", gw_ns),
                                                        ua.QualifiedName("Diagnostics", gw_ns))
        await _describe(diag, "Diagnostics")
        diag_id = diag.nodeid
    found = _fields(aspace, diag_id, gw_ns)
    diag = server.get_node(diag_id)
    for name, vt in FIELDS.items():
        if name not in found:
            initial: datetime | str | int | float | None = _INITIAL.get(name)
            var = await diag.add_variable(
                derived_nodeid(aspace, diag_id, name, gw_ns), ua.QualifiedName(name, gw_ns),
                ua.Variant(initial, vt) if initial is not None else ua.Variant(), datatype=_DATATYPES.get(name),
            )
            await _describe(var, name)
            found[name] = var.nodeid
    response_time = found["ResponseTime"]
    if _child(aspace, response_time, _EU) is None:
        await server.get_node(response_time).add_property(
            derived_nodeid(aspace, response_time, "EngineeringUnits", gw_ns), _EU,
            ua.Variant(eu_information(RESPONSE_TIME_UNIT), ua.VariantType.ExtensionObject),
            datatype=ua.NodeId(ua.ObjectIds.EUInformation),
        )
    return DiagnosticsNodes(server, found, feed, clock)


async def _describe(node: Any, name: str) -> None:
    await node.write_attribute(ua.AttributeIds.Description,
                               ua.DataValue(ua.Variant(ua.LocalizedText(DESCRIPTIONS[name], "en"))))


def _child(aspace: AddressSpace, parent: ua.NodeId, name: ua.QualifiedName) -> ua.NodeId | None:
    nd = aspace.get(parent)
    if nd is None:
        return None
    return next((r.NodeId for r in nd.references
                 if r.IsForward and r.ReferenceTypeId in _HIERARCHICAL and r.BrowseName == name), None)


def _fields(aspace: AddressSpace, diag: ua.NodeId, gw_ns: int) -> dict[str, ua.NodeId]:
    nd = aspace.get(diag)
    return {r.BrowseName.Name: r.NodeId for r in (nd.references if nd else ())
            if r.IsForward and r.ReferenceTypeId in _HIERARCHICAL and r.BrowseName.NamespaceIndex == gw_ns
            and r.BrowseName.Name in FIELDS}


def expanded(aspace: AddressSpace, nid: ua.NodeId) -> str:
    """`nsu=URI;s=...`: a NodeId as a site author recognises it, whatever the server's namespace order."""
    uris = _namespace_array(aspace)
    if nid.NamespaceIndex == 0 or nid.NamespaceIndex >= len(uris):
        return nid.to_string()
    return f"nsu={uris[nid.NamespaceIndex]};" + ua.NodeId(nid.Identifier, 0, nid.NodeIdType).to_string()


def _namespace_array(aspace: AddressSpace) -> list[str]:
    av = aspace[ua.NodeId(ua.ObjectIds.Server_NamespaceArray)].attributes[ua.AttributeIds.Value].value
    return list(av.Value.Value or []) if av is not None and av.Value is not None else []


def _stable_key(nid: ua.NodeId, uris: list[str]) -> tuple[str, str, str]:
    uri = uris[nid.NamespaceIndex] if nid.NamespaceIndex < len(uris) else str(nid.NamespaceIndex)
    return uri, nid.NodeIdType.name, str(nid.Identifier)
