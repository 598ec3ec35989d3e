"""Connections to one upstream: a small keep-alive pool and the response side of HTTP/1.1.

Owns connecting (with `connect_timeout`), keeping idle connections, and parsing each response
with httptools into events for whoever is attached (a `ResponseSink`). It does not know about
clients, TLS or routing; one request at a time per connection, never pipelined upstream.
"""

from __future__ import annotations

import asyncio
from typing import cast

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from proxy.config import HttpUpstream
from proxy.errors import ProxyError
from proxy.http1.wire import Headers, ResponseFacts, scan_response

# How the body of a final response is delimited.
NO_BODY, LENGTH, CHUNKED, UNTIL_CLOSE = 0, 1, 2, 3
# Idle upstream connections: enough for a busy listener, short-lived enough that an upstream's
# own keep-alive timer rarely closes one under us (aiohttp's default is 75 s, gunicorn's 2 s).
MAX_IDLE = 256
KEEP_IDLE_SECONDS = 30.0


class UpstreamUnreachable(ProxyError, ConnectionError):
    """No connection to the upstream: refused, unroutable, or not within `connect_timeout`."""


class ResponseSink:
    """The one request/response exchange a connection serves at a time: the engine's classes
    (an HTTP/1.1 exchange, an HTTP/2 stream) inherit it and override every method. A base class
    rather than a typing.Protocol, so the compiled engine calls these methods in C."""

    __slots__ = ()

    def on_interim(self, status: int, reason: bytes, headers: Headers) -> None:
        raise NotImplementedError

    def on_head(self, status: int, reason: bytes, headers: Headers, facts: ResponseFacts, framing: int) -> None:
        raise NotImplementedError

    def on_body(self, data: bytes) -> None:
        raise NotImplementedError

    def on_end(self) -> None:
        raise NotImplementedError

    def on_upgrade(self, reason: bytes, headers: Headers, rest: bytes) -> None:
        raise NotImplementedError

    def after_data(self) -> None:
        raise NotImplementedError

    def on_tunnel_data(self, data: bytes) -> None:
        raise NotImplementedError

    def on_broken(self, reason: str) -> None:
        raise NotImplementedError

    def on_lost(self, exc: Exception | None) -> None:
        raise NotImplementedError

    def on_write_paused(self, paused: bool) -> None:
        raise NotImplementedError


class UpstreamConnection:
    """One TCP connection to an upstream, an asyncio Protocol (by its methods: the compiled
    engine's classes have one base). Response events go to the attached sink; after a 101 it
    only relays bytes (`tunnel`)."""

    __slots__ = (
        "_head_only",
        "_headers",
        "_in_head",
        "_parser",
        "_reason",
        "_status",
        "closed",
        "dirty",
        "done",
        "got_bytes",
        "idle_since",
        "keep_alive",
        "pool",
        "reading_paused",
        "served",
        "sink",
        "transport",
        "tunnel",
        "writing_paused",
    )

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.sink: ResponseSink | None = None
        self.served = 0
        self.closed = False
        self.writing_paused = False
        self.reading_paused = False
        self.keep_alive = False
        self.got_bytes = False
        self.tunnel = False
        self.idle_since = 0.0
        self._parser: HttpResponseParser | None = None
        self._head_only = False
        self._status = 0
        self._reason = b""
        self._headers: Headers = []
        self._in_head = True
        self.done = False
        self.dirty = False

    def attach(self, sink: ResponseSink, head_only: bool) -> None:
        # After a HEAD the parser may still wait for the body the headers announced (httptools
        # cannot be told the request was HEAD); only then does the next exchange need a new one.
        if self._parser is None or self._head_only:
            self._parser = HttpResponseParser(self)
        self.sink = sink
        self.served += 1
        self._head_only = head_only
        self._status = 0
        self.done = self.got_bytes = False
        if self.writing_paused:
            sink.on_write_paused(True)

    def detach(self) -> None:
        self.sink = None

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        sink = self.sink
        if self.tunnel and sink is not None:
            sink.on_tunnel_data(data)
            return
        if sink is None or self._parser is None:
            self.abort()  # an idle connection must stay silent; one that speaks is unusable
            return
        self.got_bytes = True
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade as e:
            if self.sink is sink and self._status == 101:
                self.tunnel = True
                sink.on_upgrade(self._reason, self._headers, data[e.args[0] :])
        except HttpParserError as e:
            if not self.done:
                sink.on_broken(f"invalid response: {e}")
                return
            self.dirty = True  # bytes after a complete response: never reuse this connection
        sink.after_data()

    def eof_received(self) -> bool:
        return False  # close; an UNTIL_CLOSE body ends in connection_lost

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._parser = None  # it holds our bound methods: no cycle left for the collector
        self.pool.forget(self)
        if self.sink is not None:
            self.sink.on_lost(exc)

    def pause_writing(self) -> None:
        self.writing_paused = True
        if self.sink is not None:
            self.sink.on_write_paused(True)

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.sink is not None:
            self.sink.on_write_paused(False)

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self.done:
            self.dirty = True  # a second response to one request
        self._reason = b""
        self._headers = []
        self._in_head = True

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_head:  # else trailers: dropped, the edge re-frames bodies itself
            self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser, sink = self._parser, self.sink
        if self.done or parser is None or sink is None:
            return
        status = self._status = parser.get_status_code()
        if status < 200:
            if status != 101:  # a 101 continues as HttpParserUpgrade once the head is done
                sink.on_interim(status, self._reason, self._headers)
            return
        self.keep_alive = parser.should_keep_alive()
        facts = scan_response(self._headers)
        if self._head_only or status == 204 or status == 304:
            framing = NO_BODY
        elif facts.transfer_encoding is not None:
            framing = CHUNKED if facts.transfer_encoding.lower().rstrip().endswith(b"chunked") else UNTIL_CLOSE
        else:
            framing = LENGTH if facts.has_length else UNTIL_CLOSE
        sink.on_head(status, self._reason, self._headers, facts, framing)
        if self._head_only:
            # The answer to HEAD has no body whatever its headers say (RFC 9110 9.3.2).
            self.done = True
            sink.on_end()

    def on_body(self, data: bytes) -> None:
        if self.done:
            self.dirty = True
        elif self.sink is not None:
            self.sink.on_body(data)

    def on_message_complete(self) -> None:
        if self.done or self._status < 200 or self.sink is None:
            return  # interim responses end here too; llhttp then reads the next head
        self.done = True
        self.sink.on_end()


