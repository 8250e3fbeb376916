"""The series writer against real servers on loopback: VictoriaMetrics (v2 writes) and InfluxDB 1.x.

Values go through the real change feed of an asyncua address space; the writer's queue is a real
SQLite file; faults are real: the server process stopped and restarted, a proxy answering 500 or
429, a database refusing a point.
"""

from __future__ import annotations

import asyncio
import io
import math
import os
import signal
import sys
import threading
import time
from array import array
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asyncua import Server, ua
from influx_servers import FaultProxy, InfluxDB1, VictoriaMetrics

from gateway.alarms.service import AlarmService
from gateway.events.service import EventService
from gateway.influx import frames
from gateway.influx.config import InfluxConfig, config_from_dict
from gateway.influx.dashboards.queries import alarm_query
from gateway.influx.diskqueue import Batch, DiskQueue
from gateway.influx.series import SeriesCatalog
from gateway.influx.spooler import QueueWriter
from gateway.influx.writer import SeriesWriter
from gateway.methods import MethodRegistry
from gateway.nodeset.yaml_build import compile_text
from gateway.site import load_site
from gateway.values.aspace_io import StoredDataValue
from gateway.values.feed import ChangeFeed

pytestmark = pytest.mark.integration
T0 = datetime(2026, 1, 1, tzinfo=UTC)
T0_NS = int(T0.timestamp()) * 1_000_000_000
ALARM_SITE = Path(__file__).resolve().parents[1] / "fixtures" / "alarm_site.yaml"


def recent() -> datetime:
    """A start time inside InfluxDB's retention policies (which refuse older points)."""
    return datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)


OUTAGE_S = float(os.environ.get("INFLUX_OUTAGE_S", "8"))  # the 60 s variant: INFLUX_OUTAGE_S=60


class Plant:
    """An address space with a few variables under one object, stored through a real ChangeFeed."""

    def __init__(self) -> None:
        self.server = Server()
        self.nodes: list[ua.NodeId] = []
        self.feed: ChangeFeed | None = None

    async def build(self, n_vars: int, kinds: list[str] | None = None) -> ChangeFeed:
        await self.server.init()
        idx = await self.server.register_namespace("urn:test:plant")
        dev = await self.server.nodes.objects.add_object(ua.NodeId("Pump1", idx), "Pump1")
        for i in range(n_vars):
            kind = (kinds or ["Double"])[i % len(kinds or ["Double"])]
            initial = {"Double": 0.0, "String": "", "Boolean": False}[kind]
            node = await dev.add_variable(ua.NodeId(f"Pump1.V{i}", idx), f"V{i}", initial,
                                          getattr(ua.VariantType, kind))
            self.nodes.append(node.nodeid)
        self.feed = ChangeFeed(self.server.iserver.aspace)
        return self.feed

    async def store(self, i: int, value: object, t: datetime, vt: ua.VariantType = ua.VariantType.Double,
                    status: int = 0) -> None:
        assert self.feed is not None
        await self.feed.store(self.nodes[i], StoredDataValue(ua.Variant(value, vt), StatusCode=ua.StatusCode(status),
                                                             SourceTimestamp=t, ServerTimestamp=t))


def writer_config(server: dict, version: int = 2, **extra: object) -> InfluxConfig:
    raw = {"server": server, "site": "TestSite", "batch": {"size": 1000, "flush_interval": "100ms"},
           "backoff": {"initial": "200ms", "max": "2s"}, **extra}
    if version == 2:
        raw["server"] = {"version": 2, "org": "plant", "token_env": "TEST_TOKEN", **server}
        raw.setdefault("targets", {"HighSpeed": {"bucket": "hs"}, "MediumSpeed": {"bucket": "ms"},
                                   "LowSpeed": {"bucket": "ls"}})
    else:
        raw["server"] = {"version": 1, "database": "site", **server}
        raw.setdefault("targets", {"HighSpeed": {"retention_policy": "hs"}, "LowSpeed": {"retention_policy": "ls"}})
    return config_from_dict(raw, "test.yaml", {"TEST_TOKEN": "secret"})


