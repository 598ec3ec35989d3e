"""Certificate swaps on the gRPC listener: a new handshake sees the new certificate at once,
while streams opened before the swap keep answering and finish with OK (in both modes; the
relay's own connection-age tests are in test_grpc_relay_tls.py)."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from tests.grpc_helpers import WAIT, method, running_edge, running_upstream


@pytest.mark.parametrize("mode", ["grpcio", "relay"])
async def test_new_handshake_gets_new_cert_while_open_streams_continue(mode: str) -> None:
    async with running_upstream() as upstream, running_edge(upstream.port, mode=mode) as edge, edge.channel() as channel:
        old = edge.store.current.snapshot
        assert await edge.handshake_fingerprint() == old.fingerprint

        ticker = channel.unary_stream(method("Ticker"))(b"", timeout=WAIT)
        bidi = channel.stream_stream(method("Bidi"))(timeout=WAIT)
        await upstream.ticks.put(b"before")
        assert await ticker.read() == b"before"
        await bidi.write(b"before")
        assert await bidi.read() == b"BEFORE"

        new_fingerprint = await edge.publish_new_certificate()
        assert new_fingerprint != old.fingerprint
        assert edge.store.current.snapshot.version == old.version + 1
        assert await edge.handshake_fingerprint() == new_fingerprint
        async with edge.channel() as fresh:  # a new gRPC client verifies and uses the new one
            assert await fresh.unary_unary(method("Unary"))(b"new", timeout=WAIT) == b"new"

        # Both streams live on the connection made before the swap; they are not disturbed.
        await upstream.ticks.put(b"after")
        assert await ticker.read() == b"after"
        await bidi.write(b"after")
        assert await bidi.read() == b"AFTER"
        await upstream.ticks.put(None)
        await bidi.done_writing()
        assert await ticker.read() is grpc.aio.EOF
        assert await bidi.read() is grpc.aio.EOF
        assert await ticker.code() == grpc.StatusCode.OK
        assert await bidi.code() == grpc.StatusCode.OK


async def test_every_swap_reaches_new_handshakes() -> None:
    async with running_upstream() as upstream, running_edge(upstream.port) as edge:
        for _ in range(3):
            fingerprint = await edge.publish_new_certificate()
            assert await edge.handshake_fingerprint() == fingerprint
            async with edge.channel() as channel:
                assert await channel.unary_unary(method("Unary"))(b"x", timeout=WAIT) == b"x"


async def test_streams_outlive_max_connection_age_and_the_channel_reconnects() -> None:
    # A short age sends the connection a GOAWAY while both streams are open: they must still finish
    # (the grace is unbounded), and the same channel's next call goes out on a new connection.
    async with (
        running_upstream() as upstream,
        running_edge(upstream.port, max_connection_age=0.3) as edge,
        edge.channel() as channel,
    ):
        ticker = channel.unary_stream(method("Ticker"))(b"", timeout=WAIT)
        bidi = channel.stream_stream(method("Bidi"))(timeout=WAIT)
        await upstream.ticks.put(b"1")
        assert await ticker.read() == b"1"
        await edge.publish_new_certificate()
        reads_before = edge.certificate_reads
        await asyncio.sleep(1.0)  # well past the age (grpc adds up to 10% jitter)
        await upstream.ticks.put(b"2")
        assert await ticker.read() == b"2"
        await bidi.write(b"late")
        assert await bidi.read() == b"LATE"
        await upstream.ticks.put(None)
        await bidi.done_writing()
        assert await ticker.code() == grpc.StatusCode.OK
        assert await bidi.code() == grpc.StatusCode.OK
        assert await channel.unary_unary(method("Unary"))(b"again", timeout=WAIT) == b"again"
        # The edge reads the serving certificate once per new handshake: the channel reconnected.
        assert edge.certificate_reads > reads_before
