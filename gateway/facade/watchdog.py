"""The SCADA watchdog: a holding register the SCADA must keep changing, and what happens when it stops.

The timer starts when the facade starts, so a SCADA that never comes back after a restart is
treated as one that stopped. When the register has not changed for the site's WatchdogTimeout, the
watchdog expires: setpoints the SCADA wrote through watchdog-guarded mappings are withdrawn and
guarded writes are refused until the SCADA changes the register again. Withdrawal is a seam
(`SetpointWithdrawal`): by default each guarded mapping's site-declared fallback value is written
through the write path as `facade:watchdog`; a control engine's ExternalControl mode can take the
withdrawal instead (fall back to its own mode) by passing its own implementation. A withdrawal that
fails (a device that does not answer) is retried every second until it succeeds or the SCADA returns,
so a lost SCADA never leaves its setpoint driving the plant.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from asyncua import ua

from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.events.audit import Writer
from gateway.facade.model import Mapping
from gateway.facade.values import variant
from gateway.security.roles import Role
from gateway.values.writepath import WritePath

log = logging.getLogger(__name__)

RETRY_S = 1.0
WATCHDOG_WRITER = "facade:watchdog"


class SetpointWithdrawal(Protocol):
    """Takes the SCADA's setpoints away when the watchdog expires; True once every one is withdrawn."""

    async def withdraw(self, mappings: Sequence[Mapping], reason: str) -> bool: ...


class FallbackWriter:
    """The default withdrawal: each guarded mapping's fallback value, through the one write path."""

    def __init__(self, write_path: WritePath) -> None:
        self.write_path = write_path

    async def withdraw(self, mappings: Sequence[Mapping], reason: str) -> bool:
        # The gateway's own safety action, attributable in the audit trail as such; operator is the
        # least role that writes values.
        writer = Writer(WATCHDOG_WRITER, Role.operator, reason=reason)
        done = True
        for m in mappings:
            wv = ua.WriteValue(NodeId=m.nodeid, AttributeId=ua.AttributeIds.Value,
                               Value=ua.DataValue(variant(m, m.fallback)))
            status = await self.write_path.write(wv, writer)
            if not status.is_good():
                log.warning("watchdog: fallback %r for %s not written: %s; retrying", m.fallback, m.name, status.name)
                done = False
        return done


class Watchdog:
    def __init__(self, timeout_s: float, mappings: Sequence[Mapping], withdrawal: SetpointWithdrawal,
                 clock: Clock = SYSTEM_CLOCK, on_change: Callable[[bool], Awaitable[None]] | None = None) -> None:
        self.timeout_s = timeout_s
        self.guarded = [m for m in mappings if m.guarded]
        self.withdrawal = withdrawal
        self.clock = clock
        self.on_change = on_change
        self.value = 0  # what the SCADA last wrote to the register
        self.expired = False
        self.expiries = 0
        self._last_change = clock.monotonic()
        self._fed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._last_change = self.clock.monotonic()
        self._task = asyncio.create_task(self._run(), name="facade watchdog")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
            self._task = None

    async def write(self, value: int) -> None:
        """The SCADA wrote the watchdog register: only a change counts as a sign of life."""
        if value == self.value:
            return
        self.value = value
        self._last_change = self.clock.monotonic()
        self._fed.set()
        if self.expired:
            self.expired = False
            log.warning("facade watchdog: the SCADA is back (register changed); guarded setpoints are taken again")
            await self._notify()

    async def _notify(self) -> None:
        if self.on_change is not None:
            try:
                await self.on_change(self.expired)
            except Exception:
                log.exception("facade watchdog: showing its state failed")

    async def _run(self) -> None:
        while True:
            if not self.expired:
                left = self._last_change + self.timeout_s - self.clock.monotonic()
                if left > 0:
                    await self._sleep_or_fed(left)
                    continue
                self.expired = True
                self.expiries += 1
                log.warning("facade watchdog expired: the SCADA has not changed it for %g s; withdrawing %d "
                            "setpoint(s)", self.timeout_s, len(self.guarded))
                await self._notify()
                await self._withdraw()
            else:
                await self._sleep_or_fed(None)

    async def _withdraw(self) -> None:
        reason = f"watchdog not changed within {self.timeout_s:g} s"
        while self.expired and self.guarded:
            try:
                if await self.withdrawal.withdraw(self.guarded, reason):
                    return
            except Exception:
                log.exception("facade watchdog: withdrawing setpoints failed; retrying")
            await self._sleep_or_fed(RETRY_S)

    async def _sleep_or_fed(self, seconds: float | None) -> None:
        """Sleep until `seconds` pass (None: for ever) or the SCADA changes the register."""
        self._fed.clear()
        waiter = asyncio.ensure_future(self._fed.wait())
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds)) if seconds is not None else None
        try:
            await asyncio.wait([t for t in (waiter, sleeper) if t is not None], return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            if sleeper is not None:
                sleeper.cancel()
