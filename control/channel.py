"""One setpoint's way to the plant: each new value written once through the write path, refusals kept.

At most one write per setpoint is in flight; a value decided meanwhile is written after it (the newest
only). A refused or failed write is not taken as done: `written` keeps the last accepted value, the
refusal is shown (`status`, logged once per change) and the next `want` writes again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from asyncua import ua

from gateway.control.config import SetpointSpec
from gateway.events.audit import Writer

log = logging.getLogger(__name__)

WriteFn = Callable[[ua.WriteValue, Writer], Awaitable[ua.StatusCode]]


def variant(value: float, vtype: ua.VariantType) -> ua.Variant:
    if vtype == ua.VariantType.Boolean:
        return ua.Variant(bool(value), vtype)
    if vtype in (ua.VariantType.Float, ua.VariantType.Double):
        return ua.Variant(float(value), vtype)
    return ua.Variant(round(value), vtype)


class SetpointChannel:
    def __init__(self, spec: SetpointSpec, write: WriteFn) -> None:
        self.spec = spec
        self._write = write
        self.wanted: float | None = None
        self.written: float | None = None  # last value the write path accepted
        self.status = ua.StatusCode(ua.StatusCodes.Good)
        self.failures = 0
        self.writes = 0
        self._writer: Writer | None = None
        self._task: asyncio.Task[None] | None = None
        self._dirty = False

    @property
    def failed(self) -> bool:
        return not self.status.is_good()

    def want(self, value: float, writer: Writer) -> None:
        """Write `value` unless it is what the plant already accepted; a refused value is written again."""
        if value == self.written and value == self.wanted and not self.failed:
            return
        self.wanted, self._writer = value, writer
        self._dirty = True
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain(), name=f"control write {self.spec.name}")

    async def _drain(self) -> None:
        while self._dirty:
            self._dirty = False
            value, writer = self.wanted, self._writer
            assert value is not None and writer is not None
            wv = ua.WriteValue(NodeId=self.spec.node, AttributeId=ua.AttributeIds.Value,
                               Value=ua.DataValue(variant(value, self.spec.vtype)))
            self.writes += 1
            try:
                status = await self._write(wv, writer)
            except Exception as exc:  # the write path reports its own failures; anything else is one too
                log.exception("control write of %s failed", self.spec.name)
                status = ua.StatusCode(ua.StatusCodes.BadInternalError)
                del exc
            if status.is_good():
                if self.failed:
                    log.warning("setpoint %s (%s) accepted again: %g", self.spec.name, self.spec.node.to_string(),
                                value)
                self.written, self.status = value, status
            else:
                self.failures += 1
                if status.value != self.status.value:  # once per change of the refusal, not per retry
                    log.warning("setpoint %s (%s) = %g by %s refused: %s; retried each cycle", self.spec.name,
                                self.spec.node.to_string(), value, writer.name, status.name)
                self.status = status

    async def settle(self) -> None:
        """Wait for the write in flight (tests, stop)."""
        while self._task is not None and not self._task.done():
            await asyncio.wait([self._task])

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
