"""HTTP/2 for browsers and API clients (`http2 = true` on an https listener): requests over HTTP/2
reach the routes' HTTP/1.1 upstreams as HTTP/1.1 requests would, with curl and h2 clients."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

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