class UpstreamPool:
    """Connections to one upstream: connect on demand, keep idle ones (most recent first)."""

    __slots__ = ("_closed", "_connect_timeout", "_idle", "_loop", "_sweeper", "label", "upstream")

    def __init__(self, upstream: HttpUpstream, connect_timeout: float) -> None:
        self.upstream = upstream
        self.label = str(upstream)  # as the access log names it
        self._connect_timeout = connect_timeout
        self._loop = asyncio.get_running_loop()
        self._idle: list[UpstreamConnection] = []
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    def take(self) -> UpstreamConnection | None:
        """An idle connection, or None. Connections idle too long are closed on the way."""
        now = self._loop.time()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since < KEEP_IDLE_SECONDS:
                return conn
            conn.close()
        return None

    async def connect(self) -> UpstreamConnection:
        """A new connection. Raises UpstreamUnreachable naming the reason; anything else is a bug."""
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, protocol = await self._loop.create_connection(
                    lambda: cast(asyncio.Protocol, UpstreamConnection(self)), self.upstream.host, self.upstream.port
                )
        except TimeoutError as e:
            raise UpstreamUnreachable(f"no connection within {self._connect_timeout:g} s") from e
        except OSError as e:
            raise UpstreamUnreachable(e.strerror or str(e)) from e
        return cast(UpstreamConnection, protocol)

    def put(self, conn: UpstreamConnection) -> None:
        """Keep a connection whose last response was complete and keep-alive."""
        conn.detach()
        if self._closed or conn.closed or len(self._idle) >= MAX_IDLE:
            conn.close()
            return
        conn.resume_reading()  # an idle connection must notice the upstream closing it
        conn.idle_since = self._loop.time()
        self._idle.append(conn)
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(KEEP_IDLE_SECONDS, self._sweep)

    def forget(self, conn: UpstreamConnection) -> None:
        if conn in self._idle:
            self._idle.remove(conn)

    def _sweep(self) -> None:
        self._sweeper = None
        cutoff = self._loop.time() - KEEP_IDLE_SECONDS
        stale = [c for c in self._idle if c.idle_since <= cutoff]
        self._idle = [c for c in self._idle if c.idle_since > cutoff]
        for conn in stale:
            conn.close()
        if self._idle:
            self._sweeper = self._loop.call_later(KEEP_IDLE_SECONDS / 2, self._sweep)

    def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
