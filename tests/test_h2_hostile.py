"""Hostile HTTP/2 clients on an `http2 = true` listener get what nginx and Envoy give them: limits
advertised and enforced, floods and rapid resets ended with GOAWAY ENHANCE_YOUR_CALM, malformed
requests refused (RFC 9113 8.1.1), and nothing ambiguous reaching the HTTP/1.1 upstream."""

from __future__ import annotations

import asyncio
import logging
import os
import struct

import pytest
from h2.errors import ErrorCodes
from h2.events import RemoteSettingsChanged
from h2.settings import SettingCodes
from httptools import HttpRequestParser
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.config import HttpUpstream, Route
from proxy.h2.request import interpret_h2
from proxy.h2.stream import STREAM_BUFFER_HIGH
from proxy.http1.request import Refused
from proxy.http1.routing import Router
from tests.support.h2client import H2Client
from tests.support.listeners import https, route, running_listener
from tests.support.probes import eventually
from tests.support.web import upstream

CALM = ErrorCodes.ENHANCE_YOUR_CALM


def frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + struct.pack(">I", stream_id) + payload


async def test_the_edge_advertises_100_streams_and_a_bounded_header_list() -> None:
    async with upstream() as web, running_listener(https(route(web.port), http2=True)) as edge:
        client = await H2Client.connect(edge.port, edge.pki)
        changed: dict[int, int] = {}
        while SettingCodes.MAX_CONCURRENT_STREAMS not in changed:
            for event in await client.pump():
                if isinstance(event, RemoteSettingsChanged):
                    changed.update({k: v.new_value for k, v in event.changed_settings.items()})
        await client.close()
    assert changed[SettingCodes.MAX_CONCURRENT_STREAMS] == 100
    assert changed[SettingCodes.MAX_HEADER_LIST_SIZE] == 64 * 1024


async def test_a_101st_concurrent_stream_is_refused_and_the_100_are_served() -> None:
    async with upstream() as web, running_listener(https(route(web.port), http2=True)) as edge:
        client = await H2Client.connect(edge.port, edge.pki, validate=False)
        await client.pump()  # the edge's SETTINGS
        client.h2.remote_settings.acknowledge()  # let h2 open more streams than the limit
        client.h2.remote_settings[SettingCodes.MAX_CONCURRENT_STREAMS] = 1000
        client.h2.remote_settings.acknowledge()
        for _ in range(101):
            client.request("/hold")
        await client.until(lambda: client.goaway is not None or any(a.reset for a in client.answers.values()))
        await client.close()
    assert client.goaway is not None or any(a.reset == ErrorCodes.REFUSED_STREAM for a in client.answers.values())
    assert len(web.seen) <= 100


async def test_a_header_list_over_the_limit_is_refused_before_the_upstream() -> None:
    async with upstream() as web, running_listener(https(route(web.port), http2=True)) as edge:
        client = await H2Client.connect(edge.port, edge.pki)
        client.request("/big", extra=[(f"x-h{i}", "v" * 1000) for i in range(80)])
        await client.until(lambda: False)
    assert client.goaway is not None and client.goaway != ErrorCodes.NO_ERROR
    assert web.seen == []


async def test_rapid_reset_ends_in_goaway_enhance_your_calm() -> None:
    async with upstream() as web, running_listener(https(route(web.port), http2=True)) as edge:
        client = await H2Client.connect(edge.port, edge.pki)
        for _ in range(300):
            sid = client.request("/hold")
            client.h2.reset_stream(sid, ErrorCodes.CANCEL)
        client.flush()
        await client.until(lambda: False)
    assert client.goaway == CALM
    assert len(web.seen) < 300


async def test_continuation_flood_ends_the_connection() -> None:
    async with upstream() as web, running_listener(https(route(web.port), http2=True)) as edge:
        client = await H2Client.connect(edge.port, edge.pki)
        block = client.h2.encoder.encode([(":method", "GET"), (":scheme", "https"), (":authority", "edge.example"), (":path", "/")])
        client.raw(frame(0x1, 0x0, 1, block))  # HEADERS without END_HEADERS
        for _ in range(2000):
            client.raw(frame(0x9, 0x0, 1, b"x-a: " + b"b" * 1000))
        await client.until(lambda: False)
    assert client.closed and client.goaway not in (None, ErrorCodes.NO_ERROR)
    assert web.seen == []


