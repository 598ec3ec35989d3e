"""The admin API driving the whole edge: uploads and reloads as HTTPS and gRPC clients see them,
restarts, and health while draining. Every listener on 127.0.0.1 port 0, real TLS handshakes."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import pytest

from proxy.app import Edge
from proxy.config import parse_config
from proxy.demo import DemoUpstreams
from tests.admin_helpers import Admin, Upload, edge_config_toml, handshake_fingerprint, new_upload
from tests.certs import pem


@dataclass
class RunningEdge:
    edge: Edge
    admin: Admin

    @property
    def https_port(self) -> int:
        return self.edge.listeners["web"].port

    @property
    def grpc_port(self) -> int:
        return self.edge.listeners["grpc"].port

    async def fingerprints(self) -> tuple[str, str]:
        """What a brand-new HTTPS client and a brand-new gRPC client are shown."""
        return await handshake_fingerprint(self.https_port), await handshake_fingerprint(self.grpc_port, alpn="h2")


@pytest.fixture
async def upstreams() -> AsyncIterator[DemoUpstreams]:
    upstreams = DemoUpstreams(http_port=0, grpc_port=0)
    await upstreams.start()
    try:
        yield upstreams
    finally:
        await upstreams.stop()


@asynccontextmanager
async def running_edge(base: Path, upstreams: DemoUpstreams, *, watch: str = "events") -> AsyncIterator[RunningEdge]:
    text = edge_config_toml(http_upstream=upstreams.http_port, grpc_upstream=upstreams.grpc_port, watch=watch)
    edge = Edge(parse_config(text, source=str(base / "edge.toml"), base_dir=base))
    await edge.start()
    try:
        assert edge.admin is not None
        async with aiohttp.ClientSession() as session:
            token = edge.config.admin.token_file.read_text().strip()
            yield RunningEdge(edge, Admin(edge.admin, edge.service, token, session))  # type: ignore[arg-type]
    finally:
        await edge.stop(0)


def _trusting(upload: Upload) -> ssl.SSLContext:
    assert upload.root is not None
    return ssl.create_default_context(cadata=pem(upload.root.cert).decode())


async def test_upload_then_new_https_and_grpc_handshakes_get_the_new_certificate(tmp_path: Path, upstreams: DemoUpstreams) -> None:
    async with running_edge(tmp_path, upstreams) as running:
        assert await running.admin.get("/healthz") == (200, {"status": "ok"})
        before = await running.admin.certificate()
        assert await running.fingerprints() == (before["fingerprint_sha256"],) * 2

        upload = new_upload()
        status, body = await running.admin.upload(upload.body())
        assert status == 200
        assert body["fingerprint_sha256"] == upload.fingerprint
        assert await running.fingerprints() == (upload.fingerprint,) * 2

        # Clients that trust only the new CA now get through, on both protocols.
        url = f"https://127.0.0.1:{running.https_port}/after-upload"
        async with running.admin.session.get(url, ssl=_trusting(upload)) as response:
            assert response.status == 200
            assert (await response.json())["path"] == "/after-upload"
        assert upload.root is not None
        credentials = grpc.ssl_channel_credentials(pem(upload.root.cert))
        async with grpc.aio.secure_channel(f"127.0.0.1:{running.grpc_port}", credentials) as channel:
            assert await channel.unary_unary("/demo.Echo/Say")(b"new cert", timeout=5) == b"new cert"


async def test_refused_upload_leaves_both_listeners_on_the_old_certificate(tmp_path: Path, upstreams: DemoUpstreams) -> None:
    async with running_edge(tmp_path, upstreams) as running:
        serving = await running.fingerprints()
        status, _ = await running.admin.upload(new_upload().with_wrong_key())
        assert status == 422
        assert await running.fingerprints() == serving


async def test_upload_survives_an_edge_restart(tmp_path: Path, upstreams: DemoUpstreams) -> None:
    upload = new_upload()
    async with running_edge(tmp_path, upstreams) as running:
        assert (await running.admin.upload(upload.body()))[0] == 200
    async with running_edge(tmp_path, upstreams) as running:
        serving = await running.admin.certificate()
        assert (serving["fingerprint_sha256"], serving["source"]) == (upload.fingerprint, "upload")
        assert await running.fingerprints() == (upload.fingerprint,) * 2


async def test_reload_picks_up_a_drop_when_watching_is_off(tmp_path: Path, upstreams: DemoUpstreams) -> None:
    async with running_edge(tmp_path, upstreams, watch="off") as running:
        before = await running.admin.certificate()
        drop = new_upload()
        drop.write_into(running.edge.config.tls.cert_dir)
        await asyncio.sleep(1.0)  # what a watcher would need; with watch = "off" nothing may happen
        assert (await running.admin.certificate())["version"] == before["version"]

        status, body = await running.admin.post("/api/v1/reload", headers=running.admin.auth)
        assert status == 200
        assert (body["version"], body["source"], body["fingerprint_sha256"]) == (before["version"] + 1, "directory", drop.fingerprint)
        assert await running.fingerprints() == (drop.fingerprint,) * 2


async def test_healthz_reports_draining_while_a_stream_finishes(tmp_path: Path, upstreams: DemoUpstreams) -> None:
    text = edge_config_toml(http_upstream=upstreams.http_port, grpc_upstream=upstreams.grpc_port)
    edge = Edge(parse_config(text, base_dir=tmp_path))
    await edge.start()
    assert edge.admin is not None
    healthz = f"http://127.0.0.1:{edge.admin.port}/healthz"
    credentials = grpc.ssl_channel_credentials(pem(edge.store.current.snapshot.material.leaf))
    options = [("grpc.ssl_target_name_override", "localhost")]
    try:
        async with (
            aiohttp.ClientSession() as session,
            grpc.aio.secure_channel(f"127.0.0.1:{edge.listeners['grpc'].port}", credentials, options=options) as channel,
        ):
            stream = channel.stream_stream("/demo.Echo/Talk")(timeout=10)
            await stream.write(b"one")
            assert await stream.read() == b"one"
            stopping = asyncio.ensure_future(edge.stop(5))
            try:
                await asyncio.sleep(0.2)
                async with session.get(healthz) as response:
                    assert (response.status, await response.json()) == (503, {"status": "draining"})
                await stream.write(b"two")  # the open stream still works while the edge drains
                assert await stream.read() == b"two"
                await stream.done_writing()
                assert await stream.code() == grpc.StatusCode.OK
            finally:
                await asyncio.wait_for(stopping, 10)
    finally:
        await edge.stop(0)
