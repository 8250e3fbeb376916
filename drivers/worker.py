"""One worker thread per link for drivers built on blocking libraries (python-can's send, pyserial, pyvisa).

The event loop never waits on the library: `call` queues a function for the link's own thread and awaits
its result with a deadline. Calls run one at a time in the order given, as a serial line or an instrument
needs. A call that overruns its deadline fails with DriverError (BadTimeout) while the thread goes on
with it; later calls queue behind it and time out too until it returns, so a hung device reads as a
dead one and never as a blocked gateway. `close` runs a last function (the library's close) and waits
for the thread within a deadline; a thread still stuck then is left behind (a daemon), and said so.

A thread of our own rather than `asyncio.to_thread`: the default executor's threads are shared, so a
hung instrument would take one of them for ever and calls of one link could run out of order.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from asyncua import ua

from gateway.drivers.base import DriverError

log = logging.getLogger(__name__)

T = TypeVar("T")
_Job = tuple[Callable[[], Any], asyncio.Future[Any], asyncio.AbstractEventLoop]


class BlockingWorker:
    """The thread of one link; `name` names it in thread dumps and messages."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=f"link {name}", daemon=True)
        self._started = False
        self._closed = False
        self._ended: asyncio.Future[None] | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    async def call(self, fn: Callable[..., T], *args: Any, deadline_s: float) -> T:
        """`fn(*args)` in the link's thread; DriverError(BadTimeout) if it has not returned within `deadline_s`.
        Exceptions of `fn` are raised here as they are."""
        if self._closed:
            raise DriverError(f"{self.name}: the link is closed", ua.StatusCodes.BadCommunicationError)
        loop = asyncio.get_running_loop()
        if not self._started:
            self._started = True
            self._ended = loop.create_future()
            self._thread.start()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((lambda: fn(*args), future, loop))
        try:
            async with asyncio.timeout(deadline_s):
                return await asyncio.shield(future)
        except TimeoutError:
            future.add_done_callback(_consume)  # its late outcome is nobody's: no "never retrieved" warning
            raise DriverError(f"{self.name}: no answer within {deadline_s:g} s", ua.StatusCodes.BadTimeout) from None
        except asyncio.CancelledError:
            future.add_done_callback(_consume)
            raise

    async def close(self, within_s: float, last: Callable[[], Any] | None = None) -> bool:
        """Run `last` (the library's close) after the calls queued so far, end the thread, and wait for it at
        most `within_s`. Returns whether the thread ended in time. Safe to call twice."""
        if self._closed:
            return True
        self._closed = True
        if not self._started:
            if last is not None:
                try:
                    last()  # never started: nothing runs in a thread, and closing an unopened link is quick
                except Exception as exc:
                    log.warning("%s: closing failed: %s", self.name, exc)
            return True
        loop = asyncio.get_running_loop()
        if last is not None:
            self._jobs.put((last, loop.create_future(), loop))
        self._jobs.put(None)
        assert self._ended is not None
        try:
            async with asyncio.timeout(within_s):
                await asyncio.shield(self._ended)
        except TimeoutError:
            log.error("%s: the link's thread is still busy %g s after close; left behind", self.name, within_s)
            return False
        return True

    def close_soon(self, last: Callable[[], Any] | None = None) -> None:
        """Close without waiting (from any thread): `last` runs after the queued calls, then the thread ends."""
        if self._closed:
            return
        self._closed = True
        if not self._started:
            if last is not None:
                threading.Thread(target=last, daemon=True, name=f"close {self.name}").start()
            return
        if last is not None:
            self._jobs.put((last, None, None))  # type: ignore[arg-type]
        self._jobs.put(None)

    def _serve(self) -> None:
        loop: asyncio.AbstractEventLoop | None = None
        while True:
            job = self._jobs.get()
            if job is None:
                break
            fn, future, job_loop = job
            try:
                result = fn()
            except BaseException as exc:  # handed to the caller, whatever it is
                if future is None:
                    log.warning("%s: closing failed: %s", self.name, exc)
                else:
                    _hand(job_loop, future, None, exc)
            else:
                if future is not None:
                    _hand(job_loop, future, result, None)
            loop = job_loop or loop
        if loop is not None and self._ended is not None:
            _hand(loop, self._ended, None, None)


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _hand(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    def settle() -> None:
        if future.done():  # the caller gave up (deadline, cancellation)
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass
