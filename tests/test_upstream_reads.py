"""An upstream response comes out the same however the kernel splits it into reads, and a
large read holding several messages is framed exactly as the same bytes in small reads."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.config import HttpUpstream
from proxy.http1.upstream import ResponseSink, UpstreamConnection, UpstreamPool
from proxy.http1.wire import Headers, ResponseFacts

BODY = bytes(range(256)) * 300  # 76,800 bytes: more than one read of uvloop's in most cases
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n"
RESPONSE = HEAD % len(BODY) + BODY


class Transport:
    def __init__(self) -> None:
        self.aborted = self.closed = False

    def write(self, data: bytes) -> None:
        pass

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Recorder(ResponseSink):
    """A ResponseSink that keeps what it was told, body bytes joined."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.body = bytearray()
        self.ended = 0

    def on_interim(self, status: int, reason: bytes, headers: Headers) -> None:
        self.events.append(("interim", status, headers))

    def on_head(self, status: int, reason: bytes, headers: Headers, facts: ResponseFacts, framing: int) -> None:
        self.events.append(("head", status, headers, framing))

    def on_body(self, data: bytes) -> None:
        self.body += data

    def on_end(self) -> None:
        self.ended += 1

    def after_data(self) -> None:
        pass

    def on_upgrade(self, reason: bytes, headers: Headers, rest: bytes) -> None:
        self.events.append(("upgrade", headers, rest))

    def on_tunnel_data(self, data: bytes) -> None:
        self.events.append(("tunnel", data))

    def on_broken(self, reason: str) -> None:
        self.events.append(("broken",))

    def on_lost(self, exc: Exception | None) -> None:
        pass

    def on_write_paused(self, paused: bool) -> None:
        pass


@pytest.fixture
async def pool() -> UpstreamPool:
    return UpstreamPool(HttpUpstream("http", "127.0.0.1", 9), 1.0)


def connection(pool: UpstreamPool) -> tuple[UpstreamConnection, Transport]:
    conn, transport = UpstreamConnection(pool), Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport


def feed(conn: UpstreamConnection, data: bytes, cuts: list[int], *, head_only: bool = False) -> Recorder:
    sink = Recorder()
    conn.attach(sink, head_only)
    edges = [0, *sorted(set(c for c in cuts if 0 < c < len(data))), len(data)]
    for start, end in pairwise(edges):
        conn.data_received(data[start:end])
    return sink


def whole(data: bytes, pool: UpstreamPool, *, head_only: bool = False) -> Recorder:
    return feed(connection(pool)[0], data, [], head_only=head_only)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(min_value=1, max_value=len(RESPONSE) - 1), max_size=6))
async def test_a_response_split_into_any_reads_comes_out_byte_identical(pool: UpstreamPool, cuts: list[int]) -> None:
    conn, _ = connection(pool)
    for _ in range(2):  # and the pooled connection serves the next response the same way
        sink = feed(conn, RESPONSE, cuts)
        assert bytes(sink.body) == BODY
        assert sink.events == whole(RESPONSE, pool).events
        assert sink.ended == 1
        assert conn.done and conn.keep_alive and not conn.dirty


async def test_a_large_read_after_a_small_one_and_many_tiny_reads_both_pass_the_body_on(pool: UpstreamPool) -> None:
    head_end = len(HEAD % len(BODY))
    for cuts in ([head_end - 2], [head_end], [head_end + 10], list(range(1, len(RESPONSE), 997))):
        conn, _ = connection(pool)
        sink = feed(conn, RESPONSE, cuts)
        assert bytes(sink.body) == BODY and sink.ended == 1 and not conn.dirty


async def test_bytes_after_a_complete_body_keep_the_connection_out_of_the_pool(pool: UpstreamPool) -> None:
    conn, _ = connection(pool)
    sink = feed(conn, RESPONSE + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", [])
    assert bytes(sink.body) == BODY and sink.ended == 1
    assert conn.dirty


async def test_interim_answers_before_a_large_final_answer_in_one_read(pool: UpstreamPool) -> None:
    data = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + RESPONSE
    sink = whole(data, pool)
    assert [e[0] for e in sink.events] == ["interim", "interim", "head"]
    assert bytes(sink.body) == BODY and sink.ended == 1


async def test_large_chunked_close_delimited_and_head_answers_are_still_framed_by_llhttp(pool: UpstreamPool) -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY)
    sink = whole(chunked, pool)
    assert bytes(sink.body) == BODY and sink.ended == 1

    conn, _ = connection(pool)
    sink = feed(conn, b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + BODY, [])
    assert bytes(sink.body) == BODY and sink.ended == 0  # ends when the upstream closes

    conn, _ = connection(pool)
    sink = feed(conn, RESPONSE, [], head_only=True)  # an upstream that wrongly sends a body to HEAD
    assert sink.body == b"" and sink.ended == 1 and conn.dirty


async def test_a_malformed_head_in_a_large_read_is_a_broken_response(pool: UpstreamPool) -> None:
    sink = whole(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n" + BODY, pool)
    assert sink.events == [("broken",)]
    sink = whole(b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n" + BODY, pool)
    assert sink.events == [("broken",)]


async def test_a_101_in_a_large_read_hands_over_the_bytes_after_its_head(pool: UpstreamPool) -> None:
    conn, _ = connection(pool)
    head = b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
    sink = feed(conn, head + BODY, [])
    assert sink.events[0][0] == "upgrade" and sink.events[0][2] == BODY and conn.tunnel
