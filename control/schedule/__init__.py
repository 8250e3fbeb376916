"""Schedules: cron and one-shot entries that switch modes, set mode parameters and write site variables.

Entries come from the site (`schedule:` in the `control:` section), are edited through methods and kept
under the data dir. apscheduler's triggers say when each entry fires (crontab syntax, time zones, DST);
the entries fire on the gateway's clock (control/schedule/service.py), so a test steps time instead of
waiting for it.
"""

from gateway.control.schedule.entries import ScheduleEntry, parse_entry

__all__ = ["ScheduleEntry", "parse_entry"]
