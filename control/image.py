"""The process image: the value, status and age of every node a controller or interlock declared.

It is filled from the change feed (a listener on exactly the declared nodes), so reading it costs no
request. A value that does not change is not stored again by the value path, so a node's age is measured
from its last change or from the last successful scan of the device that serves it (the device's
Diagnostics/LastSuccess, which changes on every good scan), whichever is later: a steady E-stop input of
a device that answers is fresh; the same input of a device that went silent ages.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from asyncua import ua

from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.values.feed import Change, ChangeFeed, Subscription

GOOD = ua.StatusCodes.Good
NEVER = -math.inf


@dataclass(slots=True)
class Sample:
    value: object = None
    status: int = ua.StatusCodes.BadWaitingForInitialData
    confirmed: float = NEVER  # monotonic time the value was last seen current


@dataclass(frozen=True, slots=True)
class Input:
    """One node as a controller sees it in a cycle."""

    node: ua.NodeId
    value: object
    status: int
    age: float  # seconds since the value was last confirmed current (inf: never)

    @property
    def good(self) -> bool:
        return ua.StatusCode(self.status).is_good() and self.value is not None

    def usable(self, max_age: float) -> bool:
        """Good and no older than `max_age`: what a controller or interlock may act on."""
        return self.good and self.age <= max_age

    def number(self, max_age: float) -> float | None:
        """The value as a float when usable and numeric, else None."""
        if not self.usable(max_age) or isinstance(self.value, str):
            return None
        try:
            x = float(self.value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
        return x if math.isfinite(x) else None

    def why_not(self, max_age: float) -> str:
        """Why the input is not usable (empty when it is), for an interlock's cause."""
        if self.value is None or not ua.StatusCode(self.status).is_good():
            return f"{self.node.to_string()} is {ua.StatusCode(self.status).name}"
        if self.age > max_age:
            return f"{self.node.to_string()} is stale ({self.age:.1f} s old, at most {max_age:g} s)"
        return ""


ChangeHook = Callable[[ua.NodeId], None]


class ProcessImage:
    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self.samples: dict[ua.NodeId, Sample] = {}
        self._confirms: dict[ua.NodeId, list[ua.NodeId]] = {}  # a device's LastSuccess -> nodes it confirms
        self._hooks: dict[ua.NodeId, list[ChangeHook]] = {}
        self._subscription: Subscription | None = None

    # -- filling ------------------------------------------------------------------------------
    def track(self, nodes: Iterable[ua.NodeId], confirmed_by: Mapping[ua.NodeId, ua.NodeId] | None = None) -> None:
        """Declare nodes; `confirmed_by` maps a node to the node whose every change confirms it is current."""
        for node in nodes:
            self.samples.setdefault(node, Sample())
            confirm = (confirmed_by or {}).get(node)
            if confirm is not None and node not in self._confirms.get(confirm, []):
                self._confirms.setdefault(confirm, []).append(node)
        if self._subscription is not None:
            self._subscription.add([*self.samples, *self._confirms])

    def on_change(self, node: ua.NodeId, hook: ChangeHook) -> None:
        """Call `hook(node)` right after `node` changed in the image (interlocks acting on the change)."""
        self._hooks.setdefault(node, []).append(hook)

    def attach(self, feed: ChangeFeed, initial: Callable[[ua.NodeId], ua.DataValue | None] | None = None) -> None:
        """Follow the declared nodes in the feed, starting from their present values (`initial`)."""
        if initial is not None:
            for node in self.samples:
                dv = initial(node)
                if dv is not None and dv.Value is not None and dv.Value.Value is not None:
                    code = dv.StatusCode.value if dv.StatusCode is not None else GOOD
                    # Present at start, not seen arriving: confirmed now, so a silent device still ages out.
                    self._store(node, dv.Value.Value, code)
        self._subscription = feed.listen(self._changed, [*self.samples, *self._confirms], name="control image")

    def detach(self) -> None:
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None

    def _changed(self, change: Change) -> None:
        if change.node in self.samples:
            self._store(change.node, change.value, change.status)
        for node in self._confirms.get(change.node, ()):
            sample = self.samples[node]
            if change.value is not None:
                sample.confirmed = max(sample.confirmed, self.clock.monotonic())
            for hook in self._hooks.get(node, ()):
                hook(node)

    def set(self, node: ua.NodeId, value: object, status: int = GOOD) -> None:
        """Store a value as the feed would (tests and inputs the engine computes itself)."""
        self.samples.setdefault(node, Sample())
        self._store(node, value, status)

    def _store(self, node: ua.NodeId, value: object, status: int) -> None:
        sample = self.samples[node]
        sample.value, sample.status, sample.confirmed = value, status, self.clock.monotonic()
        for hook in self._hooks.get(node, ()):
            hook(node)

    # -- reading ------------------------------------------------------------------------------
    def get(self, node: ua.NodeId) -> Input:
        sample = self.samples.get(node)
        if sample is None:
            return Input(node, None, ua.StatusCodes.BadNodeIdUnknown, math.inf)
        return Input(node, sample.value, sample.status, self.clock.monotonic() - sample.confirmed)
