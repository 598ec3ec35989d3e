"""gRPC on an `http2 = true` port: grpcio clients reach `grpc_upstream` with every gRPC semantic
while browsers and API clients speak HTTP/2 to the routes; without a gRPC upstream a gRPC call
gets UNIMPLEMENTED from the edge."""

from __future__ import annotations

import json

import grpc
import pytest

from tests.support.grpc_echo import GRPC_UNARY, method, running_upstream
from tests.support.h2client import H2Client
from tests.support.listeners import https, route, running_listener
from tests.support.pki import SERVER_IP
from tests.support.web import upstream


async def test_grpcio_reaches_grpc_upstream_on_the_http2_port_beside_http2_requests() -> None:
    async with upstream() as web, running_upstream() as echo:
        table = https(route(web.port), http2=True, grpc_upstream=f"{SERVER_IP}:{echo.port}")
        async with running_listener(table) as edge:
            async with edge.pki.grpc_channel(edge.port) as channel:
                call = channel.unary_unary(GRPC_UNARY)
                reply = await call(b"hello", metadata=(("x-user", "u1"),), timeout=10)
                assert reply == b"hello"
                with pytest.raises(grpc.aio.AioRpcError) as failed:
                    await channel.unary_unary(method("Fail"))(b"x", timeout=10)
                assert failed.value.code() == grpc.StatusCode.NOT_FOUND
                assert failed.value.details() == "no such thing: x"
                assert ("x-reason", "gone") in [tuple(m) for m in failed.value.trailing_metadata() or ()]
                bidi = channel.stream_stream(method("Bidi"))()
                for word in (b"a", b"b", b"c"):
                    await bidi.write(word)
                    assert (await bidi.read()).lower() == word
                await bidi.done_writing()
            client = await H2Client.connect(edge.port, edge.pki)
            answer = await client.answer(client.request("/echo-headers"))
            await client.close()
    assert answer.status == 200 and json.loads(answer.body)["version"] == "1.1"
    assert ("x-user", "u1") in [tuple(m) for m in echo.seen_metadata[0]]


async def test_grpcio_without_grpc_upstream_gets_unimplemented() -> None:
    async with upstream() as web, running_listener(https(route(web.port), http2=True)) as edge, edge.pki.grpc_channel(edge.port) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await channel.unary_unary(GRPC_UNARY)(b"hello", timeout=10)
    assert failed.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert web.seen == []


async def test_a_grpc_call_on_a_connection_that_began_with_http_gets_unavailable_naming_why() -> None:
    async with upstream() as web, running_upstream() as echo:
        table = https(route(web.port), http2=True, grpc_upstream=f"{SERVER_IP}:{echo.port}")
        async with running_listener(table) as edge:
            client = await H2Client.connect(edge.port, edge.pki)
            first = await client.answer(client.request("/echo-headers"))
            call = await client.answer(client.request(GRPC_UNARY, "POST", [("content-type", "application/grpc"), ("te", "trailers")]))
            await client.close()
    assert first.status == 200
    assert call.headers["grpc-status"] == "14" and "connection" in call.headers["grpc-message"]
    assert echo.seen_metadata == []
