"""The gRPC listener's lifecycle and TLS: binding, sharing a port, a start that cannot work (an
unreadable upstream CA), stopping past the drain, the TLS versions it accepts, and uvloop.
Streams, timeouts, drain and TLS upstreams are in test_grpc_relay_tls.py."""

from __future__ import annotations

import asyncio
import ssl
import warnings
from pathlib import Path

import grpc
import pytest
import uvloop

from proxy.errors import ListenerError
from tests.support.grpc_echo import method, running_upstream
from tests.support.listeners import build_listener, grpc_relay, running_grpc_listener
from tests.support.pki import Pki
from tests.support.probes import WAIT


async def test_second_listener_on_a_taken_port_fails_naming_the_address() -> None:
    async with running_upstream() as upstream, running_grpc_listener(upstream.port) as edge:
        taken = edge.port
        second = build_listener(grpc_relay(upstream.port, listen=f"127.0.0.1:{taken}"), edge.reader)
        with pytest.raises(ListenerError) as raised:
            await second.start()
        await second.stop(0)
    message = str(raised.value)
    assert f"127.0.0.1:{taken}" in message
    assert "in use" in message


async def test_listeners_share_a_port_with_reuse_port() -> None:
    # What server.workers > 1 does across processes: each binds the same port with SO_REUSEPORT.
    async with running_upstream() as upstream, running_grpc_listener(upstream.port, reuse_port=True) as edge:
        shared = grpc_relay(upstream.port, listen=f"127.0.0.1:{edge.port}")
        second = build_listener(shared, edge.reader, reuse_port=True)
        await second.start()
        try:
            assert second.port == edge.port
            async with edge.channel() as channel:
                for _ in range(4):
                    assert await channel.unary_unary(method("Unary"))(b"x", timeout=WAIT) == b"x"
        finally:
            await second.stop(0)


async def test_stop_cancels_calls_still_open_after_the_drain_and_their_upstream_calls() -> None:
    async with running_upstream() as upstream, running_grpc_listener(upstream.port) as edge, edge.channel() as channel:
        call = channel.unary_unary(method("Hang"))(b"", timeout=WAIT)
        while not upstream.deadlines:
            await asyncio.sleep(0.01)
        await edge.listener.stop(0.1)
        await asyncio.wait_for(upstream.cancelled.wait(), WAIT)
        assert await call.code() != grpc.StatusCode.OK


def tls_client(pki: Pki, version: ssl.TLSVersion) -> ssl.SSLContext:
    context = pki.client_context("h2")
    context.minimum_version = context.maximum_version = version
    return context


async def handshake(port: int, context: ssl.SSLContext) -> tuple[str, str, str]:
    _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"), WAIT)
    tls = writer.get_extra_info("ssl_object")
    writer.close()
    return tls.version(), tls.cipher()[0], tls.selected_alpn_protocol()


async def test_tls_12_and_13_are_accepted_with_alpn_h2_and_aead_ciphers() -> None:
    async with running_upstream() as upstream, running_grpc_listener(upstream.port) as edge:
        version, cipher, alpn = await handshake(edge.port, tls_client(edge.pki, ssl.TLSVersion.TLSv1_3))
        assert (version, alpn) == ("TLSv1.3", "h2")
        version, cipher, alpn = await handshake(edge.port, tls_client(edge.pki, ssl.TLSVersion.TLSv1_2))
        assert (version, alpn) == ("TLSv1.2", "h2")
        assert cipher.startswith("ECDHE-") and "GCM" in cipher


async def test_tls_11_client_is_refused() -> None:
    async with running_upstream() as upstream, running_grpc_listener(upstream.port) as edge:
        context = tls_client(edge.pki, ssl.TLSVersion.TLSv1_2)
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        with warnings.catch_warnings():  # TLS 1.1 is deprecated: that is the point of the test
            warnings.simplefilter("ignore", DeprecationWarning)
            context.maximum_version = ssl.TLSVersion.TLSv1_1
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # so the client can offer TLS 1.1 at all
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await handshake(edge.port, context)


async def test_unreadable_upstream_ca_fails_start_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.crt"
    with pytest.raises(ListenerError, match=r"nope\.crt"):
        async with running_grpc_listener("grpcs://127.0.0.1:1", upstream_ca=str(missing)):
            pass


def test_listener_serves_under_uvloop() -> None:
    # The app runs on uvloop; grpc's asyncio server must work there too.
    async def one_call() -> bytes:
        async with running_upstream() as upstream, running_grpc_listener(upstream.port) as edge, edge.channel() as channel:
            response: bytes = await channel.unary_unary(method("Unary"))(b"uv", timeout=WAIT)
            return response

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(one_call()) == b"uv"
