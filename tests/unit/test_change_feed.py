"""The change feed: every stored value reaches the listeners and queues that named its node, once."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from asyncua import Server, ua

from gateway.clock import SteppableClock
from gateway.site import load_site
from gateway.values.aspace_io import StoredDataValue, read_value
from gateway.values.feed import Change, ChangeFeed
from gateway.values.runners import DeviceRunner
from gateway.values.tags import TagTable

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "sim_site.xml"
SITE_NS = 3


@pytest.fixture
async def site():
    server = Server()
    await server.init()
    _, bindings = await load_site(server, [FIXTURE])
    clock = SteppableClock()
    feed = ChangeFeed(server.iserver.aspace)
    tags = TagTable(server.iserver.aspace, None, clock, feed)
    runner = DeviceRunner(bindings.devices[0], tags, bindings.scan_classes, None, clock)
    yield server, feed, runner, clock
    await runner.driver.stop()


def _node(name: str) -> ua.NodeId:
    return ua.NodeId(f"Sim1.{name}", SITE_NS)


def _dv(value: float) -> StoredDataValue:
    return StoredDataValue(ua.Variant(value, ua.VariantType.Double))


async def test_listeners_get_the_stored_value_of_the_nodes_they_named(site) -> None:
    server, feed, runner, _ = site
    everything: list[Change] = []
    scaled: list[Change] = []
    feed.listen(everything.append, name="all")
    feed.listen(scaled.append, [_node("Scaled")], name="scaled")
    assert await runner.scan("HighSpeed")
    assert {c.node for c in scaled} == {_node("Scaled")}
    assert scaled[0].value == pytest.approx(123 * 0.1 + 1) and scaled[0].status == ua.StatusCodes.Good
    # What the listener got is what the address space holds, the same object.
    assert scaled[-1].dv is read_value(server.iserver.aspace, _node("Scaled"))
    assert _node("Counter") in {c.node for c in everything} and len(everything) > len(scaled)
    before = len(everything)
    assert await runner.scan("HighSpeed")  # same instant: nothing changed, nothing fed
    assert len(everything) == before


async def test_interest_grows_shrinks_and_ends(site) -> None:
    _, feed, _, _ = site
    got: list[ua.NodeId] = []
    sub = feed.listen(lambda c: got.append(c.node), [_node("Scaled")])
    await feed.store(_node("Counter"), _dv(1))
    sub.add([_node("Counter")])
    await feed.store(_node("Counter"), _dv(2))
    sub.remove([_node("Scaled")])
    await feed.store(_node("Scaled"), _dv(3))
    sub.close()
    await feed.store(_node("Counter"), _dv(4))
    assert got == [_node("Counter")]
    assert feed.subscriptions() == []


async def test_a_failing_listener_is_counted_and_costs_the_others_nothing(site, caplog) -> None:
    _, feed, _, _ = site
    got: list[Change] = []

    def broken(change: Change) -> None:
        raise RuntimeError("bug in a subscriber")

    bad = feed.listen(broken, name="broken")
    feed.listen(got.append)
    with caplog.at_level(logging.ERROR, logger="gateway.values.feed"):
        for i in range(3):
            await feed.store(_node("Scaled"), _dv(i))
    assert len(got) == 3
    assert read_value(feed.aspace, _node("Scaled")).Value.Value == 2
    assert bad.failures == 3 and "bug in a subscriber" in bad.last_error
    assert len([r for r in caplog.records if "broken" in r.getMessage()]) == 1  # logged once, not per change


async def test_a_queue_is_bounded_drops_the_oldest_and_wakes_its_consumer(site) -> None:
    _, feed, _, _ = site
    q = feed.queue("db", maxsize=3)
    for i in range(5):
        await feed.store(_node("Scaled"), _dv(i))
    assert q.dropped == 2 and len(q) == 3
    assert [c.value for c in q.take(2)] == [2, 3]
    assert [c.value for c in await q.batch()] == [4]

    async def consume() -> list[Change]:
        return await q.batch()

    waiting = asyncio.create_task(consume())
    await asyncio.sleep(0)
    assert not waiting.done()
    await feed.store(_node("Scaled"), _dv(9))
    async with asyncio.timeout(1):
        assert [c.value for c in await waiting] == [9]
    q.close()
    await feed.store(_node("Scaled"), _dv(10))
    assert len(q) == 0
