"""Every RPC kind, metadata, statuses and trailers pass through unchanged, with a real grpcio
client and a real grpcio upstream on 127.0.0.1: on a gRPC listener, and on the HTTPS port of an
https listener with a `grpc_upstream` (one port for browsers, API and gRPC)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import grpc
import pytest

from tests.support.grpc_echo import STATUS_DETAILS, method, running_upstream
from tests.support.listeners import RunningListener, running_grpc_listener, running_one_port_listener
from tests.support.probes import WAIT

GrpcServing = Callable[[int], AbstractAsyncContextManager[RunningListener]]


@pytest.fixture(params=["grpc listener", "https listener with grpc_upstream"])
def serving(request: pytest.FixtureRequest) -> GrpcServing:
    """A listener on 127.0.0.1 that relays gRPC to the upstream on the given port."""
    return running_grpc_listener if request.param == "grpc listener" else running_one_port_listener


async def test_unary_call_passes_through_with_metadata_both_ways(serving: GrpcServing) -> None:
    async with running_upstream() as upstream, serving(upstream.port) as edge, edge.channel() as channel:
        call = channel.unary_unary(method("Unary"))(b"hello", metadata=(("x-trace", "abc"), ("x-blob-bin", b"\x00\xfe\xff")), timeout=WAIT)
        assert await call == b"hello"
        assert await call.code() == grpc.StatusCode.OK
        assert tuple(await call.initial_metadata()) == (("x-trace", "abc"), ("x-blob-bin", b"\x00\xfe\xff"))
        assert tuple(await call.trailing_metadata()) == (("x-trailer", "done"), ("x-trailer-bin", b"\x00\x01\xff"))
    seen = dict(upstream.seen_metadata[-1])
    assert seen["x-trace"] == "abc"
    assert seen["x-blob-bin"] == b"\x00\xfe\xff"


async def test_server_streaming_call_passes_every_message(serving: GrpcServing) -> None:
    async with running_upstream() as upstream, serving(upstream.port) as edge, edge.channel() as channel:
        call = channel.unary_stream(method("ServerStream"))(b"5", timeout=WAIT)
        assert [m async for m in call] == [b"0", b"1", b"2", b"3", b"4"]
        assert await call.code() == grpc.StatusCode.OK


async def test_client_streaming_call_passes_every_message(serving: GrpcServing) -> None:
    async with running_upstream() as upstream, serving(upstream.port) as edge, edge.channel() as channel:
        call = channel.stream_unary(method("ClientStream"))(iter([b"a", b"b", b"c"]), timeout=WAIT)
        assert await call == b"a|b|c"


async def test_bidi_stream_answers_each_message_in_turn(serving: GrpcServing) -> None:
    async with running_upstream() as upstream, serving(upstream.port) as edge, edge.channel() as channel:
        call = channel.stream_stream(method("Bidi"))(timeout=WAIT)
        for word in (b"one", b"two", b"three"):
            await call.write(word)
            assert await call.read() == word.upper()
        await call.done_writing()
        assert await call.read() is grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK


async def test_error_status_details_and_binary_trailer_pass_unchanged(serving: GrpcServing) -> None:
    async with running_upstream() as upstream, serving(upstream.port) as edge, edge.channel() as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await channel.unary_unary(method("Fail"))(b"widget-7", timeout=WAIT)
    error = raised.value
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "no such thing: widget-7"
    trailers = dict(error.trailing_metadata())
    assert trailers["grpc-status-details-bin"] == STATUS_DETAILS
    assert trailers["x-reason"] == "gone"


async def test_unknown_method_gets_the_upstreams_unimplemented(serving: GrpcServing) -> None:
    async with running_upstream() as upstream, serving(upstream.port) as edge, edge.channel() as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await channel.unary_unary("/other.Service/Nothing")(b"", timeout=WAIT)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_upstreams_own_unavailable_passes_unchanged(serving: GrpcServing) -> None:
    async with running_upstream() as upstream, serving(upstream.port) as edge, edge.channel() as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await channel.unary_unary(method("Unavailable"))(b"", timeout=WAIT)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert raised.value.details() == "upstream says: try later"
