"""One port for browsers, API clients and gRPC: an https listener with a `grpc_upstream`, the
whole edge, real clients side by side on its one port. curl, aiohttp and Chromium get HTTP/1.1
(WebSocket included); grpcio clients get the relay to the gRPC upstream; a listener without
`grpc_upstream` stays as it was. (Every RPC kind and the relay's other promises on this port:
test_grpc_*.py with the `serving` fixture; swaps under mixed load: test_reliability_swap.py.)"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest

from tests.support.browser import browser_page
from tests.support.config import one_port
from tests.support.edge import RunningEdge, running_edge
from tests.support.grpc_echo import EchoUpstream, method
from tests.support.pki import SERVER_IP, SERVER_NAME, Pki
from tests.support.probes import H2_PREFACE, WAIT
from tests.support.web import Upstream


@pytest.fixture
async def edge(tmp_path: Path, up: Upstream, grpc_up: EchoUpstream) -> AsyncIterator[RunningEdge]:
    async with running_edge(tmp_path, pki=Pki(), http_upstream=up.port, grpc_upstream=grpc_up.port, web=one_port(grpc_up.port)) as running:
        yield running


def url(edge: RunningEdge, path: str) -> str:
    return f"https://{SERVER_NAME}:{edge.https_port}{path}"


async def test_api_clients_grpc_and_websocket_share_the_https_port(edge: RunningEdge, up: Upstream) -> None:
    assert edge.pki is not None
    context = edge.pki.client_context(None)
    context.set_alpn_protocols(["h2", "http/1.1"])  # what browsers and most HTTP libraries offer
    base = f"{SERVER_IP}:{edge.https_port}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        async with session.get(f"https://{base}/echo-headers/api?x=1") as response:
            assert (response.status, response.version) == (200, aiohttp.HttpVersion11)
            assert ["X-Forwarded-Proto", "https"] in (await response.json())["headers"]
        # A gRPC channel opens on the same port while a WebSocket tunnel is open on it.
        async with session.ws_connect(f"wss://{base}/ws") as websocket, edge.pki.grpc_channel(edge.https_port) as channel:
            assert await channel.unary_unary(method("Unary"))(b"over h2", timeout=WAIT) == b"over h2"
            await websocket.send_str("over http/1.1")
            assert (await websocket.receive(timeout=WAIT)).data == "echo: over http/1.1"
    assert "/echo-headers/api?x=1" in up.seen


@pytest.mark.parametrize("option", ["--http1.1", "--http2"])
async def test_curl_gets_http_1_1_whether_or_not_it_offers_h2(edge: RunningEdge, tmp_path: Path, option: str) -> None:
    """curl --http2 offers h2 and http/1.1; the listener prefers http/1.1, as for every browser."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    assert edge.pki is not None
    ca = edge.pki.write_ca(tmp_path / "ca.pem")
    resolve = f"{SERVER_NAME}:{edge.https_port}:{SERVER_IP}"
    command = [
        "curl",
        "-sS",
        option,
        "--cacert",
        str(ca),
        "--resolve",
        resolve,
        "-w",
        "\n%{http_version} %{http_code}",
        url(edge, "/hello"),
    ]
    curl = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(curl.communicate(), WAIT)
    assert curl.returncode == 0, err
    body, _, version_and_status = out.decode().rpartition("\n")
    assert version_and_status == "1.1 200"
    assert json.loads(body)["path"] == "/hello"


async def test_a_browser_loads_a_page_through_the_port_over_http_1_1(edge: RunningEdge) -> None:
    async with browser_page(ignore_https_errors=True) as page:
        response = await page.goto(f"https://{SERVER_IP}:{edge.https_port}/from-the-browser")
        assert response is not None and response.status == 200
        assert json.loads(await page.inner_text("body"))["path"] == "/from-the-browser"
        assert await page.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol") == "http/1.1"


async def test_an_h2_only_client_that_is_not_grpc_gets_the_grpc_upstreams_answer(edge: RunningEdge) -> None:
    """What the README promises: offering only h2 is what gRPC libraries do, so such a client is
    relayed to `grpc_upstream` and speaks HTTP/2 with it (here: its SETTINGS come back)."""
    assert edge.pki is not None
    reader, writer = await asyncio.open_connection(
        SERVER_IP, edge.https_port, ssl=edge.pki.client_context("h2"), server_hostname=SERVER_NAME
    )
    try:
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
        writer.write(H2_PREFACE)
        head = await asyncio.wait_for(reader.readexactly(9), WAIT)
        assert head[3] == 0x4, "the upstream's first frame is its SETTINGS"
    finally:
        writer.close()


async def test_without_grpc_upstream_an_h2_only_client_gets_no_alpn_and_http_1_1(tmp_path: Path, up: Upstream) -> None:
    pki = Pki()
    async with running_edge(tmp_path, pki=pki, http_upstream=up.port, grpc_upstream=1) as running:
        context = pki.client_context("h2")
        reader, writer = await asyncio.open_connection(SERVER_IP, running.https_port, ssl=context, server_hostname=SERVER_NAME)
        try:
            assert writer.get_extra_info("ssl_object").selected_alpn_protocol() is None
            writer.write(b"GET /plain HTTP/1.1\r\nHost: " + SERVER_NAME.encode() + b"\r\n\r\n")
            status_line = await asyncio.wait_for(reader.readline(), WAIT)
            assert status_line.startswith(b"HTTP/1.1 200")
        finally:
            writer.close()
        async with pki.grpc_channel(running.https_port) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await channel.unary_unary(method("Unary"))(b"no", timeout=WAIT)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
