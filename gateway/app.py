"""`gateway --nodeset ...`: load the site (refuse it whole if anything is wrong), serve until a signal."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from gateway.nodeset.model import NodesetError
from gateway.server import Gateway, GatewayConfig

log = logging.getLogger("gateway")


async def serve(config: GatewayConfig) -> int:
    gw = Gateway(config)
    try:
        await gw.load()
    except NodesetError as exc:
        print(f"gateway: the site cannot be served ({len(exc.problems)} problem(s)):", file=sys.stderr)
        for p in exc.problems:
            print(f"  {p}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        try:
            await gw.start()
        except (ValueError, NotImplementedError) as exc:  # a simulator that cannot serve this site
            print(f"gateway: cannot start: {exc}", file=sys.stderr)
            return 2
        await stop.wait()
        log.info("signal received, stopping")
    finally:
        await gw.stop()
    return 0


def run_from_args(args: argparse.Namespace) -> int:
    config = GatewayConfig(
        nodesets=[Path(p) for p in args.nodeset],
        endpoint=args.endpoint,
        data_dir=Path(args.data_dir),
        insecure=args.insecure,
        allow_anonymous=not args.no_anonymous,
        simulate=args.simulate,
    )
    return asyncio.run(serve(config))
