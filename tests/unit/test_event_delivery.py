"""A flood of events is delivered in order, to a real subscription, without holding the event loop."""

from __future__ import annotations

import asyncio

from asyncua import Server, ua

from gateway.clock import SteppableClock
from gateway.events.event import MESSAGE, GatewayEvent, base_fields
from gateway.events.service import SERVER, EventService
from gateway.session import GatewayInternalServer

FLOOD = 3000


class Received:
    def __init__(self) -> None:
        self.messages: list[str] = []
        self.all = asyncio.Event()

    def event_notification(self, event: object) -> None:
        self.messages.append(event.Message.Text)  # type: ignore[attr-defined]
        if len(self.messages) >= FLOOD:
            self.all.set()


async def _deliveries_seen_until_all_received(events: EventService, received: Received) -> list[int]:
    """How many events another task on the loop saw delivered, each time it ran, until all FLOOD arrived:
    with the loop held for the whole delivery it would only ever see none or all of it."""
    seen: list[int] = []
    async with asyncio.timeout(60):
        while events.delivered < FLOOD:
            seen.append(events.delivered)
            await asyncio.sleep(0)
    async with asyncio.timeout(30):
        await received.all.wait()
    return seen


async def test_a_flood_of_events_arrives_in_order_while_other_tasks_keep_running() -> None:
    server = Server(iserver=GatewayInternalServer())
    await server.init()
    clock = SteppableClock()
    events = EventService(server.iserver, clock)
    received = Received()
    sub = await server.create_subscription(10, received)
    await sub.subscribe_events(server.nodes.server, queuesize=FLOOD + 10)
    events.start()
    try:
        for i in range(FLOOD):
            events.emit(GatewayEvent(ua.NodeId(ua.ObjectIds.BaseEventType),
                                     base_fields(ua.NodeId(ua.ObjectIds.BaseEventType), SERVER, "Server", f"event {i}",
                                                 100, clock.now()), (SERVER,)))
        seen = await _deliveries_seen_until_all_received(events, received)
        assert any(0 < n < FLOOD for n in seen), "the delivery of the flood never let another task run"
        assert received.messages == [f"event {i}" for i in range(FLOOD)]
    finally:
        await sub.delete()
        await events.stop()
        await server.stop()


async def test_a_refresh_of_many_conditions_arrives_bracketed_while_other_tasks_keep_running() -> None:
    server = Server(iserver=GatewayInternalServer())
    await server.init()
    clock = SteppableClock()
    events = EventService(server.iserver, clock)
    received = Received()
    sub = await server.create_subscription(10, received)
    await sub.subscribe_events(server.nodes.server, queuesize=FLOOD + 10)
    condition_type = ua.NodeId(ua.ObjectIds.AlarmConditionType)
    retained = [GatewayEvent(condition_type, base_fields(condition_type, SERVER, "Server", f"event {i}", 500,
                                                         clock.now()), (SERVER,), condition=ua.NodeId(f"C{i}", 1))
                for i in range(FLOOD - 2)]
    events.start()
    try:
        events.refresh(sub.subscription_id, lambda: retained)
        seen = await _deliveries_seen_until_all_received(events, received)
        assert any(1 < n < FLOOD - 1 for n in seen), "the refresh never let another task run"
        assert received.messages == ["", *(f"event {i}" for i in range(FLOOD - 2)), ""]  # RefreshStart ... End
    finally:
        await sub.delete()
        await events.stop()
        await server.stop()


async def test_listeners_get_every_event_and_a_failing_one_costs_nobody_theirs() -> None:
    server = Server(iserver=GatewayInternalServer())
    await server.init()
    clock = SteppableClock()
    events = EventService(server.iserver, clock)
    got: list[str] = []

    def broken(event: GatewayEvent) -> None:
        raise RuntimeError("a listener's bug")

    events.listen(broken)
    close = events.listen(lambda e: got.append(e.value(MESSAGE).Text))
    event_type = ua.NodeId(ua.ObjectIds.BaseEventType)
    for i in range(3):
        events.emit(GatewayEvent(event_type, base_fields(event_type, SERVER, "Server", f"event {i}", 100, clock.now()),
                                 (SERVER,)))
        if i == 1:
            close()
    assert got == ["event 0", "event 1"] and events.emitted == 3
    await events.drain()  # and delivery to clients still has all three queued
