"""A browser on an `http2 = true` port speaks HTTP/2 to the edge, and HTTP/1.1 to one without it."""

from __future__ import annotations

import json

import pytest

from tests.support.browser import browser_page
from tests.support.listeners import https, route, running_listener
from tests.support.pki import SERVER_IP
from tests.support.probes import free_port
from tests.support.web import upstream

pytestmark = pytest.mark.browser


@pytest.mark.parametrize(
    ("http2", "grpc", "protocol"),
    [(True, False, "h2"), (True, True, "h2"), (False, False, "http/1.1")],
    ids=["h2", "h2-grpc-port", "http1"],
)
async def test_chromium_reports_the_protocol_it_got(http2: bool, grpc: bool, protocol: str) -> None:
    grpc_keys = {"grpc_upstream": f"{SERVER_IP}:{free_port()}"} if grpc else {}
    async with (
        upstream() as web,
        running_listener(https(route(web.port), http2=http2, **grpc_keys)) as edge,
        browser_page(ignore_https_errors=True) as page,
    ):
        response = await page.goto(f"https://{SERVER_IP}:{edge.port}/echo-headers/page")
        assert response is not None and response.status == 200
        upstream_saw = json.loads(await response.text())
        next_hop = await page.evaluate("performance.getEntries()[0].nextHopProtocol")
        fetched = await page.evaluate("fetch('/echo-headers/api', {method: 'POST', body: 'x'.repeat(100000)}).then(r => r.json())")
    assert next_hop == protocol
    assert upstream_saw["version"] == "1.1"
    assert fetched["path"] == "/echo-headers/api" and len(fetched["body"]) == 100000
