"""OPC UA TCP framing checked from the 8-byte header, before a frame's body is buffered.

asyncua's OPCUAProtocol buffers whatever a header announces (a header declaring 4 GB made it hold
everything sent) and decodes Hello without checking it (a zero buffer size raised a traceback).
`FrameChecker` follows one connection: the first frame must be a Hello within the specification's
minimums, every later chunk must fit the negotiated receive buffer, and the chunks of one message
must stay within the negotiated MaxMessageSize and MaxChunkCount.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import struct_from_binary, uatcp_to_binary

HEADER_SIZE = 8
# Part 6, 7.1.2.3: buffers of at least 8192 bytes; an EndpointUrl of at most 4096 bytes. A Hello
# carrying such a URL fits in 8192 bytes with room to spare.
MIN_BUFFER_SIZE = 8192
MAX_ENDPOINT_URL = 4096
MAX_HELLO_SIZE = 8192
_SECURE_TYPES = (ua.MessageType.SecureOpen, ua.MessageType.SecureMessage, ua.MessageType.SecureClose)
# A secure chunk holds at least the channel id, a security header and a sequence header.
_MIN_SECURE_CHUNK = 12 + 4 + 8


class FrameError(Exception):
    """A frame the server refuses: answered with an ErrorMessage carrying `status`, then the connection closes."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class Negotiated:
    """What Acknowledge grants, as asyncua's TransportLimits.create_acknowledge_and_set_limits computes it."""

    receive_buffer: int
    max_message_size: int
    max_chunk_count: int


def peek_header(data: bytes | bytearray) -> tuple[bytes, bytes, int]:
    """Message type, chunk type and packet size of the frame at the start of `data` (>= 8 bytes)."""
    msg_type, chunk_type, size = struct.unpack_from("<3scI", data)
    return msg_type, chunk_type, size


def error_message(status: int, reason: str) -> bytes:
    return uatcp_to_binary(ua.MessageType.Error, ua.ErrorMessage(ua.StatusCode(status), reason[:200]))


def check_hello(hello: ua.Hello) -> None:
    """Refuse a Hello outside the specification's minimums (asyncua acknowledges anything)."""
    if hello.ReceiveBufferSize < MIN_BUFFER_SIZE or hello.SendBufferSize < MIN_BUFFER_SIZE:
        raise FrameError(ua.StatusCodes.BadTcpInternalError,
                         f"Hello buffer sizes {hello.ReceiveBufferSize}/{hello.SendBufferSize} below {MIN_BUFFER_SIZE}")
    if hello.MaxMessageSize and hello.MaxMessageSize < MIN_BUFFER_SIZE:
        raise FrameError(ua.StatusCodes.BadTcpInternalError, f"Hello MaxMessageSize {hello.MaxMessageSize} too small")
    url = hello.EndpointUrl or ""
    if len(url.encode("utf-8", "surrogatepass")) > MAX_ENDPOINT_URL:
        raise FrameError(ua.StatusCodes.BadTcpEndpointUrlInvalid, f"Hello EndpointUrl longer than {MAX_ENDPOINT_URL}")


class FrameChecker:
    """The framing rules for one connection, fed each frame's header before its body arrives."""

    def __init__(self, max_chunk_size: int, max_message_size: int, max_chunk_count: int) -> None:
        self._own = Negotiated(max_chunk_size, max_message_size, max_chunk_count)
        self.negotiated: Negotiated | None = None  # set by the Hello
        self._message_bytes = 0
        self._message_chunks = 0

    def check_header(self, msg_type: bytes, chunk_type: bytes, size: int) -> None:
        """Raise FrameError if a frame with this header must not be buffered."""
        if self.negotiated is None:
            if msg_type != ua.MessageType.Hello:
                raise FrameError(ua.StatusCodes.BadTcpMessageTypeInvalid,
                                 f"first message must be a Hello, got {msg_type!r}")
            if chunk_type != ua.ChunkType.Single or not HEADER_SIZE < size <= MAX_HELLO_SIZE:
                raise FrameError(ua.StatusCodes.BadTcpMessageTooLarge if size > MAX_HELLO_SIZE
                                 else ua.StatusCodes.BadTcpMessageTypeInvalid,
                                 f"Hello of {size} bytes, chunk type {chunk_type!r}")
            return
        if msg_type not in _SECURE_TYPES:
            raise FrameError(ua.StatusCodes.BadTcpMessageTypeInvalid, f"unexpected message type {msg_type!r}")
        if size > self.negotiated.receive_buffer:
            raise FrameError(ua.StatusCodes.BadTcpMessageTooLarge,
                             f"chunk of {size} bytes exceeds the receive buffer of {self.negotiated.receive_buffer}")
        if size < _MIN_SECURE_CHUNK:
            raise FrameError(ua.StatusCodes.BadTcpMessageTypeInvalid, f"chunk of {size} bytes is too short")
        if msg_type != ua.MessageType.SecureMessage:
            if chunk_type != ua.ChunkType.Single:
                raise FrameError(ua.StatusCodes.BadTcpMessageTypeInvalid,
                                 f"{msg_type.decode()} must be a single chunk, got {chunk_type!r}")
            return
        if chunk_type not in (ua.ChunkType.Single, ua.ChunkType.Intermediate, ua.ChunkType.Abort):
            raise FrameError(ua.StatusCodes.BadTcpMessageTypeInvalid, f"unknown chunk type {chunk_type!r}")
        if chunk_type == ua.ChunkType.Abort:
            self._message_bytes = self._message_chunks = 0
            return
        self._message_bytes += size
        self._message_chunks += 1
        limit = self.negotiated
        if limit.max_message_size and self._message_bytes > limit.max_message_size:
            raise FrameError(ua.StatusCodes.BadTcpMessageTooLarge,
                             f"message of more than {limit.max_message_size} bytes")
        if limit.max_chunk_count and self._message_chunks > limit.max_chunk_count:
            raise FrameError(ua.StatusCodes.BadTcpMessageTooLarge,
                             f"message of more than {limit.max_chunk_count} chunks")
        if chunk_type == ua.ChunkType.Single:
            self._message_bytes = self._message_chunks = 0

    def accept_hello(self, packet: bytes) -> ua.Hello:
        """Decode and check the Hello frame `packet` (header included) and record what Acknowledge grants."""
        try:
            hello = struct_from_binary(ua.Hello, Buffer(packet[HEADER_SIZE:]))
        except Exception as exc:  # any decoding failure of hostile bytes is one refusal, not a traceback
            raise FrameError(ua.StatusCodes.BadDecodingError, f"undecodable Hello: {exc!r}"[:120]) from None
        check_hello(hello)
        own = self._own
        self.negotiated = Negotiated(
            receive_buffer=min(hello.SendBufferSize, own.receive_buffer),
            max_message_size=min(hello.MaxMessageSize, own.max_message_size) if hello.MaxMessageSize
            else own.max_message_size,
            max_chunk_count=min(hello.MaxChunkCount, own.max_chunk_count) if hello.MaxChunkCount
            else own.max_chunk_count,
        )
        return hello
