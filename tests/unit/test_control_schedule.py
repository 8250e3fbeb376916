"""The control schedule on a steppable clock: time-of-use windows switching the tariff, modes and mode
parameters through the real write path of a loaded site; restoring the present window at start; one-shot
entries; edits checked, refused with every problem named, kept under the data dir and reloaded."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio
from asyncua import Server, ua

from gateway.clock import SteppableClock
from gateway.control.engine import ControlEngine
from gateway.control.schedule.entries import crontab_weekdays
from gateway.control.schedule.service import ScheduleError, ScheduleService
from gateway.control.site import read_control, site_variables
from gateway.events.audit import Writer
from gateway.nodeset.loader import LoadedSite
from gateway.nodeset.model import NodesetError
from gateway.nodeset.yaml_build import compile_text
from gateway.nodesets import GATEWAY_NAMESPACE
from gateway.security.roles import Role
from gateway.site import load_site
from gateway.values.aspace_io import read_value
from gateway.values.tags import TagTable
from gateway.values.writepath import WritePath

SITE = """
site: {namespace: "urn:test:control-schedule", name: TouSite}
variables:
  - {name: BatterySetpoint, datatype: Double, unit: kW, range: [-100, 100], writable: true, initial: 0.0}
  - {name: TariffPrice, datatype: Double, range: [-10, 10], writable: true, initial: 0.2}
  - {name: GridPower, datatype: Double, unit: kW, initial: 0.0}
control:
  mode: Passive
  setpoints:
    battery_power: {node: BatterySetpoint, safe: 0}
  signals: {price: TariffPrice, grid_power: GridPower}
  schedule:
    - {name: day-tariff, cron: "0 7 * * *", set: {TariffPrice: 0.32}, mode: CostSaving}
    - {name: night-tariff, cron: "0 22 * * *", set: {TariffPrice: 0.08}}
    - {name: evening-peak, cron: "0 17 * * 1-5", mode: PeakShaving, parameters: {PeakShaving: {import_limit: 60}}}
