"""The driver interface: declared options (parsed, checked, documented), push delivery through the device
runner, and the worker thread that keeps blocking libraries off the event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from asyncua import ua

from gateway.bindings import BoundVariable, DeviceConfig
from gateway.clock import SteppableClock
from gateway.drivers import reference
from gateway.drivers.base import Binding, Driver, DriverError, Point, PushSink, Reading
from gateway.drivers.modbus import address as modbus_address
from gateway.drivers.options import Option, parse_point_options, parse_query
from gateway.drivers.registry import driver_for
from gateway.drivers.worker import BlockingWorker
from gateway.nodeset.model import NodesetError
from gateway.nodeset.yaml_build import compile_text
from gateway.values.runners import DeviceRunner
from gateway.values.tags import TagTable

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "bindings.md"


# -- declared options -------------------------------------------------------------------------
def test_docs_tables_are_what_the_drivers_declare() -> None:
    assert reference.problems(DOCS.read_text(encoding="utf-8")) == []


def test_a_changed_declaration_makes_the_docs_check_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    sim = driver_for("sim")
    assert sim is not None
    monkeypatch.setattr(sim, "connection_options", (*sim.connection_options, Option("jitter_ms", "number", "x")))
    found = reference.problems(DOCS.read_text(encoding="utf-8"))
    assert any("differ from the drivers' declarations" in p for p in found)


def test_modbus_declares_exactly_the_options_its_parser_takes() -> None:
    declared = driver_for("modbus+tcp").connection_options  # type: ignore[union-attr]
    assert [o.key for o in declared] == list(modbus_address._QUERY_OPTIONS)
    serial = {"baud", "parity", "stopbits", "bytesize"}
    for o in declared:  # every declared default is accepted by the parser, and is its default
        scheme = "modbus+rtu:///dev/ttyS0/1" if o.key in serial else "modbus+tcp://h/1"
        parsed = modbus_address.parse_connection(f"{scheme}?{o.key}={o.default}")
        assert str(getattr(parsed, o.key)).lower() == str(o.default).lower()
        assert getattr(parsed, o.key) == getattr(modbus_address.parse_connection(scheme), o.key)


@pytest.mark.parametrize(("raw", "expected"), [
    ({"ByteOrder": "LITTLE", "Bit": 3.0}, {"byte_order": "little", "bit": 3}),
    ({"Length": 8, "WordOrder": ""}, {"length": 8}),
])
def test_point_options_parse_as_declared(raw: dict[str, Any], expected: dict[str, Any]) -> None:
    assert parse_point_options(driver_for("modbus+tcp").point_options, raw) == expected  # type: ignore[union-attr]


@pytest.mark.parametrize(("raw", "message"), [
    ({"ByteOrder": "middle"}, "ByteOrder must be big or little, not 'middle'"),
    ({"Bit": 64}, "Bit must be in 0..63, not 64"),
    ({"Bit": 2.5}, "Bit must be a whole number, not 2.5"),
    ({"Length": 0}, "Length must be in 1..65535, not 0"),
])
def test_bad_point_options_are_named(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)") + "$"):
        parse_point_options(driver_for("modbus+tcp").point_options, raw)  # type: ignore[union-attr]


def test_connection_query_is_checked_against_the_declaration() -> None:
    options = (Option("bitrate", "int", "", default=500000, low=1), Option("fd", "bool", "", default=False))
    assert parse_query(urlsplit("x://a/b?fd=true"), options, "CAN") == {"bitrate": 500000, "fd": True}
    with pytest.raises(ValueError, match="unknown CAN option 'bitrat' \\(known: bitrate, fd\\)"):
        parse_query(urlsplit("x://a/b?bitrat=1"), options, "CAN")
    with pytest.raises(ValueError, match="option bitrate='0' must be >= 1, not 0"):
        parse_query(urlsplit("x://a/b?bitrate=0"), options, "CAN")
    with pytest.raises(ValueError, match="given twice"):
        parse_query(urlsplit("x://a/b?fd=1&fd=0"), options, "CAN")


_SITE = """site: {{namespace: "urn:test:opts", name: Site}}
devices:
  - name: Dev
    connection: {connection}
    variables:
      - {{name: V, datatype: {datatype}, address: "{address}", {extra}}}
