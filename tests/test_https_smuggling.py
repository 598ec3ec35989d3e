"""Hostile and malformed requests: answered by the edge with a 4xx and a close, never forwarded."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.certstore.store import CertStore
from proxy.tlsmaterial import TlsObjects
from tests.support.listeners import RunningListener, client_connection_without_routes, https, route, running_listener
from tests.support.web import Upstream, closed_by_peer, exchange_raw, read_response, tls_connect, tls_connection


@pytest.fixture
async def edge(store: CertStore[TlsObjects], up: Upstream) -> AsyncIterator[RunningListener]:
    async with running_listener(https(route(up.port), max_body_bytes=1000), store=store) as listener:
        yield listener


async def refused(edge: RunningListener, tls: ssl.SSLContext, request: bytes) -> int:
    """Send `request` in one write; return the status, after checking that the edge closed."""
    async with tls_connection(edge.port, tls) as (reader, writer):
        writer.write(request)
        response = await asyncio.wait_for(read_response(reader), 5)
        assert response.header("connection") == "close"
        assert await closed_by_peer(reader)
        return response.status


SMUGGLING = {
    "content-length and transfer-encoding": b"POST /smuggled HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "transfer-encoding and content-length": b"POST /smuggled HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Length: 4\r\n\r\n0\r\n\r\n",
    "differing content-lengths": b"POST /smuggled HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "content-length list": b"POST /smuggled HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\nabcd",
    "invalid chunk size": b"POST /smuggled HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "chunk size overflow": b"POST /smuggled HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n",
    "transfer-encoding not chunked last": b"POST /smuggled HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    "obsolete line folding": b"GET /smuggled HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n",
    "space before colon": b"GET /smuggled HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "bare LF line ends": b"GET /smuggled HTTP/1.1\nHost: a\n\n",
    "no Host": b"GET /smuggled HTTP/1.1\r\n\r\n",
    "two Hosts": b"GET /smuggled HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "unusable Host": b"GET /smuggled HTTP/1.1\r\nHost: a b@c\r\n\r\n",
    "relative target": b"GET smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", SMUGGLING.values(), ids=SMUGGLING.keys())
async def test_ambiguous_requests_get_400_and_a_close_and_are_never_forwarded(
    edge: RunningListener, client_tls: ssl.SSLContext, up: Upstream, request_bytes: bytes
) -> None:
    assert await refused(edge, client_tls, request_bytes) == 400
    assert not any("smuggled" in path for path in up.seen)


async def test_a_bad_request_after_good_pipelined_ones_answers_those_first(
    edge: RunningListener, client_tls: ssl.SSLContext, up: Upstream
) -> None:
    async with tls_connection(edge.port, client_tls) as (reader, writer):
        writer.write(
            b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n"
            b"POST /smuggled HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        assert (await read_response(reader)).json()["path"] == "/first"
        second = await read_response(reader)
        assert (second.status, second.header("connection")) == (400, "close")
        assert await closed_by_peer(reader)
    assert up.seen == ["/first"]


async def test_oversize_heads_get_431_and_long_targets_414(edge: RunningListener, client_tls: ssl.SSLContext, up: Upstream) -> None:
    big_header = b"GET /smuggled HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * 100_000 + b"\r\n\r\n"
    many_headers = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n"
    long_target = b"GET /smuggled" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: a\r\n\r\n"
    assert await refused(edge, client_tls, big_header) == 431
    assert await refused(edge, client_tls, many_headers) == 431
    assert await refused(edge, client_tls, long_target) == 414
    assert up.seen == []


async def test_a_head_trickled_in_small_reads_is_still_bounded(edge: RunningListener, client_tls: ssl.SSLContext) -> None:
    reader, writer = await tls_connect(edge.port, client_tls)
    sent = 0
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\nX-Endless: ")
        with contextlib.suppress(ConnectionError):
            for _ in range(100):  # one header value that never ends: httptools would hold all of it
                writer.write(b"v" * 4096)
                await writer.drain()
                sent += 4096
                await asyncio.sleep(0.005)
        try:
            response = await asyncio.wait_for(read_response(reader), 5)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the close may overtake the 431 while this client is still writing
        else:
            assert response.status == 431
    finally:
        writer.close()
    assert sent < 100 * 4096, "the edge kept reading an endless head"


async def test_bodies_over_max_body_bytes_get_413(edge: RunningListener, client_tls: ssl.SSLContext, up: Upstream) -> None:
    declared = b"POST /smuggled HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n"
    assert await refused(edge, client_tls, declared) == 413
    assert up.seen == []
    chunked = b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + b"100\r\n" + b"c" * 256 + b"\r\n"
    assert await refused(edge, client_tls, chunked * 1 + (b"100\r\n" + b"c" * 256 + b"\r\n") * 4) == 413
    at_limit = b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n" + b"d" * 1000
    assert (await exchange_raw(edge.port, client_tls, at_limit)).json()["received"] == 1000


async def test_unsupported_versions_and_connect_are_refused(edge: RunningListener, client_tls: ssl.SSLContext) -> None:
    assert await refused(edge, client_tls, b"GET / HTTP/2.0\r\nHost: a\r\n\r\n") == 505
    assert await refused(edge, client_tls, b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n") == 405
    assert await refused(edge, client_tls, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") == 400


async def test_a_stalled_head_gets_408_after_header_timeout(store: CertStore[TlsObjects], up: Upstream, client_tls: ssl.SSLContext) -> None:
    config = https(route(up.port), header_timeout=0.3, idle_timeout=5.0)
    async with running_listener(config, store=store) as edge, tls_connection(edge.port, client_tls) as (reader, writer):
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n")
        response = await asyncio.wait_for(read_response(reader), 5)
        assert (response.status, response.header("connection")) == (408, "close")


async def test_a_head_dripped_in_pieces_gets_408_counted_from_its_first_byte(
    store: CertStore[TlsObjects], up: Upstream, client_tls: ssl.SSLContext
) -> None:
    config = https(route(up.port), header_timeout=0.5, idle_timeout=5.0)
    async with running_listener(config, store=store) as edge, tls_connection(edge.port, client_tls) as (reader, writer):
        loop = asyncio.get_running_loop()
        started = loop.time()
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n")
        answer = asyncio.ensure_future(read_response(reader))
        for i in range(30):  # a header every 0.1 s: each read must not restart the clock
            await asyncio.wait([answer], timeout=0.1)
            if answer.done():
                break
            writer.write(b"X-Drip-%d: x\r\n" % i)
        response = await asyncio.wait_for(answer, 5)
        assert (response.status, response.header("connection")) == (408, "close")
        assert loop.time() - started < 2.0


async def test_an_idle_keep_alive_connection_is_closed_after_idle_timeout(
    store: CertStore[TlsObjects], up: Upstream, client_tls: ssl.SSLContext
) -> None:
    config = https(route(up.port), idle_timeout=0.3)
    async with running_listener(config, store=store) as edge, tls_connection(edge.port, client_tls) as (reader, writer):
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (await read_response(reader)).status == 200
        assert await closed_by_peer(reader, timeout=5)


class MemoryTransport(asyncio.Transport):
    """Collects what the edge writes; enough of a transport to drive a ClientConnection in memory."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        for data in list_of_data:
            self.write(data)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("192.0.2.1", 50000) if name == "peername" else default


