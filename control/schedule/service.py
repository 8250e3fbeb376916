"""The schedule service: fires each entry at its time on the gateway's clock, keeps the list on disk.

Why not apscheduler's AsyncIOScheduler: it reads the wall clock and sleeps with the event loop's timer,
so a test of a 22:00 tariff window would wait for 22:00; its triggers compute the fire times, and this
loop sleeps on the gateway's Clock (a SteppableClock in tests) until the earliest one, woken early when
the list is edited, and at least once a minute so a wall-clock change is noticed.

At start each cron entry's latest firing of the past `RESTORE_S` is applied again, oldest first, so the
site is where its schedule says it should be (the tariff of the present window, the mode of the present
period); a one-shot whose time passed while the gateway was down fires at start. A one-shot is removed
once fired. The list, as edited through the methods, is kept in `<data dir>/control/schedule.json` and
replaces the site's at the next start (remove the file to return to the site's).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from asyncua import ua

from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.control.channel import variant
from gateway.control.schedule.entries import ScheduleEntry, Writable, parse_entry
from gateway.events.audit import Writer
from gateway.security.roles import Role, ServiceRole

log = logging.getLogger(__name__)
audit = logging.getLogger("gateway.audit")

RESTORE_S = 8 * 86400.0  # a weekly time-of-use table is restored whatever the weekday
MAX_SLEEP_S = 60.0

WriteFn = Callable[[ua.WriteValue, Writer], Awaitable[ua.StatusCode]]
GoToMode = Callable[[str, Writer], tuple[ua.StatusCode, str]]


class ScheduleError(ValueError):
    """An edit that was refused (nothing changed)."""


class ScheduleService:
    def __init__(self, entries: list[ScheduleEntry], write: WriteFn, go_to_mode: GoToMode,
                 writable: Writable, node_of: Callable[[str], tuple[ua.NodeId, ua.VariantType] | None],
                 parameter_node: Callable[[str, str], ua.NodeId | None], store: Path | None = None,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.entries: dict[str, ScheduleEntry] = {e.name: e for e in entries}
        self._write = write
        self._go_to_mode = go_to_mode
        self._writable = writable
        self._node_of = node_of
        self._parameter_node = parameter_node
        self.store = store
        self.clock = clock
        self.fired = 0
        self._edited = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._saving: asyncio.Task[None] | None = None

    # -- running ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the kept list (it replaces the site's), restore the present windows, start firing."""
        kept = await asyncio.to_thread(self._load)
        if kept is not None:
            self.entries = kept
        now = self.clock.now()
        # Walking 8 days of a minutely cron is thousands of trigger steps: in a thread, not on the loop.
        last = await asyncio.to_thread(self._latest_firings, list(self.entries.values()), now)
        for when, name in last:
            await self._fire(self.entries[name], when, "restored at start")
        for entry in self.entries.values():
            entry.first(now)
        self._task = asyncio.create_task(self._run(), name="control schedule")

    @staticmethod
    def _latest_firings(entries: list[ScheduleEntry], now: datetime) -> list[tuple[datetime, str]]:
        return sorted((t, e.name) for e in entries if (t := e.last_fire(now, RESTORE_S)) is not None)

    async def stop(self, within_s: float = 1.0) -> None:
        """Stop firing; the last edit is still written to disk (bounded by `within_s`)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._saving is not None:
            try:
                async with asyncio.timeout(within_s):
                    await self._saving
            except TimeoutError:
                log.error("schedule: %s not written within %g s of the stop", self.store, within_s)
            self._saving = None

    async def _run(self) -> None:
        while True:
            await self.run_due()
            now = self.clock.now()
            times = [e.next_fire for e in self.entries.values() if e.next_fire is not None]
            delay = min(min((t - now).total_seconds() for t in times), MAX_SLEEP_S) if times else MAX_SLEEP_S
            self._edited.clear()
            sleeper = asyncio.ensure_future(self.clock.sleep(max(delay, 0.0)))
            edited = asyncio.ensure_future(self._edited.wait())
            try:
                await asyncio.wait({sleeper, edited}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                edited.cancel()

    async def run_due(self) -> int:
        """Fire every entry whose time has come, earliest first; returns how many fired."""
        now = self.clock.now()
        due = sorted((e.next_fire, e.name) for e in self.entries.values()
                     if e.next_fire is not None and e.next_fire <= now)
        for when, name in due:
            entry = self.entries.get(name)
            if entry is None:
                continue
            await self._fire(entry, when, f"due {when.isoformat()}")
            if entry.one_shot:
                del self.entries[name]
                self._save_soon()
            else:
                entry.advance(when, now)
        return len(due)

    async def _fire(self, entry: ScheduleEntry, when: datetime, why: str) -> None:
        writer = Writer("control:schedule", ServiceRole.control, reason=f"schedule entry {entry.name} ({why})")
        self.fired += 1
        log.info("schedule: entry %s fires (%s)", entry.name, why)
        for var, value in entry.set.items():
            await self._set(self._node_of(var), var, value, writer)
        for mode, params in entry.parameters.items():
            for pname, value in params.items():
                node = self._parameter_node(mode, pname)
                await self._set((node, ua.VariantType.Double) if node is not None else None, f"{mode}.{pname}", value,
                                writer)
        if entry.mode is not None:
            status, text = self._go_to_mode(entry.mode, writer)
            if not status.is_good():
                log.warning("schedule: entry %s could not switch to %s: %s %s", entry.name, entry.mode,
                            status.name, text)

    async def _set(self, target: tuple[ua.NodeId, ua.VariantType] | None, name: str, value: float | bool,
                   writer: Writer) -> None:
        if target is None:
            log.warning("schedule: %s is not in the address space; not written", name)
            return
        node, vtype = target
        status = await self._write(ua.WriteValue(NodeId=node, AttributeId=ua.AttributeIds.Value,
                                                 Value=ua.DataValue(variant(float(value), vtype))), writer)
        if not status.is_good():
            log.warning("schedule: writing %s = %s refused: %s", name, value, status.name)

    # -- editing (the methods) ----------------------------------------------------------------------
    def listing(self) -> list[dict[str, Any]]:
        return [e.describe() for e in sorted(self.entries.values(), key=lambda e: e.name)]

    def put(self, raw: Any, writer: Writer) -> ScheduleEntry:
        """Add an entry, or replace the one of the same name. Raises ScheduleError naming every problem."""
        self._may_edit(writer)
        entry, problems = parse_entry(raw, self._writable)
        if entry is None:
            audit.info("refused schedule entry by %s: %s", writer.name, "; ".join(problems))
            raise ScheduleError("; ".join(problems))
        entry.first(self.clock.now())
        replaced = entry.name in self.entries
        self.entries[entry.name] = entry
        audit.info("accepted schedule entry %s (%s) by %s (%s)", entry.name, "replaced" if replaced else "added",
                   writer.name, writer.role.name)
        self._changed()
        return entry

    def remove(self, name: str, writer: Writer) -> None:
        self._may_edit(writer)
        if name not in self.entries:
            raise ScheduleError(f"no schedule entry {name!r} (entries: {', '.join(sorted(self.entries)) or 'none'})")
        del self.entries[name]
        audit.info("removed schedule entry %s by %s (%s)", name, writer.name, writer.role.name)
        self._changed()

    def _may_edit(self, writer: Writer) -> None:
        if not writer.role.allows(Role.operator):
            raise PermissionError("editing the schedule needs an operator")

    def _changed(self) -> None:
        self._edited.set()
        self._save_soon()

    # -- keeping it -----------------------------------------------------------------------------
    def _save_soon(self) -> None:
        if self.store is None:
            return
        text = json.dumps([e.raw for e in sorted(self.entries.values(), key=lambda e: e.name)], indent=1)
        previous = self._saving

        async def save() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            try:
                await asyncio.to_thread(self._save, text)
            except OSError as exc:  # the edit holds in memory; the next edit tries again
                log.error("schedule: %s not written: %s", self.store, exc)

        self._saving = asyncio.get_running_loop().create_task(save(), name="control schedule save")

    async def saved(self) -> None:
        """Wait until the latest edit is on disk (tests, stop)."""
        if self._saving is not None:
            await self._saving

    def _save(self, text: str) -> None:
        assert self.store is not None
        self.store.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.store.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.store)  # whole or not at all: a crash never leaves half a list

    def _load(self) -> dict[str, ScheduleEntry] | None:
        if self.store is None or not self.store.exists():
            return None
        try:
            raw = json.loads(self.store.read_text(encoding="utf-8"))
            if not isinstance(raw, list):
                raise ValueError("not a list of entries")
        except (OSError, ValueError) as exc:
            log.error("schedule: %s unreadable (%s); the site's schedule is used", self.store, exc)
            return None
        entries, problems = {}, []
        for item in raw:
            entry, why = parse_entry(item, self._writable)
            if entry is None:
                problems += why
            else:
                entries[entry.name] = entry
        if problems:  # nothing half-applied: a list with a bad entry is not used at all
            log.error("schedule: %s refused (%s); the site's schedule is used", self.store, "; ".join(problems))
            return None
        log.info("schedule: %d entr%s from %s", len(entries), "y" if len(entries) == 1 else "ies", self.store)
        return entries
