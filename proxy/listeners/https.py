"""The HTTPS listener: TLS with the current certificate, then HTTP/1.1 to the routes' upstreams.

Owns the listener's TLS policy context (through `proxy.tlsmaterial`), its upstream pools and
router. Certificates reach it only through `current_context`, read on every full handshake, so a
swap needs nothing from this module. Requests are the HTTP/1.1 engine's (`proxy.http1`).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

from proxy.config import HttpsListenerConfig, HttpUpstream
from proxy.connections import Shared
from proxy.http1.client import ClientConnection
from proxy.http1.routing import Router
from proxy.http1.upstream import UpstreamPool
from proxy.listeners.base import TlsListener
from proxy.tlsmaterial import HTTPS_ALPN


class HttpsListener(TlsListener):
    """Terminates TLS with the current certificate and proxies HTTP/1.1 to the routes' upstreams."""

    config: HttpsListenerConfig

    alpn = HTTPS_ALPN
    _pools: dict[HttpUpstream, UpstreamPool]

    def describe(self) -> str:
        return "serving HTTPS"

    async def _prepare(self, shared: Shared) -> tuple[Callable[[], asyncio.Protocol], ssl.SSLContext | None]:
        self._pools = {}
        router = Router(self.config.routes, self._pool)
        return lambda: ClientConnection(shared, router), self.ssl_context

    def _pool(self, upstream: HttpUpstream) -> UpstreamPool:
        pool = self._pools.get(upstream)
        if pool is None:
            pool = self._pools[upstream] = UpstreamPool(upstream, self.config.limits.connect_timeout)
        return pool

    def _closed(self) -> None:
        for pool in self._pools.values():
            pool.close()
