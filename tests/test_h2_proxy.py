"""HTTP/2 for browsers and API clients (`http2 = true` on an https listener): requests over HTTP/2
reach the routes' HTTP/1.1 upstreams as HTTP/1.1 requests would, with curl and h2 clients."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from proxy.errors import ConfigError
from tests.support.config import Table, edge_config, parse
from tests.support.h2client import H2Client, curl, curl_available
from tests.support.listeners import https, route, running_listener
from tests.support.pki import SERVER_NAME
from tests.support.web import upstream

pytestmark = pytest.mark.skipif(not curl_available(), reason="needs curl")


async def test_curl_get_over_http2_reaches_the_http1_upstream_with_forwarded_headers(tmp_path: Path) -> None:
    async with upstream() as web, running_listener(https(route(web.port), http2=True)) as edge:
        version, body = await curl(edge.port, edge.pki, tmp_path, "/echo-headers/a?b=1", "-H", "X-Forwarded-For: 10.9.9.9")
        assert version == "2 200"
        seen = json.loads(body)
        assert seen["version"] == "1.1" and seen["path"] == "/echo-headers/a?b=1"
        headers = {k.lower(): v for k, v in seen["headers"]}
        assert headers["host"] == f"{SERVER_NAME}:{edge.port}"
        assert headers["x-forwarded-for"] == "10.9.9.9, 127.0.0.1"
        assert headers["x-forwarded-proto"] == "https"
        assert headers["x-forwarded-host"] == f"{SERVER_NAME}:{edge.port}"


async def test_curl_posts_300_kb_over_http2_and_the_upstream_gets_every_byte(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 1200  # 307,200 bytes
    (tmp_path / "payload").write_bytes(payload)
    async with upstream() as web, running_listener(https(route(web.port), http2=True)) as edge:
        version, body = await curl(edge.port, edge.pki, tmp_path, "/upload", "--data-binary", f"@{tmp_path / 'payload'}")
        assert version == "2 200"
        assert json.loads(body) == {"received": len(payload), "sha256": hashlib.sha256(payload).hexdigest(), "framing": "length"}


async def test_curl_gets_a_streamed_response_over_http2(tmp_path: Path) -> None:
    async with upstream() as web, running_listener(https(route(web.port), http2=True)) as edge:
        version, body = await curl(edge.port, edge.pki, tmp_path, "/bytes/2000000?framing=chunked")
        assert version == "2 200"
        assert body == b"x" * 2_000_000


async def test_cookie_crumbs_are_joined_and_authority_is_the_host() -> None:
    async with upstream() as web, running_listener(https(route(web.port), http2=True)) as edge:
        client = await H2Client.connect(edge.port, edge.pki)
        sid = client.request("/echo-headers", extra=[("cookie", "a=1"), ("cookie", "b=2"), ("x-thing", "y")])
        answer = await client.answer(sid)
        await client.close()
    assert answer.status == 200
    headers = {k.lower(): v for k, v in json.loads(answer.body)["headers"]}
    assert headers["cookie"] == "a=1; b=2"
    assert headers["host"] == SERVER_NAME
    assert headers["x-thing"] == "y"


async def test_a_body_without_content_length_goes_upstream_chunked_and_trailers_are_dropped() -> None:
    async with upstream() as web, running_listener(https(route(web.port), http2=True)) as edge:
        client = await H2Client.connect(edge.port, edge.pki)
        sid = client.open("/upload")
        client.h2.send_data(sid, b"a" * 1000)
        client.h2.send_headers(sid, [("x-trailer", "1")], end_stream=True)
        client.flush()
        answer = await client.answer(sid)
        await client.close()
    assert answer.status == 200
    assert json.loads(answer.body)["received"] == 1000
    assert json.loads(answer.body)["framing"] == "chunked"


async def test_no_route_404_unreachable_502_and_large_bodies_413() -> None:
    slow = {"max_body_bytes": 1000}
    async with upstream() as web, running_listener(https(route(web.port, "/app/"), route(1, "/down/"), http2=True, **slow)) as edge:
        client = await H2Client.connect(edge.port, edge.pki)
        missing = client.request("/nothing")
        down = client.request("/down/x")
        declared = client.request("/app/upload", "POST", [("content-length", "5000")], body=b"z" * 5000)
        streamed = client.request("/app/upload", "POST", body=b"z" * 5000)
        answers = {sid: await client.answer(sid) for sid in (missing, down, declared, streamed)}
        await client.close()
    assert answers[missing].status == 404
    assert answers[down].status == 502
    assert answers[declared].status == 413
    assert answers[streamed].status == 413


async def test_upstream_timeout_gives_504() -> None:
    async with upstream() as web, running_listener(https(route(web.port), http2=True, upstream_timeout=0.5)) as edge:
        client = await H2Client.connect(edge.port, edge.pki)
        sid = client.request("/sleep/3")
        answer = await client.answer(sid)
        await client.close()
    assert answer.status == 504


async def test_grpc_without_grpc_upstream_gets_trailers_only_unimplemented() -> None:
    async with upstream() as web, running_listener(https(route(web.port), http2=True)) as edge:
        client = await H2Client.connect(edge.port, edge.pki)
        sid = client.request("/pkg.Service/Method", "POST", [("content-type", "application/grpc+proto"), ("te", "trailers")])
        answer = await client.answer(sid)
        await client.close()
    assert answer.status == 200
    assert answer.headers["grpc-status"] == "12"
    assert web.seen == []


async def test_http11_clients_keep_http11_on_an_http2_port(tmp_path: Path) -> None:
    async with upstream() as web, running_listener(https(route(web.port), http2=True)) as edge:
        version, body = await curl(edge.port, edge.pki, tmp_path, "/echo-headers", "--http1.1")
    assert version == "1.1 200"
    assert json.loads(body)["path"] == "/echo-headers"


def test_http2_is_off_by_default_and_must_be_true_or_false() -> None:
    def with_web(**keys: object) -> Table:
        config = edge_config(http_upstream=8081, grpc_upstream=50051)
        config["listeners"][0].update(keys)
        return config

    assert parse(with_web()).listeners[0].http2 is False  # type: ignore[union-attr]
    assert parse(with_web(http2=True)).listeners[0].http2 is True  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match=r"http2.*true or false"):
        parse(with_web(http2="yes"))


async def test_head_and_204_answers_end_the_stream_without_a_body() -> None:
    async with upstream() as web, running_listener(https(route(web.port), http2=True)) as edge:
        client = await H2Client.connect(edge.port, edge.pki)
        head = await client.answer(client.request("/bytes/5000", "HEAD"))
        empty = await client.answer(client.request("/status/204"))
        after = await client.answer(client.request("/bytes/10"))
        await client.close()
    assert head.status == 200 and head.headers["content-length"] == "5000" and head.body == b"" and head.ended
    assert empty.status == 204 and empty.body == b"" and empty.ended
    assert after.status == 200 and after.body == b"x" * 10
