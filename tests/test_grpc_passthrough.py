"""A real grpcio client calls a real grpcio upstream through the gRPC listener: every RPC kind,
metadata both ways, statuses, deadlines, cancellation, an unreachable upstream, large messages."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from proxy.metrics import REGISTRY
from tests.grpc_helpers import STATUS_DETAILS, MiB, closed_port, method, running_edge, running_upstream

# Generous: only a hang would take this long; nothing here measures speed.
WAIT = 20


async def test_unary_call_passes_through_with_metadata_both_ways() -> None:
    async with running_upstream() as upstream, running_edge(upstream.port) as edge, edge.channel() as channel:
        call = channel.unary_unary(method("Unary"))(b"hello", metadata=(("x-trace", "abc"), ("x-blob-bin", b"\x00\xfe\xff")), timeout=WAIT)
        assert await call == b"hello"
        assert await call.code() == grpc.StatusCode.OK
        assert tuple(await call.initial_metadata()) == (("x-trace", "abc"), ("x-blob-bin", b"\x00\xfe\xff"))
        assert tuple(await call.trailing_metadata()) == (("x-trailer", "done"), ("x-trailer-bin", b"\x00\x01\xff"))
    seen = dict(upstream.seen_metadata[-1])
    assert seen["x-trace"] == "abc"
    assert seen["x-blob-bin"] == b"\x00\xfe\xff"


async def test_server_streaming_call_passes_every_message() -> None:
    async with running_upstream() as upstream, running_edge(upstream.port) as edge, edge.channel() as channel:
        call = channel.unary_stream(method("ServerStream"))(b"5", timeout=WAIT)
        assert [m async for m in call] == [b"0", b"1", b"2", b"3", b"4"]
        assert await call.code() == grpc.StatusCode.OK


async def test_client_streaming_call_passes_every_message() -> None:
    async with running_upstream() as upstream, running_edge(upstream.port) as edge, edge.channel() as channel:
        call = channel.stream_unary(method("ClientStream"))(iter([b"a", b"b", b"c"]), timeout=WAIT)
        assert await call == b"a|b|c"


async def test_bidi_stream_answers_each_message_in_turn() -> None:
    async with running_upstream() as upstream, running_edge(upstream.port) as edge, edge.channel() as channel:
        call = channel.stream_stream(method("Bidi"))(timeout=WAIT)
        for word in (b"one", b"two", b"three"):
            await call.write(word)
            assert await call.read() == word.upper()
        await call.done_writing()
        assert await call.read() is grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK


async def test_error_status_details_and_binary_trailer_pass_unchanged() -> None:
    async with running_upstream() as upstream, running_edge(upstream.port) as edge, edge.channel() as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await channel.unary_unary(method("Fail"))(b"widget-7", timeout=WAIT)
    error = raised.value
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "no such thing: widget-7"
    trailers = dict(error.trailing_metadata())
    assert trailers["grpc-status-details-bin"] == STATUS_DETAILS
    assert trailers["x-reason"] == "gone"


async def test_unknown_method_gets_the_upstreams_unimplemented() -> None:
    async with running_upstream() as upstream, running_edge(upstream.port) as edge, edge.channel() as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await channel.unary_unary("/other.Service/Nothing")(b"", timeout=WAIT)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_deadline_reaches_upstream_and_expires_as_deadline_exceeded() -> None:
    async with running_upstream() as upstream, running_edge(upstream.port) as edge, edge.channel() as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await channel.unary_unary(method("Hang"))(b"", timeout=0.5)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The upstream saw a deadline no later than the client's own: it was passed on, not dropped.
    remaining = upstream.deadlines[-1]
    assert remaining is not None
    assert 0 < remaining <= 0.5


async def test_call_without_deadline_reaches_upstream_without_one() -> None:
    async with running_upstream() as upstream, running_edge(upstream.port) as edge, edge.channel() as channel:
        assert await channel.unary_unary(method("Unary"))(b"x") == b"x"
    assert upstream.deadlines[-1] is None


async def test_client_cancel_cancels_the_upstream_call() -> None:
    async with running_upstream() as upstream, running_edge(upstream.port) as edge, edge.channel() as channel:
        call = channel.unary_unary(method("Hang"))(b"")
        while not upstream.deadlines:  # wait until the call has reached the upstream
            await asyncio.sleep(0.01)
        call.cancel()
        await asyncio.wait_for(upstream.cancelled.wait(), WAIT)
        assert await call.code() == grpc.StatusCode.CANCELLED


async def test_unreachable_upstream_gives_unavailable_naming_the_edge_before_the_deadline() -> None:
    async with running_edge(closed_port()) as edge, edge.channel() as channel:
        for _ in range(2):  # the first call finds the port closed, the next one a channel backing off
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await channel.unary_unary(method("Unary"))(b"x", timeout=60)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "edge-proxy" in (raised.value.details() or "")


async def test_upstreams_own_unavailable_passes_unchanged() -> None:
    async with running_upstream() as upstream, running_edge(upstream.port) as edge, edge.channel() as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await channel.unary_unary(method("Unavailable"))(b"", timeout=WAIT)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert raised.value.details() == "upstream says: try later"


async def test_five_mib_message_passes_both_ways_with_limits_raised() -> None:
    big = bytes(range(256)) * (5 * MiB // 256)
    async with (
        running_upstream(max_message_bytes=8 * MiB) as upstream,
        running_edge(upstream.port, max_message_bytes=8 * MiB) as edge,
        edge.channel(max_message_bytes=8 * MiB) as channel,
    ):
        assert await channel.unary_unary(method("Unary"))(big, timeout=WAIT) == big


async def test_five_mib_message_is_refused_under_the_default_limit() -> None:
    async with (
        running_upstream(max_message_bytes=8 * MiB) as upstream,
        running_edge(upstream.port) as edge,
        edge.channel(max_message_bytes=8 * MiB) as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await channel.unary_unary(method("Unary"))(b"x" * 5 * MiB, timeout=WAIT)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def requests_counted(code: str) -> float:
    return REGISTRY.get_sample_value("edge_requests_total", {"listener": "grpc", "code_class": code}) or 0.0


async def test_calls_are_counted_by_status_code() -> None:
    ok, not_found = requests_counted("OK"), requests_counted("NOT_FOUND")
    async with running_upstream() as upstream, running_edge(upstream.port) as edge, edge.channel() as channel:
        await channel.unary_unary(method("Unary"))(b"x", timeout=WAIT)
        with pytest.raises(grpc.aio.AioRpcError):
            await channel.unary_unary(method("Fail"))(b"x", timeout=WAIT)
    assert requests_counted("OK") == ok + 1
    assert requests_counted("NOT_FOUND") == not_found + 1
