"""HTTP/1.1 message heads as bytes: what a proxy forwards, drops and adds (RFC 9110, RFC 9112).

Pure functions over header lists; no sockets, no event loop, no parser state. They trust what
llhttp already enforced (one valid Content-Length, chunked last in a request's Transfer-Encoding,
no control characters in names or values) and add the proxy's own rules on top.
"""

from __future__ import annotations

import re
from http import HTTPStatus

Headers = list[tuple[bytes, bytes]]

# Bounds on a request head, as nginx bounds its large_client_header_buffers: past them, 431.
MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 100

# RFC 9110 section 7.6.1, plus the legacy names that old clients still send.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
# Set by the edge itself; a client's own values would let it lie about the scheme or host.
_REPLACED = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"})
_DROP_FROM_REQUEST = HOP_BY_HOP | _REPLACED
# RFC 9110 section 9.2.2: only these may be sent twice, so only these may be retried.
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
LAST_CHUNK = b"0\r\n\r\n"

_AUTHORITY = re.compile(rb"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::[0-9]{1,5})?$")
_PHRASES = {s.value: s.phrase.encode() for s in HTTPStatus}


# Only headers of these name lengths can matter to a scan: checking `len(name)` first spares a
# lower() for most headers on the hot path.
_REQUEST_SPECIAL = (b"host", b"content-length", b"transfer-encoding", b"connection", b"upgrade", b"x-forwarded-for")
_REQUEST_SCAN_LENGTHS = frozenset(len(n) for n in (*_REQUEST_SPECIAL, *_DROP_FROM_REQUEST))
_RESPONSE_SCAN_LENGTHS = frozenset(len(n) for n in (*HOP_BY_HOP, b"content-length"))
_REQUEST_DROP_LENGTHS = frozenset(len(n) for n in _DROP_FROM_REQUEST)
_HOP_LENGTHS = frozenset(len(n) for n in HOP_BY_HOP)
_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close", b"upgrade"})
_NO_TOKENS: frozenset[bytes] = frozenset()


class RequestFacts:
    """What the edge needs to know about a request's headers, gathered in one pass, with the
    headers it forwards as they stand unless `tokens` names more to drop."""

    __slots__ = ("chunked", "content_length", "host", "host_count", "kept", "tokens", "upgrade", "xff")

    def __init__(self) -> None:
        self.host: bytes | None = None
        self.host_count = 0
        self.content_length: int | None = None
        self.chunked = False
        self.tokens: frozenset[bytes] = _NO_TOKENS
        self.upgrade: bytes | None = None
        self.xff: bytes | None = None
        self.kept: list[bytes] = []  # name, b": ", value, b"\r\n" per header the edge forwards


def scan_request(headers: Headers) -> RequestFacts:
    facts = RequestFacts()
    kept = facts.kept
    for name, value in headers:
        if len(name) in _REQUEST_SCAN_LENGTHS:
            lowered = name.lower()
            if lowered == b"host":
                facts.host_count += 1
                facts.host = value
            elif lowered == b"content-length":
                facts.content_length = int(value)
            elif lowered == b"transfer-encoding":
                facts.chunked = True  # llhttp refuses a request whose last coding is not chunked
            elif lowered == b"connection":
                facts.tokens = facts.tokens | connection_tokens(value)
            elif lowered == b"upgrade":
                facts.upgrade = value
            elif lowered == b"x-forwarded-for":
                facts.xff = value if facts.xff is None else facts.xff + b", " + value
            if lowered in _DROP_FROM_REQUEST:
                continue
        kept += (name, b": ", value, b"\r\n")
    return facts


class ResponseFacts:
    """The headers of an upstream response that decide its framing and what the edge drops, with
    the headers it forwards as they stand unless `tokens` names more to drop."""

    __slots__ = ("has_length", "kept", "tokens", "transfer_encoding", "upgrade")

    def __init__(self) -> None:
        self.has_length = False
        self.transfer_encoding: bytes | None = None
        self.tokens: frozenset[bytes] = _NO_TOKENS
        self.upgrade = b""
        # Slot 0 is left for the status line, so a whole head is one join.
        self.kept: list[bytes] = [b""]


def scan_response(headers: Headers) -> ResponseFacts:
    facts = ResponseFacts()
    kept = facts.kept
    for name, value in headers:
        if len(name) in _RESPONSE_SCAN_LENGTHS:
            lowered = name.lower()
            if lowered == b"content-length":
                facts.has_length = True
            elif lowered in HOP_BY_HOP:
                if lowered == b"transfer-encoding":
                    facts.transfer_encoding = value
                elif lowered == b"connection":
                    facts.tokens = facts.tokens | connection_tokens(value)
                elif lowered == b"upgrade":
                    facts.upgrade = value
                continue
        kept += (name, b": ", value, b"\r\n")
    return facts


def connection_tokens(value: bytes) -> frozenset[bytes]:
    """The header names listed in a Connection header: they are hop-by-hop too (RFC 9110 7.6.1)."""
    if len(value) <= 10 and value.lower() in _PLAIN_CONNECTION:
        return _NO_TOKENS  # the usual values name no other header
    return frozenset(token.strip().lower() for token in value.split(b",") if token.strip())


def valid_authority(value: bytes) -> bool:
    """A Host value the edge may route on and repeat: `name`, `ip` or `[v6]`, with an optional port."""
    return len(value) <= 255 and _AUTHORITY.match(value) is not None


