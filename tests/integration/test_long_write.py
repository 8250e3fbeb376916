"""A Write of many values lets the rest of the gateway run while it is worked through."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from asyncua import Client, ua

from gateway.nodeset.yaml_build import compile_text

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "alarm_site.yaml"


async def test_a_write_of_thousands_of_values_does_not_hold_the_event_loop(simulated_gateway, tmp_path: Path) -> None:
    site = tmp_path / "site.xml"
    site.write_bytes(compile_text(FIXTURE.read_text(encoding="utf-8"), str(FIXTURE)))
    gw = await simulated_gateway(site)
    ns = gw.site.namespaces["urn:test:alarm-site"]
    node = ua.NodeId("Rack1.Temperature", ns)
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.monotonic()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    async with Client(gw.config.endpoint.replace("opc.tcp://", "opc.tcp://operator1:op-secret-1@")) as client:
        items = [ua.WriteValue(NodeId=node, AttributeId=ua.AttributeIds.Value,
                               Value=ua.DataValue(ua.Variant(float(20 + i % 10), ua.VariantType.Double)))
                 for i in range(4000)]
        params = ua.WriteParameters(NodesToWrite=items)
        task = asyncio.create_task(ticker())
        started = time.monotonic()
        results = await client.uaclient.write(params)
        took = time.monotonic() - started
        done.set()
        await task
    assert all(r.is_good() for r in results)
    # Worked through in steps: the loop never waited on the Write for more than a fraction of it.
    assert max(gaps) < took / 3, f"Write took {took:.2f} s, loop held up to {max(gaps):.3f} s"
