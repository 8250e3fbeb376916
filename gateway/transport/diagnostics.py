"""Server/ServerDiagnostics/ServerDiagnosticsSummary, kept true.

asyncua leaves the summary at zero. The transport counts what only it sees (sessions created,
refused, timed out, aborted; requests refused) and `publish` writes them, with the counts it can
read off the server (current sessions and subscriptions), into the summary variable and its
components.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, fields

from asyncua import ua
from asyncua.server.internal_server import InternalServer

log = logging.getLogger(__name__)

_SUMMARY = ua.NodeId(ua.ObjectIds.Server_ServerDiagnostics_ServerDiagnosticsSummary)
_COMPONENTS = {f.name: ua.NodeId(getattr(ua.ObjectIds, f"Server_ServerDiagnostics_ServerDiagnosticsSummary_{f.name}"))
               for f in fields(ua.ServerDiagnosticsSummaryDataType)}
_ENABLED = ua.NodeId(ua.ObjectIds.Server_ServerDiagnostics_EnabledFlag)


@dataclass
class SessionCounters:
    cumulated_sessions: int = 0
    rejected_sessions: int = 0
    security_rejected_sessions: int = 0
    session_timeouts: int = 0
    session_aborts: int = 0
    cumulated_subscriptions: int = 0
    rejected_requests: int = 0
    security_rejected_requests: int = 0

    def session_rejected(self, security: bool) -> None:
        self.rejected_sessions += 1
        if security:
            self.security_rejected_sessions += 1

    def request_rejected(self, security: bool) -> None:
        self.rejected_requests += 1
        if security:
            self.security_rejected_requests += 1


def summary(iserver: InternalServer, counters: SessionCounters) -> ua.ServerDiagnosticsSummaryDataType:
    subscriptions = iserver.subscription_service.subscriptions.values()
    return ua.ServerDiagnosticsSummaryDataType(
        ServerViewCount=0,
        CurrentSessionCount=len(iserver._external_sessions),
        CumulatedSessionCount=counters.cumulated_sessions,
        SecurityRejectedSessionCount=counters.security_rejected_sessions,
        RejectedSessionCount=counters.rejected_sessions,
        SessionTimeoutCount=counters.session_timeouts,
        SessionAbortCount=counters.session_aborts,
        CurrentSubscriptionCount=len(subscriptions),
        CumulatedSubscriptionCount=counters.cumulated_subscriptions,
        PublishingIntervalCount=len({s.data.RevisedPublishingInterval for s in subscriptions}),
        SecurityRejectedRequestsCount=counters.security_rejected_requests,
        RejectedRequestsCount=counters.rejected_requests,
    )


async def publish(iserver: InternalServer, counters: SessionCounters) -> None:
    """Write the summary and each of its components (clients read either)."""
    data = summary(iserver, counters)
    write = iserver.aspace.write_attribute_value
    await write(_SUMMARY, ua.AttributeIds.Value,
                ua.DataValue(ua.Variant(data, ua.VariantType.ExtensionObject)))
    for name, nodeid in _COMPONENTS.items():
        await write(nodeid, ua.AttributeIds.Value, ua.DataValue(ua.Variant(getattr(data, name), ua.VariantType.UInt32)))


class DiagnosticsPublisher:
    """Publishes the summary every `period_s` and, through `changed()`, soon after a session event."""

    def __init__(self, iserver: InternalServer, counters: SessionCounters, period_s: float = 1.0) -> None:
        self.iserver = iserver
        self.counters = counters
        self.period_s = period_s
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def start(self) -> None:
        await self.iserver.aspace.write_attribute_value(
            _ENABLED, ua.AttributeIds.Value, ua.DataValue(ua.Variant(True, ua.VariantType.Boolean)))
        await publish(self.iserver, self.counters)
        self._task = asyncio.create_task(self._run(), name="server-diagnostics")

    def changed(self) -> None:
        self._wake.set()

    async def refresh(self) -> None:
        await publish(self.iserver, self.counters)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.period_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await publish(self.iserver, self.counters)
            except Exception as exc:  # the summary is informative; a failure must not end the server
                log.error("cannot publish ServerDiagnosticsSummary: %r", exc)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
            self._task = None