@pytest.mark.parametrize("kind", ["ping", "settings"])
async def test_ping_and_settings_floods_end_in_goaway_enhance_your_calm(kind: str) -> None:
    async with upstream() as web, running_listener(https(route(web.port), http2=True)) as edge:
        client = await H2Client.connect(edge.port, edge.pki)
        for i in range(1000):
            if kind == "ping":
                client.h2.ping(struct.pack(">Q", i))
            else:
                client.raw(frame(0x4, 0x0, 0, b""))
        client.flush()
        await client.until(lambda: False)
    assert client.goaway == CALM


async def test_a_window_kept_shut_ends_in_goaway_enhance_your_calm() -> None:
    async with upstream() as web, running_listener(https(route(web.port), http2=True, idle_timeout=1)) as edge:
        client = await H2Client.connect(edge.port, edge.pki)
        client.h2.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 0})
        client.flush()
        client.request("/bytes/5000000")
        await client.until(lambda: False, timeout=20)
    assert client.goaway == CALM


@pytest.mark.parametrize(
    "extra",
    [
        [("x-bad", "a\r\nx-smuggled: 1")],
        [("x-bad", "a\x00b")],
        [("connection", "keep-alive")],
        [("transfer-encoding", "chunked")],
        [("keep-alive", "5")],
        [("te", "gzip")],
        [("Upper", "case")],
    ],
)
async def test_malformed_requests_are_refused_and_never_forwarded(extra: list[tuple[str, str]]) -> None:
    async with upstream() as web, running_listener(https(route(web.port), http2=True)) as edge:
        client = await H2Client.connect(edge.port, edge.pki, validate=False)
        sid = client.request("/echo-headers", extra=extra)
        await client.until(lambda: client.answers[sid].reset is not None or client.answers[sid].ended)
        answer = client.answers[sid]
        await client.close()
    assert answer.reset == ErrorCodes.PROTOCOL_ERROR or client.goaway == ErrorCodes.PROTOCOL_ERROR
    assert web.seen == []


async def test_content_length_that_disagrees_with_the_data_is_refused() -> None:
    async with upstream() as web, running_listener(https(route(web.port), http2=True)) as edge:
        client = await H2Client.connect(edge.port, edge.pki, validate=False)
        sid = client.open("/upload", extra=[("content-length", "10")])
        client.h2.send_data(sid, b"x" * 20, end_stream=True)
        client.flush()
        await client.until(lambda: client.answers[sid].ended)
        answer = client.answers[sid]
        await client.close()
    assert answer.reset == ErrorCodes.PROTOCOL_ERROR or client.goaway == ErrorCodes.PROTOCOL_ERROR
    assert not answer.ended or answer.status != 200


_FRAME_KINDS = st.sampled_from([0x0, 0x1, 0x2, 0x3, 0x4, 0x5, 0x6, 0x7, 0x8, 0x9, 0xA, 0x20])
_FRAMES = st.lists(
    st.tuples(_FRAME_KINDS, st.integers(0, 255), st.sampled_from([0, 1, 2, 3, 5, 2**31 - 1]), st.binary(max_size=64)),
    max_size=12,
)


async def pinged_or_ended(client: H2Client, timeout: float = 10.0) -> str:
    """After the frames a test sent, a PING: "ack" when it is answered, "goaway" or "closed"
    when the edge ended the connection instead. Reads raw frames: the client's own h2 state is
    meaningless after raw bytes."""
    client.raw(frame(0x6, 0x0, 0, b"probe!!!"))
    buffer = b""
    async with asyncio.timeout(timeout):
        while True:
            data = await client.reader.read(65536)
            if not data:
                return "closed"
            buffer += data
            while len(buffer) >= 9:
                size = int.from_bytes(buffer[:3], "big")
                if len(buffer) < 9 + size:
                    break
                kind, flags, payload = buffer[3], buffer[4], buffer[9 : 9 + size]
                buffer = buffer[9 + size :]
                if kind == 0x7:
                    return "goaway"
                if kind == 0x6 and flags & 0x1 and payload == b"probe!!!":
                    return "ack"


