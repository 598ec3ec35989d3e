"""Transparent gRPC pass-through: one generic handler that forwards every call as raw bytes.

Owns what crosses the edge within one call: the request metadata sent upstream; the initial
metadata, messages, status code, details and trailers that come back; the deadline; and
cancellation. It knows nothing of TLS, certificates, sockets or the listener's lifecycle, and
nothing of protobuf: with no serializers on either side, messages stay opaque bytes.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc

from proxy.metrics import ListenerMetrics

log = logging.getLogger("proxy.grpc")

Metadata = tuple[tuple[str, str | bytes], ...]

# Headers that belong to one hop's transport, not to the call: grpc's core writes its own on the
# upstream hop. grpc already keeps most of them out of invocation_metadata(); listing them here
# means a grpc release that lets one through cannot make us send it twice.
TRANSPORT_HEADERS = frozenset(
    {
        "connection",
        "content-type",
        "grpc-accept-encoding",
        "grpc-encoding",
        "grpc-message",
        "grpc-status",
        "grpc-timeout",  # the deadline travels as `timeout=`, shortened by the time spent here
        "host",
        "keep-alive",
        "proxy-connection",
        "te",
        "transfer-encoding",
        "upgrade",
        "user-agent",
    }
)

# Handlers (and their upstream multicallables) are built once per method name, not once per call.
# Method names come from clients, so the cache stops growing at this size instead of holding any.
_METHOD_CACHE_LIMIT = 1024


def forwarded_metadata(metadata: Sequence[tuple[str, Any]] | None) -> Metadata:
    """The client's metadata as the upstream should see it: transport headers dropped."""
    return tuple((key, value) for key, value in metadata or () if key not in TRANSPORT_HEADERS and not key.startswith(":"))


class Passthrough(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc ships no type hints
    """Answers every method of every service by forwarding it to `channel`.

    Every call is handled as bidirectional streaming: on the wire the four RPC kinds differ only
    in how many messages each side sends, and the edge does not need to know which it is.
    """

    def __init__(self, channel: grpc.aio.Channel, upstream: str, metrics: ListenerMetrics) -> None:
        self._channel = channel
        self._upstream = upstream
        self._metrics = metrics
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}
        self._upstream_down = False

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method
        handler = self._handlers.get(method)
        if handler is None:
            # grpc decides how to drive a handler by inspecting it (each call): it must be a
            # partial of an async generator function, not a function returning a generator.
            forward = functools.partial(self._forward, self._channel.stream_stream(method))
            handler = grpc.stream_stream_rpc_method_handler(forward)
            if len(self._handlers) < _METHOD_CACHE_LIMIT:
                self._handlers[method] = handler
        return handler

    async def _forward(self, multicallable: Any, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        started = time.monotonic()
        # The client's request stream feeds the upstream call directly; grpc pulls from it only as
        # fast as the upstream accepts, so flow control holds end to end.
        call = multicallable(requests, metadata=forwarded_metadata(context.invocation_metadata()), timeout=context.time_remaining())
        # Left unchanged only when the call is torn down from outside (client cancel, server drain).
        code = grpc.StatusCode.CANCELLED
        try:
            initial = await call.initial_metadata()
            # Headers arrived ahead of the end: relay them now (a server stream may send them long
            # before its first message). A call that ended with neither stays trailers-only.
            if initial or not call.done():
                self._metrics.upstream_latency.observe(time.monotonic() - started)
                self._upstream_down = False
                await context.send_initial_metadata(initial)
            async for message in call:
                yield message
            code = await call.code()
            context.set_trailing_metadata(tuple(await call.trailing_metadata()))
            details = await call.details()
            if details:
                context.set_details(details)
        except grpc.aio.AioRpcError as error:
            code = error.code()
            self._relay_error(error, context)
        except Exception:
            code = grpc.StatusCode.UNKNOWN  # grpc logs the exception and answers UNKNOWN itself
            raise
        finally:
            # Reached on the client's cancel, an expired deadline or the server's drain as well:
            # the upstream must hear about it, not keep working for nobody.
            if not call.done():
                call.cancel()
            self._metrics.requests(code.name).inc()

    def _relay_error(self, error: grpc.aio.AioRpcError, context: grpc.aio.ServicerContext) -> None:
        code, details = error.code(), error.details()
        if code is grpc.StatusCode.UNAVAILABLE and self._channel.get_state() is not grpc.ChannelConnectivity.READY:
            # Ours, not the upstream's: it never answered. An UNAVAILABLE the upstream sends
            # itself arrives on a ready connection and passes through untouched.
            details = self._unreachable(details)
        context.set_trailing_metadata(tuple(error.trailing_metadata() or ()))
        context.set_code(code)
        context.set_details(details)

    def _unreachable(self, cause: str | None) -> str:
        self._metrics.errors("upstream_unavailable").inc()
        if not self._upstream_down:
            # Logged once per outage, not once per call: a down upstream under load would
            # otherwise flood the log.
            log.warning("gRPC upstream %s is unreachable: %s", self._upstream, cause)
            self._upstream_down = True
        # The client learns that the edge could not reach its upstream, not the upstream's address.
        return "edge-proxy: the upstream is unavailable"
