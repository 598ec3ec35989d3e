"""HTTP/2 framing, only as much as a byte relay needs: where frames begin, which streams are open,
and the few frames the edge writes itself (RFC 9113).

Reads nothing but the 9-byte frame headers; never a payload, never HPACK, so the bytes it follows
pass through unchanged. Pure: no sockets, no clock, no event loop. Hostile input is any byte
string; the only outcome is bookkeeping, never an exception.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

# RFC 9113 3.4: every client connection starts with this, then its SETTINGS frame.
CLIENT_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# RFC 9113 4.1: length (24 bits), type, flags, reserved bit + stream identifier (31 bits).
_HEADER = struct.Struct(">BHBBL")
HEADER_SIZE = _HEADER.size
_STREAM_MASK = 0x7FFF_FFFF

# Frame types (RFC 9113 6).
DATA, HEADERS, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 5, 6, 7, 8, 9
END_STREAM = 0x1  # DATA, HEADERS
ACK = 0x1  # SETTINGS, PING
END_HEADERS = 0x4  # HEADERS, PUSH_PROMISE, CONTINUATION

# Frames that carry (part of) a header block; frames that may end a stream.
_HEADER_BLOCK = frozenset((HEADERS, CONTINUATION, PUSH_PROMISE))
_STREAM_ENDING = frozenset((DATA, HEADERS))

_CLIENT_ENDED = 1
_SERVER_ENDED = 2

OnFrame = Callable[[int, int, int], None]  # (type, flags, stream id)


class FrameScanner:
    """Follows one direction of a connection from frame header to frame header.

    `feed` may be given the bytes in any split; `on_frame` sees each header once, in order. It
    also tells where a frame of our own may be written into the flow: at a frame start, after the
    peer's first frame (a server's first frame must be its SETTINGS, RFC 9113 3.4) and never inside
    a header block, which must reach the peer as one unbroken run of frames (RFC 9113 6.10).
    """

    __slots__ = ("_on_frame", "_partial", "_skip", "in_header_block", "started")

    def __init__(self, on_frame: OnFrame, skip: int = 0) -> None:
        self._on_frame = on_frame
        self._skip = skip  # bytes still to pass before the next frame header (a payload, a preface)
        self._partial = b""  # the start of a frame header cut off by the end of the last read
        self.in_header_block = False
        self.started = False

    @property
    def at_boundary(self) -> bool:
        """Whether a frame may be written right after everything fed so far."""
        return self.started and not self._skip and not self._partial and not self.in_header_block

    def feed(self, data: bytes, want_boundary: bool = False) -> int:
        """Follow `data`. With `want_boundary`, return the first offset in `data` (0 to len(data))
        where a frame may be inserted, or -1 if there is none; without it, return -1."""
        end = len(data)
        pos = self._skip
        if self._partial:
            need = HEADER_SIZE - len(self._partial)
            if end < need:
                self._partial += data
                return -1
            header = self._partial + data[:need]
            self._partial = b""
            pos = need + self._frame(header, 0)
        boundary = -1
        on_frame = self._on_frame
        while True:
            if pos > end:
                self._skip = pos - end
                return boundary
            if want_boundary and boundary < 0 and self.started and not self.in_header_block:
                boundary = pos
            if pos + HEADER_SIZE > end:
                self._skip = 0
                if pos < end:
                    self._partial = data[pos:]
                return boundary
            # Inlined _frame: this loop runs once per frame relayed.
            high, low, kind, flags, stream = _HEADER.unpack_from(data, pos)
            if kind in _HEADER_BLOCK:
                self.in_header_block = not flags & END_HEADERS
            self.started = True
            on_frame(kind, flags, stream & _STREAM_MASK)
            pos += HEADER_SIZE + (high << 16 | low)

    def _frame(self, buffer: bytes, at: int) -> int:
        high, low, kind, flags, stream = _HEADER.unpack_from(buffer, at)
        if kind in _HEADER_BLOCK:
            self.in_header_block = not flags & END_HEADERS
        self.started = True
        self._on_frame(kind, flags, stream & _STREAM_MASK)
        return int(high << 16 | low)


class Streams:
    """The streams open on one connection, told from the frame headers each side sends.

    A stream opens with the client's HEADERS and closes when both sides have ended it (END_STREAM)
    or either has reset it (RST_STREAM), as in RFC 9113 5.1. Stream identifiers only grow, so a
    HEADERS frame for an identifier at or below the highest seen is trailers or an error, never a
    new stream.
    """

    __slots__ = ("client_settings", "last_client_stream", "open", "server_goaway")

    def __init__(self) -> None:
        self.open: dict[int, int] = {}  # stream id -> which sides have ended it
        self.last_client_stream = 0
        self.client_settings = 0  # SETTINGS frames (not acknowledgements) the client has sent
        self.server_goaway = False

    def from_client(self, kind: int, flags: int, stream: int) -> None:
        if kind == DATA:
            if flags & END_STREAM:
                self._end(stream, _CLIENT_ENDED)
        elif kind == HEADERS:
            if stream > self.last_client_stream:
                self.last_client_stream = stream
                self.open[stream] = 0
            if flags & END_STREAM:
                self._end(stream, _CLIENT_ENDED)
        elif kind == RST_STREAM:
            self.open.pop(stream, None)
        elif kind == SETTINGS and not flags & ACK:
            self.client_settings += 1

    def from_server(self, kind: int, flags: int, stream: int) -> None:
        if kind in _STREAM_ENDING:
            if flags & END_STREAM:
                self._end(stream, _SERVER_ENDED)
        elif kind == RST_STREAM:
            self.open.pop(stream, None)
        elif kind == GOAWAY:
            self.server_goaway = True

    def _end(self, stream: int, side: int) -> None:
        ended = self.open.get(stream)
        if ended is None:
            return
        ended |= side
        if ended == _CLIENT_ENDED | _SERVER_ENDED:
            del self.open[stream]
        else:
            self.open[stream] = ended


# --- frames the edge writes itself -------------------------------------------------------------

# RFC 9113 6.8: a GOAWAY naming the highest possible stream says "open no new streams here" while
# promising to process every stream already sent, which holds: the upstream sees them all.
MAX_STREAM_ID = _STREAM_MASK
NO_ERROR = 0


def goaway_frame(last_stream: int = MAX_STREAM_ID, error: int = NO_ERROR) -> bytes:
    return _HEADER.pack(0, 8, GOAWAY, 0, 0) + struct.pack(">LL", last_stream, error)


SETTINGS_FRAME = _HEADER.pack(0, 0, SETTINGS, 0, 0)  # the server preface: our defaults, no changes
SETTINGS_ACK_FRAME = _HEADER.pack(0, 0, SETTINGS, ACK, 0)


def _hpack_string(text: bytes) -> bytes:
    # RFC 7541 5.2, no Huffman coding; the strings here are all shorter than 127 bytes.
    if len(text) >= 127:
        raise ValueError("HPACK string too long for a one-byte length")
    return bytes([len(text)]) + text


def unavailable_block(message: str) -> bytes:
    """An HPACK header block for a gRPC trailers-only response with status 14 UNAVAILABLE.

    Every field is a literal "without indexing" (RFC 7541 6.1, 6.2.2), so the block leaves the
    client's HPACK dynamic table as it was. `message` must be printable ASCII without "%"
    (grpc-message is percent-encoded otherwise).
    """
    return b"".join(
        (
            b"\x88",  # :status: 200, static table index 8
            b"\x0f\x10" + _hpack_string(b"application/grpc"),  # content-type, static index 31
            b"\x00" + _hpack_string(b"grpc-status") + _hpack_string(b"14"),
            b"\x00" + _hpack_string(b"grpc-message") + _hpack_string(message.encode("ascii")),
        )
    )


def trailers_only_frame(stream: int, block: bytes) -> bytes:
    """One HEADERS frame that is a whole response: the header block, and the stream's end."""
    return _HEADER.pack(len(block) >> 16, len(block) & 0xFFFF, HEADERS, END_STREAM | END_HEADERS, stream) + block
