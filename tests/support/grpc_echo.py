"""A real grpcio upstream for the gRPC tests: a generic service of raw-bytes methods (no
generated code) that records what reached it. It listens on 127.0.0.1.

Nothing here knows what a test asserts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc

from tests.support.pki import Leaf

SERVICE = "echo.Echo"
MiB = 1024 * 1024
# A google.rpc.Status encoded by hand (code 5 NOT_FOUND, message "gone"): what
# grpc-status-details-bin carries in real services, with no protobuf dependency here.
STATUS_DETAILS = b"\x08\x05\x12\x04gone"
Metadata = tuple[tuple[str, str | bytes], ...]


def method(name: str) -> str:
    return f"/{SERVICE}/{name}"


# The method every load loop calls.
GRPC_UNARY = method("Unary")


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


def server_credentials(leaf: Leaf) -> grpc.ServerCredentials:
    """TLS for the upstream itself, serving `leaf` with its chain."""
    return grpc.ssl_server_credentials([(leaf.key_pem, leaf.cert_pem)])


@dataclass
class OpenStreams:
    """A server stream (Ticker, driven by the upstream's `ticks`) and a bidi stream (Bidi) open
    on one channel: what a swap or a connection age must not disturb."""

    upstream: EchoUpstream
    ticker: Any
    bidi: Any

    @classmethod
    async def open(cls, channel: grpc.aio.Channel, upstream: EchoUpstream, timeout: float) -> OpenStreams:
        ticker = channel.unary_stream(method("Ticker"))(b"", timeout=timeout)
        bidi = channel.stream_stream(method("Bidi"))(timeout=timeout)
        return cls(upstream, ticker, bidi)

    async def exchange(self, message: bytes) -> tuple[bytes, bytes]:
        """One message down the server stream and one round trip on the bidi stream; what came back."""
        await self.upstream.ticks.put(message)
        ticked = await self.ticker.read()
        await self.bidi.write(message)
        return ticked, await self.bidi.read()

    async def finish(self) -> None:
        """Both sides end their streams (the upstream its server stream, the client its writing)."""
        await self.upstream.ticks.put(None)
        await self.bidi.done_writing()

    async def codes(self) -> tuple[grpc.StatusCode, grpc.StatusCode]:
        return await self.ticker.code(), await self.bidi.code()
