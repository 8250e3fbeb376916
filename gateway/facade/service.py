"""The facade inside the gateway: its listener, its watchdog and heartbeat, and its nodes.

The facade object shows `WatchdogExpired` (Boolean, in the gateway's namespace), so a site can
declare an OffNormal alarm on it; a site that does not declare the node gets it added with the
NodeId rule of device diagnostics (docs/bindings.md, NodeIds). Its counters (requests, exceptions
by code, writes, connections, watchdog expiries) are shown under `Gateway/Diagnostics/Facade`,
refreshed every second.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from asyncua import Server, ua

from gateway import product
from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.diagnostics import derived_nodeid
from gateway.facade.model import FacadeConfig
from gateway.facade.requests import RequestHandler
from gateway.facade.server import FacadeServer
from gateway.facade.watchdog import FallbackWriter, SetpointWithdrawal, Watchdog
from gateway.health.publish import node_table, refresh_every, store_changed
from gateway.values.aspace_io import StoredDataValue
from gateway.values.feed import ChangeFeed
from gateway.values.writepath import WritePath

log = logging.getLogger(__name__)

HEARTBEAT_S = 1.0
REFRESH_S = 1.0
# Numeric identifiers in the gateway's types namespace (nodesets/gateway.types.xml), below Diagnostics.
NODES: dict[str, tuple[int, ua.VariantType]] = {
    "State": (6150, ua.VariantType.String),
    "Requests": (6151, ua.VariantType.UInt64),
    "Exceptions": (6152, ua.VariantType.UInt64),
    "ExceptionCodes.IllegalFunction": (6153, ua.VariantType.UInt64),
    "ExceptionCodes.IllegalDataAddress": (6154, ua.VariantType.UInt64),
    "ExceptionCodes.IllegalDataValue": (6155, ua.VariantType.UInt64),
    "ExceptionCodes.ServerDeviceFailure": (6156, ua.VariantType.UInt64),
    "ExceptionCodes.GatewayPathUnavailable": (6157, ua.VariantType.UInt64),
    "ExceptionCodes.GatewayTargetNoResponse": (6158, ua.VariantType.UInt64),
    "WritesAccepted": (6159, ua.VariantType.UInt64),
    "WritesRefused": (6160, ua.VariantType.UInt64),
    "Connections": (6161, ua.VariantType.UInt32),
    "ConnectionsAccepted": (6162, ua.VariantType.UInt64),
    "ConnectionsRefused": (6163, ua.VariantType.UInt64),
    "MalformedFrames": (6164, ua.VariantType.UInt64),
    "IdleClosed": (6165, ua.VariantType.UInt64),
    "WatchdogExpiries": (6166, ua.VariantType.UInt32),
}
_CODE_NAMES = {0x01: "IllegalFunction", 0x02: "IllegalDataAddress", 0x03: "IllegalDataValue",
               0x04: "ServerDeviceFailure", 0x0A: "GatewayPathUnavailable", 0x0B: "GatewayTargetNoResponse"}
WATCHDOG_EXPIRED = "WatchdogExpired"
_HIERARCHICAL = {ua.NodeId(ua.ObjectIds.HasComponent), ua.NodeId(ua.ObjectIds.HasProperty),
                 ua.NodeId(ua.ObjectIds.Organizes)}


class ModbusFacade:
    def __init__(self, config: FacadeConfig, server: Server, write_path: WritePath, feed: ChangeFeed, gw_ns: int,
                 clock: Clock = SYSTEM_CLOCK, withdrawal: SetpointWithdrawal | None = None) -> None:
        self.config = config
        self.server = server
        self.feed = feed
        self.gw_ns = gw_ns
        self.clock = clock
        self.watchdog: Watchdog | None = None
        if config.watchdog is not None:
            self.watchdog = Watchdog(config.watchdog_timeout_s, config.mappings,
                                     withdrawal or FallbackWriter(write_path), clock, self._show_watchdog)
        build = product.build_info()
        identity = {"manufacturer": build.manufacturer, "model": build.product_name, "version": build.version,
                    "serial": product.APPLICATION_URI, "product_code": product.DISTRIBUTION,
                    "vendor_url": build.product_uri, "model_name": "Modbus TCP facade",
                    "application": config.name.split("/", 1)[0]}
        self.handler = RequestHandler(config, server.iserver.aspace, write_path, self.watchdog, clock, identity)
        self.listener = FacadeServer(config, self.handler)
        self.expired_node: ua.NodeId | None = None
        self.state = "Off"
        self.nodes = node_table(NODES, gw_ns)
        self._heartbeat: asyncio.Task[None] | None = None
        self._refresh: asyncio.Task[None] | None = None

    async def prepare(self) -> None:
        """Make the facade's nodes (WatchdogExpired), before alarms are attached to them."""
        if self.watchdog is not None and self.expired_node is None:
            self.expired_node = await self._ensure_flag(WATCHDOG_EXPIRED)

    async def start(self) -> None:
        await self.prepare()
        if self.watchdog is not None:
            await self._show_watchdog(False)
            self.watchdog.start()
        self._heartbeat = asyncio.create_task(self._beat(), name="facade heartbeat")
        await self.listener.start()
        self.state = "Listening"
        self._refresh = asyncio.create_task(refresh_every(self.refresh, self.clock, "Gateway/Diagnostics/Facade",
                                                          REFRESH_S), name="facade diagnostics")

    async def stop(self) -> None:
        """Close the listener and every connection, then the watchdog; the caller bounds it."""
        tasks = [t for t in (self._heartbeat, self._refresh) if t is not None]
        for task in tasks:
            task.cancel()
        await self.listener.stop()
        if self.watchdog is not None:
            await self.watchdog.stop()
        if tasks:
            await asyncio.wait(tasks)
        self._heartbeat = self._refresh = None
        self.state = "Stopped"
        await self.refresh()

    def snapshot(self) -> dict[str, Any]:
        stats, handler = self.listener.stats, self.handler
        values: dict[str, Any] = {
            "State": self.state, "Requests": stats.requests, "Exceptions": stats.exceptions,
            "WritesAccepted": handler.writes_accepted, "WritesRefused": handler.writes_refused,
            "Connections": stats.connections, "ConnectionsAccepted": stats.accepted,
            "ConnectionsRefused": stats.refused, "MalformedFrames": stats.malformed, "IdleClosed": stats.idle_closed,
            "WatchdogExpiries": self.watchdog.expiries if self.watchdog is not None else 0,
        }
        for code, name in _CODE_NAMES.items():
            values[f"ExceptionCodes.{name}"] = stats.exception_codes.get(code, 0)
        return values

    async def refresh(self) -> None:
        await store_changed(self.feed, self.nodes, self.snapshot(), self.clock)

    async def _beat(self) -> None:
        while True:
            await self.clock.sleep(HEARTBEAT_S)
            self.handler.heartbeat = (self.handler.heartbeat + 1) & 0xFFFF

    async def _ensure_flag(self, name: str) -> ua.NodeId:
        aspace = self.server.iserver.aspace
        qname = ua.QualifiedName(name, self.gw_ns)
        nd = aspace.get(self.config.nodeid)
        found = next((r.NodeId for r in (nd.references if nd else ())
                      if r.IsForward and r.ReferenceTypeId in _HIERARCHICAL and r.BrowseName == qname), None)
        if found is not None:
            return found
        nodeid = derived_nodeid(aspace, self.config.nodeid, name, self.gw_ns)
        var = await self.server.get_node(self.config.nodeid).add_variable(
            nodeid, qname, ua.Variant(False, ua.VariantType.Boolean))
        return var.nodeid

    async def _show_watchdog(self, expired: bool) -> None:
        if self.expired_node is None:
            return
        now = self.clock.now()
        # Through the change feed, so an alarm declared on WatchdogExpired sees every change.
        await self.feed.store(self.expired_node, StoredDataValue(ua.Variant(expired, ua.VariantType.Boolean),
                                                                 SourceTimestamp=now, ServerTimestamp=now))
