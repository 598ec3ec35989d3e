"""The HTTPS listener as a reverse proxy: real TLS on 127.0.0.1, a real aiohttp upstream."""

from __future__ import annotations

import asyncio
import ssl
import tracemalloc
from collections.abc import AsyncIterator

import aiohttp
import pytest

from proxy.certstore.store import CertStore
from proxy.tlsmaterial import TlsObjects
from tests.support.listeners import RunningListener, https, route, running_listener
from tests.support.web import (
    RawUpstream,
    Upstream,
    closed_by_peer,
    exchange_raw,
    read_request_head,
    read_response,
    tls_connect,
    tls_connection,
    upstream,
)

MiB = 1024 * 1024


@pytest.fixture
async def edge(store: CertStore[TlsObjects], up: Upstream) -> AsyncIterator[RunningListener]:
    async with running_listener(https(route(up.port), upstream_timeout=5.0), store=store) as listener:
        yield listener


@pytest.fixture
async def session(client_tls: ssl.SSLContext) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(ssl=client_tls)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as client:
        yield client


def url(edge: RunningListener, path: str) -> str:
    return f"https://127.0.0.1:{edge.port}{path}"


def headers_of(answer: dict[str, object]) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for name, value in answer["headers"]:  # type: ignore[attr-defined]
        result.setdefault(name.lower(), []).append(value)
    return result


async def test_routes_by_exact_host_then_longest_prefix_and_answers_404_plainly(
    store: CertStore[TlsObjects], session: aiohttp.ClientSession
) -> None:
    async with upstream("app") as app, upstream("app-v1") as v1, upstream("api") as api, upstream("api-v2") as api_v2:
        routes = (
            route(app.port, "/app/"),
            route(v1.port, "/app/v1/"),
            route(api.port, "/", "api.example"),
            route(api_v2.port, "/v2/", "api.example"),
        )
        async with running_listener(https(*routes), store=store) as edge:
            expected = [
                ("edge.example", "/app/x", "app"),
                ("edge.example", "/app/v1/x?q=1", "app-v1"),
                ("other.example:8443", "/app/v1/", "app-v1"),
                ("api.example", "/x", "api"),
                ("API.Example:443", "/v2/y", "api-v2"),
                ("api.example.", "/app/v1/x", "api"),
            ]
            for host, path, name in expected:
                async with session.get(url(edge, path), headers={"Host": host}) as response:
                    assert response.status == 200, (host, path)
                    answer = await response.json()
                    assert (answer["upstream"], answer["path"]) == (name, path), (host, path)
            async with session.get(url(edge, "/elsewhere"), headers={"Host": "edge.example"}) as response:
                assert response.status == 404
                assert response.headers["Content-Type"].startswith("text/plain")
                assert await response.text() == "404 Not Found\n"


