"""Certificate swaps on the gRPC listener: a new handshake sees the new certificate at once,
while streams opened before the swap keep answering and finish with OK (the connection-age
tests are in test_grpc_relay_tls.py)."""

from __future__ import annotations

import grpc

from tests.support.grpc_echo import OpenStreams, method, running_upstream
from tests.support.listeners import GrpcServing, running_grpc_listener
from tests.support.probes import WAIT


async def test_new_handshake_gets_new_cert_while_open_streams_continue(serving: GrpcServing) -> None:
    async with running_upstream() as upstream, serving(upstream.port) as edge, edge.channel() as channel:
        old = edge.store.current.snapshot
        assert await edge.handshake_fingerprint() == old.fingerprint

        streams = await OpenStreams.open(channel, upstream, WAIT)
        assert await streams.exchange(b"before") == (b"before", b"BEFORE")

        new_fingerprint = await edge.publish_new_certificate()
        assert new_fingerprint != old.fingerprint
        assert edge.store.current.snapshot.version == old.version + 1
        assert await edge.handshake_fingerprint() == new_fingerprint
        async with edge.channel() as fresh:  # a new gRPC client verifies and uses the new one
            assert await fresh.unary_unary(method("Unary"))(b"new", timeout=WAIT) == b"new"

        # Both streams live on the connection made before the swap; they are not disturbed.
        assert await streams.exchange(b"after") == (b"after", b"AFTER")
        await streams.finish()
        assert await streams.ticker.read() is grpc.aio.EOF
        assert await streams.bidi.read() is grpc.aio.EOF
        assert await streams.codes() == (grpc.StatusCode.OK, grpc.StatusCode.OK)


async def test_every_swap_reaches_new_handshakes() -> None:
    async with running_upstream() as upstream, running_grpc_listener(upstream.port) as edge:
        for _ in range(3):
            fingerprint = await edge.publish_new_certificate()
            assert await edge.handshake_fingerprint() == fingerprint
            async with edge.channel() as channel:
                assert await channel.unary_unary(method("Unary"))(b"x", timeout=WAIT) == b"x"
