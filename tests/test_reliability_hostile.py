"""Slow and hostile clients against the whole Edge (issue 6): a connection that never starts its
TLS handshake, a request head trickled in a byte a second, a thousand idle keep-alive
connections, an oversize head and a request smuggling attempt. Each is cut off by the limit
meant for it, and none keeps the edge from serving everyone else."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.edge import RunningEdge, running_edge
from tests.support.grpc_echo import EchoUpstream, running_upstream
from tests.support.load import Tally, ensure_open_files, grpc_call, new_connection_request
from tests.support.pki import SERVER_IP, SERVER_NAME, Pki
from tests.support.probes import eventually
from tests.support.web import Response, Upstream, closed_by_peer, read_response, tls_connect, tls_connection

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

# Small limits keep the run short; generous margins above them keep it deterministic.
HANDSHAKE_TIMEOUT = 1.0
HEADER_TIMEOUT = 2.0
IDLE_TIMEOUT = 3.0
MARGIN = 6.0
EARLY = 0.1  # a timer may fire this much before its deadline (event loop clock granularity)
IDLE_CONNECTIONS = 1000


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


@pytest.fixture
async def grpc_upstream() -> AsyncIterator[EchoUpstream]:
    async with running_upstream() as server:
        yield server


@pytest.fixture
async def running(tmp_path: Path, pki: Pki, up: Upstream, grpc_upstream: EchoUpstream) -> AsyncIterator[RunningEdge]:
    limits = {"handshake_timeout": HANDSHAKE_TIMEOUT, "header_timeout": HEADER_TIMEOUT, "idle_timeout": 120}
    async with running_edge(tmp_path, pki=pki, http_upstream=up.port, grpc_upstream=grpc_upstream.port, server=limits) as edge:
        yield edge


async def _request(running: RunningEdge, raw: bytes) -> tuple[Response, bool]:
    """Send raw bytes on a new verified connection: the response and whether the edge then closed."""
    async with tls_connection(running.https_port, running.pki.client_context()) as (reader, writer):
        writer.write(raw)
        response = await asyncio.wait_for(read_response(reader), MARGIN)
        return response, await closed_by_peer(reader, MARGIN)


async def _still_serving(running: RunningEdge) -> None:
    status, _ = await new_connection_request(running.https_port, running.pki, "/still-serving")
    assert status == 200
    tally = Tally("grpc")
    async with running.pki.grpc_channel(running.grpc_port) as channel:
        await grpc_call(channel, tally, b"still serving")
    assert (tally.ok, tally.failures) == (1, [])


async def _closed_after(reader: asyncio.StreamReader, since: float, limit: float = HANDSHAKE_TIMEOUT + MARGIN) -> float:
    """Seconds from `since` (taken before the connection was opened) until the edge hangs up
    (EOF or reset); fails after `limit`."""
    with contextlib.suppress(ConnectionError):
        while await asyncio.wait_for(reader.read(4096), limit):
            pass
    return time.monotonic() - since


async def test_connections_that_never_finish_a_tls_handshake_are_closed_at_handshake_timeout(running: RunningEdge) -> None:
    failures_before = await running.metric("edge_tls_handshake_failures_total", listener="web")
    # Nothing at all, and a TLS record header that announces a ClientHello which never comes.
    opened = time.monotonic()
    silent = {
        (port, opening): await asyncio.open_connection("127.0.0.1", port)
        for port in (running.https_port, running.grpc_port)
        for opening in (b"", b"\x16\x03\x01\x02\x00")
    }
    try:
        for (_, opening), (_, writer) in silent.items():
            writer.write(opening)
        # The hung connections hold no one else up: new handshakes on both listeners still work.
        assert await running.fingerprints() == running.everywhere(running.serving_fingerprint)
        waited = await asyncio.gather(*(_closed_after(reader, opened) for reader, _ in silent.values()))
    finally:
        for _, writer in silent.values():
            writer.close()
    assert all(HANDSHAKE_TIMEOUT - EARLY <= seconds <= HANDSHAKE_TIMEOUT + MARGIN for seconds in waited), waited

    async def counted() -> bool:
        return await running.metric("edge_tls_handshake_failures_total", listener="web") == failures_before + 2

    await eventually(counted, timeout=MARGIN)
    await _still_serving(running)


async def test_connections_that_finish_tls_and_send_nothing_are_closed_in_time(
    tmp_path: Path, pki: Pki, up: Upstream, grpc_upstream: EchoUpstream
) -> None:
    limits = {"handshake_timeout": HANDSHAKE_TIMEOUT, "header_timeout": HEADER_TIMEOUT, "idle_timeout": IDLE_TIMEOUT}
    ports = {"http_upstream": up.port, "grpc_upstream": grpc_upstream.port}
    async with running_edge(tmp_path, pki=pki, server=limits, **ports) as running:
        opened = time.monotonic()
        quiet = [
            await asyncio.open_connection("127.0.0.1", port, ssl=pki.client_context(alpn), server_hostname=SERVER_NAME)
            for port, alpn in ((running.https_port, "http/1.1"), (running.grpc_port, "h2"))
        ]
        try:
            waited = await asyncio.gather(*(_closed_after(reader, opened, IDLE_TIMEOUT + MARGIN) for reader, _ in quiet))
        finally:
            for _, writer in quiet:
                writer.close()
        # HTTPS owes its first request head within header_timeout, as nginx does; gRPC treats a
        # connection with no stream as idle (a GOAWAY first, then the close). Neither holds it
        # longer than idle_timeout.
        assert all(seconds <= IDLE_TIMEOUT + MARGIN for seconds in waited), waited
        assert HEADER_TIMEOUT - EARLY <= waited[0] < IDLE_TIMEOUT, waited
        await _still_serving(running)


async def test_a_head_sent_a_byte_a_second_gets_408_at_header_timeout_and_is_never_forwarded(running: RunningEdge, up: Upstream) -> None:
    head = f"GET /slowloris HTTP/1.1\r\nHost: {SERVER_NAME}\r\nX-Padding: {'p' * 40}\r\n\r\n".encode()
    reader, writer = await tls_connect(running.https_port, running.pki.client_context())
    sent = 0

    async def trickle() -> None:
        nonlocal sent
        with contextlib.suppress(ConnectionError):
            for byte in head:
                writer.write(bytes([byte]))
                await writer.drain()
                sent += 1
                await asyncio.sleep(1.0)

    started = time.monotonic()
    trickling = asyncio.create_task(trickle())
    try:
        response = await asyncio.wait_for(read_response(reader), HEADER_TIMEOUT + MARGIN)
        answered_after = time.monotonic() - started
        closed = await closed_by_peer(reader, MARGIN)
    finally:
        trickling.cancel()
        writer.close()
    assert (response.status, response.header("connection"), closed) == (408, "close", True)
    # Each byte arrived in time, but the head as a whole did not: the deadline is per head, not per read.
    assert HEADER_TIMEOUT - EARLY <= answered_after <= HEADER_TIMEOUT + MARGIN, answered_after
    assert sent < len(head)
    await _still_serving(running)  # reaches the upstream after anything the slow head could have sent
    assert not any("slowloris" in path for path in up.seen)


async def test_a_thousand_idle_keep_alive_connections_do_not_stop_the_edge_serving_others(running: RunningEdge) -> None:
    # Each idle connection costs this process a socket too (the edge runs in-process).
    ensure_open_files(4 * IDLE_CONNECTIONS + 512)
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def open_idle(n: int) -> None:
        reader, writer = await tls_connect(running.https_port, running.pki.client_context())
        idle.append((reader, writer))
        writer.write(f"GET /idle/{n} HTTP/1.1\r\nHost: {SERVER_NAME}\r\n\r\n".encode())
        response = await asyncio.wait_for(read_response(reader), 30)
        assert (response.status, response.header("connection")) == (200, None)

    try:
        for start in range(0, IDLE_CONNECTIONS, 50):
            await asyncio.gather(*(open_idle(n) for n in range(start, start + 50)))
        assert await running.metric("edge_open_connections", listener="web") >= IDLE_CONNECTIONS

        # Everyone else is served: keep-alive, new connections and gRPC.
        connector = aiohttp.TCPConnector(ssl=running.pki.client_context())
        async with aiohttp.ClientSession(connector=connector) as session:
            for n in range(50):
                async with session.get(f"https://{SERVER_IP}:{running.https_port}/busy/{n}") as answer:
                    assert answer.status == 200
        for _ in range(10):
            await _still_serving(running)

        # And the idle connections were kept, not dropped to make room: each answers again.
        for n, (reader, writer) in enumerate(idle[::10]):
            writer.write(f"GET /again/{n} HTTP/1.1\r\nHost: {SERVER_NAME}\r\n\r\n".encode())
            assert (await asyncio.wait_for(read_response(reader), 10)).status == 200
    finally:
        for _, writer in idle:
            writer.close()

    async def released() -> bool:
        return await running.metric("edge_open_connections", listener="web") == 0

    await eventually(released, timeout=30)


async def test_an_oversize_header_block_gets_431_and_is_never_forwarded(running: RunningEdge, up: Upstream) -> None:
    one_huge = f"GET /oversize HTTP/1.1\r\nHost: {SERVER_NAME}\r\nX-Huge: {'h' * 70_000}\r\n\r\n".encode()
    very_many = (
        f"GET /oversize HTTP/1.1\r\nHost: {SERVER_NAME}\r\n".encode()
        + b"".join(b"X-Many-%d: %d\r\n" % (i, i) for i in range(150))
        + b"\r\n"
    )
    for raw in (one_huge, very_many):
        response, closed = await _request(running, raw)
        assert (response.status, response.header("connection"), closed) == (431, "close", True)
    assert up.seen == []
    await _still_serving(running)
    assert up.seen == ["/still-serving"]


async def test_content_length_with_transfer_encoding_gets_400_and_reaches_no_upstream(running: RunningEdge, up: Upstream) -> None:
    # The body hides a second request: an edge that framed by one header and an upstream that
    # framed by the other would disagree on where it starts.
    hidden = f"GET /smuggled HTTP/1.1\r\nHost: {SERVER_NAME}\r\n\r\n".encode()
    body = b"0\r\n\r\n" + hidden
    for first, second in (
        (f"Content-Length: {len(body)}", "Transfer-Encoding: chunked"),
        ("Transfer-Encoding: chunked", f"Content-Length: {len(body)}"),
    ):
        raw = f"POST /smuggling HTTP/1.1\r\nHost: {SERVER_NAME}\r\n{first}\r\n{second}\r\n\r\n".encode() + body
        response, closed = await _request(running, raw)
        assert (response.status, response.header("connection"), closed) == (400, "close", True)
    assert up.seen == []  # neither the outer request nor the hidden one
    await _still_serving(running)
    assert up.seen == ["/still-serving"]
