"""The redirect engine: answers every plain-HTTP request with a 308 to the HTTPS port.

Owns its small HTTP/1.1 server side: parse (httptools), check the Host, answer at once,
keep-alive, header and idle timeouts, drain. It needs no upstream, no TLS and no certificate;
the listener that accepts its connections is `proxy.listeners.redirect`.
"""

from __future__ import annotations

import asyncio
import time
from typing import cast

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser, parse_url

from proxy.connections import Shared
from proxy.http1.request import LOCAL_REASONS, HeadLimit
from proxy.http1.wire import MAX_HEAD_BYTES, MAX_HEADERS, edge_response, host_key, phrase, valid_authority


def redirect_location(host: bytes, target: bytes, https_port: int) -> bytes | None:
    """`https://host[:port]/path?query` for a Host value and request target, or None when
    either is unusable. Port 443 is left out, as browsers write it."""
    if not host or not valid_authority(host):
        return None
    if target.startswith(b"/"):
        path = target
    elif target[:8].lower().startswith((b"http://", b"https://")):
        try:
            url = parse_url(target)
        except HttpParserError:
            return None
        path = (url.path or b"/") + (b"?" + url.query if url.query else b"")
    else:
        return None
    name = host_key(host)
    if b":" in name:
        name = b"[" + name + b"]"
    port = b"" if https_port == 443 else b":%d" % https_port
    return b"https://" + name + port + path


class RedirectConnection(HeadLimit, asyncio.Protocol):
    def __init__(self, shared: Shared, https_port: int) -> None:
        super().__init__()
        self._shared = shared
        self._https_port = https_port
        self._transport: asyncio.Transport | None = None
        self._parser = HttpRequestParser(self)
        self._host: bytes | None = None
        self._hosts = 0
        self._headers = 0
        self._has_body = False
        self._in_head = False
        self._closing = False
        self._timer: asyncio.TimerHandle | None = None
        self._access = shared.access
        self._client = ""
        self._method: bytes | None = None
        self._began = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        self._shared.opened(self)
        if self._access is not None:
            peer = transport.get_extra_info("peername")
            self._client = str(peer[0]) if peer else "unknown"
            self._began = time.monotonic()
        # A fresh connection owes its first request head within header_timeout, as on the HTTPS
        # listeners (nginx's client_header_timeout); idle_timeout is for keep-alive after it.
        self._arm(self._shared.limits.header_timeout)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade:
            pass  # answered in on_headers_complete; the connection is closing
        except HttpParserError:
            status = self._refusal or 400
            self._answer(edge_response(status, close=True), status, close=True)
            return
        if self._in_head:
            self._head_size += len(data)  # a head still open after a whole read: bound it
            if self._head_size > 2 * MAX_HEAD_BYTES:
                self._answer(edge_response(431, close=True), 431, close=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        del self._parser  # it holds our bound methods: no cycle left for the collector
        if self._timer is not None:
            self._timer.cancel()
        self._shared.closed(self)

    def on_message_begin(self) -> None:
        self._url, self._host, self._hosts, self._headers, self._head_size = b"", None, 0, 0, 0
        self._in_head, self._has_body = True, False
        self._method = None
        if self._access is not None:
            self._began = time.monotonic()
        self._arm(self._shared.limits.header_timeout)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        self._headers += 1
        if self._head_size > MAX_HEAD_BYTES or self._headers > MAX_HEADERS:
            self._refuse(431)
        lowered = name.lower()
        if lowered == b"host":
            self._host, self._hosts = value, self._hosts + 1
        elif lowered in (b"content-length", b"transfer-encoding"):
            self._has_body = value.strip() != b"0"

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self._parser
        self._method = parser.get_method()
        keep_alive = parser.should_keep_alive() and not self._shared.draining
        # A body would have to be read and thrown away; closing is simpler and just as correct.
        close = not keep_alive or self._has_body or parser.should_upgrade()
        location = redirect_location(self._host or b"", self._url, self._https_port) if self._hosts == 1 else None
        if location is None:
            self._answer(edge_response(400, close=True, detail="a Host header naming this server is needed"), 400, close=True)
            return
        body = b"Redirecting to " + location + b"\n"
        head = b"HTTP/1.1 308 %s\r\nLocation: %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n%s\r\n" % (
            phrase(308),
            location,
            len(body),
            b"Connection: close\r\n" if close else b"",
        )
        self._answer(head if parser.get_method() == b"HEAD" else head + body, 308, close=close)

    def on_message_complete(self) -> None:
        if not self._closing:
            self._arm(self._shared.limits.idle_timeout)

    def _answer(self, response: bytes, status: int, *, close: bool) -> None:
        if self._closing or self._transport is None:
            return  # answered already; what follows a closing request is ignored
        self._shared.tally.request(status)
        self._transport.write(response)
        if self._access is not None:
            self._log(status, len(response))
        if close:
            self.close()

    def _log(self, status: int, bytes_out: int) -> None:
        assert self._access is not None
        method = self._method
        self._access.request(
            "HTTP/1.1",
            self._client,
            None,
            None if method is None else method.decode("latin-1"),
            None if self._host is None else self._host.decode("latin-1"),
            self._url.decode("utf-8", "backslashreplace") if self._url else None,
            status,
            self._head_size + (len(method) + 14 if method else 0),
            bytes_out,
            self._began,
            None,
            "https_redirect" if status == 308 else LOCAL_REASONS.get(status, "refused"),
        )

    def _arm(self, seconds: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._shared.loop.call_later(seconds, self._expired)

    def _expired(self) -> None:
        self._timer = None
        if self._in_head:
            self._answer(edge_response(408, close=True), 408, close=True)
        else:
            self.close()

    def close(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    def drain(self) -> None:
        self.close()  # every answer is written at once: nothing is ever in flight here

    def abort(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.abort()
