"""The admin API driving the whole edge: uploads and reloads as HTTPS and gRPC clients see them,
restarts, and health while draining. Every listener on 127.0.0.1 port 0, real TLS handshakes."""

from __future__ import annotations

import asyncio
import ssl
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import grpc

from proxy.demo import DemoUpstreams
from tests.support.edge import RunningEdge, Upload, new_upload
from tests.support.edge import running_edge as edge_in_process
from tests.support.pki import SERVER_NAME, pem


def running_edge(base: Path, upstreams: DemoUpstreams, *, watch: str = "events") -> AbstractAsyncContextManager[RunningEdge]:
    """The whole edge in front of the demo upstreams, serving the self-signed default."""
    return edge_in_process(base, http_upstream=upstreams.http_port, grpc_upstream=upstreams.grpc_port, watch=watch)


def _trusting(upload: Upload) -> ssl.SSLContext:
    assert upload.root is not None
    return ssl.create_default_context(cadata=pem(upload.root.cert).decode())


async def test_upload_then_new_https_and_grpc_handshakes_get_the_new_certificate(tmp_path: Path, upstreams: DemoUpstreams) -> None:
    async with running_edge(tmp_path, upstreams) as running:
        assert await running.admin.get("/healthz") == (200, {"status": "ok"})
        before = await running.admin.certificate()
        assert await running.fingerprints() == running.everywhere(before["fingerprint_sha256"])

        upload = new_upload()
        status, body = await running.admin.upload(upload.body())
        assert status == 200
        assert body["fingerprint_sha256"] == upload.fingerprint
        assert await running.fingerprints() == running.everywhere(upload.fingerprint)

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
        assert await running.fingerprints() == running.everywhere(upload.fingerprint)


async def test_reload_picks_up_a_drop_when_watching_is_off(tmp_path: Path, upstreams: DemoUpstreams) -> None:
    async with running_edge(tmp_path, upstreams, watch="off") as running:
        before = await running.admin.certificate()
        drop = new_upload()
        drop.write_into(running.cert_dir)
        # With watch = "off" the edge runs no watcher: nothing reads the directory until asked.
        assert running.edge.watcher is None
        assert (await running.admin.certificate())["version"] == before["version"]

        status, body = await running.admin.post("/api/v1/reload", headers=running.admin.auth)
        assert status == 200
        assert (body["version"], body["source"], body["fingerprint_sha256"]) == (before["version"] + 1, "directory", drop.fingerprint)
        assert await running.fingerprints() == running.everywhere(drop.fingerprint)


async def test_healthz_reports_draining_while_a_stream_finishes(tmp_path: Path, upstreams: DemoUpstreams) -> None:
    async with running_edge(tmp_path, upstreams) as running:
        edge = running.edge
        credentials = grpc.ssl_channel_credentials(pem(edge.store.current.snapshot.material.leaf))
        options = [("grpc.ssl_target_name_override", SERVER_NAME)]
        async with grpc.aio.secure_channel(f"127.0.0.1:{running.grpc_port}", credentials, options=options) as channel:
            stream = channel.stream_stream("/demo.Echo/Talk")(timeout=10)
            await stream.write(b"one")
            assert await stream.read() == b"one"
            stopping = asyncio.ensure_future(edge.stop(5))
            try:
                await asyncio.sleep(0.2)
                assert await running.admin.get("/healthz") == (503, {"status": "draining"})
                await stream.write(b"two")  # the open stream still works while the edge drains
                assert await stream.read() == b"two"
                await stream.done_writing()
                assert await stream.code() == grpc.StatusCode.OK
            finally:
                await asyncio.wait_for(stopping, 10)
