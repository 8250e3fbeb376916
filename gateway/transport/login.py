"""Failed logins per client address: a burst blocks that address's logins for a while.

Each failed login costs a scrypt run (~50 ms of a core). Four sockets sending 17 wrong logins/s
once cut 100 ms polling from 9.9 to 1.4 updates/s. Past `allowed` failures within `window_s`,
further logins from that address are refused at once, without hashing, for `block_s`; the block
is logged once, not each attempt.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class _Address:
    failures: deque[float] = field(default_factory=deque)
    blocked_until: float = 0.0
    refused_while_blocked: int = 0


class LoginThrottle:
    def __init__(self, allowed: int = 5, window_s: float = 30.0, block_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.allowed = allowed
        self.window_s = window_s
        self.block_s = block_s
        self._clock = clock
        self._by_host: dict[str, _Address] = {}

    def blocked(self, host: str) -> bool:
        """True while `host` is blocked; the refusal is counted for the block's summary."""
        entry = self._by_host.get(host)
        if entry is None or self._clock() >= entry.blocked_until:
            return False
        entry.refused_while_blocked += 1
        return True

    def failed(self, host: str) -> tuple[bool, int]:
        """Record a failed login. Returns (this failure starts a block, attempts refused during the last block)."""
        now = self._clock()
        self._forget_idle(now)
        entry = self._by_host.setdefault(host, _Address())
        entry.failures.append(now)
        while entry.failures and entry.failures[0] <= now - self.window_s:
            entry.failures.popleft()
        if len(entry.failures) <= self.allowed:
            return False, 0
        entry.failures.clear()
        entry.blocked_until = now + self.block_s
        previous, entry.refused_while_blocked = entry.refused_while_blocked, 0
        return True, previous

    def _forget_idle(self, now: float) -> None:
        if len(self._by_host) < 10_000:
            return
        horizon = now - self.window_s
        self._by_host = {h: e for h, e in self._by_host.items()
                         if e.blocked_until > now or (e.failures and e.failures[-1] > horizon)}
