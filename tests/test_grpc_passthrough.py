"""A real grpcio client calls a real grpcio upstream through a gRPC listener: deadlines,
cancellation, an unreachable upstream. The RPC kinds, metadata and statuses are in
test_grpc_rpc_kinds.py."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from tests.grpc_helpers import WAIT, closed_port, method, running_edge, running_upstream


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