def host_key(authority: bytes) -> bytes:
    """The routing key of a Host value: lowercase, no port, no trailing dot, no IPv6 brackets."""
    host = authority.lower()
    if host.startswith(b"["):
        return host[1 : host.find(b"]")]
    colon = host.rfind(b":")
    if colon >= 0:
        host = host[:colon]
    return host.rstrip(b".")


def _without(headers: Headers, drop: frozenset[bytes], lengths: frozenset[int], out: list[bytes]) -> None:
    for name, value in headers:
        if len(name) in lengths and name.lower() in drop:
            continue
        out += (name, b": ", value, b"\r\n")


def upstream_request_head(
    method: bytes,
    target: bytes,
    headers: Headers,
    facts: RequestFacts,
    client_ip: bytes,
    host: bytes,
    add_host: bool,
    chunked: bool,
    upgrade: bool,
) -> bytes:
    """The head sent upstream: always HTTP/1.1 keep-alive, hop-by-hop dropped, X-Forwarded-* set.

    `host` is the authority the client asked for; `add_host` adds it as Host when the client sent
    none (HTTP/1.0) or its request target named it (absolute form replaces any Host header).
    """
    out = [method, b" ", target, b" HTTP/1.1\r\n"]
    if facts.tokens or add_host:  # rare: headers named in Connection, or a Host to replace
        extra = facts.tokens | {b"host"} if add_host else facts.tokens
        _without(headers, _DROP_FROM_REQUEST | extra, _REQUEST_DROP_LENGTHS | {len(t) for t in extra}, out)
        if add_host:
            out += (b"Host: ", host, b"\r\n")
    else:
        out += facts.kept
    xff = client_ip if facts.xff is None else facts.xff + b", " + client_ip
    out.append(b"X-Forwarded-For: %s\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: %s\r\n" % (xff, host))
    if chunked:
        out.append(b"Transfer-Encoding: chunked\r\n")
    if upgrade and facts.upgrade is not None:
        out += (b"Connection: upgrade\r\nUpgrade: ", facts.upgrade, b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)


# Status lines by (status, reason): upstreams repeat a handful, so each is formatted once.
_STATUS_LINES: dict[tuple[int, bytes], bytes] = {}
_MAX_STATUS_LINES = 1024


def status_line(status: int, reason: bytes) -> bytes:
    line = _STATUS_LINES.get((status, reason))
    if line is None:
        if len(_STATUS_LINES) >= _MAX_STATUS_LINES:
            _STATUS_LINES.clear()
        line = _STATUS_LINES[status, reason] = b"HTTP/1.1 %d %s\r\n" % (status, reason or _PHRASES.get(status, b"Unknown"))
    return line


# What the edge appends to a response head, by (chunked, close, keep_alive_10).
_FRAMING_TAILS = {
    (chunked, close, keep_alive_10): b"".join(
        (
            b"Transfer-Encoding: chunked\r\n" if chunked else b"",
            b"Connection: close\r\n" if close else (b"Connection: keep-alive\r\n" if keep_alive_10 else b""),
            b"\r\n",
        )
    )
    for chunked in (False, True)
    for close in (False, True)
    for keep_alive_10 in (False, True)
}


def client_response_head(
    status: int,
    reason: bytes,
    headers: Headers,
    facts: ResponseFacts | None = None,
    chunked: bool = False,
    close: bool = False,
    keep_alive_10: bool = False,
    upgrade: bool = False,
) -> bytes:
    """The head sent to the client: hop-by-hop dropped, our own framing and Connection added.

    `chunked` means the edge re-frames a body of unknown length; `keep_alive_10` answers an
    HTTP/1.0 client that asked for keep-alive; `upgrade` keeps Upgrade on a 101.
    """
    if facts is None:
        facts = scan_response(headers)
    tail = b"Connection: upgrade\r\nUpgrade: %s\r\n\r\n" % facts.upgrade if upgrade else _FRAMING_TAILS[chunked, close, keep_alive_10]
    if facts.tokens or (chunked and facts.has_length):
        # Rare: headers named in Connection, or a length the edge's re-framing replaces.
        extra = facts.tokens | {b"content-length"} if chunked else facts.tokens
        out = [status_line(status, reason)]
        _without(headers, HOP_BY_HOP | extra, _HOP_LENGTHS | {len(t) for t in extra}, out)
        out.append(tail)
        return b"".join(out)
    kept = facts.kept
    kept[0] = status_line(status, reason)
    kept.append(tail)
    head = b"".join(kept)
    del kept[-1]
    return head


def edge_response(status: int, *, close: bool, head_only: bool = False, detail: str = "", keep_alive_10: bool = False) -> bytes:
    """A complete short plain-text answer from the edge itself (404, 502, 504, 4xx on bad input)."""
    phrase = _PHRASES.get(status, b"Error")
    body = b"%d %s%s\n" % (status, phrase, (": " + detail).encode() if detail else b"")
    connection = b"Connection: close\r\n" if close else (b"Connection: keep-alive\r\n" if keep_alive_10 else b"")
    head = b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n%s\r\n" % (
        status,
        phrase,
        len(body),
        connection,
    )
    return head if head_only else head + body


def total_length(pieces: list[bytes]) -> int:
    """How many bytes `pieces` hold (compiled: a C loop, where sum(map(len, ...)) calls len per piece)."""
    total = 0
    for piece in pieces:
        total += len(piece)
    return total


def chunk_size_line(size: int) -> bytes:
    return b"%x\r\n" % size


def phrase(status: int) -> bytes:
    return _PHRASES.get(status, b"Unknown")
