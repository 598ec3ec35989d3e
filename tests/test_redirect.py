"""The http-redirect listener: plain HTTP in, 308 to the HTTPS port out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from proxy.http1.redirect import redirect_location
from tests.support.listeners import RunningListener, redirect, running_listener
from tests.support.web import Response, closed_by_peer, read_response

# Sent after the request under test: answered on a kept-alive connection, never on a closed one.
FOLLOW_UP = b"GET /next HTTP/1.1\r\nHost: vertex.example.com\r\n\r\n"


@pytest.fixture
async def redirector() -> AsyncIterator[RunningListener]:
    async with running_listener(redirect(), drain_seconds=1) as listener:
        yield listener


async def ask(listener: RunningListener, request: bytes, *, head_request: bool = False) -> tuple[Response, bool]:
    """One request on a fresh connection: the response, and whether the listener then closed the
    connection (a next request on it gets no answer)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    try:
        writer.write(request)
        response = await asyncio.wait_for(read_response(reader, head_request=head_request), 5)
        writer.write(FOLLOW_UP)
        try:
            follow_up = await asyncio.wait_for(read_response(reader), 5)
        except (asyncio.IncompleteReadError, ConnectionError):
            return response, True
        assert follow_up.status == 308
        return response, False
    finally:
        writer.close()


async def test_redirects_with_308_to_the_https_port_keeping_path_and_query(redirector: RunningListener) -> None:
    response, closed = await ask(redirector, b"GET /console/x?tab=certs&a=%20 HTTP/1.1\r\nHost: vertex.example.com:8080\r\n\r\n")
    assert response.status == 308
    assert response.header("location") == "https://vertex.example.com:8443/console/x?tab=certs&a=%20"
    assert not closed  # keep-alive: the next request may follow on the same connection


async def test_methods_with_bodies_are_redirected_too_and_the_connection_closed(redirector: RunningListener) -> None:
    response, closed = await ask(redirector, b"POST /api HTTP/1.1\r\nHost: 10.0.0.5\r\nContent-Length: 3\r\n\r\nabc")
    assert (response.status, response.header("location")) == (308, "https://10.0.0.5:8443/api")
    assert closed


async def test_ipv6_hosts_head_requests_and_absolute_targets(redirector: RunningListener) -> None:
    response, _ = await ask(redirector, b"HEAD / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n", head_request=True)
    assert (response.status, response.header("location")) == (308, "https://[2001:db8::1]:8443/")
    response, _ = await ask(redirector, b"GET http://vertex.example.com/p?q HTTP/1.1\r\nHost: vertex.example.com\r\n\r\n")
    assert response.header("location") == "https://vertex.example.com:8443/p?q"


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: \r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: evil.example/@x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET nopath HTTP/1.1\r\nHost: a\r\n\r\n",
    ],
    ids=["no Host", "HTTP/1.0 without Host", "empty Host", "space in Host", "path in Host", "two Hosts", "bad target"],
)
async def test_requests_without_a_usable_host_get_400(redirector: RunningListener, request_bytes: bytes) -> None:
    response, closed = await ask(redirector, request_bytes)
    assert response.status == 400
    assert closed


async def test_keep_alive_and_pipelined_requests_are_answered_in_order(redirector: RunningListener) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", redirector.port)
    try:
        writer.write(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (await read_response(reader)).header("location") == "https://a:8443/1"
        assert (await read_response(reader)).header("location") == "https://a:8443/2"
    finally:
        writer.close()


async def test_an_idle_connection_is_closed_and_a_stalled_head_gets_408() -> None:
    async with running_listener(redirect(), server={"idle_timeout": 0.2, "header_timeout": 0.2}, drain_seconds=1) as listener:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        assert await closed_by_peer(reader, timeout=3)
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        writer.write(b"GET / HTTP/1.1\r\n")
        assert (await asyncio.wait_for(read_response(reader), 3)).status == 408
        writer.close()


async def test_a_connection_that_never_sends_a_request_is_closed_after_header_timeout() -> None:
    async with running_listener(redirect(), server={"idle_timeout": 60, "header_timeout": 0.2}, drain_seconds=1) as listener:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        assert await closed_by_peer(reader, timeout=5)  # long before the 60 s idle timeout
        writer.close()


def test_the_default_https_port_is_left_out_of_the_location() -> None:
    assert redirect_location(b"vertex.example.com", b"/x", 443) == b"https://vertex.example.com/x"
    assert redirect_location(b"VERTEX.example.com.:80", b"/", 8443) == b"https://vertex.example.com:8443/"
    assert redirect_location(b"", b"/", 443) is None


async def test_an_over_long_target_gets_414_and_an_oversize_head_431_as_on_https(redirector: RunningListener) -> None:
    long_target = b"GET /" + b"a" * (70 * 1024) + b" HTTP/1.1\r\nHost: h\r\n\r\n"
    big_header = b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"b" * (70 * 1024) + b"\r\n\r\n"
    for request, status in ((long_target, 414), (big_header, 431)):
        response, closed = await ask(redirector, request)
        assert (response.status, closed) == (status, True)
