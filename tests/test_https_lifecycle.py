"""The HTTPS listener's lifecycle (bind errors, shared ports, graceful stop) and the proxy path
run end to end on both event loops."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import aiohttp
import pytest
import uvloop

from proxy.errors import ListenerError
from tests.support.listeners import RecordingReader, RunningListener, build_listener, https, new_store, route, running_listener
from tests.support.pki import Pki
from tests.support.probes import free_port
from tests.support.web import closed_by_peer, read_response, tls_connect, upstream

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
MiB = 1024 * 1024


async def test_an_address_in_use_raises_listener_error_naming_it(pki: Pki) -> None:
    store = await new_store(pki)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        listener = build_listener(https(route(free_port()), listen=f"127.0.0.1:{port}"), RecordingReader(store))
        with pytest.raises(ListenerError, match=f"127.0.0.1:{port}.*in use"):
            await listener.start()


async def test_reuse_port_lets_two_listeners_serve_one_port(pki: Pki) -> None:
    store = await new_store(pki)
    async with upstream() as up:
        first = build_listener(https(route(up.port)), RecordingReader(store), reuse_port=True)
        await first.start()
        config = https(route(up.port), name="web2", listen=f"127.0.0.1:{first.port}")
        second = build_listener(config, RecordingReader(store), reuse_port=True)
        await second.start()
        try:
            assert second.port == first.port
            await first.stop(drain_seconds=1)
            reader, writer = await tls_connect(second.port, pki.client_context())
            writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            assert (await read_response(reader)).status == 200
            writer.close()
        finally:
            await second.stop(drain_seconds=1)


async def test_stop_closes_idle_connections_and_lets_in_flight_responses_finish(pki: Pki) -> None:
    store = await new_store(pki)
    async with upstream() as up:
        edge = build_listener(https(route(up.port)), RecordingReader(store))
        await edge.start()
        port, tls = edge.port, pki.client_context()
        idle_reader, idle_writer = await tls_connect(port, tls)
        idle_writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        await read_response(idle_reader)
        busy_reader, busy_writer = await tls_connect(port, tls)
        busy_writer.write(b"GET /hold HTTP/1.1\r\nHost: a\r\n\r\n")
        await busy_reader.readuntil(b"first\n")

        started = time.monotonic()
        stopping = asyncio.ensure_future(edge.stop(drain_seconds=10))
        assert await closed_by_peer(idle_reader, timeout=3)
        with pytest.raises(OSError):
            await tls_connect(port, tls)
        assert not stopping.done()
        up.release.set()
        rest = await asyncio.wait_for(busy_reader.readuntil(b"0\r\n\r\n"), 5)
        assert rest.endswith(b"last\n\r\n0\r\n\r\n")
        assert await closed_by_peer(busy_reader, timeout=3)
        await asyncio.wait_for(stopping, 5)
        assert time.monotonic() - started < 5  # it did not wait out drain_seconds
        idle_writer.close()
        busy_writer.close()


async def test_stop_closes_what_outlives_drain_seconds(pki: Pki) -> None:
    store = await new_store(pki)
    async with upstream() as up:
        edge = build_listener(https(route(up.port)), RecordingReader(store))
        await edge.start()
        connector = aiohttp.TCPConnector(ssl=pki.client_context())
        async with aiohttp.ClientSession(connector=connector) as session:
            ws = await session.ws_connect(f"https://127.0.0.1:{edge.port}/ws")
            started = time.monotonic()
            await edge.stop(drain_seconds=0.3)
            assert 0.25 < time.monotonic() - started < 3
            message = await ws.receive(timeout=5)
            assert message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.ERROR)


@pytest.mark.parametrize("loop_factory", LOOPS.values(), ids=LOOPS.keys())
class TestProxyOnEachLoop:
    """The proxy path end to end, once on plain asyncio and once on uvloop."""

    def run(self, loop_factory: Callable[[], asyncio.AbstractEventLoop], scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(scenario())

    def test_keep_alive_pipelining_and_chunked_bodies(self, pki: Pki, loop_factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
        async def scenario() -> None:
            async with self._edge(pki) as edge:
                reader, writer = await tls_connect(edge.port, pki.client_context())
                writer.write(
                    b"GET /sleep/0.1 HTTP/1.1\r\nHost: a\r\n\r\n"
                    b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                    b"GET /bytes/100000?framing=chunked HTTP/1.1\r\nHost: a\r\n\r\n"
                )
                assert (await read_response(reader)).body == b"late"
                assert (await read_response(reader)).json()["received"] == 3
                assert len((await read_response(reader)).body) == 100000
                writer.close()

        self.run(loop_factory, scenario)

    def test_large_bodies_websocket_and_errors(self, pki: Pki, loop_factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
        async def scenario() -> None:
            async with self._edge(pki) as edge:
                base = f"https://127.0.0.1:{edge.port}"
                connector = aiohttp.TCPConnector(ssl=pki.client_context())
                async with aiohttp.ClientSession(connector=connector) as session:
                    async with session.get(f"{base}/bytes/{16 * MiB}") as response:
                        assert len(await response.read()) == 16 * MiB
                    async with session.post(f"{base}/upload", data=b"p" * (16 * MiB)) as response:
                        assert (await response.json())["received"] == 16 * MiB
                    async with session.ws_connect(f"{base}/ws") as ws:
                        await ws.send_str("loop")
                        assert (await ws.receive(timeout=5)).data == "echo: loop"
                    async with session.get(f"{base}/down/x") as response:
                        assert response.status == 502

        self.run(loop_factory, scenario)

    @staticmethod
    def _edge(pki: Pki) -> AbstractAsyncContextManager[RunningListener]:
        return edge_with_upstream(pki)


@asynccontextmanager
async def edge_with_upstream(pki: Pki) -> AsyncIterator[RunningListener]:
    """An edge in front of an aiohttp upstream, plus a `/down/` route to a port nobody serves."""
    with socket.socket() as unserved:
        unserved.bind(("127.0.0.1", 0))
        down = route(unserved.getsockname()[1], "/down/")
        async with upstream() as up, running_listener(https(route(up.port), down), pki=pki) as edge:
            yield edge
