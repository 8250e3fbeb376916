"""The engine's state as variables: what alarms, state machines and clients watch.

Paths below the site's Control object (`Interlocks.EStop.Tripped`, `Setpoints.battery_power.Output`, ...)
become variables with NodeIds derived from the Control object's (docs/bindings.md, NodeIds), created at
start. Values are kept here and stored through the change feed in `flush`, only when they changed.
"""

from __future__ import annotations

from typing import Any

from asyncua import Server, ua

from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.diagnostics import derived_nodeid
from gateway.values.aspace_io import StoredDataValue
from gateway.values.feed import ChangeFeed

_HIERARCHICAL = {ua.NodeId(ua.ObjectIds.HasComponent), ua.NodeId(ua.ObjectIds.Organizes),
                 ua.NodeId(ua.ObjectIds.HasProperty)}


class StatusNodes:
    """The values only (unit tests read `values`); AddressSpaceNodes also serves them."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.types: dict[str, ua.VariantType] = {}
        self._dirty: set[str] = set()

    def set(self, path: str, value: Any, vtype: ua.VariantType) -> None:
        if path in self.values and self.values[path] == value:
            return
        self.values[path] = value
        self.types[path] = vtype
        self._dirty.add(path)

    async def flush(self) -> None:
        self._dirty.clear()

    async def ensure(self) -> None:
        """Create the nodes of every path set so far (before the first flush)."""


class AddressSpaceNodes(StatusNodes):
    def __init__(self, server: Server, parent: ua.NodeId, gw_ns: int, feed: ChangeFeed,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__()
        self.server = server
        self.parent = parent
        self.gw_ns = gw_ns
        self.feed = feed
        self.clock = clock
        self.nodes: dict[str, ua.NodeId] = {}

    async def ensure(self) -> None:
        for path in list(self.values):
            if path not in self.nodes:
                self.nodes[path] = await self._create(path)

    async def _create(self, path: str) -> ua.NodeId:
        aspace = self.server.iserver.aspace
        parent = self.parent
        *folders, name = path.split(".")
        for folder in folders:
            found = _child(aspace, parent, folder)
            if found is None:
                obj = await self.server.get_node(parent).add_object(derived_nodeid(aspace, parent, folder, self.gw_ns),
                                                                    ua.QualifiedName(folder, self.gw_ns))
                found = obj.nodeid
            parent = found
        existing = _child(aspace, parent, name)
        if existing is not None:
            return existing
        vtype = self.types[path]
        value = self.values[path]
        nodeid = derived_nodeid(aspace, parent, name, self.gw_ns)
        var = await self.server.get_node(parent).add_variable(nodeid, ua.QualifiedName(name, self.gw_ns),
                                                              ua.Variant(value, vtype))
        return var.nodeid

    async def flush(self) -> None:
        dirty, self._dirty = self._dirty, set()
        if any(p not in self.nodes for p in dirty):
            await self.ensure()
        now = self.clock.now()
        for path in dirty:
            variant = ua.Variant(self.values[path], self.types[path])
            await self.feed.store(self.nodes[path], StoredDataValue(variant, SourceTimestamp=now, ServerTimestamp=now))


def _child(aspace: Any, parent: ua.NodeId, name: str) -> ua.NodeId | None:
    nd = aspace.get(parent)
    if nd is None:
        return None
    return next((r.NodeId for r in nd.references
                 if r.IsForward and r.ReferenceTypeId in _HIERARCHICAL and r.BrowseName.Name == name), None)