async def test_forwarded_headers_are_set_and_client_values_cannot_spoof_them(edge: RunningListener, session: aiohttp.ClientSession) -> None:
    sent = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "http", "X-Forwarded-Host": "evil.example", "Host": "edge.example"}
    async with session.get(url(edge, "/echo-headers"), headers=sent) as response:
        seen = headers_of(await response.json())
    assert seen["x-forwarded-for"] == ["203.0.113.9, 127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["https"]
    assert seen["x-forwarded-host"] == ["edge.example"]
    assert seen["host"] == ["edge.example"]


async def test_hop_by_hop_headers_are_dropped_both_ways(edge: RunningListener, client_tls: ssl.SSLContext) -> None:
    request = (
        b"GET /echo-headers HTTP/1.1\r\nHost: edge.example\r\nConnection: keep-alive, X-Client-Secret\r\n"
        b"X-Client-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\n"
        b"Upgrade: nothing\r\nX-End-To-End: kept\r\n\r\n"
    )
    seen = headers_of((await exchange_raw(edge.port, client_tls, request)).json())
    for name in ("connection", "x-client-secret", "keep-alive", "te", "proxy-connection", "upgrade"):
        assert name not in seen, name
    assert seen["x-end-to-end"] == ["kept"]
    response = await exchange_raw(edge.port, client_tls, b"GET /hop HTTP/1.1\r\nHost: edge.example\r\n\r\n")
    assert response.header("x-kept") == "yes"
    assert response.header("x-upstream-secret") is None
    assert response.header("keep-alive") is None
    assert response.header("connection") is None


async def test_redirects_and_cookies_pass_through_untouched(edge: RunningListener, session: aiohttp.ClientSession) -> None:
    async with session.get(url(edge, "/cookie"), allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"] == "/elsewhere?a=1"
        assert response.headers["Set-Cookie"] == "session=abc; Path=/; HttpOnly"


async def test_64_mib_each_way_streams_without_the_proxy_holding_the_body(edge: RunningListener, session: aiohttp.ClientSession) -> None:
    size = 64 * MiB

    async def body() -> AsyncIterator[bytes]:
        block = b"u" * (256 * 1024)
        for _ in range(size // len(block)):
            yield block

    async with session.get(url(edge, "/bytes/1000")) as warm:  # pools and caches filled first
        await warm.read()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        async with session.get(url(edge, f"/bytes/{size}")) as response:
            received = 0
            async for piece in response.content.iter_any():
                received += len(piece)
        assert received == size
        async with session.post(url(edge, "/upload"), data=body()) as response:
            answer = await response.json()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert answer["received"] == size
    # Client, upstream and edge all live in this process: the bound covers all three.
    assert peak - baseline < 8 * MiB, f"peak grew by {(peak - baseline) / MiB:.1f} MiB"


async def test_chunked_request_and_response_bodies_are_relayed(edge: RunningListener, client_tls: ssl.SSLContext) -> None:
    async with tls_connection(edge.port, client_tls) as (reader, writer):
        writer.write(b"POST /upload HTTP/1.1\r\nHost: edge.example\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n")
        await writer.drain()
        writer.write(b"6\r\n world\r\n0\r\nX-Trailer: dropped\r\n\r\n")
        answer = (await read_response(reader)).json()
        assert (answer["received"], answer["framing"]) == (11, "chunked")
        writer.write(b"GET /bytes/200000?framing=chunked HTTP/1.1\r\nHost: edge.example\r\n\r\n")
        response = await read_response(reader)
        assert response.header("transfer-encoding") == "chunked"
        assert response.body == b"x" * 200000
        writer.write(b"POST /echo HTTP/1.1\r\nHost: edge.example\r\nContent-Length: 20\r\n\r\n0123456789abcdefghij")
        response = await read_response(reader)
        assert (response.header("transfer-encoding"), response.body) == ("chunked", b"0123456789abcdefghij")


async def test_head_response_has_no_body_whatever_its_length_says(edge: RunningListener, client_tls: ssl.SSLContext) -> None:
    async with tls_connection(edge.port, client_tls) as (reader, writer):
        writer.write(b"HEAD /bytes/5000 HTTP/1.1\r\nHost: edge.example\r\n\r\n")
        response = await read_response(reader, head_request=True)
        assert (response.status, response.header("content-length")) == (200, "5000")
        writer.write(b"GET /bytes/3 HTTP/1.1\r\nHost: edge.example\r\n\r\n")  # same connection: nothing left over
        assert (await read_response(reader)).body == b"xxx"


async def test_204_and_304_answers_have_no_body_and_keep_the_connection(edge: RunningListener, client_tls: ssl.SSLContext) -> None:
    async with tls_connection(edge.port, client_tls) as (reader, writer):
        for status in (204, 304, 200):
            writer.write(b"GET /status/%d HTTP/1.1\r\nHost: edge.example\r\n\r\n" % status)
            response = await read_response(reader)
            assert (response.status, response.body, response.header("transfer-encoding")) == (status, b"", None)


async def test_expect_100_continue_is_relayed_before_the_body_is_sent(edge: RunningListener, client_tls: ssl.SSLContext) -> None:
    async with tls_connection(edge.port, client_tls) as (reader, writer):
        writer.write(b"POST /upload HTTP/1.1\r\nHost: edge.example\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        interim = await asyncio.wait_for(read_response(reader), 5)
        assert interim.status == 100
        writer.write(b"abcde")
        final = await read_response(reader)
        assert (final.status, final.json()["received"]) == (200, 5)


async def test_pipelined_requests_are_answered_in_order(edge: RunningListener, client_tls: ssl.SSLContext) -> None:
    async with tls_connection(edge.port, client_tls) as (reader, writer):
        writer.write(
            b"GET /sleep/0.3 HTTP/1.1\r\nHost: edge.example\r\n\r\n"
            b"GET /echo-headers/second HTTP/1.1\r\nHost: edge.example\r\n\r\n"
            b"POST /upload HTTP/1.1\r\nHost: edge.example\r\nContent-Length: 4\r\n\r\nbody"
            b"GET /nowhere HTTP/1.1\r\nHost: edge.example\r\n\r\n"
        )
        first, second, third = [await read_response(reader) for _ in range(3)]
        assert first.body == b"late"
        assert second.json()["path"] == "/echo-headers/second"
        assert third.json()["received"] == 4
        assert (await read_response(reader)).json()["path"] == "/nowhere"


async def test_http_10_clients_get_close_delimited_or_keep_alive_answers(edge: RunningListener, client_tls: ssl.SSLContext) -> None:
    # Without Host and without chunked: the body ends when the edge closes.
    response = await exchange_raw(edge.port, client_tls, b"GET /bytes/70000?framing=chunked HTTP/1.0\r\n\r\n")
    assert (response.status, response.header("transfer-encoding"), len(response.body)) == (200, None, 70000)
    async with tls_connection(edge.port, client_tls) as (reader, writer):
        writer.write(b"GET /bytes/10 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        response = await read_response(reader)
        assert (response.header("connection"), response.body) == ("keep-alive", b"x" * 10)
        writer.write(b"GET /echo-headers HTTP/1.0\r\n\r\n")
        assert (await read_response(reader)).json()["version"] == "1.1"


async def test_websocket_echoes_through_the_edge(edge: RunningListener, session: aiohttp.ClientSession) -> None:
    async with session.ws_connect(url(edge, "/ws")) as ws:
        await ws.send_str("hello")
        assert (await ws.receive(timeout=5)).data == "echo: hello"
        await ws.send_bytes(b"\x00\x01" * 50000)
        assert (await ws.receive(timeout=5)).data == b"\x00\x01" * 50000


async def test_unreachable_upstream_gives_502_with_a_short_plain_body_and_a_log_line(
    store: CertStore[TlsObjects], session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    with socket_reserved() as port:
        config = https(route(port), connect_timeout=2.0)
        async with running_listener(config, store=store) as edge, session.get(url(edge, "/")) as response:
            assert response.status == 502
            assert response.headers["Content-Type"].startswith("text/plain")
            assert len(await response.read()) < 100
    assert any(f"http://127.0.0.1:{port}" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)


async def test_upstream_that_does_not_answer_in_time_gives_504(
    store: CertStore[TlsObjects], up: Upstream, session: aiohttp.ClientSession
) -> None:
    config = https(route(up.port), upstream_timeout=0.3)
    async with running_listener(config, store=store) as edge:
        async with session.get(url(edge, "/sleep/5")) as response:
            assert response.status == 504
            assert len(await response.read()) < 100
        async with session.get(url(edge, "/sleep/0")) as response:  # the client connection is still good
            assert response.status == 200


class socket_reserved:
    """A port with nothing listening on it (bound without listen, so nothing else takes it)."""

    def __enter__(self) -> int:
        import socket

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        return int(self._sock.getsockname()[1])

    def __exit__(self, *_: object) -> None:
        self._sock.close()


async def test_close_delimited_and_interim_upstream_answers_are_reframed(store: CertStore[TlsObjects], client_tls: ssl.SSLContext) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the ")
        await writer.drain()
        writer.write(b"upstream closes")

    async with (
        RawUpstream(serve) as raw,
        running_listener(https(route(raw.port)), store=store) as edge,
        tls_connection(edge.port, client_tls) as (reader, writer),
    ):
        for _ in range(2):  # the client connection stays usable: the edge framed the body itself
            writer.write(b"GET / HTTP/1.1\r\nHost: edge.example\r\n\r\n")
            interim = await read_response(reader)
            assert (interim.status, interim.header("link")) == (103, "</style.css>; rel=preload")
            final = await read_response(reader)
            assert (final.status, final.header("transfer-encoding")) == (200, "chunked")
            assert final.body == b"until the upstream closes"


async def test_keep_alive_reuses_upstream_connections_and_retries_a_stale_one_once(
    store: CertStore[TlsObjects], client_tls: ssl.SSLContext
) -> None:
    answered = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal answered
        # Answers two requests per connection, then closes as the third arrives: the pooled
        # connection looks alive to the edge until it is used.
        for _ in range(2):
            await read_request_head(reader)
            answered += 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await read_request_head(reader)

    async with (
        RawUpstream(serve) as raw,
        running_listener(https(route(raw.port)), store=store) as edge,
        tls_connection(edge.port, client_tls) as (reader, writer),
    ):
        for _ in range(2):
            writer.write(b"GET / HTTP/1.1\r\nHost: edge.example\r\n\r\n")
            assert (await read_response(reader)).body == b"ok"
        assert raw.connections == 1
        writer.write(b"GET / HTTP/1.1\r\nHost: edge.example\r\n\r\n")
        assert (await read_response(reader)).body == b"ok"  # retried on a fresh connection
        assert raw.connections == 2
        writer.write(b"GET / HTTP/1.1\r\nHost: edge.example\r\n\r\n")
        await read_response(reader)
        writer.write(b"POST / HTTP/1.1\r\nHost: edge.example\r\nContent-Length: 1\r\n\r\nx")
        assert (await read_response(reader)).status == 502  # not idempotent: never sent twice
        assert answered == 4


async def test_a_client_that_disconnects_closes_its_upstream_connection(store: CertStore[TlsObjects], client_tls: ssl.SSLContext) -> None:
    upstream_saw_close = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await reader.read()  # EOF once the edge drops the connection
        upstream_saw_close.set()

    async with RawUpstream(serve) as raw, running_listener(https(route(raw.port)), store=store) as edge:
        reader, writer = await tls_connect(edge.port, client_tls)
        writer.write(b"GET / HTTP/1.1\r\nHost: edge.example\r\n\r\n")
        await reader.readuntil(b"partial")
        writer.close()
        await asyncio.wait_for(upstream_saw_close.wait(), 5)


async def test_a_refused_upgrade_is_answered_and_its_early_bytes_never_reach_the_upstream(
    store: CertStore[TlsObjects], client_tls: ssl.SSLContext
) -> None:
    received = bytearray()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            received.extend(await read_request_head(reader))
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\n\r\nno")

    async with (
        RawUpstream(serve) as raw,
        running_listener(https(route(raw.port)), store=store) as edge,
        tls_connection(edge.port, client_tls) as (reader, writer),
    ):
        writer.write(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nEARLY-FRAME-BYTES")
        response = await read_response(reader)
        assert (response.status, response.body, response.header("connection")) == (400, b"no", "close")
        assert await closed_by_peer(reader)
        response = await exchange_raw(edge.port, client_tls, b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
        assert response.status == 400
        assert raw.connections == 2  # the refused upgrade's connection was not reused
        assert b"EARLY-FRAME-BYTES" not in received
