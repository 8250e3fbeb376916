"""The Diagnostics object under each device: connection state, last error, counters, response time.

A site that instantiates FieldDeviceType already has these nodes; for any other device object
the gateway adds them (in its own namespace, with NodeIds derived from the device's) so every
device shows its health the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asyncua import Server, ua

from gateway.aspace_io import StoredDataValue, store_value
from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.drivers.base import DeviceHealth

FIELDS: dict[str, ua.VariantType] = {
    "ConnectionState": ua.VariantType.String,
    "LastError": ua.VariantType.String,
    "RequestCount": ua.VariantType.UInt64,
    "ErrorCount": ua.VariantType.UInt64,
    "ResponseTime": ua.VariantType.Double,
    "LastSuccess": ua.VariantType.DateTime,
}
_DATATYPES = {"ResponseTime": ua.NodeId(290), "LastSuccess": ua.NodeId(294)}


@dataclass
class DiagnosticsNodes:
    server: Server
    nodes: dict[str, ua.NodeId]
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
            variant = ua.Variant(v, FIELDS[name]) if v is not None else ua.Variant()
            await store_value(aspace, nid, StoredDataValue(variant, SourceTimestamp=now, ServerTimestamp=now))


async def ensure_diagnostics(server: Server, device: ua.NodeId, gw_ns: int, clock: Clock = SYSTEM_CLOCK
                             ) -> DiagnosticsNodes:
    dev = server.get_node(device)
    diag = None
    for child in await dev.get_children(refs=ua.ObjectIds.HasComponent):
        if (await child.read_browse_name()) == ua.QualifiedName("Diagnostics", gw_ns):
            diag = child
            break
    if diag is None:
        base = device.to_string()
        diag = await dev.add_object(ua.NodeId(f"{base}/Diagnostics", gw_ns), ua.QualifiedName("Diagnostics", gw_ns))
    found: dict[str, ua.NodeId] = {}
    for child in await diag.get_children(refs=ua.ObjectIds.HasComponent):
        bn = await child.read_browse_name()
        if bn.NamespaceIndex == gw_ns and bn.Name in FIELDS:
            found[bn.Name] = child.nodeid
    for name, vt in FIELDS.items():
        if name not in found:
            initial: datetime | str | int | float | None = {"ConnectionState": "Stopped", "LastError": "",
                                                             "RequestCount": 0, "ErrorCount": 0,
                                                             "ResponseTime": 0.0}.get(name)
            var = await diag.add_variable(
                ua.NodeId(f"{diag.nodeid.to_string()}/{name}", gw_ns), ua.QualifiedName(name, gw_ns),
                ua.Variant(initial, vt) if initial is not None else ua.Variant(), datatype=_DATATYPES.get(name),
            )
            found[name] = var.nodeid
    return DiagnosticsNodes(server, found, clock)
