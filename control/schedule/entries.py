"""One schedule entry: when it fires (a crontab line or a one-shot time) and what it does then.

```yaml
schedule:
  - {name: cheap-night, cron: "0 22 * * *", set: {TariffPrice: 0.08}}
  - {name: evening-peak, cron: "0 17 * * 1-5", timezone: Europe/Stockholm, mode: PeakShaving,
     parameters: {PeakShaving: {import_limit: 60}}}
  - {name: commissioning, at: "2026-12-01T08:00:00Z", mode: Passive}
```

`cron` is a five-field crontab line (minute hour day month weekday, 0 or 7 = Sunday, as cron reads it)
in `timezone` (IANA name, default UTC); `at` an ISO 8601 time (without an offset: in `timezone`). What
it does, in this order: `set` writes site variables, `parameters` writes mode parameters
(`Control.Modes.<Mode>.<parameter>`), `mode` switches the active mode. Every write goes through the
write path as `control:schedule`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger

from gateway.control.modes import load_modes

ENTRY_KEYS = {"name", "cron", "at", "timezone", "mode", "parameters", "set"}

# A site variable's name -> whether it exists and is writable (None: no such variable).
Writable = Callable[[str], bool | None]


@dataclass
class ScheduleEntry:
    name: str
    trigger: BaseTrigger
    raw: dict[str, Any]  # as given (persisted and listed as such)
    mode: str | None = None
    parameters: dict[str, dict[str, float]] = field(default_factory=dict)  # mode -> parameter -> value
    set: dict[str, float | bool] = field(default_factory=dict)  # site variable -> value
    next_fire: datetime | None = None

    @property
    def one_shot(self) -> bool:
        return isinstance(self.trigger, DateTrigger)

    def first(self, now: datetime) -> None:
        """The first fire time at or after `now`; a one-shot whose time passed fires at once."""
        if isinstance(self.trigger, DateTrigger):
            self.next_fire = self.trigger.run_date
        else:
            self.next_fire = self.trigger.get_next_fire_time(None, now)

    def advance(self, fired: datetime, now: datetime) -> None:
        """After firing at `fired`: the next time after both it and `now` (times missed meanwhile coalesce into
        the one firing: apscheduler's own `get_next_fire_time(fired, now)` would return each in turn)."""
        self.next_fire = self.trigger.get_next_fire_time(None, max(fired, now) + timedelta(microseconds=1))

    def last_fire(self, now: datetime, lookback_s: float, most: int = 20000) -> datetime | None:
        """The latest fire time within `lookback_s` before `now` (None: none), for restoring at start."""
        if isinstance(self.trigger, DateTrigger):
            return None
        start = datetime.fromtimestamp(now.timestamp() - lookback_s, now.tzinfo)
        last, t = None, self.trigger.get_next_fire_time(None, start)
        for _ in range(most):
            if t is None or t > now:
                break
            last, t = t, self.trigger.get_next_fire_time(t, t)
        return last

    def describe(self) -> dict[str, Any]:
        return {**self.raw, "next": self.next_fire.isoformat() if self.next_fire is not None else None}


_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def crontab_weekdays(field: str) -> str:
    """A crontab weekday field (0 or 7 = Sunday, 1 = Monday) as apscheduler 3 reads it (numbers there start
    at Monday = 0, so "1-5" would be Tuesday..Saturday): numbers become the names of the days they mean."""
    if field == "*" or any(c.isalpha() for c in field):
        return field
    days: set[int] = set()
    for item in field.split(","):
        span, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if span == "*":
            first, last = 0, 6
        else:
            low, _, high = span.partition("-")
            first, last = int(low), int(high) if high else int(low)
        if not (0 <= first <= 7 and 0 <= last <= 7 and first <= last and step >= 1):
            raise ValueError(f"weekday {item!r} is not 0..7 (0 and 7: Sunday)")
        days.update(d % 7 for d in range(first, last + 1, step))
    return ",".join(_DAYS[d] for d in sorted(days))


def _cron(line: str, zone: tzinfo) -> CronTrigger:
    fields = line.split()
    if len(fields) != 5:
        raise ValueError(f"cron {line!r} needs 5 fields (minute hour day month weekday), has {len(fields)}")
    minute, hour, day, month, weekday = fields
    try:
        return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=crontab_weekdays(weekday),
                           timezone=zone)
    except ValueError as exc:  # apscheduler names the value, not the line: "Error validating expression '25'"
        raise ValueError(f"cron {line!r} (minute hour day month weekday): {exc}") from None


