"""Per peer address: how many connections it holds, and logging that a flood cannot turn into a flood of lines.

A loop of malformed Hellos once wrote 58 MB of tracebacks in 10 s. `PeerLog` writes one line per
peer address and kind of event per interval and says how many it left out.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable


def peer_host(peer: object) -> str:
    """The address part of a peername ('?' if the socket had none)."""
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return "?"


def peer_text(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


class PeerLog:
    """Log one line per (peer address, kind) per `interval_s`; later ones are counted and reported with the next."""

    def __init__(self, logger: logging.Logger, interval_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self.interval_s = interval_s
        self._clock = clock
        self._next: dict[tuple[str, str], float] = {}
        self._suppressed: Counter[tuple[str, str]] = Counter()

    def warning(self, host: str, kind: str, msg: str, *args: object, level: int = logging.WARNING,
                exc_info: bool = False) -> bool:
        """Log `msg` unless this host logged `kind` within the interval; True if a line was written."""
        key = (host, kind)
        now = self._clock()
        if now < self._next.get(key, 0.0):
            self._suppressed[key] += 1
            return False
        if len(self._next) > 10_000:  # forget old addresses so a scan of many addresses cannot grow this
            self._next = {k: t for k, t in self._next.items() if t > now}
        self._next[key] = now + self.interval_s
        left_out = self._suppressed.pop(key, 0)
        suffix = f" ({left_out} more like it from {host} not logged)" if left_out else ""
        self._log.log(level, msg + "%s", *args, suffix, exc_info=exc_info)
        return True


class PeerConnections:
    """Open connections per peer address, refused past `per_peer`."""

    def __init__(self, per_peer: int) -> None:
        self.per_peer = per_peer
        self._open: Counter[str] = Counter()

    def admit(self, host: str) -> bool:
        if self._open[host] >= self.per_peer:
            return False
        self._open[host] += 1
        return True

    def release(self, host: str) -> None:
        self._open[host] -= 1
        if self._open[host] <= 0:
            del self._open[host]

    def count(self, host: str) -> int:
        return self._open.get(host, 0)
