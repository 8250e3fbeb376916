"""The transport's limits in one place: what is advertised is what is enforced."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from asyncua.common.connection import TransportLimits

# OperationLimits (Server/ServerCapabilities/OperationLimits) advertised to clients and enforced per
# request with BadTooManyOperations. asyncua advertises 10,000 for each and enforces none.
DEFAULT_OPERATION_LIMITS: dict[str, int] = {
    "MaxNodesPerRead": 10_000,
    "MaxNodesPerWrite": 10_000,
    "MaxNodesPerBrowse": 10_000,
    "MaxNodesPerMethodCall": 1_000,
    "MaxNodesPerHistoryReadData": 1_000,
    "MaxNodesPerHistoryReadEvents": 1_000,
    "MaxNodesPerHistoryUpdateData": 1_000,
    "MaxNodesPerHistoryUpdateEvents": 1_000,
    "MaxNodesPerRegisterNodes": 10_000,
    "MaxNodesPerTranslateBrowsePathsToNodeIds": 10_000,
    "MaxNodesPerNodeManagement": 1_000,
    "MaxMonitoredItemsPerCall": 10_000,
}


@dataclass
class TransportConfig:
    # One chunk (the receive buffer offered in Acknowledge) and one message (all its chunks).
    max_chunk_size: int = 65_535
    max_message_size: int = 16 * 1024 * 1024
    # Connections: in total (asyncua's cap) and from one peer address, so that one host opening
    # idle sockets cannot lock out the others.
    max_connections: int = 1_000
    max_connections_per_peer: int = 64
    # Seconds a connection may stay without an activated session (asyncua closes it then).
    max_pending_activation_s: float = 30.0
    # Totals across all sessions.
    max_sessions: int = 500
    max_subscriptions: int = 1_000
    max_monitored_items: int = 200_000
    operation_limits: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_OPERATION_LIMITS))
    # Failed logins: this many within the window from one address block that address's logins for block_s.
    login_failures_allowed: int = 5
    login_failure_window_s: float = 30.0
    login_block_s: float = 30.0
    # Bad traffic and refusals are logged once per peer address per this many seconds.
    log_interval_s: float = 60.0

    def transport_limits(self) -> TransportLimits:
        return TransportLimits(max_recv_buffer=self.max_chunk_size, max_send_buffer=self.max_chunk_size,
                               max_chunk_count=math.ceil(self.max_message_size / self.max_chunk_size) + 1,
                               max_message_size=self.max_message_size)
