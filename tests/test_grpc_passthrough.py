"""A real grpcio client calls a real grpcio upstream through a grpcio-mode gRPC listener:
deadlines, cancellation, an unreachable upstream, large messages, metrics. The RPC kinds,
metadata and statuses, the same in both modes, are in test_grpc_rpc_kinds.py."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from proxy.metrics import REGISTRY
from tests.grpc_helpers import WAIT, MiB, closed_port, method, running_edge, running_upstream


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
