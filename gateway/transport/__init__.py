"""The gateway's OPC UA transport: asyncua's binary server with the checks a hostile network needs.

asyncua's BinaryServer, OPCUAProtocol and UaProcessor are subclassed, not edited: framing limits
before anything is buffered (`framing`), per-address connection limits and rate-limited logging
of bad traffic (`peers`), which services a channel and a session may use (`channel_policy`,
`ownership`, `operation_limits`), logins that cost the same whoever asks and are throttled per
address (`login`), and a ServerDiagnosticsSummary that counts what happened (`diagnostics`).
`GatewayServer` is asyncua's Server started with these parts.
"""

from gateway.transport.config import TransportConfig
from gateway.transport.server import GatewayServer

__all__ = ["GatewayServer", "TransportConfig"]
