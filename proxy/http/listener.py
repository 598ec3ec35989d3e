"""The HTTPS listener's lifecycle: bind, serve with the current certificate, drain, stop.

Owns the listening socket, the listener's TLS policy context (through `proxy.tlsmaterial`), its
upstream pools and router. Certificates reach it only through `current_context`, read on every
full handshake, so a swap needs nothing from this module. It knows nothing of the store or the
app; request handling lives in `proxy.http.protocol`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

from proxy.config import HttpUpstream, ListenerConfig
from proxy.errors import ListenerError
from proxy.http.context import HttpMetrics, Shared
from proxy.http.protocol import ClientConnection
from proxy.http.routing import Router
from proxy.http.upstream import UpstreamPool
from proxy.metrics import for_listener
from proxy.tlsmaterial import listening_context

log = logging.getLogger("proxy.http")

# Time a closing client gets to answer our TLS close_notify before the socket is dropped.
SSL_SHUTDOWN_TIMEOUT = 5.0
BACKLOG = 1024


async def bind(
    name: str, config: ListenerConfig, factory: Callable[[], asyncio.Protocol], *, ssl_context: ssl.SSLContext | None, reuse_port: bool
) -> asyncio.Server:
    """Listen on `config.listen`. Raises ListenerError naming the address and the reason."""
    loop = asyncio.get_running_loop()
    address = config.listen
    secure = ssl_context is not None
    try:
        return await loop.create_server(
            factory,
            address.host or None,
            address.port,
            reuse_port=reuse_port or None,
            backlog=BACKLOG,
            ssl=ssl_context,
            ssl_handshake_timeout=config.limits.handshake_timeout if secure else None,
            ssl_shutdown_timeout=SSL_SHUTDOWN_TIMEOUT if secure else None,
        )
    except OSError as e:
        raise ListenerError(f"listener {name!r} cannot listen on {address}: {e.strerror or e}") from e


def bound_port(server: asyncio.Server | None) -> int:
    if server is None or not server.sockets:
        raise RuntimeError("the listener is not started")
    return int(server.sockets[0].getsockname()[1])


class HttpsListener:
    """Terminates TLS with the current certificate and proxies HTTP/1.1 to the routes' upstreams."""

    def __init__(
        self,
        config: ListenerConfig,
        min_version: str,
        current_context: Callable[[], ssl.SSLContext],
        *,
        reuse_port: bool = False,
        policy: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config
        self._reuse_port = reuse_port
        # One long-lived context per listener holds the policy; each full handshake swaps in the
        # current version's material (FIELD-NOTES: sni_callback, with and without SNI).
        self._ssl_context = listening_context(min_version, current_context, policy=policy)
        self._server: asyncio.Server | None = None
        self._shared: Shared | None = None
        self._pools: dict[HttpUpstream, UpstreamPool] = {}

    async def start(self) -> None:
        config = self.config
        shared = Shared(config.name, config.limits, HttpMetrics(for_listener(config.name)))
        router = Router(config.routes, self._pool)
        self._shared = shared
        self._server = await bind(
            config.name, config, lambda: ClientConnection(shared, router), ssl_context=self._ssl_context, reuse_port=self._reuse_port
        )
        log.info("%s: serving HTTPS on %s port %d", config.name, config.listen.host or "all addresses", self.port)

    def _pool(self, upstream: HttpUpstream) -> UpstreamPool:
        pool = self._pools.get(upstream)
        if pool is None:
            pool = self._pools[upstream] = UpstreamPool(upstream, self.config.limits.connect_timeout)
        return pool

    @property
    def port(self) -> int:
        return bound_port(self._server)

    async def stop(self, drain_seconds: float) -> None:
        """Stop accepting now; let requests, streams and tunnels in flight finish for up to
        `drain_seconds`; then close whatever is left."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        if self._shared is not None:
            await self._shared.drain(drain_seconds)
        for pool in self._pools.values():
            pool.close()
        await server.wait_closed()
        log.info("%s: stopped", self.config.name)
