"""The client side of an HTTPS listener: one asyncio Protocol per TLS connection.

Owns request parsing (httptools/llhttp, strict), the limits a request head must meet (431, 413,
400, 505), routing each request, the in-order queue of exchanges that makes pipelining safe, the
header and idle timeouts, and flow control towards the client. It does not speak to upstreams
itself (exchanges do) and never sees certificates: the TLS layer below it already did.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from time import monotonic
from typing import cast

from httptools import HttpParserCallbackError, HttpParserError, HttpParserUpgrade, HttpRequestParser

from proxy.accesslog import AccessEntry, new_entry
from proxy.connections import Shared
from proxy.http1.exchange import PAUSE_QUEUE, PAUSE_STOP, ClientSide, Exchange
from proxy.http1.request import Refused, Request, interpret
from proxy.http1.routing import Router
from proxy.http1.upstream import UpstreamPool
from proxy.http1.wire import MAX_HEAD_BYTES, MAX_HEADERS, Headers, total_length

log = logging.getLogger("proxy.http")

# Parsed requests waiting for their turn before the client is paused (pipelining depth).
MAX_QUEUED = 16
# Below this, pieces of one response are joined into one TLS record; above, copying costs more.
_JOIN_BELOW = 16 * 1024


# Stands in for a request whose head was refused before it could be understood.
_NO_REQUEST = Request(b"")
# The request line's bytes besides method and target: two spaces, "HTTP/1.1", CRLF; and the CRLF
# that ends the head (each header's ": " and CRLF are counted in `_head_size`).
_HEAD_FRAMING = 2 + 8 + 2 + 2
_METHODS = {m: m.decode() for m in (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"TRACE", b"CONNECT")}


def client_protocol(shared: Shared, router: Router[UpstreamPool]) -> asyncio.Protocol:
    """A new client connection, typed as what asyncio takes: it is a Protocol by its methods."""
    return cast(asyncio.Protocol, ClientConnection(shared, router))


class ClientConnection(ClientSide):
    """An asyncio Protocol (by its methods: the compiled engine's classes have one base)."""

    __slots__ = (
        "_access",
        "_began",
        "_body_seen",
        "_client_ip",
        "_closed",
        "_deadline",
        "_deadline_is_header",
        "_handshake_timer",
        "_head_seen",
        "_headers",
        "_in_head",
        "_incoming",
        "_kicking",
        "_limits",
        "_log_client",
        "_log_host",
        "_log_host_text",
        "_loop",
        "_parser",
        "_paused",
        "_period",
        "_queue",
        "_router",
        "_shared",
        "_stopped",
        "_timer",
        "_tls_version",
        "_upgrading",
        "transport",
    )

    def __init__(self, shared: Shared, router: Router[UpstreamPool]) -> None:
        super().__init__()
        self._shared = shared
        self._router = router
        self._access = shared.access
        self._loop = shared.loop
        limits = self._limits = shared.limits
        self.transport: asyncio.Transport | None = None
        self._parser = HttpRequestParser(self)
        self._queue: deque[Exchange] = deque()
        self._incoming: Exchange | None = None  # the exchange whose request body is arriving
        self._upgrading: Exchange | None = None  # after an Upgrade request: raw bytes go here
        self._paused = 0
        self._stopped = False  # no further request will be read
        self._closed = False
        self._kicking = False
        self._client_ip = b""
        self._in_head = False
        self._headers: Headers = []
        self._head_seen = 0
        self._body_seen = 0
        self._deadline = 0.0
        self._deadline_is_header = False
        self._timer: asyncio.TimerHandle | None = None
        # One lazily re-armed timer serves the header, idle and upstream timeouts: it fires at
        # least this often while one is pending, so a request never pays for a timer of its own.
        self._period = min(limits.header_timeout, limits.idle_timeout, limits.upstream_timeout)
        self._handshake_timer: asyncio.TimerHandle | None = shared.watch_handshake(lambda: self.transport is not None)
        self._began = 0.0  # time.monotonic() when the current request head began (access log on)
        self._log_client = ""
        # The Host header of the connection's last logged request, and its text: a connection
        # keeps to one host, so its lines share one string.
        self._log_host: bytes | None = b""
        self._log_host_text: str | None = None
        self._tls_version: str | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self.transport = transport
        self._shared.tally.handshake()
        self._shared.opened(self)
        peer = transport.get_extra_info("peername")
        self._client_ip = str(peer[0]).encode() if peer else b"unknown"
        if self._access is not None:
            self._began = monotonic()
            self._log_client = str(peer[0]) if peer else "unknown"
            ssl_object = transport.get_extra_info("ssl_object")
            self._tls_version = ssl_object.version() if ssl_object is not None else None
        if self._shared.draining:
            self.close()
        else:
            # A fresh connection owes its first request head within header_timeout, as with
            # nginx's client_header_timeout; idle_timeout is for keep-alive between requests.
            self._watch(header=True)

    def data_received(self, data: bytes) -> None:
        if self._upgrading is not None:
            self._upgrading.tunnel_from_client(data)
            return
        if self._stopped:
            return
        was_in_head = self._in_head
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade as e:
            self._begin_upgrade(data[e.args[0] :])
        except HttpParserCallbackError:
            if not self._refusal:
                log.exception("%s: request handling failed", self._shared.name)
                self.abort()
                return
            self._reject(self._refusal)
        except HttpParserError:
            if not self._stopped:  # else: bytes after a `Connection: close` request, ignored
                self._reject(400)
        else:
            if self._in_head:
                if was_in_head:
                    # A head spread over many reads: count whole reads, since httptools holds a
                    # header it has not finished in memory without telling us (callbacks see
                    # only whole ones).
                    self._head_seen += len(data)
                    if self._head_seen > MAX_HEAD_BYTES:
                        self._reject(431)
                elif not self._queue:
                    # A head began in this read and is still open: header_timeout runs from now.
                    # A head that arrives whole never needs the clock.
                    self._watch(header=True)
        self._kick()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = self._stopped = True
        # The parser holds our bound methods: dropping it breaks that cycle, so the connection is
        # freed by reference counting instead of waiting for the (costly) cyclic collector. No
        # callback reads it once `_stopped` is set.
        self._parser = None  # type: ignore[assignment]
        self._cancel_timers()
        self._shared.closed(self)
        queue, self._queue = self._queue, deque()
        for exchange in queue:
            exchange.client_lost()
        self._incoming = self._upgrading = None

    def pause_writing(self) -> None:
        self.writing_paused = True
        if self._queue:
            self._queue[0].client_write_paused(True)

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self._queue:
            self._queue[0].client_write_paused(False)

    # --- ClientSide: what exchanges use -------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def write_pieces(self, pieces: list[bytes]) -> None:
        if self.transport is None:
            return
        if len(pieces) == 1:
            self.transport.write(pieces[0])
        elif total_length(pieces) < _JOIN_BELOW:
            self.transport.write(b"".join(pieces))
        else:
            self.transport.writelines(pieces)

    def pause_reading(self, reason: int) -> None:
        if not self._paused and self.transport is not None and not self._closed:
            self.transport.pause_reading()
        self._paused |= reason

    def resume_reading(self, reason: int) -> None:
        if self._paused & reason:
            self._paused &= ~reason
            if not self._paused and self.transport is not None and not self._closed:
                self.transport.resume_reading()

    def exchange_done(self, exchange: Exchange, keep_alive: bool) -> None:
        if self._queue and self._queue[0] is exchange:
            self._queue.popleft()
        if self._incoming is exchange:
            self._incoming = None
        if not keep_alive or (self._shared.draining and not self._queue):
            self.close()
            return
        if self._paused & PAUSE_QUEUE and len(self._queue) <= MAX_QUEUED // 2:
            self.resume_reading(PAUSE_QUEUE)
        if self._queue:
            self._kick()
        else:
            self._watch(header=self._in_head)

    def close(self) -> None:
        """Close after what is written has been sent (TLS close_notify included)."""
        if not self._closed:
            self._closed = self._stopped = True
            self._cancel_timers()
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        self._closed = self._stopped = True
        if self.transport is not None:
            self.transport.abort()

    def drain(self) -> None:
        """Stop at the next request boundary; exchanges in flight answer with Connection: close."""
        if not self._queue and self._upgrading is None:
            self.close()

    # --- httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._access is not None:
            self._began = monotonic()
        self._in_head = True
        self._url = b""
        self._headers = []
        self._head_size = self._head_seen = self._body_seen = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._in_head:
            self._headers.append((name, value))
        if self._head_size > MAX_HEAD_BYTES or len(self._headers) > MAX_HEADERS:
            self._refuse(431)  # trailers count too: httptools holds them in memory as well

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self._parser
        method = parser.get_method()
        try:
            request, pool = interpret(
                method,
                parser.get_http_version(),
                self._url,
                self._headers,
                self._router,
                keep_alive=parser.should_keep_alive(),
                upgrade=parser.should_upgrade(),
                client_ip=self._client_ip,
                max_body_bytes=self._limits.max_body_bytes,
            )
        except Refused as e:
            self._refuse(e.status)
        exchange = Exchange(self, self._shared, request, pool, 0 if pool is not None else 404)
        if self._access is not None:
            exchange.log = self._access_entry(method, request.host, pool)
        self._queue.append(exchange)
        self._incoming = exchange
        if len(self._queue) > MAX_QUEUED:
            self.pause_reading(PAUSE_QUEUE)

    def on_body(self, data: bytes) -> None:
        exchange = self._incoming
        if exchange is None:
            return
        limit = self._limits.max_body_bytes
        if limit:
            self._body_seen += len(data)
            if self._body_seen > limit:
                self._refuse(413)  # a chunked body has no length to check up front
        exchange.request_body(data)

    def on_message_complete(self) -> None:
        exchange, self._incoming = self._incoming, None
        if exchange is not None:
            exchange.request_end()
            if not exchange.request.keep_alive:
                self._stopped = True

    # --- internals ----------------------------------------------------------------------------

    def _kick(self) -> None:
        """Start the oldest exchange once everything before it has finished. Runs after each
        parsed read, so a request that turns out malformed in the same read is never forwarded."""
        if self._kicking:
            return
        self._kicking = True
        try:
            while self._queue and not self._queue[0].started and not self._closed:
                self._queue[0].start()  # may finish at once (a local answer) and pop itself
        finally:
            self._kicking = False

    def _reject(self, status: int) -> None:
        self._stopped = True
        self.pause_reading(PAUSE_STOP)
        self._shared.tally.error("bad_request")
        exchange, self._incoming = self._incoming, None
        if exchange is not None:
            exchange.request_failed(status)
            return
        exchange = Exchange(self, self._shared, _NO_REQUEST, None, status)
        if self._access is not None:
            exchange.log = self._access_entry(None, None, None)
        self._queue.append(exchange)

    def _access_entry(self, method: bytes | None, host: bytes | None, pool: UpstreamPool | None) -> AccessEntry:
        """The access log's record of the request whose head was just read (or refused)."""
        assert self._access is not None
        url = self._url
        size = self._head_size + _HEAD_FRAMING + (len(method) if method else 0)
        if host != self._log_host:
            self._log_host = host
            self._log_host_text = host.decode("latin-1") if host else None
        return new_entry(
            self._access,
            self._log_client,
            self._tls_version,
            None if method is None else _METHODS.get(method) or method.decode("latin-1"),
            self._log_host_text,
            url.decode("utf-8", "backslashreplace") if url else None,
            self._began,
            size,
            pool.label if pool is not None else None,
        )

    def _begin_upgrade(self, rest: bytes) -> None:
        self._stopped = True  # whatever the upstream answers, this connection parses no more
        if not self._queue:
            self.close()
            return
        self._upgrading = self._queue[-1]
        if rest:
            self._upgrading.tunnel_from_client(rest)

    def _watch(self, header: bool) -> None:
        limits = self._limits
        self._deadline_is_header = header
        self._deadline = self._loop.time() + (limits.header_timeout if header else limits.idle_timeout)
        self.watch_upstream()

    def watch_upstream(self) -> None:
        """Make sure the timer runs: an exchange has set its `head_deadline`, or the connection
        went idle. Any timer pending fires within one period, before any new deadline."""
        if self._timer is None and not self._closed:
            self._timer = self._loop.call_later(self._period, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._closed or self._upgrading is not None:
            return
        now = self._loop.time()
        if self._queue:
            deadline = self._queue[0].head_deadline
            if not deadline:
                return  # streaming, or waiting for the client: the next exchange re-arms
            if now >= deadline:
                self._queue[0].head_timed_out()
                return
            remaining = deadline - now
        else:
            remaining = self._deadline - now
            if remaining <= 0:
                if self._deadline_is_header and self._in_head:
                    self._reject(408)
                    self._kick()
                else:
                    self.close()  # idle keep-alive connection: close quietly
                return
        self._timer = self._loop.call_later(min(remaining, self._period), self._on_timer)

    def _cancel_timers(self) -> None:
        for timer in (self._timer, self._handshake_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._handshake_timer = None
