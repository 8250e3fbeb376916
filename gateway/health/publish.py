"""Showing a part's own counters as variables of `Gateway/Diagnostics`: each refresh stores what changed.

Shared by the gateway's health, the series writer and the Modbus facade: a table of names -> (numeric
identifier in the gateway's types namespace, VariantType), a snapshot of values by the same names,
stored through the change feed (so subscriptions see them) only when they changed, every second.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from asyncua import ua

from gateway.clock import Clock
from gateway.values.aspace_io import StoredDataValue, read_value
from gateway.values.feed import ChangeFeed

log = logging.getLogger(__name__)

NodeTable = dict[str, tuple[ua.NodeId, ua.VariantType]]


def node_table(identifiers: Mapping[str, tuple[int, ua.VariantType]], gw_ns: int) -> NodeTable:
    return {name: (ua.NodeId(ident, gw_ns), vt) for name, (ident, vt) in identifiers.items()}


async def store_changed(feed: ChangeFeed, nodes: NodeTable, values: Mapping[str, Any], clock: Clock) -> None:
    """Store each value whose node exists and shows another value now."""
    now = clock.now()
    for name, value in values.items():
        nodeid, vt = nodes[name]
        if feed.aspace.get(nodeid) is None:
            continue
        old = read_value(feed.aspace, nodeid)
        if old is not None and old.Value is not None and old.Value.Value == value:
            continue
        await feed.store(nodeid, StoredDataValue(ua.Variant(value, vt), SourceTimestamp=now, ServerTimestamp=now))


async def refresh_every(refresh: Callable[[], Awaitable[object]], clock: Clock, what: str,
                        period_s: float = 1.0) -> None:
    """Run `refresh` every period until cancelled; a failing refresh is logged, never fatal."""
    while True:
        try:
            await refresh()
        except Exception:  # a display must never take its part or the gateway down
            log.exception("refreshing %s failed", what)
        await clock.sleep(period_s)
