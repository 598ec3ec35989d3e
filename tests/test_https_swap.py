"""Certificate swaps and TLS policy on the HTTPS listener, on plain asyncio and on uvloop."""

from __future__ import annotations

import asyncio
import ssl
import time
import warnings
from collections.abc import Callable

import aiohttp
import pytest
import uvloop

from proxy.metrics import REGISTRY
from tests.support.listeners import https, new_store, route, running_listener
from tests.support.pki import SERVER_NAME, Pki
from tests.support.probes import peer_fingerprint
from tests.support.web import read_response, tls_connect, tls_connection, upstream

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.mark.parametrize("loop_factory", LOOPS.values(), ids=LOOPS.keys())
def test_new_handshakes_get_the_new_certificate_while_open_connections_streams_and_websockets_continue(
    pki: Pki, loop_factory: Callable[[], asyncio.AbstractEventLoop]
) -> None:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_swap_scenario(pki))


async def _swap_scenario(pki: Pki) -> None:
    store = await new_store(pki)
    old_fingerprint = store.current.snapshot.fingerprint
    async with upstream() as up, running_listener(https(route(up.port)), store=store) as edge:
        tls = pki.client_context()
        kept_reader, kept_writer = await tls_connect(edge.port, tls, SERVER_NAME)
        stream_reader, stream_writer = await tls_connect(edge.port, tls)
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls))
        try:
            kept_writer.write(b"GET /before HTTP/1.1\r\nHost: edge.example\r\n\r\n")
            assert (await read_response(kept_reader)).status == 200
            assert peer_fingerprint(kept_writer) == old_fingerprint
            stream_writer.write(b"GET /hold HTTP/1.1\r\nHost: edge.example\r\n\r\n")
            await asyncio.wait_for(stream_reader.readuntil(b"first\n"), 5)
            ws = await session.ws_connect(f"https://127.0.0.1:{edge.port}/ws")
            await ws.send_str("before")
            assert (await ws.receive(timeout=5)).data == "echo: before"

            offer = await store.publish(pki.valid_material(), "upload")
            assert offer.swapped and offer.snapshot.fingerprint != old_fingerprint

            for server_hostname in ("127.0.0.1", SERVER_NAME):  # by IP (no SNI), then with SNI
                async with tls_connection(edge.port, pki.client_context(), server_hostname) as (reader, writer):
                    assert peer_fingerprint(writer) == offer.snapshot.fingerprint, server_hostname
                    writer.write(b"GET /after HTTP/1.1\r\nHost: edge.example\r\n\r\n")
                    assert (await read_response(reader)).status == 200

            up.release.set()
            rest = await asyncio.wait_for(stream_reader.readuntil(b"0\r\n\r\n"), 5)
            assert b"last\n" in rest
            kept_writer.write(b"GET /again HTTP/1.1\r\nHost: edge.example\r\n\r\n")
            assert (await read_response(kept_reader)).json()["path"] == "/again"
            assert peer_fingerprint(kept_writer) == old_fingerprint
            await ws.send_str("after")
            assert (await ws.receive(timeout=5)).data == "echo: after"
            await ws.close()
        finally:
            await session.close()
            kept_writer.close()
            stream_writer.close()


def _client(tls_version: ssl.TLSVersion, pki: Pki, alpn: list[str] | None = None) -> ssl.SSLContext:
    context = pki.client_context(alpn=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1 is the point of one test
        context.minimum_version = context.maximum_version = tls_version
    if alpn:
        context.set_alpn_protocols(alpn)
    return context


async def test_tls_12_and_13_are_served_with_alpn_http11_and_older_versions_refused(pki: Pki) -> None:
    store = await new_store(pki)
    async with upstream() as up, running_listener(https(route(up.port)), store=store) as edge:
        for version, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
            _, writer = await tls_connect(edge.port, _client(version, pki, ["h2", "http/1.1"]))
            tls_object = writer.get_extra_info("ssl_object")
            assert (tls_object.version(), tls_object.selected_alpn_protocol()) == (name, "http/1.1")
            assert "GCM" in tls_object.cipher()[0] or "CHACHA20" in tls_object.cipher()[0]
            writer.close()
        _, writer = await tls_connect(edge.port, _client(ssl.TLSVersion.TLSv1_3, pki, ["h2"]))
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() is None  # never h2 here
        writer.close()
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await tls_connect(edge.port, _client(ssl.TLSVersion.TLSv1_1, pki))


async def test_min_version_13_refuses_tls_12(pki: Pki) -> None:
    store = await new_store(pki)
    async with upstream() as up, running_listener(https(route(up.port)), min_version="1.3", store=store) as edge:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await tls_connect(edge.port, _client(ssl.TLSVersion.TLSv1_2, pki))
        _, writer = await tls_connect(edge.port, _client(ssl.TLSVersion.TLSv1_3, pki))
        writer.close()


def _sample(name: str, listener: str) -> float:
    return REGISTRY.get_sample_value(name, {"listener": listener}) or 0.0


async def counted(name: str, listener: str, value: float) -> None:
    """Wait until the sample reaches `value` (fail after a generous bound)."""
    deadline = time.monotonic() + 5
    while _sample(name, listener) != value:
        assert time.monotonic() < deadline, (name, _sample(name, listener), value)
        await asyncio.sleep(0.05)


async def test_handshakes_requests_latency_and_open_connections_are_counted(pki: Pki) -> None:
    store = await new_store(pki)
    name = "metrics-web"
    requests_before = REGISTRY.get_sample_value("edge_requests_total", {"listener": name, "code_class": "2xx"}) or 0.0
    latency_before = _sample("edge_upstream_latency_seconds_count", name)
    async with upstream() as up:
        config = https(route(up.port), name=name, handshake_timeout=0.2)
        async with running_listener(config, store=store) as edge:
            before = _sample("edge_tls_handshakes_total", name)
            reader, writer = await tls_connect(edge.port, pki.client_context())
            await counted("edge_tls_handshakes_total", name, before + 1)  # tallies reach Prometheus within a second
            assert _sample("edge_open_connections", name) == 1
            for _ in range(3):
                writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
                assert (await read_response(reader)).status == 200
            writer.close()
            failures = _sample("edge_tls_handshake_failures_total", name)
            _, garbage = await asyncio.open_connection("127.0.0.1", edge.port)
            garbage.write(b"GET / HTTP/1.1\r\n\r\n")  # plain HTTP on the TLS port
            await counted("edge_tls_handshake_failures_total", name, failures + 1)  # once the handshake timeout has passed
            garbage.close()
            await counted("edge_open_connections", name, 0)
    # Request and latency tallies reach Prometheus within a second, and at the latest on stop.
    assert REGISTRY.get_sample_value("edge_requests_total", {"listener": name, "code_class": "2xx"}) == requests_before + 3
    assert _sample("edge_upstream_latency_seconds_count", name) == latency_before + 3
