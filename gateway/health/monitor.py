"""The `Gateway/Diagnostics` object: the gateway's own health, refreshed every second.

A dead or failing history writer, a full history queue or a poll task that died is shown there
(state, counters, last error) and repeated in the log once a minute while it lasts, so nobody has
to have been watching the log at the moment it happened.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from asyncua import ua

from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.health.publish import node_table, refresh_every, store_changed
from gateway.history.store import HistoryStore
from gateway.values.feed import ChangeFeed

log = logging.getLogger(__name__)

REFRESH_S = 1.0
REMIND_EVERY_S = 60.0

# Numeric identifiers of the nodes in the gateway's types namespace (nodesets/gateway.types.xml).
_NODES: dict[str, tuple[int, ua.VariantType]] = {
    "ValuesUpdated": (6110, ua.VariantType.UInt64),
    "TaskFailures": (6111, ua.VariantType.UInt32),
    "LastError": (6112, ua.VariantType.String),
    "History.State": (6113, ua.VariantType.String),
    "History.ValuesStored": (6114, ua.VariantType.UInt64),
    "History.ValuesDropped": (6115, ua.VariantType.UInt64),
    "History.QueueDepth": (6116, ua.VariantType.UInt32),
    "History.LastError": (6117, ua.VariantType.String),
}


class TaskHealth(Protocol):
    """What a long-running part (a device runner) reports about its own tasks."""

    task_failures: int
    last_task_error: str


@dataclass
class HealthSources:
    values_updated: Callable[[], int]
    history: HistoryStore | None
    tasks: Callable[[], Iterable[TaskHealth]]


class GatewayHealth:
    def __init__(self, feed: ChangeFeed, gw_ns: int, sources: HealthSources, clock: Clock = SYSTEM_CLOCK) -> None:
        self.feed = feed
        self.aspace = feed.aspace
        self.sources = sources
        self.clock = clock
        self.nodes = node_table(_NODES, gw_ns)
        self._task: asyncio.Task[None] | None = None
        self._last_reminder = float("-inf")
        self._last_state = ""

    def snapshot(self) -> dict[str, Any]:
        failures, last_error = 0, ""
        for part in self.sources.tasks():
            failures += part.task_failures
            last_error = part.last_task_error or last_error
        h = self.sources.history
        return {
            "ValuesUpdated": self.sources.values_updated(),
            "TaskFailures": failures,
            "LastError": last_error,
            "History.State": h.state if h is not None else "Stopped",
            "History.ValuesStored": h.written if h is not None else 0,
            "History.ValuesDropped": h.dropped if h is not None else 0,
            "History.QueueDepth": h.queued if h is not None else 0,
            "History.LastError": h.last_error if h is not None else "",
        }

    async def refresh(self) -> dict[str, Any]:
        """Write what changed into the address space; log the state of history while it is not writing."""
        values = self.snapshot()
        await store_changed(self.feed, self.nodes, values, self.clock)
        self._remind(values)
        return values

    def _remind(self, values: dict[str, Any]) -> None:
        state = values["History.State"]
        mono = self.clock.monotonic()
        degraded = state not in ("Writing", "Stopped")
        if degraded and (state != self._last_state or mono - self._last_reminder >= REMIND_EVERY_S):
            self._last_reminder = mono
            log.warning("history is %s: %d values waiting, %d dropped since start; %s", state,
                        values["History.QueueDepth"], values["History.ValuesDropped"],
                        values["History.LastError"] or "no error recorded")
        self._last_state = state

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gateway health")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
            self._task = None

    async def _run(self) -> None:
        await refresh_every(self.refresh, self.clock, "Gateway/Diagnostics", REFRESH_S)
