"""The change feed: every value the gateway stores leaves through here, once, to every part that wants it.

Bound variables, parameters the gateway holds, diagnostics, and later control outputs and alarm states
are stored with `ChangeFeed.store`, which puts the DataValue into the address space (asyncua's monitored
items see it there) and hands a `Change` to each subscriber that named the node (or all nodes).

Two kinds of subscriber:
- a listener is a plain function called on the event loop as the value is stored. It is for work that
  must act on the change itself and is cheap (alarm evaluation, interlocks, a register image). It must
  not block; an exception it raises is caught, counted and logged (once per listener and minute), and
  the value is stored all the same.
- a queue collects changes for a consumer task that takes them in batches (a database writer). It is
  bounded: when full, the oldest change goes and is counted in `dropped`, so a stalled consumer costs
  memory up to its bound and never blocks the feed. A consumer that must not lose anything spools to
  disk as it takes each batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asyncua import ua
from asyncua.server.address_space import AddressSpace, AttributeValue

from gateway.values.aspace_io import store_at, store_value

log = logging.getLogger(__name__)

_LOG_EVERY_S = 60.0
_new = object.__new__
_setattr = object.__setattr__


@dataclass(frozen=True, slots=True)
class Change:
    """One stored value. `dv` is the DataValue as stored; the gateway never mutates it afterwards."""

    node: ua.NodeId
    dv: ua.DataValue

    @property
    def value(self) -> Any:
        return self.dv.Value.Value if self.dv.Value is not None else None

    @property
    def status(self) -> int:
        return self.dv.StatusCode.value if self.dv.StatusCode is not None else ua.StatusCodes.Good

    @property
    def source_time(self) -> datetime | None:
        return self.dv.SourceTimestamp

    @property
    def server_time(self) -> datetime | None:
        return self.dv.ServerTimestamp


Listener = Callable[[Change], None]


class Subscription:
    """What `listen` returns: the interest of one listener, which can grow, shrink and end."""

    def __init__(self, feed: ChangeFeed, name: str, callback: Listener, nodes: set[ua.NodeId] | None) -> None:
        self.feed = feed
        self.name = name
        self.callback = callback
        self.nodes = nodes  # None: every node
        self.failures = 0
        self.last_error = ""
        self._last_logged = float("-inf")

    def add(self, nodes: Iterable[ua.NodeId]) -> None:
        if self.nodes is None:
            return
        for node in nodes:
            if node not in self.nodes:
                self.nodes.add(node)
                self.feed._by_node.setdefault(node, []).append(self)

    def remove(self, nodes: Iterable[ua.NodeId]) -> None:
        if self.nodes is None:
            return
        for node in nodes:
            if node in self.nodes:
                self.nodes.discard(node)
                self.feed._unindex(node, self)

    def close(self) -> None:
        self.feed._drop(self)

    def _failed(self, change: Change, exc: Exception) -> None:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        now = time.monotonic()
        if now - self._last_logged >= _LOG_EVERY_S:
            self._last_logged = now
            log.error("change feed subscriber %s failed on %s (%d failures so far)", self.name,
                      change.node.to_string(), self.failures, exc_info=exc)


class ChangeQueue:
    """A bounded queue of changes for one consumer task (see the module's docstring)."""

    def __init__(self, name: str, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("a change queue holds at least one change")
        self.name = name
        self.maxsize = maxsize
        self.dropped = 0
        self.subscription: Subscription | None = None
        self._items: deque[Change] = deque()
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, change: Change) -> None:
        if len(self._items) >= self.maxsize:
            self._items.popleft()
            self.dropped += 1
        self._items.append(change)
        self._ready.set()

    def take(self, limit: int | None = None) -> list[Change]:
        """What is queued now (at most `limit`), oldest first, without waiting."""
        n = len(self._items) if limit is None else min(limit, len(self._items))
        batch = [self._items.popleft() for _ in range(n)]
        if not self._items:
            self._ready.clear()
        return batch

    async def batch(self, limit: int | None = None) -> list[Change]:
        """Wait for at least one change, then take what is queued (at most `limit`)."""
        while not self._items:
            await self._ready.wait()
        return self.take(limit)

    def close(self) -> None:
        if self.subscription is not None:
            self.subscription.close()


class ChangeFeed:
    def __init__(self, aspace: AddressSpace) -> None:
        self.aspace = aspace
        self.stored = 0
        self._all: list[Subscription] = []
        self._by_node: dict[ua.NodeId, list[Subscription]] = {}

    async def store(self, node: ua.NodeId, dv: ua.DataValue) -> None:
        """Put a value into the address space and hand it to every subscriber interested in the node."""
        self.put(node, dv)

    def put(self, node: ua.NodeId, dv: ua.DataValue) -> None:
        """`store` without the coroutine: for the value path, which stores thousands of values per scan."""
        self.put_to(node, dv, self._by_node.get(node) if self._by_node else None)

    def listeners_of(self, node: ua.NodeId) -> list[Subscription]:
        """The node's own subscribers, as a list that stays the node's (it changes as subscribers come and go):
        a caller that stores the node's values often keeps it and stores with `put_to`."""
        subs = self._by_node.get(node)
        if subs is None:
            subs = self._by_node[node] = []
        return subs

    def put_to(self, node: ua.NodeId, dv: ua.DataValue, targets: list[Subscription] | None,
               attval: AttributeValue | None = None) -> None:
        """`put` with the node's `listeners_of` list (and its `aspace_io.value_attribute`) at hand: no look-up
        by NodeId (whose hash is a Python function) for each of the thousands of values of a scan."""
        if attval is not None:
            store_at(attval, node, dv)
        else:
            store_value(self.aspace, node, dv)
        self.stored += 1
        if targets or self._all:  # a Change only for someone to hand it to
            change = _new(Change)
            _setattr(change, "node", node)  # Change is frozen: its own __init__ does the same, 3x slower
            _setattr(change, "dv", dv)
            self._deliver(change, targets)

    def publish(self, change: Change) -> None:
        self._deliver(change, self._by_node.get(change.node))

    def _deliver(self, change: Change, targets: list[Subscription] | None) -> None:
        for sub in (*self._all, *targets) if targets else self._all:
            try:
                sub.callback(change)
            except Exception as exc:  # one subscriber's bug must not cost the others their change
                sub._failed(change, exc)

    def listen(self, callback: Listener, nodes: Iterable[ua.NodeId] | None = None, name: str = "") -> Subscription:
        """Call `callback` with every change of `nodes` (every node when None), on the event loop."""
        sub = Subscription(self, name or getattr(callback, "__qualname__", "listener"), callback,
                           None if nodes is None else set())
        if nodes is None:
            self._all.append(sub)
        else:
            sub.add(nodes)
        return sub

    def queue(self, name: str, nodes: Iterable[ua.NodeId] | None = None, maxsize: int = 100_000) -> ChangeQueue:
        """A bounded queue that collects every change of `nodes` (every node when None)."""
        q = ChangeQueue(name, maxsize)
        q.subscription = self.listen(q.put, nodes, name)
        return q

    def subscriptions(self) -> list[Subscription]:
        seen: dict[int, Subscription] = {id(s): s for s in self._all}
        for subs in self._by_node.values():
            for s in subs:
                seen.setdefault(id(s), s)
        return list(seen.values())

    def _unindex(self, node: ua.NodeId, sub: Subscription) -> None:
        subs = self._by_node.get(node)
        if subs is not None and sub in subs:
            subs.remove(sub)  # an empty list stays: it is the node's for good (listeners_of)

    def _drop(self, sub: Subscription) -> None:
        if sub in self._all:
            self._all.remove(sub)
        for node in list(sub.nodes or ()):
            self._unindex(node, sub)
