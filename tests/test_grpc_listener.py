"""The gRPC listener's lifecycle and TLS: binding, sharing a port, draining, the TLS versions it
accepts, a TLS upstream, and the certificate fetcher grpc calls before each handshake."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import warnings
from pathlib import Path

import grpc
import pytest
import trustme
import uvloop

from proxy.certstore.store import CertStore, Serving
from proxy.config import Address, GrpcUpstream, Limits
from proxy.errors import ListenerError
from proxy.grpcedge import GrpcListener
from proxy.grpcedge.listener import CertificateFetcher
from proxy.tlsmaterial import TlsObjects, tls_preparer
from tests.grpc_helpers import WAIT, issue_material, listener_config, method, publish, running_edge, running_upstream


async def test_second_listener_on_a_taken_port_fails_naming_the_address() -> None:
    async with running_upstream() as upstream, running_edge(upstream.port) as edge:
        taken = Address("127.0.0.1", edge.listener.port)
        second = GrpcListener(listener_config(upstream.port, listen=taken), "1.2", lambda: edge.store.current)
        with pytest.raises(ListenerError) as raised:
            await second.start()
        await second.stop(0)
    message = str(raised.value)
    assert f"127.0.0.1:{taken.port}" in message
    assert "in use" in message


async def test_listeners_share_a_port_with_reuse_port() -> None:
    # What server.workers > 1 does across processes: each binds the same port with SO_REUSEPORT.
    async with running_upstream() as upstream, running_edge(upstream.port, reuse_port=True) as edge:
        shared = listener_config(upstream.port, listen=Address("127.0.0.1", edge.listener.port))
        second = GrpcListener(shared, "1.2", lambda: edge.store.current, reuse_port=True)
        await second.start()
        try:
            assert second.port == edge.listener.port
            async with edge.channel() as channel:
                for _ in range(4):
                    assert await channel.unary_unary(method("Unary"))(b"x", timeout=WAIT) == b"x"
        finally:
            await second.stop(0)


async def test_start_without_a_certificate_fails_clearly() -> None:
    store: CertStore[TlsObjects] = CertStore(tls_preparer("1.2"))
    listener = GrpcListener(listener_config(1), "1.2", lambda: store.current)
    with pytest.raises(ListenerError, match="no certificate"):
        await listener.start()
    await listener.stop(0)  # safe after a failed start, as the app's shutdown path does


async def test_stop_lets_an_open_stream_finish_within_the_drain() -> None:
    async with running_upstream() as upstream, running_edge(upstream.port) as edge, edge.channel() as channel:
        ticker = channel.unary_stream(method("Ticker"))(b"", timeout=WAIT)
        await upstream.ticks.put(b"1")
        assert await ticker.read() == b"1"
        async with asyncio.TaskGroup() as tasks:
            stopping = tasks.create_task(edge.listener.stop(WAIT))
            await asyncio.sleep(0.2)
            assert not stopping.done()  # waiting for the open stream
            await upstream.ticks.put(b"2")
            assert await ticker.read() == b"2"
            await upstream.ticks.put(None)
            assert await ticker.code() == grpc.StatusCode.OK


async def test_stop_cancels_calls_still_open_after_the_drain_and_their_upstream_calls() -> None:
    async with running_upstream() as upstream, running_edge(upstream.port) as edge, edge.channel() as channel:
        call = channel.unary_unary(method("Hang"))(b"", timeout=WAIT)
        while not upstream.deadlines:
            await asyncio.sleep(0.01)
        await edge.listener.stop(0.1)
        await asyncio.wait_for(upstream.cancelled.wait(), WAIT)
        assert await call.code() != grpc.StatusCode.OK


def tls_client(ca: trustme.CA, version: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=ca.cert_pem.bytes().decode())
    context.minimum_version = context.maximum_version = version
    context.set_alpn_protocols(["h2"])
    return context


async def handshake(port: int, context: ssl.SSLContext) -> tuple[str, str, str]:
    _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=context), WAIT)
    tls = writer.get_extra_info("ssl_object")
    writer.close()
    return tls.version(), tls.cipher()[0], tls.selected_alpn_protocol()


async def test_tls_12_and_13_are_accepted_with_alpn_h2_and_aead_ciphers() -> None:
    async with running_upstream() as upstream, running_edge(upstream.port) as edge:
        version, cipher, alpn = await handshake(edge.listener.port, tls_client(edge.ca, ssl.TLSVersion.TLSv1_3))
        assert (version, alpn) == ("TLSv1.3", "h2")
        version, cipher, alpn = await handshake(edge.listener.port, tls_client(edge.ca, ssl.TLSVersion.TLSv1_2))
        assert (version, alpn) == ("TLSv1.2", "h2")
        assert cipher.startswith("ECDHE-") and "GCM" in cipher


async def test_tls_11_client_is_refused() -> None:
    async with running_upstream() as upstream, running_edge(upstream.port) as edge:
        context = tls_client(edge.ca, ssl.TLSVersion.TLSv1_2)
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        with warnings.catch_warnings():  # TLS 1.1 is deprecated: that is the point of the test
            warnings.simplefilter("ignore", DeprecationWarning)
            context.maximum_version = ssl.TLSVersion.TLSv1_1
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # so the client can offer TLS 1.1 at all
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await handshake(edge.listener.port, context)


async def test_min_version_13_is_reported_as_not_enforceable(caplog: pytest.LogCaptureFixture) -> None:
    # grpcio has no API for a minimum TLS version: the listener says so instead of pretending.
    async with running_upstream() as upstream, running_edge(upstream.port) as edge:
        listener = GrpcListener(listener_config(upstream.port), "1.3", lambda: edge.store.current)
        with caplog.at_level(logging.WARNING, logger="proxy.grpc"):
            await listener.start()
        try:
            assert "accepts TLS 1.2 and 1.3" in caplog.text
            version, _, _ = await handshake(listener.port, tls_client(edge.ca, ssl.TLSVersion.TLSv1_2))
            assert version == "TLSv1.2"
        finally:
            await listener.stop(0)


async def test_tls_upstream_is_verified_against_the_configured_ca(tmp_path: Path) -> None:
    upstream_ca = trustme.CA()
    leaf = upstream_ca.issue_cert("127.0.0.1")
    key_and_chain = [(leaf.private_key_pem.bytes(), b"".join(p.bytes() for p in leaf.cert_chain_pems))]
    ca_file = tmp_path / "upstream-ca.crt"
    ca_file.write_bytes(upstream_ca.cert_pem.bytes())
    async with running_upstream(credentials=grpc.ssl_server_credentials(key_and_chain)) as upstream:
        tls_upstream = GrpcUpstream(Address("127.0.0.1", upstream.port), tls=True, ca_file=ca_file)
        async with running_edge(upstream.port, grpc_upstream=tls_upstream) as edge, edge.channel() as channel:
            assert await channel.unary_unary(method("Unary"))(b"over tls", timeout=WAIT) == b"over tls"
        # Trusting some other CA, the edge refuses the upstream's certificate.
        ca_file.write_bytes(trustme.CA().cert_pem.bytes())
        async with running_edge(upstream.port, grpc_upstream=tls_upstream) as edge, edge.channel() as channel:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await channel.unary_unary(method("Unary"))(b"x", timeout=WAIT)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_unreadable_upstream_ca_fails_start_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.crt"
    tls_upstream = GrpcUpstream(Address("127.0.0.1", 1), tls=True, ca_file=missing)
    store: CertStore[TlsObjects] = CertStore(tls_preparer("1.2"))
    await publish(store, issue_material(trustme.CA()))
    listener = GrpcListener(listener_config(1, grpc_upstream=tls_upstream), "1.2", lambda: store.current)
    with pytest.raises(ListenerError, match=r"nope\.crt"):
        await listener.start()


def test_listener_serves_under_uvloop() -> None:
    # The app runs on uvloop; grpc's asyncio server must work there too.
    async def one_call() -> bytes:
        async with running_upstream() as upstream, running_edge(upstream.port) as edge, edge.channel() as channel:
            response: bytes = await channel.unary_unary(method("Unary"))(b"uv", timeout=WAIT)
            return response

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(one_call()) == b"uv"


async def test_fetcher_hands_out_each_version_once() -> None:
    store: CertStore[TlsObjects] = CertStore(tls_preparer("1.2"))
    ca = trustme.CA()
    await publish(store, issue_material(ca))
    fetcher = CertificateFetcher(lambda: store.current, "grpc")
    assert fetcher.initial is store.current.tls.grpc_config
    assert fetcher() is None  # unchanged: grpc keeps its TLS state
    await publish(store, issue_material(ca))
    assert fetcher() is store.current.tls.grpc_config
    assert fetcher() is None


async def test_fetcher_answers_none_when_the_store_cannot_be_read() -> None:
    # An exception raised into grpc's core would fail the handshake with no trace; the fetcher
    # logs it and lets grpc keep the certificate it has.
    store: CertStore[TlsObjects] = CertStore(tls_preparer("1.2"))
    await publish(store, issue_material(trustme.CA()))
    readable = [True]

    def current() -> Serving[TlsObjects]:
        if not readable[0]:
            raise RuntimeError("store broken")
        return store.current

    fetcher = CertificateFetcher(current, "grpc")
    readable[0] = False
    assert fetcher() is None


def test_bind_problem_names_the_errno_reason() -> None:
    from proxy.grpcedge.listener import bind_problem

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert "in use" in bind_problem(Address("127.0.0.1", taken.getsockname()[1]), reuse_port=False)


async def test_silent_connection_is_closed_after_the_handshake_timeout() -> None:
    async with running_upstream() as upstream, running_edge(upstream.port, limits=Limits(handshake_timeout=0.3)) as edge:
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.listener.port)
        try:
            # No ClientHello is ever sent; the edge must hang up rather than hold the socket.
            assert await asyncio.wait_for(reader.read(), WAIT) == b""
        finally:
            writer.close()
