"""What every connection of one server shares: limits, offered security, per-address state, counters."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from gateway.transport.channel_policy import OfferedSecurity
from gateway.transport.config import TransportConfig
from gateway.transport.diagnostics import DiagnosticsPublisher, SessionCounters
from gateway.transport.login import LoginThrottle
from gateway.transport.peers import PeerConnections, PeerLog

log = logging.getLogger("gateway.transport")


@dataclass
class TransportContext:
    config: TransportConfig
    offered: OfferedSecurity
    counters: SessionCounters
    peer_log: PeerLog = field(init=False)
    throttle: LoginThrottle = field(init=False)
    connections: PeerConnections = field(init=False)
    diagnostics: DiagnosticsPublisher | None = None

    def __post_init__(self) -> None:
        cfg = self.config
        self.peer_log = PeerLog(log, cfg.log_interval_s)
        self.throttle = LoginThrottle(cfg.login_failures_allowed, cfg.login_failure_window_s, cfg.login_block_s)
        self.connections = PeerConnections(cfg.max_connections_per_peer)

    def sessions_changed(self) -> None:
        if self.diagnostics is not None:
            self.diagnostics.changed()
