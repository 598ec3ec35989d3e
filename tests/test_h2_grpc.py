"""gRPC on an `http2 = true` port: grpcio clients reach `grpc_upstream` with every gRPC semantic
while browsers and API clients speak HTTP/2 to the routes; without a gRPC upstream a gRPC call
gets UNIMPLEMENTED from the edge."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest

from tests.support.grpc_echo import GRPC_UNARY, method, running_upstream
from tests.support.h2client import GRPC_HEADERS, H2Client, grpc_message
from tests.support.listeners import https, route, running_listener
from tests.support.pki import SERVER_IP
from tests.support.probes import eventually, free_port
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


async def test_grpc_calls_after_http_requests_on_one_connection_reach_grpc_upstream() -> None:
    async with upstream() as web, running_upstream() as echo:
        table = https(route(web.port), http2=True, grpc_upstream=f"{SERVER_IP}:{echo.port}")
        async with running_listener(table) as edge:
            client = await H2Client.connect(edge.port, edge.pki)
            first = await client.answer(client.request("/echo-headers"))
            ok = client.request(GRPC_UNARY, "POST", [*GRPC_HEADERS, ("x-user", "u2"), ("grpc-timeout", "5S")], body=grpc_message(b"hi"))
            failing = client.request(method("Fail"), "POST", GRPC_HEADERS, body=grpc_message(b"it"))
            big = client.open(GRPC_UNARY, "POST", GRPC_HEADERS)
            await client.send_all(big, grpc_message(b"z" * 300_000))
            answers = {sid: await client.answer(sid) for sid in (ok, failing, big)}
            hanging = client.request(method("Hang"), "POST", GRPC_HEADERS, body=grpc_message(b"wait"))
            await eventually(lambda: len(echo.seen_metadata) == 3)  # unary twice, then the hanging call
            client.h2.reset_stream(hanging, 8)  # CANCEL
            client.flush()
            await asyncio.wait_for(echo.cancelled.wait(), 10)
            await client.close()
    assert first.status == 200
    assert answers[ok].status == 200 and bytes(answers[ok].body) == grpc_message(b"hi")
    assert answers[ok].trailers["grpc-status"] == "0"
    assert ("x-user", "u2") in [tuple(m) for m in echo.seen_metadata[0]]
    assert echo.deadlines[0] is not None and 0 < echo.deadlines[0] <= 5
    status = answers[failing].trailers or answers[failing].headers  # trailers-only: one HEADERS
    assert status["grpc-status"] == "5"
    assert status["grpc-message"] == "no such thing: it"
    assert status["x-reason"] == "gone" and status["grpc-status-details-bin"]
    assert bytes(answers[big].body) == grpc_message(b"z" * 300_000)


async def test_a_grpc_call_on_an_http_connection_gets_unavailable_when_the_upstream_is_down() -> None:
    async with upstream() as web:
        table = https(route(web.port), http2=True, grpc_upstream=f"{SERVER_IP}:{free_port()}")
        async with running_listener(table) as edge:
            client = await H2Client.connect(edge.port, edge.pki)
            first = await client.answer(client.request("/echo-headers"))
            call = await client.answer(client.request(GRPC_UNARY, "POST", GRPC_HEADERS, body=grpc_message(b"hi")))
            again = await client.answer(client.request("/echo-headers"))
            await client.close()
    assert first.status == 200 and again.status == 200
    assert call.headers["grpc-status"] == "14"
