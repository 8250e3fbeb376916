"""A process that writes a counter series through the real change feed and the series writer, for the
kill -9 test: `influx_producer.py QUEUE_DIR URL START COUNT RATE T0_NS`. Value k has timestamp T0 + k ms.
Prints `ready PID` (the writer process's) and `produced K` when done; on SIGTERM stops producing and stops
the writer (2 s deadline)."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from asyncua import Server, ua

from gateway.influx.config import config_from_dict
from gateway.influx.series import SeriesCatalog
from gateway.influx.writer import SeriesWriter
from gateway.values.aspace_io import StoredDataValue
from gateway.values.feed import ChangeFeed


async def main(queue_dir: Path, url: str, start: int, count: int, rate: float, t0_ns: int) -> None:
    server = Server()
    await server.init()
    idx = await server.register_namespace("urn:test:plant")
    dev = await server.nodes.objects.add_object(ua.NodeId("Pump1", idx), "Pump1")
    node = (await dev.add_variable(ua.NodeId("Pump1.Counter", idx), "Counter", 0.0)).nodeid
    feed = ChangeFeed(server.iserver.aspace)
    config = config_from_dict({"server": {"version": 1, "url": url, "database": "site"}, "site": "TestSite",
                               "targets": {"LowSpeed": {"retention_policy": "ls"}},
                               "batch": {"size": 200, "flush_interval": "50ms"},
                               "backoff": {"initial": "100ms", "max": "1s"}}, "producer", {})
    writer = SeriesWriter(config, SeriesCatalog(config, "TestSite", feed.aspace, None, set()),
                          queue_dir / "queue.sqlite3")
    await writer.start(feed)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    t0 = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=t0_ns // 1000)
    began = time.monotonic()
    k = start
    assert writer._proc is not None
    print(f"ready {writer._proc.pid}", flush=True)  # the writer process's pid
    while k < start + count and not stop.is_set():
        due = start + min(int((time.monotonic() - began) * rate), count)
        while k < due:
            t = t0 + timedelta(milliseconds=k)
            await feed.store(node, StoredDataValue(ua.Variant(float(k), ua.VariantType.Double), SourceTimestamp=t,
                                                   ServerTimestamp=t))
            k += 1
        await asyncio.sleep(0.01)
    print(f"produced {k}", flush=True)
    await stop.wait()
    await writer.stop(2.0)
    print("stopped", flush=True)


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(main(Path(a[0]), a[1], int(a[2]), int(a[3]), float(a[4]), int(a[5])))