_token = st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12)
_value = st.one_of(st.text("0123456789abcdefchunked ,;=-", max_size=12), st.binary(max_size=12).map(lambda b: b.decode("latin-1")))
_header = st.one_of(
    st.tuples(st.sampled_from(["Content-Length", "Transfer-Encoding", "Host", "Connection", "Upgrade", "Expect"]), _value),
    st.tuples(_token, _value),
)
EDGE_ANSWERS = {400, 404, 405, 408, 413, 414, 431, 505}


@settings(max_examples=400, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "HEAD", "PUT", "OPTIONS", "G\x00T", "CONNECT"]),
    target=st.sampled_from(["/", "/a?b=c", "*", "http://h/p", "p", "/%00"]),
    version=st.sampled_from(["1.1", "1.0", "2.0", "1.x"]),
    headers=st.lists(_header, max_size=6),
    tail=st.binary(max_size=64),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=4),
)
def test_random_requests_get_an_edge_answer_or_wait_never_a_crash(
    method: str, target: str, version: str, headers: list[tuple[str, str]], tail: bytes, cuts: list[int]
) -> None:
    head = f"{method} {target} HTTP/{version}\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers) + "\r\n"
    data = head.encode("latin-1") + tail
    asyncio.run(_feed_in_memory(data, sorted(set(cuts))))


async def _feed_in_memory(data: bytes, cuts: list[int]) -> None:
    # No routes: every request the edge accepts is answered 404 by the edge itself, so the
    # whole parsing path runs without an upstream, and the outcome is all in `written`.
    connection = client_connection_without_routes("fuzz", max_body_bytes=32)
    transport = MemoryTransport()
    connection.connection_made(transport)
    start = 0
    for cut in [*cuts, len(data)]:
        if start < cut <= len(data):
            connection.data_received(data[start:cut])
            start = cut
    statuses = [int(line.split(b" ")[1]) for line in bytes(transport.written).split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]
    assert set(statuses) <= EDGE_ANSWERS, bytes(transport.written)
    if any(status != 404 for status in statuses):
        assert transport.closed  # a refused request always ends the connection
    connection.connection_lost(None)
