"""What every listener does the same way: bind (port, backlog, TLS timeouts, SO_REUSEPORT), report
its port, keep the registry of its connections and drain them on stop.

A listener kind says only what it serves: the protocol factory for each accepted connection and
the TLS context, if any. It knows nothing of the store or of which protocol a connection speaks.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

from proxy.accesslog import AccessLog
from proxy.config import ListenerConfig
from proxy.connections import Shared, Tally
from proxy.errors import ListenerError
from proxy.metrics import for_listener
from proxy.tlsmaterial import H2_ALPN, HTTP2_ALPN, HTTPS_ALPN, ONE_PORT_ALPN, Alpn, TlsObjects, listening_context

log = logging.getLogger("proxy.listener")

# Time a closing client gets to answer our TLS close_notify before the socket is dropped.
SSL_SHUTDOWN_TIMEOUT = 5.0
BACKLOG = 1024


class BaseListener:
    """Lifecycle: `start()` binds and serves; `stop()` stops accepting, drains, closes."""

    config: ListenerConfig

    def __init__(self, config: ListenerConfig, *, reuse_port: bool = False, access: AccessLog | None = None) -> None:
        self.config = config
        self._reuse_port = reuse_port
        self._access = access
        self._server: asyncio.Server | None = None
        self.shared: Shared | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def port(self) -> int:
        server = self._server
        if server is None or not server.sockets:
            raise RuntimeError(f"listener {self.name!r} is not started")
        return int(server.sockets[0].getsockname()[1])

    @property
    def open_connections(self) -> int:
        return len(self.shared.connections) if self.shared is not None else 0

    async def start(self) -> None:
        """Bind and serve. Raises ListenerError naming the address and the reason."""
        access = self._access.for_listener(self.name) if self._access is not None else None
        shared = self.shared = Shared(self.name, self.config.limits, Tally(for_listener(self.name)), access)
        factory, ssl_context = await self._prepare(shared)
        self._server = await self._bind(factory, ssl_context)
        log.info("%s: %s on %s port %d", self.name, self.describe(), self.config.listen.host or "all addresses", self.port)

    async def stop(self, drain_seconds: float) -> None:
        """Stop accepting now; let what is in flight finish for up to `drain_seconds`; then close
        whatever is left. Safe to call when never started."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        if self.shared is not None:
            await self.shared.drain(drain_seconds)
        self._closed()
        await server.wait_closed()
        log.info("%s: stopped", self.name)

    # --- what a listener kind provides ---------------------------------------------------------

    def describe(self) -> str:
        """What the listener does, for its start line in the log."""
        raise NotImplementedError

    async def _prepare(self, shared: Shared) -> tuple[Callable[[], asyncio.Protocol], ssl.SSLContext | None]:
        """The protocol factory for accepted connections, and the TLS context (None: plain)."""
        raise NotImplementedError

    def _closed(self) -> None:
        """Release what the listener holds besides connections (pools), after the drain."""

    # --- internals -------------------------------------------------------------------------------

    async def _bind(self, factory: Callable[[], asyncio.Protocol], ssl_context: ssl.SSLContext | None) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        address = self.config.listen
        secure = ssl_context is not None
        try:
            return await loop.create_server(
                factory,
                address.host or None,
                address.port,
                reuse_port=self._reuse_port or None,
                backlog=BACKLOG,
                ssl=ssl_context,
                ssl_handshake_timeout=self.config.limits.handshake_timeout if secure else None,
                ssl_shutdown_timeout=SSL_SHUTDOWN_TIMEOUT if secure else None,
            )
        except OSError as e:
            raise ListenerError(f"listener {self.name!r} cannot listen on {address}: {e.strerror or e}") from e


def offered_alpn(config: ListenerConfig) -> Alpn | None:
    """The ALPN protocols a listener offers, in its order of preference; None for plain HTTP."""
    if config.protocol == "grpc":
        return H2_ALPN
    if config.protocol == "https":
        if config.http2:
            return HTTP2_ALPN
        return ONE_PORT_ALPN if config.grpc_upstream is not None else HTTPS_ALPN
    return None


class TlsListener(BaseListener):
    """A listener that terminates TLS: one long-lived context per listener holds the policy
    (versions, ciphers, ALPN), and each full handshake swaps in the current version's material
    context for the listener's ALPN list, from `current` (sni_callback, with and without SNI)."""

    def __init__(
        self,
        config: ListenerConfig,
        min_version: str,
        current: Callable[[], TlsObjects],
        *,
        reuse_port: bool = False,
        policy: ssl.SSLContext | None = None,
        access: AccessLog | None = None,
    ) -> None:
        super().__init__(config, reuse_port=reuse_port, access=access)
        alpn = offered_alpn(config)
        assert alpn is not None, "a TLS listener offers ALPN"
        self.alpn = alpn
        self.ssl_context = listening_context(min_version, lambda: current().context(alpn), alpn, policy=policy)