@settings(
    max_examples=int(os.environ.get("EDGE_H2_FRAME_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(frames=_FRAMES, with_request=st.booleans())
async def test_any_frame_sequence_gets_answers_resets_or_goaway(
    frames: list[tuple[int, int, int, bytes]], with_request: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.clear()
    async with upstream() as web, running_listener(https(route(web.port), http2=True)) as edge:
        client = await H2Client.connect(edge.port, edge.pki)
        if with_request:
            client.request("/echo-headers")
        for kind, flags, sid, payload in frames:
            client.raw(frame(kind, flags, sid, payload))
        assert await pinged_or_ended(client) in ("ack", "goaway", "closed")
        await client.close()
        fresh = await H2Client.connect(edge.port, edge.pki)
        answer = await fresh.answer(fresh.request("/echo-headers"))
        await fresh.close()
    assert answer.status == 200
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize(
    "extra",
    [
        [("content-length", "3"), ("content-length", "3")],
        [("content-length", "+3")],
        [("host", "other.example")],
    ],
)
async def test_requests_a_proxy_cannot_forward_unambiguously_are_refused(extra: list[tuple[str, str]]) -> None:
    async with upstream() as web, running_listener(https(route(web.port), http2=True)) as edge:
        client = await H2Client.connect(edge.port, edge.pki, validate=False)
        sid = client.request("/echo-headers", "POST", extra=extra, body=b"abc")
        answer = await client.answer(sid)
        fine = await client.answer(client.request("/echo-headers"))
        await client.close()
    assert answer.reset == ErrorCodes.PROTOCOL_ERROR or client.goaway == ErrorCodes.PROTOCOL_ERROR
    assert web.seen == [] or (fine.status == 200 and web.seen == ["/echo-headers"])


async def test_a_request_without_authority_is_refused() -> None:
    async with upstream() as web, running_listener(https(route(web.port), http2=True)) as edge:
        client = await H2Client.connect(edge.port, edge.pki, validate=False)
        sid = client.send_headers([(":method", "GET"), (":scheme", "https"), (":path", "/")])
        answer = await client.answer(sid)
        await client.close()
    assert answer.reset == ErrorCodes.PROTOCOL_ERROR or client.goaway == ErrorCodes.PROTOCOL_ERROR
    assert web.seen == []


_NAMES = st.sampled_from(
    [":method", ":path", ":authority", ":scheme", ":protocol", "host", "cookie", "content-length", "x-forwarded-for", "connection", "a"]
)
_VALUES = st.one_of(
    st.sampled_from(["GET", "POST", "CONNECT", "/", "*", "/a?b", "http://x/", "edge.example", "EDGE.example:8443", "[::1]", "5", "+5"]),
    st.binary(max_size=12).map(lambda b: b.decode("latin-1")),
)


@settings(max_examples=int(os.environ.get("EDGE_FUZZ_EXAMPLES", "150")), deadline=None)
@given(st.lists(st.tuples(_NAMES, _VALUES), max_size=8), st.booleans())
def test_any_request_head_gives_one_clean_http11_head_or_a_refusal(fields: list[tuple[str, str]], end_stream: bool) -> None:
    """What h2 passes on is turned into a request the upstream reads as one request with one
    Host, or refused with our typed error; never anything else."""
    router: Router[str] = Router([Route(upstream=HttpUpstream("http", "127.0.0.1", 8081))], lambda upstream: "pool")
    headers = [(n.encode(), v.encode("latin-1")) for n, v in fields]
    try:
        request, pool = interpret_h2(headers, router, end_stream=end_stream, client_ip=b"127.0.0.1", max_body_bytes=1000)
    except Refused as e:
        assert e.status in (400, 405, 413)
        return
    assert pool == "pool"
    parsed: list[tuple[bytes, bytes]] = []
    done: list[bool] = []

    class Sink:
        def on_header(self, name: bytes, value: bytes) -> None:
            parsed.append((name.lower(), value))

        def on_headers_complete(self) -> None:
            done.append(True)

    parser = HttpRequestParser(Sink())
    parser.feed_data(request.head)
    assert done == [True]
    assert [n for n, _ in parsed].count(b"host") == 1


async def test_a_client_that_opens_no_window_costs_a_bounded_buffer_and_pauses_the_upstream() -> None:
    async with upstream() as web, running_listener(https(route(web.port), http2=True)) as edge:
        client = await H2Client.connect(edge.port, edge.pki)
        client.h2.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 0})
        client.flush()
        sid = client.request("/bytes/20000000")
        assert edge.listener.shared is not None
        (connection,) = edge.listener.shared.connections
        streams = connection._streams  # type: ignore[attr-defined]
        await eventually(lambda: sid in streams and streams[sid].conn is not None and streams[sid].conn.reading_paused)
        stream = streams[sid]
        held = stream.out_size
        await client.close()
    assert 0 < held <= STREAM_BUFFER_HIGH + 64 * 1024
