"""The gRPC listener: a real grpcio client calls a real grpcio upstream through the edge, which
relays the HTTP/2 connection as bytes. Deadlines, cancellation, an unreachable upstream, large
messages, metrics, the listener built from a config. The RPC kinds, metadata and statuses are in
test_grpc_rpc_kinds.py."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest

from proxy.metrics import REGISTRY
from tests.support.edge import running_edge
from tests.support.grpc_echo import EchoUpstream, MiB, method, running_upstream
from tests.support.listeners import GrpcServing, running_grpc_listener
from tests.support.probes import WAIT, free_port


async def test_many_concurrent_calls_share_one_relayed_connection() -> None:
    async with running_upstream() as upstream, running_grpc_listener(upstream.port) as edge, edge.channel() as channel:
        reads_before = edge.certificate_reads
        unary = channel.unary_unary(method("Unary"))
        replies = await asyncio.gather(*(unary(b"%d" % i, timeout=WAIT) for i in range(200)))
        assert replies == [b"%d" % i for i in range(200)]
        assert edge.certificate_reads == reads_before + 1  # one TLS handshake carried all 200 streams


async def test_deadline_reaches_upstream_and_expires_as_deadline_exceeded(serving: GrpcServing) -> None:
    async with running_upstream() as upstream, serving(upstream.port) as edge, edge.channel() as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await channel.unary_unary(method("Hang"))(b"", timeout=0.5)
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # The deadline crossed the edge with the call (grpc-timeout): the upstream saw it, and
        # its handler was cancelled when it ran out.
        remaining = upstream.deadlines[-1]
        assert remaining is not None
        assert 0 < remaining <= 0.5
        await asyncio.wait_for(upstream.cancelled.wait(), WAIT)


async def test_call_without_deadline_reaches_upstream_without_one() -> None:
    async with running_upstream() as upstream, running_grpc_listener(upstream.port) as edge, edge.channel() as channel:
        assert await channel.unary_unary(method("Unary"))(b"x") == b"x"
    assert upstream.deadlines[-1] is None


async def test_client_cancel_cancels_the_upstream_call(serving: GrpcServing) -> None:
    async with running_upstream() as upstream, serving(upstream.port) as edge, edge.channel() as channel:
        call = channel.unary_unary(method("Hang"))(b"")
        while not upstream.deadlines:  # wait until the call has reached the upstream
            await asyncio.sleep(0.01)
        call.cancel()
        await asyncio.wait_for(upstream.cancelled.wait(), WAIT)
        assert await call.code() == grpc.StatusCode.CANCELLED
        # The connection outlives the cancelled stream.
        assert await channel.unary_unary(method("Unary"))(b"after", timeout=WAIT) == b"after"


async def test_unreachable_upstream_gives_unavailable_naming_the_edge_before_the_deadline(serving: GrpcServing) -> None:
    async with serving(free_port()) as edge, edge.channel() as channel:
        started = time.monotonic()
        for _ in range(3):  # a fresh connection, then the same one answering again
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await channel.unary_unary(method("Unary"))(b"x", timeout=60)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            assert raised.value.details() == "edge-proxy: the upstream is unavailable"
        assert time.monotonic() - started < 30  # not after the 60 s deadline: a hang fails here


async def test_upstream_that_comes_back_is_used_within_seconds() -> None:
    port = free_port()
    async with running_grpc_listener(port) as edge, edge.channel() as channel:
        unary = channel.unary_unary(method("Unary"))
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await unary(b"x", timeout=WAIT)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        upstream = EchoUpstream(port=port)
        await upstream.start()
        try:
            # The refused connection answers UNAVAILABLE until it closes (REFUSAL_LINGER); the
            # channel's next connection dials the upstream afresh.
            give_up = time.monotonic() + WAIT
            while True:
                try:
                    assert await unary(b"back", timeout=WAIT, wait_for_ready=True) == b"back"
                    break
                except grpc.aio.AioRpcError as error:
                    assert error.code() == grpc.StatusCode.UNAVAILABLE
                    assert time.monotonic() < give_up
                    await asyncio.sleep(0.1)
        finally:
            await upstream.stop()


async def test_five_mib_message_passes_both_ways_when_client_and_upstream_allow_it() -> None:
    # Message limits are end to end in relay mode: the edge passes bytes, the client and the
    # upstream enforce their own limits. max_message_bytes is left at its default on purpose.
    big = bytes(range(256)) * (5 * MiB // 256)
    async with (
        running_upstream(max_message_bytes=8 * MiB) as upstream,
        running_grpc_listener(upstream.port) as edge,
        edge.channel(max_message_bytes=8 * MiB) as channel,
    ):
        assert await channel.unary_unary(method("Unary"))(big, timeout=WAIT) == big
        bidi = channel.stream_stream(method("Bidi"))(timeout=WAIT)
        await bidi.write(big)
        assert await bidi.read() == big.upper()
        await bidi.done_writing()
        assert await bidi.code() == grpc.StatusCode.OK


async def test_five_mib_message_is_refused_by_the_upstreams_default_limit() -> None:
    async with (
        running_upstream() as upstream,
        running_grpc_listener(upstream.port) as edge,
        edge.channel(max_message_bytes=8 * MiB) as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await channel.unary_unary(method("Unary"))(b"x" * 5 * MiB, timeout=WAIT)
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # Only that stream failed: the relayed connection carries on.
        assert await channel.unary_unary(method("Unary"))(b"ok", timeout=WAIT) == b"ok"


def sample(name: str) -> float:
    # A listener name of its own: connections of other tests may still be closing.
    return REGISTRY.get_sample_value(name, {"listener": "relay-metrics"}) or 0.0


async def test_handshakes_and_open_connections_are_counted(serving: GrpcServing) -> None:
    handshakes = sample("edge_tls_handshakes_total")
    async with running_upstream() as upstream, serving(upstream.port, name="relay-metrics") as edge:
        async with edge.channel() as channel:
            await channel.unary_unary(method("Unary"))(b"x", timeout=WAIT)
            assert sample("edge_open_connections") == 1
        for _ in range(100):  # the client's close reaches the edge a moment later
            if sample("edge_open_connections") == 0:
                break
            await asyncio.sleep(0.02)
        assert sample("edge_open_connections") == 0
    assert sample("edge_tls_handshakes_total") == handshakes + 1


async def test_the_edge_built_from_a_config_relays_grpc_calls(tmp_path: Path) -> None:
    async with (
        running_upstream() as upstream,
        running_edge(tmp_path, http_upstream=free_port(), grpc_upstream=upstream.port, watch="off") as running,
    ):
        ca = running.edge.store.current.snapshot.material.cert_pem  # the self-signed default
        credentials = grpc.ssl_channel_credentials(ca)
        async with grpc.aio.secure_channel(f"127.0.0.1:{running.grpc_port}", credentials) as channel:
            assert await channel.unary_unary(method("Unary"))(b"wired", timeout=WAIT) == b"wired"