async def make_writer(tmp_path: Path, feed: ChangeFeed, server: dict, version: int = 2,
                      events: EventService | None = None, **extra: object) -> SeriesWriter:
    config = writer_config(server, version, **extra)
    catalog = SeriesCatalog(config, config.site, feed.aspace, None, set())
    writer = SeriesWriter(config, catalog, tmp_path / "queue.sqlite3")
    await writer.start(feed, events)
    return writer


async def until(condition: Callable[[], object], within_s: float, every_s: float = 0.05) -> None:
    """Poll `condition` until it holds or `within_s` passed (the caller asserts what it needs)."""
    deadline = time.monotonic() + within_s
    for _ in range(int(within_s / every_s) + 1):
        if condition() or time.monotonic() > deadline:
            return
        await asyncio.sleep(every_s)


async def drained(writer: SeriesWriter, within_s: float) -> None:
    await until(lambda: not writer.depth, within_s, 0.1)
    assert writer.depth == 0, f"{writer.depth} points still queued after {within_s} s ({writer.last_error})"


@pytest.fixture
async def plant() -> AsyncIterator[Plant]:
    p = Plant()
    yield p


@pytest.fixture
def victoria(tmp_path: Path):  # type: ignore[no-untyped-def]
    if not VictoriaMetrics.available():
        pytest.skip("victoria-metrics is not installed (tests/run.sh installs it)")
    vm = VictoriaMetrics(tmp_path / "vm")
    vm.start()
    yield vm
    vm.stop()


@pytest.fixture
def influxdb1(tmp_path: Path):  # type: ignore[no-untyped-def]
    if not InfluxDB1.available():
        pytest.skip("influxd (InfluxDB 1.x) is not installed (tests/run.sh installs it)")
    db = InfluxDB1(tmp_path / "influxdb")
    db.start()
    db.create("site", {"hs": "1d", "ls": "28d"})
    yield db
    db.stop()


def samples(vm: VictoriaMetrics, variable: str) -> tuple[list[float], list[int]]:
    series = vm.export(f'{{__name__="Pump1_value",variable="{variable}"}}')
    assert len(series) <= 1, series
    if not series:
        return [], []
    return series[0]["values"], series[0]["timestamps"]


async def test_points_reach_victoriametrics_with_schema(tmp_path: Path, plant: Plant, victoria: VictoriaMetrics
                                                        ) -> None:
    feed = await plant.build(2)
    writer = await make_writer(tmp_path, feed, {"url": victoria.url})
    try:
        for k in range(50):
            await plant.store(0, float(k) + 0.5, T0 + timedelta(milliseconds=k))
        await plant.store(1, 7.0, T0, status=ua.StatusCodes.BadSensorFailure)
        await drained(writer, 20)
    finally:
        await writer.stop(2.0)
    series = victoria.export('{__name__=~"Pump1_.*"}')
    by_name = {(s["metric"]["__name__"], s["metric"]["variable"]): s for s in series}
    v0 = by_name[("Pump1_value", "V0")]
    assert v0["metric"] == {"__name__": "Pump1_value", "site": "TestSite", "device": "Pump1", "variable": "V0",
                            "scan_class": "LowSpeed"}
    assert v0["values"] == [k + 0.5 for k in range(50)]
    assert v0["timestamps"] == [int(T0.timestamp() * 1000) + k for k in range(50)]
    assert by_name[("Pump1_quality", "V1")]["values"] == [ua.StatusCodes.BadSensorFailure]
    assert writer.stats.sent == 51 and writer.dropped == 0


