"""The facade inside the gateway: its listener, its watchdog and heartbeat, and its nodes.

The facade object shows `WatchdogExpired` (Boolean, in the gateway's namespace), so a site can
declare an OffNormal alarm on it; a site that does not declare the node gets it added with the
NodeId rule of device diagnostics (docs/bindings.md, NodeIds).
"""

from __future__ import annotations

import asyncio
import logging

from asyncua import Server, ua

from gateway import product
from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.diagnostics import derived_nodeid
from gateway.facade.model import FacadeConfig
from gateway.facade.requests import RequestHandler
from gateway.facade.server import FacadeServer
from gateway.facade.watchdog import FallbackWriter, SetpointWithdrawal, Watchdog
from gateway.values.aspace_io import StoredDataValue
from gateway.values.feed import ChangeFeed
from gateway.values.writepath import WritePath

log = logging.getLogger(__name__)

HEARTBEAT_S = 1.0
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
                    "serial": product.APPLICATION_URI}
        self.handler = RequestHandler(config, server.iserver.aspace, write_path, self.watchdog, clock, identity)
        self.listener = FacadeServer(config, self.handler)
        self.expired_node: ua.NodeId | None = None
        self._heartbeat: asyncio.Task[None] | None = None

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

    async def stop(self) -> None:
        """Close the listener and every connection, then the watchdog; the caller bounds it."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        await self.listener.stop()
        if self.watchdog is not None:
            await self.watchdog.stop()
        if self._heartbeat is not None:
            await asyncio.wait([self._heartbeat])
            self._heartbeat = None

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
