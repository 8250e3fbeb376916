"""The series writer inside the gateway (its disk queue and HTTP side in a writer process of their own, see
writer.py): started after the tag table exists, stopped with a deadline, and shown under
`Gateway/Diagnostics/Influx` (refreshed every second), with its QueueFullAlarm: a system alarm (through the
alarm service, like every other) active while points are being dropped by the queue's bounds."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from asyncua import ua

from gateway.alarms.config import AlarmConfig
from gateway.alarms.service import AlarmService
from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.events.service import EventService
from gateway.health.publish import node_table, refresh_every, store_changed
from gateway.influx.config import InfluxConfig
from gateway.influx.series import SeriesCatalog
from gateway.influx.writer import SeriesWriter
from gateway.values.feed import ChangeFeed
from gateway.values.tags import TagTable

log = logging.getLogger(__name__)

REFRESH_S = 1.0
# Numeric identifiers in the gateway's types namespace (nodesets/gateway.types.xml), below Diagnostics.
NODES: dict[str, tuple[int, ua.VariantType]] = {
    "State": (6140, ua.VariantType.String),
    "QueueDepth": (6141, ua.VariantType.UInt64),
    "QueueBytes": (6142, ua.VariantType.UInt64),
    "PointsSent": (6143, ua.VariantType.UInt64),
    "PointsDropped": (6144, ua.VariantType.UInt64),
    "PointsRejected": (6145, ua.VariantType.UInt64),
    "LastError": (6146, ua.VariantType.String),
    "QueueFull": (6147, ua.VariantType.Boolean),
}
INFLUX_OBJECT = 5140


def queue_path(data_dir: Path) -> Path:
    return data_dir / "influx" / "queue.sqlite3"


class InfluxService:
    def __init__(self, config: InfluxConfig, site: str, data_dir: Path, feed: ChangeFeed, tags: TagTable | None,
                 gw_ns: int, clock: Clock = SYSTEM_CLOCK, events: EventService | None = None) -> None:
        self.config = config
        self.feed = feed
        self.events = events
        self.clock = clock
        self.catalog = SeriesCatalog(config, config.site or site, feed.aspace, tags, {gw_ns})
        self.queue_path = queue_path(data_dir)
        self.writer = SeriesWriter(config, self.catalog, self.queue_path)
        self.nodes = node_table(NODES, gw_ns)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.writer.start(self.feed, self.events)
        log.info("influx: writing %d series to %s (v%d) through %s", len(self.catalog.all()), self.config.url,
                 self.config.version, self.queue_path)
        self._task = asyncio.create_task(self._refresh_loop(), name="influx diagnostics")

    async def stop(self, within_s: float) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
            self._task = None
        await self.writer.stop(within_s)
        await self.refresh()

    def snapshot(self) -> dict[str, Any]:
        w = self.writer
        return {"State": w.state, "QueueDepth": w.depth, "QueueBytes": w.queue_bytes, "PointsSent": w.stats.sent,
                "PointsDropped": w.dropped, "PointsRejected": w.stats.rejected, "LastError": w.last_error,
                "QueueFull": w.queue_full}

    async def refresh(self) -> None:
        await store_changed(self.feed, self.nodes, self.snapshot(), self.clock)

    async def _refresh_loop(self) -> None:
        await refresh_every(self.refresh, self.clock, "Gateway/Diagnostics/Influx", REFRESH_S)


def queue_full_alarm(alarms: AlarmService, gw_ns: int, severity: int = 700) -> AlarmConfig:
    """Gateway/Diagnostics/Influx/QueueFullAlarm, active while Influx/QueueFull is true."""
    return alarms.add_system_alarm(
        ua.NodeId(INFLUX_OBJECT, gw_ns), "Influx", "QueueFullAlarm", ua.NodeId(NODES["QueueFull"][0], gw_ns), True,
        ("Influx: the series queue is full: the oldest points are being dropped",
         "Influx: the series queue is under its bounds again"), gw_ns, severity)
