"""`gateway --nodeset ...`: load the site (refuse it whole if anything is wrong), serve until a signal."""

from __future__ import annotations

import argparse
import asyncio
import errno
import faulthandler
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from gateway.nodeset.model import NodesetError
from gateway.server import Gateway, GatewayConfig

log = logging.getLogger("gateway")


STOP_DEADLINE_S = 5.0  # from the signal to the end of the process, whatever the gateway is doing


class StopSignals:
    """SIGINT and SIGTERM. The first asks the gateway to stop and arms a watchdog that ends the
    process if stopping overruns STOP_DEADLINE_S (with every thread's stack on stderr, to show what
    hung); a second signal ends the process at once.

    Plain `signal.signal` handlers rather than the loop's add_signal_handler: they also run while
    the loop is busy with a long synchronous step (parsing a large site at start-up), so the
    watchdog is armed at the signal, not when the loop next gets control.
    """

    def __init__(self, deadline_s: float = STOP_DEADLINE_S) -> None:
        self.deadline_s = deadline_s
        self.requested = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._finished = threading.Event()
        self._received = 0

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)

    def finished(self) -> None:
        """The process is about to exit on its own: disarm the watchdog."""
        self._finished.set()

    def _on_signal(self, signum: int, frame: object) -> None:
        # Runs between two bytecodes of the main thread: no logging here (its lock may be held).
        self._received += 1
        if self._received > 1:
            os.write(2, b"gateway: second signal, exiting now\n")
            os._exit(1)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self.requested.set)
        threading.Thread(target=self._watchdog, args=(signal.Signals(signum).name,), name="stop watchdog",
                         daemon=True).start()

    def _watchdog(self, name: str) -> None:
        if self._finished.wait(self.deadline_s):
            return
        log.critical("stopping took longer than %g s after %s; exiting now (thread stacks follow)",
                     self.deadline_s, name)
        faulthandler.dump_traceback(all_threads=True)
        os._exit(1)


async def serve(config: GatewayConfig, signals: StopSignals | None = None) -> int:
    """Load and start the site, serve until a stop is requested, stop. Returns the exit code."""
    signals = signals or StopSignals()
    signals.install(asyncio.get_running_loop())
    log.info("starting: loading %s", ", ".join(str(p) for p in config.nodesets))
    gw = Gateway(config)
    starting = asyncio.ensure_future(_start(gw))
    stop_requested = asyncio.ensure_future(signals.requested.wait())
    try:
        await asyncio.wait((starting, stop_requested), return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            log.info("signal received during start-up, stopping")
            starting.cancel()
            await asyncio.wait([starting], timeout=1.0)
            return 0
        code = starting.result()
        if code:
            return code
        await stop_requested
        log.info("signal received, stopping")
        return 0
    finally:
        stop_requested.cancel()
        await gw.stop()


# Why the endpoint cannot be opened, for the errors only opening a socket raises.
_LISTEN_ERRORS = {errno.EADDRINUSE: "the port is already in use",
                  errno.EADDRNOTAVAIL: "the address is not one of this machine's"}


async def _start(gw: Gateway) -> int:
    """Load and start; a site or a set-up that cannot be served is a message and exit code 2."""
    try:
        await gw.load()
    except NodesetError as exc:
        print(f"gateway: the site cannot be served ({len(exc.problems)} problem(s)):", file=sys.stderr)
        for p in exc.problems:
            print(f"  {p}", file=sys.stderr)
        return 2
    try:
        await gw.start()
    except (ValueError, NotImplementedError) as exc:  # a simulator that cannot serve this site
        print(f"gateway: cannot start: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        reason = _LISTEN_ERRORS.get(exc.errno or 0) or ("the host name does not resolve"
                                                         if isinstance(exc, socket.gaierror) else None)
        if reason is None:
            raise
        print(f"gateway: cannot listen on {gw.config.endpoint}: {reason}", file=sys.stderr)
        return 2
    return 0


def run_from_args(args: argparse.Namespace) -> int:
    config = GatewayConfig(
        nodesets=[Path(p) for p in args.nodeset],
        endpoint=args.endpoint,
        data_dir=Path(args.data_dir),
        insecure=args.insecure,
        allow_anonymous=not args.no_anonymous,
        simulate=args.simulate,
        influx=Path(args.influx) if args.influx else None,
    )
    signals = StopSignals()
    try:
        code = _run(serve(config, signals))
    finally:
        signals.finished()
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        # A start-up step still running in a worker thread (asyncua builds its standard address space in
        # one, seconds on a busy machine) would hold the exit until it finished, past the stop deadline;
        # nothing it makes is kept, so the process ends without waiting for it.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _run(main: Coroutine[Any, Any, int]) -> int:
    """asyncio.run without its wait for the default executor's threads at the end (see run_from_args)."""
    loop = asyncio.new_event_loop()
    executor = ThreadPoolExecutor(thread_name_prefix="gateway-worker")
    loop.set_default_executor(executor)
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
            loop.close()