def _zone(name: Any) -> tzinfo:
    if not isinstance(name, str):
        raise ValueError(f"timezone must be an IANA name like Europe/Berlin, not {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {name!r}") from None


def _value(v: Any) -> float | bool | None:
    if isinstance(v, bool):
        return v
    if isinstance(v, int | float) and math.isfinite(v):
        return float(v)
    return None


def parse_entry(raw: Any, writable: Writable) -> tuple[ScheduleEntry | None, list[str]]:
    """A schedule entry from the site or a method call, with every problem (an entry only when none)."""
    if not isinstance(raw, Mapping):
        return None, [f"a schedule entry must be a mapping, not {type(raw).__name__}"]
    name = raw.get("name")
    where = f"schedule entry {name!r}" if isinstance(name, str) and name else "schedule entry"
    problems = [f"{where}: unknown key '{k}' (known: {', '.join(sorted(ENTRY_KEYS))})" for k in raw
                if k not in ENTRY_KEYS]
    if not isinstance(name, str) or not name:
        problems.append(f"{where}: needs a name")
    trigger: BaseTrigger | None = None
    try:
        zone = _zone(raw.get("timezone", "UTC"))
        if ("cron" in raw) == ("at" in raw):
            problems.append(f"{where}: needs either cron (a crontab line) or at (a time), not both or neither")
        elif "cron" in raw:
            if not isinstance(raw["cron"], str):
                raise ValueError(f"cron must be a crontab line, not {raw['cron']!r}")
            trigger = _cron(raw["cron"], zone)
        else:
            at = raw["at"]
            if not isinstance(at, str):  # YAML reads an unquoted time as a datetime, which JSON cannot keep
                raise ValueError(f"at must be a quoted ISO 8601 time like \"2026-12-01T08:00:00Z\", not {at!r}")
            when = datetime.fromisoformat(at)
            trigger = DateTrigger(when if when.tzinfo is not None else when.replace(tzinfo=zone))
    except (ValueError, TypeError) as exc:
        problems.append(f"{where}: {exc}")
    modes = load_modes()
    mode = raw.get("mode")
    if mode is not None and mode not in modes:
        problems.append(f"{where}: unknown mode {mode!r} (known: {', '.join(sorted(modes))})")
    parameters: dict[str, dict[str, float]] = {}
    given = raw.get("parameters") or {}
    if not isinstance(given, Mapping):
        problems.append(f"{where}: parameters must map modes to {{parameter: value}}")
        given = {}
    for mode_name, params in given.items():
        cls = modes.get(mode_name)
        if cls is None or not isinstance(params, Mapping):
            problems.append(f"{where}: parameters: {mode_name!r} is no mode with parameters {{name: value}}")
            continue
        declared = {p.name: p for p in cls.PARAMETERS}
        for pname, value in params.items():
            p, v = declared.get(pname), _value(value)
            if p is None:
                problems.append(f"{where}: {mode_name} has no parameter {pname!r} (has: {', '.join(declared)})")
            elif v is None or isinstance(v, bool) or not p.low <= v <= p.high:
                problems.append(f"{where}: {mode_name}.{pname} must be a number in {p.low:g}..{p.high:g}, "
                                f"got {value!r}")
            else:
                parameters.setdefault(str(mode_name), {})[str(pname)] = v
    sets: dict[str, float | bool] = {}
    given_set = raw.get("set") or {}
    if not isinstance(given_set, Mapping):
        problems.append(f"{where}: set must map site variables to values")
        given_set = {}
    for var, value in given_set.items():
        found, v = writable(str(var)), _value(value)
        if found is None:
            problems.append(f"{where}: set: {var} is no variable of the site")
        elif not found:
            problems.append(f"{where}: set: {var} is not writable")
        elif v is None:
            problems.append(f"{where}: set: {var} must be a number or true/false, got {value!r}")
        else:
            sets[str(var)] = v
    if mode is None and not raw.get("parameters") and not raw.get("set"):
        problems.append(f"{where}: does nothing (give mode, parameters or set)")
    if problems or trigger is None:
        return None, problems
    return ScheduleEntry(str(name), trigger, dict(raw), mode, parameters, sets), []