async def test_outage_under_1000_points_per_second_loses_nothing(tmp_path: Path, plant: Plant,
                                                                 victoria: VictoriaMetrics) -> None:
    """The server is stopped for OUTAGE_S (60 s in the long variant) while 1,000 points/s arrive (10 series
    x 100/s); after the restart every point is there exactly once, in order, and the queue is empty."""
    feed = await plant.build(10)
    writer = await make_writer(tmp_path, feed, {"url": victoria.url})
    rate, produced = 1000, 0
    start = time.monotonic()

    async def produce(until: float) -> None:
        nonlocal produced
        while time.monotonic() < until:
            due = int((time.monotonic() - start) * rate)
            while produced < due:
                k = produced
                await plant.store(k % 10, float(k // 10), T0 + timedelta(milliseconds=10 * (k // 10) + k % 10))
                produced += 1
            await asyncio.sleep(0.01)

    try:
        await produce(time.monotonic() + 2)
        victoria.stop()
        await produce(time.monotonic() + OUTAGE_S)
        queued_in_outage = writer.depth
        victoria.start()
        await produce(time.monotonic() + 2)
        await drained(writer, 60)
        state_after = writer.state
    finally:
        await writer.stop(2.0)
    assert queued_in_outage >= rate * (OUTAGE_S - 1) * 0.8
    assert state_after == "Writing"
    n_per_series = produced // 10
    for i in range(10):
        values, timestamps = samples(victoria, f"V{i}")
        expected = n_per_series + (1 if i < produced % 10 else 0)
        assert values == [float(k) for k in range(expected)], f"V{i}: {len(values)} values, expected {expected}"
        assert timestamps == sorted(timestamps)
    assert writer.stats.sent >= produced and writer.dropped == 0
    print(f"outage {OUTAGE_S:.0f} s: {produced} points, {queued_in_outage} queued during the outage, "
          f"{writer.stats.sent} sent (with resends), 0 lost")


@pytest.mark.parametrize("fault", [(500, None), (429, "1"), (503, "1")])
async def test_server_errors_for_a_while_then_everything_arrives(tmp_path: Path, plant: Plant,
                                                                 victoria: VictoriaMetrics,
                                                                 fault: tuple[int, str | None]) -> None:
    proxy = FaultProxy(victoria.port)
    await proxy.start()
    feed = await plant.build(1)
    writer = await make_writer(tmp_path, feed, {"url": proxy.url})
    try:
        proxy.fault = fault
        for k in range(300):
            await plant.store(0, float(k), T0 + timedelta(milliseconds=k))
            if k % 50 == 0:
                await asyncio.sleep(0.1)
        await until(lambda: proxy.faults_answered >= 3, 10)
        state_during = writer.state
        assert proxy.faults_answered >= 3 and writer.depth == 300
        proxy.fault = None
        await drained(writer, 30)
    finally:
        await writer.stop(2.0)
        await proxy.stop()
    assert state_during == ("Refusing" if fault[0] == 500 else "Throttled")
    assert str(fault[0]) in writer.stats.last_error
    assert samples(victoria, "V0")[0] == [float(k) for k in range(300)]
    assert writer.dropped == 0


async def test_retry_after_is_honoured(tmp_path: Path, plant: Plant, victoria: VictoriaMetrics) -> None:
    """429 with Retry-After: 2 -> the next request comes about 2 s later, not after the 200 ms backoff."""
    proxy = FaultProxy(victoria.port)
    await proxy.start()
    feed = await plant.build(1)
    writer = await make_writer(tmp_path, feed, {"url": proxy.url})
    try:
        proxy.fault = (429, "2")
        await plant.store(0, 1.0, T0)
        await until(lambda: proxy.requests >= 1, 10, 0.02)
        first = time.monotonic()
        await asyncio.sleep(1.5)
        assert proxy.requests == 1
        await until(lambda: proxy.requests >= 2, 10, 0.02)
        assert time.monotonic() - first >= 1.9
        proxy.fault = None
        await drained(writer, 10)
    finally:
        await writer.stop(2.0)
        await proxy.stop()


async def test_nan_and_strings_on_influxdb1(tmp_path: Path, plant: Plant, influxdb1: InfluxDB1) -> None:
    """NaN is written as a point with its quality and no value; strings go to `text`; a string InfluxDB
    refuses (here: `text` already holds integers in this measurement) is dropped alone, counted, and
    the rest of its batch is written."""
    t0 = recent()
    feed = await plant.build(3, ["Double", "String", "Double"])
    # Another writer made `text` an integer field of this measurement.
    influxdb1.write("site", "ls", "Pump1,variable=Other text=1i")
    writer = await make_writer(tmp_path, feed, {"url": influxdb1.url}, version=1)
    try:
        await plant.store(0, 1.5, t0)
        await plant.store(0, math.nan, t0 + timedelta(milliseconds=1), status=ua.StatusCodes.BadSensorFailure)
        await plant.store(0, math.inf, t0 + timedelta(milliseconds=2))
        await plant.store(1, 'say "hi"\n', t0, ua.VariantType.String)
        for k in range(20):
            await plant.store(2, float(k), t0 + timedelta(milliseconds=k))
        await drained(writer, 20)
    finally:
        await writer.stop(2.0)
    rows = influxdb1.rows("site", "ls", "Pump1", "WHERE variable != 'Other'")
    v0 = [r for r in rows if r["variable"] == "V0"]
    assert [(r["value"], r["quality"]) for r in v0] == [(1.5, 0), (None, ua.StatusCodes.BadSensorFailure),
                                                        (None, 0)]
    assert [r["value"] for r in rows if r["variable"] == "V2"] == [float(k) for k in range(20)]
    assert not [r for r in rows if r["variable"] == "V1"]
    assert writer.stats.rejected == 1 and writer.dropped == 1
    assert "field type conflict" in writer.stats.last_error


async def test_string_field_on_influxdb1(tmp_path: Path, plant: Plant, influxdb1: InfluxDB1) -> None:
    t0 = recent()
    feed = await plant.build(1, ["String"])
    writer = await make_writer(tmp_path, feed, {"url": influxdb1.url}, version=1)
    long_text = "x" * 70_000
    try:
        await plant.store(0, 'say "hi"\\ \n', t0, ua.VariantType.String)
        await plant.store(0, long_text, t0 + timedelta(milliseconds=1), ua.VariantType.String)
        await plant.store(0, "\ud800lone", t0 + timedelta(milliseconds=2), ua.VariantType.String)
        await drained(writer, 20)
    finally:
        await writer.stop(2.0)
    texts = [r["text"] for r in influxdb1.rows("site", "ls", "Pump1")]
    assert texts[0] == 'say "hi"\\ \n'
    assert texts[1] == long_text[:65535]
    assert texts[2] == "\\ud800lone"
    assert writer.dropped == 0


def _queued_values(queue_file: Path) -> list[float]:
    import sqlite3

    with sqlite3.connect(queue_file) as conn:
        return [float(f.split("value=")[1].split(",")[0]) for (f,) in
                conn.execute("SELECT fields FROM points ORDER BY id")]


async def test_kill_9_mid_batch_and_restart_loses_and_duplicates_nothing(tmp_path: Path, influxdb1: InfluxDB1
                                                                          ) -> None:
    """The producer is killed -9 while a batch the server has written waits for its answer (held back by a
    proxy): what was queued is either in the database or still in the queue file, and after a restart
    every value is in the database exactly once, in order."""
    import subprocess

    proxy = FaultProxy(influxdb1.port)
    proxy.delay_s = 0.4
    await proxy.start()
    script = Path(__file__).with_name("influx_producer.py")
    t0_ns = int(recent().timestamp()) * 10**9
    queue_file = tmp_path / "q" / "queue.sqlite3"

    async def run(start: int, count: int) -> subprocess.Popen:
        proc = await asyncio.to_thread(
            subprocess.Popen, [sys.executable, str(script), str(tmp_path / "q"), proxy.url, str(start), str(count),
                               "1000", str(t0_ns)], stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert proc.stdout is not None
        assert (await asyncio.to_thread(proc.stdout.readline)).startswith("ready ")
        return proc

    def db_values() -> list[float]:
        return [r["value"] for r in influxdb1.rows("site", "ls", "Pump1")]

    proc: subprocess.Popen | None = None
    try:
        proc = await run(0, 100_000)
        await until(lambda: proxy.answered >= 3 and proxy.forwarded > proxy.answered, 30, 0.005)
        assert proxy.forwarded > proxy.answered, "no batch in flight to kill the producer in"
        os.killpg(proc.pid, 9)
        proc.wait(5)
        in_db, in_queue = db_values(), _queued_values(queue_file)
        assert in_db == [float(k) for k in range(len(in_db))], "the database holds a gap or a duplicate"
        # The batch in flight is in both: written by the server, not yet deleted from the queue.
        assert in_queue[0] < len(in_db), "the batch in flight was no longer in the queue"
        assert in_queue == [float(k) for k in range(int(in_queue[0]), int(in_queue[0]) + len(in_queue))]
        last = int(in_queue[-1])
        proxy.delay_s = 0.0
        proc = await run(last + 1, 2000)
        assert proc.stdout is not None
        assert (await asyncio.to_thread(proc.stdout.readline)).startswith("produced")
        await until(lambda: len(db_values()) >= last + 2001, 30, 0.2)
        proc.terminate()
        assert proc.wait(10) == 0
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, 9)
        await proxy.stop()
    assert db_values() == [float(k) for k in range(last + 2001)]
    assert _queued_values(queue_file) == []


async def test_an_alarm_raised_by_a_limit_crossing_arrives_on_influxdb1(tmp_path: Path, influxdb1: InfluxDB1) -> None:
    """The site's limit alarm, evaluated by the alarm service on a value stored through the change feed,
    reaches InfluxDB 1.x through the event service as points of `alarms`: raised, then cleared."""
    site_xml = tmp_path / "alarm-site.xml"
    site_xml.write_bytes(compile_text(ALARM_SITE.read_text(encoding="utf-8"), str(ALARM_SITE)))
    server = Server()
    await server.init()
    site, bindings = await load_site(server, [site_xml])
    ns = site.namespaces["urn:test:alarm-site"]
    feed = ChangeFeed(server.iserver.aspace)
    events = EventService(server.iserver)
    alarms = AlarmService(server.iserver, feed, events, MethodRegistry(server.iserver.aspace))
    alarms.start(bindings.alarms)
    writer = await make_writer(tmp_path, feed, {"url": influxdb1.url}, version=1, events=events)
    temperature = ua.NodeId("Rack1.Temperature", ns)
    condition = alarms.conditions[ua.NodeId("Rack1.TemperatureHigh", ns)]
    try:
        for value in (20.0, 57.5):
            await feed.store(temperature, StoredDataValue(ua.Variant(value, ua.VariantType.Double),
                                                          SourceTimestamp=datetime.now(UTC)))
        await until(lambda: condition.active, 5)
        assert condition.active
        await feed.store(temperature, StoredDataValue(ua.Variant(40.0, ua.VariantType.Double),
                                                      SourceTimestamp=datetime.now(UTC)))
        await until(lambda: not condition.active, 5)
        await drained(writer, 20)
    finally:
        alarms.stop()
        await writer.stop(2.0)
    rows = influxdb1.rows("site", "ls", "alarms")
    assert [(r["active"], r["acked"], r["confirmed"], r["retain"]) for r in rows] == [
        (True, False, False, True), (False, False, False, True)]  # raised; cleared but still to be acknowledged
    raised = rows[0]
    assert raised["message"] == "Rack1 cell temperature 57.5 °C above high limit 55 °C"
    assert raised["severity"] == 700
    assert (raised["site"], raised["source"], raised["condition"], raised["severity_class"]) == (
        "TestSite", "Rack1", "TemperatureHigh", "MediumHigh")
    type_name = (await server.get_node(condition.cfg.type_id).read_browse_name()).Name
    assert raised["type"] == type_name and type_name.endswith("LimitAlarmType")
    assert rows[1]["message"] == "Rack1 cell temperature 40 °C back within limits"
    assert writer.stats.sent == 3 + 2 and writer.dropped == 0  # the three values and the two alarm states
    # The dashboards' alarm annotation (InfluxQL) finds both, with the source and condition as tags.
    for source in (None, "Rack1"):
        query = alarm_query(1, "ls", "TestSite", source).query.replace("$timeFilter", "time > now() - 1h")
        series = influxdb1.query(query, "site")["results"][0]["series"]
        assert [(x["tags"], [v[1] for v in x["values"]]) for x in series] == [
            ({"source": "Rack1", "condition": "TemperatureHigh"}, [raised["message"], rows[1]["message"]])]


def _gone(pid: int) -> bool:
    """The process has exited (a zombie left for a parent that does not reap counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def test_writer_process_killed_is_restarted_and_its_uncommitted_frames_are_sent_again(
        tmp_path: Path, plant: Plant, victoria: VictoriaMetrics) -> None:
    """The writer process is frozen (SIGSTOP) while values keep coming, so the frames sent to it are not
    committed, then killed -9: the gateway shows it Dead, restarts it, sends it those frames again, and
    every value reaches VictoriaMetrics exactly once, in order."""
    feed = await plant.build(2)
    writer = await make_writer(tmp_path, feed, {"url": victoria.url})
    produced = 0

    async def produce(n: int) -> None:
        nonlocal produced
        for _ in range(n):
            k = produced
            await plant.store(k % 2, float(k // 2), T0 + timedelta(milliseconds=k // 2))
            produced += 1
            if produced % 100 == 0:
                await asyncio.sleep(0.02)

    try:
        await produce(1000)
        await until(lambda: writer.stats.sent >= 1000, 20)
        proc = writer._proc
        assert proc is not None and writer.stats.sent >= 1000
        os.kill(proc.pid, signal.SIGSTOP)
        await produce(1000)
        # Frames written to the frozen process, none committed.
        await until(lambda: writer._uncommitted_points >= 1000, 10)
        uncommitted = writer._uncommitted_points
        assert uncommitted == 1000, uncommitted
        os.kill(proc.pid, signal.SIGKILL)
        await until(lambda: writer.state == "Dead", 5, 0.01)
        state_after_kill = writer.state
        await produce(1000)
        await until(lambda: writer.stats.restarts == 1 and writer._proc is not proc and writer.state == "Writing",
                    20)
        assert writer._proc is not proc and writer.stats.restarts == 1
        await drained(writer, 30)
        state_after = writer.state
    finally:
        await writer.stop(2.0)
    assert state_after_kill == "Dead"
    assert state_after == "Writing"
    for i in range(2):
        values, timestamps = samples(victoria, f"V{i}")
        assert values == [float(k) for k in range(produced // 2)], f"V{i}: {len(values)} values"
        assert timestamps == sorted(timestamps)
    assert writer.dropped == 0


async def test_gateway_killed_leaves_the_queue_to_the_next_start(tmp_path: Path, influxdb1: InfluxDB1) -> None:
    """The gateway (a producer process) queues points while the server is unreachable and is killed -9:
    its writer process sees the pipe close, exits within seconds, and leaves every committed point in
    the queue; the next start (a new writer process takes the queue's lock) sends them, and the database
    holds each value once, in order."""
    import subprocess

    script = Path(__file__).with_name("influx_producer.py")
    t0_ns = int(recent().timestamp()) * 10**9
    queue_file = tmp_path / "q" / "queue.sqlite3"

    async def run(url: str, start: int, count: int) -> tuple[subprocess.Popen, int]:
        proc = await asyncio.to_thread(
            subprocess.Popen, [sys.executable, str(script), str(tmp_path / "q"), url, str(start), str(count),
                               "5000", str(t0_ns)], stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert proc.stdout is not None
        ready = (await asyncio.to_thread(proc.stdout.readline)).split()
        assert ready[0] == "ready"
        assert (await asyncio.to_thread(proc.stdout.readline)).startswith("produced")
        return proc, int(ready[1])

    def queued() -> list[float]:
        try:
            return _queued_values(queue_file)
        except Exception:  # not created yet
            return []

    proc: subprocess.Popen | None = None
    try:
        proc, child = await run("http://127.0.0.1:1", 0, 3000)  # nothing listens on port 1
        await until(lambda: len(queued()) >= 3000, 20, 0.1)
        assert queued() == [float(k) for k in range(3000)]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        await until(lambda: _gone(child), 10, 0.05)
        assert _gone(child), "the writer process outlived its gateway"
        assert queued() == [float(k) for k in range(3000)]
        proc, _ = await run(influxdb1.url, 3000, 1000)
        await until(lambda: len(influxdb1.rows("site", "ls", "Pump1")) >= 4000 and not queued(), 30, 0.2)
        proc.terminate()
        assert proc.wait(10) == 0
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, 9)
    assert [r["value"] for r in influxdb1.rows("site", "ls", "Pump1")] == [float(k) for k in range(4000)]
    assert queued() == []


async def test_a_writer_process_waits_for_the_queue_lock_of_the_one_before(tmp_path: Path, plant: Plant) -> None:
    """While another process holds the queue's lock (a writer process still spooling what a killed gateway
    sent it), the new writer process commits nothing; once the lock is free it queues every point."""
    import fcntl

    lock_file = tmp_path / "queue.sqlite3.lock"
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    feed = await plant.build(1)
    writer = await make_writer(tmp_path, feed, {"url": "http://127.0.0.1:1"})  # nothing listens: all stay queued
    try:
        for k in range(100):
            await plant.store(0, float(k), T0 + timedelta(milliseconds=k))
        await until(lambda: writer._uncommitted_points >= 100, 10)
        await asyncio.sleep(1.0)  # the writer process has had time to commit, were it not waiting
        held = (writer.stats.queue_depth, writer._uncommitted_points, writer.depth)
        os.close(fd)  # releases the lock
        await until(lambda: writer.stats.queue_depth == 100, 10)
        assert writer.stats.queue_depth == 100 and writer._uncommitted_points == 0
    finally:
        await writer.stop(1.0)
    assert held == (0, 100, 100)
    assert _queued_values(tmp_path / "queue.sqlite3") == [float(k) for k in range(100)]


class _StopSeen(threading.Event):
    """The stop flag, remembering per thread whether that thread last saw it set."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: dict[int, bool] = {}

    def is_set(self) -> bool:
        self._seen[threading.get_ident()] = result = super().is_set()
        return result

    def seen_by_caller(self) -> bool:
        return self._seen.get(threading.get_ident(), False)


def test_stop_sends_what_the_spooler_committed_after_the_sender_found_the_queue_empty(
        tmp_path: Path, victoria: VictoriaMetrics) -> None:
    """The interleaving that left a gateway's last points queued at a clean stop (seen once in CI): the
    sender reads an empty queue, the spooler then commits the last frame and ends, and the sender, seeing
    the spooler gone, must still send what it committed. The test forces that order."""
    queue = DiskQueue(tmp_path / "queue.sqlite3")
    queue.open()
    writer = QueueWriter(writer_config({"url": victoria.url}), queue)
    writer._stopping = stopping = _StopSeen()
    sender_read_empty = threading.Event()
    read_head, append = queue.head_batches, queue.append_ids

    def head_batches(limit: int) -> list[Batch] | None:
        batches = read_head(limit)
        if stopping.seen_by_caller() and not batches and not sender_read_empty.is_set():
            sender_read_empty.set()
            assert writer._spooler is not None
            writer._spooler.join(10)  # the spooler commits and ends right after this read
        return batches

    def append_ids(rows: list[tuple[int, int, str]], now_ns: int | None = None) -> int:
        sender_read_empty.wait(10)
        return append(rows, now_ns)

    queue.head_batches = head_batches  # type: ignore[method-assign]
    queue.append_ids = append_ids  # type: ignore[method-assign]
    writer.start()
    message = frames.data_message(
        1, array("I", [0, 0]), array("I", [0, 0]), array("q", [T0_NS, T0_NS + 1_000_000]), array("d", [1.5, 2.5]),
        [(0, "ls", "Pump1,device=Pump1,variable=V0")], {}, [])
    _, payload = next(frames.read_messages(io.BytesIO(message).read))
    writer.take(frames.parse_data(payload))
    writer.stop(5.0)
    assert sender_read_empty.is_set()
    assert queue.depth == 0
    assert [s["values"] for s in victoria.export('{__name__="Pump1_value"}')] == [[1.5, 2.5]]