"""


def test_yaml_writes_a_drivers_options_as_properties_of_their_declared_type() -> None:
    xml = compile_text(_SITE.format(connection="modbus+tcp://h/1", datatype="Boolean", address="holding/0",
                                    extra="bit: 5, byte_order: little"), "site.yaml").decode()
    assert 'BrowseName="2:Bit" ParentNodeId="ns=1;s=Dev.V" DataType="i=3"' in xml
    assert ">5</Byte>" in xml
    assert 'BrowseName="2:ByteOrder"' in xml and ">little</String>" in xml


def test_yaml_refuses_an_option_of_another_driver_naming_the_key() -> None:
    with pytest.raises(NodesetError) as err:
        compile_text(_SITE.format(connection="sim://a", datatype="Double", address="constant", extra="bit: 3"),
                     "site.yaml")
    assert any(p.line == 6 and "unknown key 'bit'" in p.message for p in err.value.problems)


def test_yaml_checks_an_option_by_its_declaration() -> None:
    with pytest.raises(NodesetError) as err:
        compile_text(_SITE.format(connection="modbus+tcp://h/1", datatype="Int16", address="holding/0",
                                  extra="bit: 64"), "site.yaml")
    assert [p.message for p in err.value.problems] == ["bit must be in 0..63, not 64"]


# -- push delivery ----------------------------------------------------------------------------
class _AddressSpaceStub(dict):
    def __missing__(self, nodeid: ua.NodeId) -> Any:
        from asyncua.server.address_space import AttributeValue, NodeData

        nd = NodeData(nodeid)
        nd.attributes[ua.AttributeIds.Value] = AttributeValue(ua.DataValue())
        self[nodeid] = nd
        return nd


class FeedDriver(Driver):
    """Pushes what the test puts in `feed`; a `DriverError` put there fails the link."""

    polls, pushes = False, True
    runs = 0

    async def start(self) -> None:
        self.feed: asyncio.Queue[Any] = asyncio.Queue()

    async def run(self, sink: PushSink) -> None:
        type(self).runs += 1
        while True:
            item = await self.feed.get()
            if isinstance(item, Exception):
                raise item
            if isinstance(item, str):
                await sink.lost(item)
                continue
            self.requests += 1
            await sink.deliver(item)

    async def write(self, point: Point, value: Any) -> Any:
        return value


def _push_runner(clock: SteppableClock) -> DeviceRunner:
    variables = [BoundVariable(nodeid=ua.NodeId(f"v{i}", 1), name=f"v{i}", binding=Binding(f"a{i}"),
                               field_type="xsd:double", vtype=ua.VariantType.Double, writable=True,
                               historizing=False) for i in range(2)]
    cfg = DeviceConfig(ua.NodeId("Dev", 1), "Dev", "feed://x", urlsplit("feed://x"), FeedDriver, variables)
    return DeviceRunner(cfg, TagTable(_AddressSpaceStub(), clock=clock), {"MediumSpeed": 1000.0}, None,  # type: ignore[arg-type]
                        clock)


async def _settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_pushed_readings_take_the_value_path_and_a_failed_link_is_retried_with_backoff() -> None:
    clock = SteppableClock()
    runner = _push_runner(clock)
    FeedDriver.runs = 0
    await runner.start()
    tags = [runner.tag_of[k] for k in (0, 1)]
    assert [t.status for t in tags] == [ua.StatusCodes.BadWaitingForInitialData] * 2
    feed = runner.driver.feed  # type: ignore[attr-defined]
    feed.put_nowait({0: Reading(1.5), 1: Reading(2.0)})
    await _settle()
    assert [(t.value, t.status) for t in tags] == [(1.5, ua.StatusCodes.Good), (2.0, ua.StatusCodes.Good)]
    assert runner.health.state == "Connected"

    feed.put_nowait({1: Reading(None, ua.StatusCodes.BadCommunicationError)})  # one message went stale
    await _settle()
    assert [(t.value, t.status) for t in tags] == [(1.5, ua.StatusCodes.Good),
                                                   (2.0, ua.StatusCodes.BadCommunicationError)]

    feed.put_nowait("no frame for 3 s")
    await _settle()
    assert (runner.health.state, runner.health.last_error) == ("Disconnected", "no frame for 3 s")

    feed.put_nowait(DriverError("bus down"))
    await _settle()
    assert all(t.status == ua.StatusCodes.BadCommunicationError and t.value is not None for t in tags)
    assert runner.health.last_error == "bus down" and FeedDriver.runs == 1
    clock.step(0.9)
    await _settle()
    assert FeedDriver.runs == 1, "retried before the backoff (the scan period) passed"
    clock.step(0.2)
    await _settle()
    assert FeedDriver.runs == 2
    feed.put_nowait(DriverError("bus down"))  # fails again: the wait doubles
    await _settle()
    clock.step(1.5)
    await _settle()
    assert FeedDriver.runs == 2
    clock.step(0.6)
    await _settle()
    assert FeedDriver.runs == 3
    feed.put_nowait({0: Reading(3.0), 1: Reading(4.0)})
    await _settle()
    assert [(t.value, t.status) for t in tags] == [(3.0, ua.StatusCodes.Good), (4.0, ua.StatusCodes.Good)]
    assert runner.health.state == "Connected" and runner.health.last_error == ""
    assert await runner.write(ua.NodeId("v0", 1), 7.0) == ua.StatusCodes.Good
    async with asyncio.timeout(5):
        await runner.stop()
    assert runner.health.state == "Stopped"


# -- the worker thread ------------------------------------------------------------------------
async def test_worker_runs_calls_in_order_in_one_thread_and_raises_their_errors() -> None:
    worker = BlockingWorker("test link")
    seen: list[tuple[int, str]] = []

    def job(i: int) -> int:
        seen.append((i, threading.current_thread().name))
        return i * 2

    results = await asyncio.gather(*(worker.call(job, i, deadline_s=5) for i in range(20)))
    assert results == [i * 2 for i in range(20)]
    assert [i for i, _ in seen] == list(range(20)) and {name for _, name in seen} == {"link test link"}
    with pytest.raises(ZeroDivisionError):
        await worker.call(lambda: 1 / 0, deadline_s=5)
    closed: list[bool] = []
    assert await worker.close(2, last=lambda: closed.append(True)) and closed == [True]
    with pytest.raises(DriverError, match="closed"):
        await worker.call(job, 1, deadline_s=1)


async def test_a_hung_call_times_out_while_the_loop_keeps_running_and_close_has_a_deadline() -> None:
    worker = BlockingWorker("hung")
    release = threading.Event()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    tick_task = asyncio.create_task(ticker())
    started = time.monotonic()
    with pytest.raises(DriverError) as err:
        await worker.call(release.wait, 30, deadline_s=0.3)
    assert err.value.status == ua.StatusCodes.BadTimeout
    assert 0.25 < time.monotonic() - started < 3
    assert ticks >= 5, "the event loop was blocked by the call"
    with pytest.raises(DriverError):  # queued behind the hung call: times out too
        await worker.call(lambda: 1, deadline_s=0.1)
    started = time.monotonic()
    assert await worker.close(0.3) is False  # still stuck: left behind, within the deadline
    assert time.monotonic() - started < 2
    release.set()
    tick_task.cancel()


def test_every_driver_with_a_connection_form_is_in_the_scheme_table() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for driver in reference.drivers():
        assert driver.connection_form, f"{driver.__name__} declares no connection_form"
        assert f"driver-options {driver.schemes[0]}" in text


def test_yaml_takes_unit_range_and_description_from_the_dbc_unless_the_site_states_them() -> None:
    site = """site: {namespace: "urn:test:dbc", name: Site}