"""
OPERATOR = Writer("op1", Role.operator)
VIEWER = Writer("viewer1", Role.viewer)
MONDAY = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday


class Site:
    def __init__(self, server: Server, engine: ControlEngine, path: WritePath, clock: SteppableClock, ns: int,
                 store: Path) -> None:
        self.server, self.engine, self.path, self.clock, self.ns, self.store = server, engine, path, clock, ns, store

    def value(self, name: str) -> object:
        return read_value(self.server.iserver.aspace, ua.NodeId(name, self.ns)).Value.Value

    def service(self, entries: list | None = None) -> ScheduleService:
        lookup, to_node = site_variables(self.server.iserver.aspace, self.ns)

        def writable(name: str) -> bool | None:
            found = lookup(name)
            return None if found is None else found[0]

        def node_of(name: str) -> tuple[ua.NodeId, ua.VariantType] | None:
            found = lookup(name)
            return None if found is None else (to_node(name), found[1])

        return ScheduleService(list(self.engine.config.schedule) if entries is None else entries, self.path.write,
                               self.engine.go_to_mode, writable, node_of,
                               lambda mode, p: self.engine.config.mode_parameters.get(mode, {}).get(p), self.store,
                               self.clock)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def loaded(tmp_path_factory) -> tuple[Server, LoadedSite]:
    """One loaded site for the module (a server's start-up costs seconds); each test has its own engine, clock,
    write path and data dir, and every test sets what it asserts."""
    site_xml = tmp_path_factory.mktemp("schedule") / "site.xml"
    site_xml.write_bytes(compile_text(SITE, "site.yaml"))
    server = Server()
    await server.init()
    site, _bindings = await load_site(server, [site_xml])
    return server, site


async def make_site(loaded: tuple[Server, LoadedSite], tmp_path: Path, start: datetime) -> Site:
    server, site = loaded
    clock = SteppableClock(start)
    aspace = server.iserver.aspace
    path = WritePath(aspace, TagTable(aspace, None, clock), {}, None, clock)
    control_id, config, problems = read_control(aspace, site.new_nodes, site.namespaces[GATEWAY_NAMESPACE])
    assert control_id is not None and config is not None and not problems, problems
    ns = control_id.NamespaceIndex
    return Site(server, ControlEngine(config, path.write, clock), path, clock, ns, tmp_path / "data" / "schedule.json")


async def until(predicate: Callable[[], bool], within_s: float = 2.0) -> None:
    async with asyncio.timeout(within_s):
        while not predicate():  # noqa: ASYNC110 - the service's task runs when this one yields
            await asyncio.sleep(0.001)


@pytest.mark.asyncio(loop_scope="module")
async def test_time_of_use_windows_switch_tariff_mode_and_parameters_as_the_clock_steps(loaded, tmp_path) -> None:
    site = await make_site(loaded, tmp_path, MONDAY.replace(hour=6))
    schedule = site.service()
    await schedule.start()
    try:
        # 06:00 Monday: each entry's latest firing is restored, oldest first: Friday's evening peak (its limit),
        # Sunday's day tariff (its mode), Sunday's night tariff (the price in force).
        assert site.value("TariffPrice") == pytest.approx(0.08) and site.engine.mode == "CostSaving"
        assert site.value("TouSite.Control.Modes.PeakShaving.import_limit") == pytest.approx(60.0)
        assert schedule.fired == 3
        site.engine.go_to_mode("Passive", OPERATOR)
        # One hour at a time through the day: (hour reached, price, mode, PeakShaving's import_limit).
        expected = {6: (0.08, "Passive", 60.0), 7: (0.32, "CostSaving", 60.0), 8: (0.32, "CostSaving", 60.0),
                    17: (0.32, "PeakShaving", 60.0),
                    21: (0.32, "PeakShaving", 60.0), 22: (0.08, "PeakShaving", 60.0), 23: (0.08, "PeakShaving", 60.0)}
        fired = schedule.fired
        for hour in range(6, 24):
            site.clock.step(3600.0 if hour > 6 else 0.0)
            if hour in (7, 17, 22):
                fired += 1
                await until(lambda n=fired: schedule.fired == n)
            else:
                await asyncio.sleep(0.01)  # nothing due: nothing may fire
                assert schedule.fired == fired, f"{hour}:00 fired an entry"
            if hour in expected:
                price, mode, limit = expected[hour]
                got = (site.value("TariffPrice"), site.engine.mode,
                       site.value("TouSite.Control.Modes.PeakShaving.import_limit"))
                assert got == (pytest.approx(price), mode, pytest.approx(limit)), f"{hour}:00 -> {got}"
        # Saturday: no evening peak on a weekend (cron weekday 1-5); a whole day in one step fires each once.
        site.clock.step(4 * 86400.0 + 3600.0)  # Saturday 00:00 (missed firings coalesce into one each)
        await until(lambda: schedule.fired == fired + 3)
        entries = {e["name"]: e["next"] for e in schedule.listing()}
        assert entries["evening-peak"] == "2026-01-12T17:00:00+00:00"  # next Monday
        assert entries["day-tariff"] == "2026-01-10T07:00:00+00:00"
    finally:
        await schedule.stop()


@pytest.mark.asyncio(loop_scope="module")
async def test_start_restores_the_present_window_and_an_overdue_one_shot_fires_once(loaded, tmp_path) -> None:
    site = await make_site(loaded, tmp_path, MONDAY.replace(hour=18, minute=30))
    schedule = site.service()
    schedule.put({"name": "commissioning", "at": "2026-01-05T18:00:00Z", "mode": "Passive"}, OPERATOR)
    await schedule.saved()
    # The kept list (the site's three and the one-shot) replaces the site's at the next start.
    restarted = site.service(entries=[])
    await restarted.start()
    try:
        # 18:30: Sunday's night tariff, the day tariff (07:00), the evening peak (17:00) restored, oldest first;
        # the overdue one-shot fires after them.
        assert site.value("TariffPrice") == pytest.approx(0.32)
        assert site.value("TouSite.Control.Modes.PeakShaving.import_limit") == pytest.approx(60.0)
        await until(lambda: "commissioning" not in restarted.entries)
        assert site.engine.mode == "Passive" and restarted.fired == 4  # 3 restored + the one-shot, once
        await until(lambda: "commissioning" not in json.loads(site.store.read_text())[0]["name"])
        site.clock.step(600.0)
        await asyncio.sleep(0.01)
        assert restarted.fired == 4
    finally:
        await restarted.stop()


@pytest.mark.asyncio(loop_scope="module")
async def test_edits_are_checked_refused_with_every_problem_and_kept(loaded, tmp_path) -> None:
    site = await make_site(loaded, tmp_path, MONDAY.replace(hour=12))
    schedule = site.service()
    await schedule.start()
    try:
        with pytest.raises(ScheduleError) as err:
            schedule.put({"name": "bad", "cron": "0 25 * * *", "set": {"GridPower": 1, "NoSuchVariable": 2},
                          "parameters": {"PeakShaving": {"import_limit": -5, "nope": 1}}, "extra": 1}, OPERATOR)
        text = str(err.value)
        for problem in ("unknown key 'extra'", "cron '0 25 * * *' (minute hour day month weekday)",
                        "GridPower is not writable",
                        "NoSuchVariable is no variable of the site", "PeakShaving.import_limit must be a number in 0..",
                        "PeakShaving has no parameter 'nope'"):
            assert problem in text, text
        with pytest.raises(ScheduleError, match="either cron"):
            schedule.put({"name": "both", "cron": "* * * * *", "at": "2026-01-01T00:00:00Z", "mode": "Passive"},
                         OPERATOR)
        with pytest.raises(ScheduleError, match="does nothing"):
            schedule.put({"name": "idle", "cron": "* * * * *"}, OPERATOR)
        with pytest.raises(PermissionError):
            schedule.put({"name": "x", "cron": "* * * * *", "mode": "Passive"}, VIEWER)
        assert sorted(schedule.entries) == ["day-tariff", "evening-peak", "night-tariff"]  # nothing half-applied
        schedule.put({"name": "night-tariff", "cron": "30 23 * * *", "timezone": "Europe/Stockholm",
                      "set": {"TariffPrice": 0.05}}, OPERATOR)  # replaced by name
        schedule.remove("day-tariff", OPERATOR)
        with pytest.raises(ScheduleError, match="no schedule entry"):
            schedule.remove("day-tariff", OPERATOR)
        await schedule.saved()
        kept = json.loads(site.store.read_text(encoding="utf-8"))
        assert [e["name"] for e in kept] == ["evening-peak", "night-tariff"]
        # 23:30 in Stockholm is 22:30 UTC in winter.
        assert {e["name"]: e["next"] for e in schedule.listing()}["night-tariff"] == "2026-01-05T23:30:00+01:00"
        site.clock.step(10.5 * 3600)
        await until(lambda: site.value("TariffPrice") == pytest.approx(0.05))
    finally:
        await schedule.stop()
    site.store.write_text('[{"name": "broken", "cron": "nonsense", "mode": "Passive"}]', encoding="utf-8")
    again = site.service()
    await again.start()  # a kept list with a bad entry is not used at all: the site's schedule is
    await again.stop()
    assert sorted(again.entries) == ["day-tariff", "evening-peak", "night-tariff"]


@pytest.mark.parametrize(("entry", "problem"), [
    ('{name: x, cron: "61 * * * *", mode: Passive}', "schedule entry 'x'"),
    ("{name: x, at: 2026-12-01T08:00:00Z, mode: Passive}", "at must be a quoted ISO 8601 time"),
    ('{name: x, cron: "0 7 * * *", mode: NoSuchMode}', "unknown mode 'NoSuchMode'"),
    ('{name: x, cron: "0 7 * * *", set: {GridPower: 1}}', "GridPower is not writable"),
    ('{name: x, cron: "0 7 * * *", timezone: Mars/Olympus, mode: Passive}', "unknown timezone"),
    ('{name: day-tariff, cron: "0 8 * * *", mode: Passive}', "the name is used twice"),
])
def test_the_site_build_refuses_a_bad_schedule_entry(entry: str, problem: str) -> None:
    text = SITE.replace("  schedule:\n", f"  schedule:\n    - {entry}\n")
    with pytest.raises(NodesetError) as err:
        compile_text(text, "site.yaml")
    assert any(problem in str(p) for p in err.value.problems), err.value.problems


@pytest.mark.parametrize(("field", "days"), [
    ("1-5", "mon,tue,wed,thu,fri"), ("0", "sun"), ("7", "sun"), ("6,0", "sun,sat"), ("*/2", "sun,tue,thu,sat"),
    ("*", "*"), ("mon-fri", "mon-fri"),
])
def test_crontab_weekdays_mean_what_cron_means(field: str, days: str) -> None:
    assert crontab_weekdays(field) == days
    with pytest.raises(ValueError, match=r"0\.\.7"):
        crontab_weekdays("8")
