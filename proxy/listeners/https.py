"""The HTTPS listener: TLS with the current certificate, then HTTP/1.1 to the routes' upstreams;
with `http2 = true`, HTTP/2 too; with a `grpc_upstream`, gRPC on the same port goes there.

Owns the listener's TLS policy context (through `proxy.tlsmaterial`), its upstream pools and
router, and which engine takes a connection: ALPN decides at the handshake, before a byte of
either protocol is read. Certificates reach it only through `current`, read on every full
handshake, so a swap needs nothing from this module.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import cast

from proxy.config import HttpsListenerConfig, HttpUpstream
from proxy.connections import Shared
from proxy.h2.connection import H2Server
from proxy.h2.first import FirstRequest
from proxy.h2relay.connection import ClientSide, RelayTarget
from proxy.h2relay.upstream import relay_target
from proxy.http1.client import client_protocol
from proxy.http1.routing import Router
from proxy.http1.upstream import UpstreamPool
from proxy.listeners.base import TlsListener


class HttpsListener(TlsListener):
    """Terminates TLS with the current certificate and proxies HTTP/1.1 to the routes' upstreams,
    and HTTP/2 (gRPC) to `grpc_upstream` when there is one."""

    config: HttpsListenerConfig
    _pools: dict[HttpUpstream, UpstreamPool]

    def describe(self) -> str:
        grpc = self.config.grpc_upstream
        return "serving HTTPS" + (f" and relaying gRPC to {grpc}" if grpc is not None else "")

    async def _prepare(self, shared: Shared) -> tuple[Callable[[], asyncio.Protocol], ssl.SSLContext | None]:
        """Raises ListenerError when the gRPC upstream's CA cannot be used."""
        self._pools = {}
        router = Router(self.config.routes, self._pool)
        grpc = self.config.grpc_upstream
        http2 = self.config.http2
        if grpc is None and not http2:
            return lambda: client_protocol(shared, router), self.ssl_context
        target = None if grpc is None else await relay_target(grpc, self.config.max_connection_age, self.name, "grpc_upstream_ca")
        return lambda: AlpnSwitch(shared, router, target, http2=http2), self.ssl_context

    def _pool(self, upstream: HttpUpstream) -> UpstreamPool:
        pool = self._pools.get(upstream)
        if pool is None:
            pool = self._pools[upstream] = UpstreamPool(upstream, self.config.limits.connect_timeout)
        return pool

    def _closed(self) -> None:
        for pool in self._pools.values():
            pool.close()


class AlpnSwitch(asyncio.Protocol):
    """A connection on a port that speaks HTTP/1.1 and HTTP/2: once the handshake has chosen the
    protocol, the connection goes to that engine and this object is gone from its path. One that
    chose http/1.1 or no ALPN at all gets the HTTP/1.1 engine, exactly as on a plain port. One that
    chose h2 gets the HTTP/2 engine with `http2 = true` (handed to the relay instead when its first
    request is gRPC and there is a `grpc_upstream`), else the relay to `grpc_upstream` (a client
    offering only h2: every gRPC library)."""

    __slots__ = ("_http2", "_router", "_shared", "_target", "_timer")

    def __init__(self, shared: Shared, router: Router[UpstreamPool], target: RelayTarget | None, *, http2: bool = False) -> None:
        self._shared = shared
        self._router = router
        self._target = target
        self._http2 = http2
        self._timer: asyncio.TimerHandle | None = shared.watch_handshake(lambda: self._timer is None)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        ssl_object = transport.get_extra_info("ssl_object")
        engine: asyncio.Protocol
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
            engine = client_protocol(self._shared, self._router)
        elif self._http2 and self._target is not None:
            shared, router, target = self._shared, self._router, self._target
            engine = FirstRequest(shared.loop, lambda: H2Server(shared, router, grpc=target), lambda: ClientSide(shared, target))
        elif self._http2:
            engine = H2Server(self._shared, self._router)
        elif self._target is not None:
            engine = ClientSide(self._shared, self._target)
        else:
            engine = client_protocol(self._shared, self._router)
        transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        transport.set_protocol(engine)
        engine.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        """Only before the handshake completed: from then on the engine is the protocol."""