devices:
  - name: Rack
    connection: "can://virtual/bms?dbc=bms_rack.dbc"
    variables:
      - {name: Current, address: RackStatus/Current}
      - {name: Voltage, unit: kV, range: [0, 2], description: mine, address: RackStatus/Voltage}
      - {name: SocRaw, datatype: UInt16, address: RackStatus/StateOfCharge, dbc_scaling: false}
      - {name: Hot, datatype: Boolean, address: RackAlarms/OverTemperature}
"""
    from lxml import etree

    root = etree.fromstring(compile_text(site, "site.yaml"))
    ns = {"u": "http://opcfoundation.org/UA/2011/03/UANodeSet.xsd"}

    def node(nodeid: str) -> Any:
        found = root.find(f"u:UAVariable[@NodeId='{nodeid}']", ns)
        return found

    def text(nodeid: str) -> str:
        found = node(nodeid)
        return "" if found is None else etree.tostring(found, encoding="unicode")

    assert "<Text>A</Text>" in text("ns=1;s=Rack.Current.EngineeringUnits")  # the DBC's unit
    assert "-3276.8" in text("ns=1;s=Rack.Current.EURange") and "3276.7" in text("ns=1;s=Rack.Current.EURange")
    assert "Rack current, &gt; 0 discharging." in text("ns=1;s=Rack.Current")  # the signal's comment
    assert "<Text>kV</Text>" in text("ns=1;s=Rack.Voltage.EngineeringUnits") and ">mine<" in text("ns=1;s=Rack.Voltage")
    assert node("ns=1;s=Rack.SocRaw.EngineeringUnits") is None and node("ns=1;s=Rack.SocRaw.EURange") is None
    assert node("ns=1;s=Rack.Hot.EURange") is None


def test_a_site_given_as_plain_dicts_takes_the_dbc_defaults_too() -> None:
    import yaml

    from gateway.nodeset.yaml_build import build

    doc = yaml.safe_load("""site: {namespace: "urn:test:dbc", name: Site}
devices:
  - name: Rack
    connection: "can://virtual/bms?dbc=bms_rack.dbc"
    variables: [{name: Soc, address: RackStatus/StateOfCharge}]
""")
    assert b"ns=1;s=Rack.Soc.EngineeringUnits" in build(doc, "site.yaml")
