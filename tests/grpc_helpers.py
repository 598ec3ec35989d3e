"""Shared pieces of the gRPC listener tests: a real grpcio upstream with a raw-bytes service, a
certificate store holding a trustme certificate, the edge in front of both, and a probe that
reads which certificate a fresh TLS handshake gets.

Everything listens on 127.0.0.1 port 0. Nothing here knows what a test asserts.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
import trustme

from proxy.certstore.pem import Material
from proxy.certstore.store import CertStore, Serving
from proxy.certstore.validate import NamePolicy, validate_material
from proxy.config import Address, GrpcListenerConfig, GrpcUpstream, Limits
from proxy.listeners import GrpcListener, bind_open_connections
from proxy.tlsmaterial import TlsObjects, tls_preparer

SERVICE = "echo.Echo"
MiB = 1024 * 1024
# A google.rpc.Status encoded by hand (code 5 NOT_FOUND, message "gone"): what
# grpc-status-details-bin carries in real services, with no protobuf dependency here.
STATUS_DETAILS = b"\x08\x05\x12\x04gone"
Metadata = tuple[tuple[str, str | bytes], ...]
# Generous: only a hang would take this long; nothing here measures speed.
WAIT = 20


def method(name: str) -> str:
    return f"/{SERVICE}/{name}"


def message_options(limit: int) -> list[tuple[str, int]]:
    return [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]


@dataclass
class EchoUpstream:
    """A grpcio asyncio server with a generic service and no generated code: every method takes
    and returns raw bytes. It records what reached it, so tests can see the far side."""

    max_message_bytes: int = 4 * MiB
    port: int = 0
    credentials: grpc.ServerCredentials | None = None  # None: plaintext h2c
    seen_metadata: list[Metadata] = field(default_factory=list)
    deadlines: list[float | None] = field(default_factory=list)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    ticks: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    _server: Any = None

    async def start(self) -> None:
        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Unary": grpc.unary_unary_rpc_method_handler(self.unary),
                "ServerStream": grpc.unary_stream_rpc_method_handler(self.server_stream),
                "ClientStream": grpc.stream_unary_rpc_method_handler(self.client_stream),
                "Bidi": grpc.stream_stream_rpc_method_handler(self.bidi),
                "Fail": grpc.unary_unary_rpc_method_handler(self.fail),
                "Unavailable": grpc.unary_unary_rpc_method_handler(self.unavailable),
                "Hang": grpc.unary_unary_rpc_method_handler(self.hang),
                "Ticker": grpc.unary_stream_rpc_method_handler(self.ticker),
            },
        )
        self._server = grpc.aio.server(handlers=(handler,), options=message_options(self.max_message_bytes))
        address = f"127.0.0.1:{self.port}"
        if self.credentials is None:
            self.port = self._server.add_insecure_port(address)
        else:
            self.port = self._server.add_secure_port(address, self.credentials)
        await self._server.start()

    async def stop(self) -> None:
        await self._server.stop(0)

    def _record(self, context: grpc.aio.ServicerContext) -> None:
        self.seen_metadata.append(tuple((m.key, m.value) for m in context.invocation_metadata()))
        self.deadlines.append(context.time_remaining())

    async def unary(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """Echoes the request; sends the request's x- metadata back as initial metadata."""
        self._record(context)
        await context.send_initial_metadata(tuple((k, v) for k, v in self.seen_metadata[-1] if k.startswith("x-")))
        context.set_trailing_metadata((("x-trailer", "done"), ("x-trailer-bin", b"\x00\x01\xff")))
        return request

    async def server_stream(self, request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        for i in range(int(request)):
            yield b"%d" % i

    async def client_stream(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
        return b"|".join([r async for r in requests])

    async def bidi(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        async for request in requests:
            yield request.upper()

    async def fail(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        context.set_trailing_metadata((("grpc-status-details-bin", STATUS_DETAILS), ("x-reason", "gone")))
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing: " + request.decode())

    async def unavailable(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await context.abort(grpc.StatusCode.UNAVAILABLE, "upstream says: try later")

    async def hang(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self._record(context)
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return b""

    async def ticker(self, request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        """A server stream the test drives: one message per item put in `ticks`, ends on None."""
        while (tick := await self.ticks.get()) is not None:
            yield tick


def listener_config(upstream_port: int, **overrides: Any) -> GrpcListenerConfig:
    values: dict[str, Any] = {
        "name": "grpc",
        "listen": Address("127.0.0.1", 0),
        "limits": Limits(),
        "upstream": GrpcUpstream(Address("127.0.0.1", upstream_port), tls=False),
    }
    values.update(overrides)
    return GrpcListenerConfig(**values)


def issue_material(ca: trustme.CA) -> Material:
    leaf = ca.issue_cert("edge.example", "127.0.0.1")
    return Material(b"".join(p.bytes() for p in leaf.cert_chain_pems), leaf.private_key_pem.bytes(), ca.cert_pem.bytes())


@dataclass
class RecordingReader:
    """The listener's `current()`: it is read once per full TLS handshake, so the fingerprints
    recorded here are the certificates new handshakes were given, in order, and their number
    tells a test when a client made a new connection."""

    store: CertStore[TlsObjects]
    handed_out: list[str] = field(default_factory=list)

    def __call__(self) -> Serving[TlsObjects]:
        serving = self.store.current
        self.handed_out.append(serving.snapshot.fingerprint)
        return serving

    @property
    def reads(self) -> int:
        return len(self.handed_out)


@dataclass
class Edge:
    """The listener under test with its store and the CA its clients trust."""

    listener: GrpcListener
    store: CertStore[TlsObjects]
    ca: trustme.CA
    reader: RecordingReader

    @property
    def certificate_reads(self) -> int:
        return self.reader.reads

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.listener.port}"

    def channel(self, max_message_bytes: int | None = None) -> grpc.aio.Channel:
        options = message_options(max_message_bytes) if max_message_bytes else []
        credentials = grpc.ssl_channel_credentials(self.ca.cert_pem.bytes())
        return grpc.aio.secure_channel(self.target, credentials, options=options)

    async def publish_new_certificate(self) -> str:
        """Serve a fresh leaf from the same CA; returns its fingerprint."""
        await publish(self.store, issue_material(self.ca))
        return self.store.current.snapshot.fingerprint

    async def handshake_fingerprint(self) -> str:
        return await handshake_fingerprint(self.listener.port, self.ca)


async def publish(store: CertStore[TlsObjects], material: Material) -> None:
    valid = validate_material(material, NamePolicy("edge.example", ("127.0.0.1",)), datetime.now(UTC))
    await store.publish(valid, "directory")


async def handshake_fingerprint(port: int, ca: trustme.CA) -> str:
    """SHA-256 of the leaf a new TLS connection (ALPN h2, like any gRPC client) is shown."""
    context = ssl.create_default_context(cadata=ca.cert_pem.bytes().decode())
    context.set_alpn_protocols(["h2"])
    _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=context), 10)
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        assert ssl_object.selected_alpn_protocol() == "h2"
        der = ssl_object.getpeercert(binary_form=True)
    finally:
        writer.close()
    return hashlib.sha256(der).hexdigest()


@asynccontextmanager
async def running_edge(
    upstream_port: int, *, mode: str = "relay", min_version: str = "1.2", reuse_port: bool = False, **overrides: Any
) -> AsyncIterator[Edge]:
    """A gRPC listener of `mode` ("grpcio" or "relay") on 127.0.0.1 with a trustme certificate."""
    ca = trustme.CA()
    store: CertStore[TlsObjects] = CertStore(tls_preparer(min_version))
    await publish(store, issue_material(ca))
    reader = RecordingReader(store)
    listener = GrpcListener(listener_config(upstream_port, **overrides), min_version, lambda: reader().tls, reuse_port=reuse_port)
    bind_open_connections({listener.name: listener})
    await listener.start()
    try:
        yield Edge(listener, store, ca, reader)
    finally:
        await listener.stop(0)


def running_relay(upstream_port: int, **options: Any) -> AbstractAsyncContextManager[Edge]:
    return running_edge(upstream_port, mode="relay", **options)


@asynccontextmanager
async def running_upstream(
    max_message_bytes: int = 4 * MiB, credentials: grpc.ServerCredentials | None = None
) -> AsyncIterator[EchoUpstream]:
    upstream = EchoUpstream(max_message_bytes, credentials=credentials)
    await upstream.start()
    try:
        yield upstream
    finally:
        await upstream.stop()


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
