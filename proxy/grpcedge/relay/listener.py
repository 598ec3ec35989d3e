"""The gRPC relay listener's lifecycle: bind, terminate TLS (ALPN h2) with the current
certificate, relay each connection to the upstream, drain, stop.

Owns the listening socket, its TLS policy context (through `proxy.tlsmaterial`) and the TLS
context that verifies a `grpcs://` upstream. Certificates reach it only through `current`, read on
every full handshake, so a swap needs nothing from this module. It never imports the store, and
knows nothing of what crosses a connection (connection.py).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

from proxy.certstore.store import Serving
from proxy.config import GrpcUpstream, ListenerConfig
from proxy.errors import ConfigError, ListenerError
from proxy.grpcedge.relay.connection import ClientSide
from proxy.grpcedge.relay.shared import RelayShared
from proxy.grpcedge.upstream import read_upstream_ca
from proxy.metrics import for_listener
from proxy.tlsmaterial import H2_ALPN, TLS12_CIPHERS, TlsObjects, listening_context

log = logging.getLogger("proxy.grpc")

CurrentServing = Callable[[], Serving[TlsObjects]]
# Time a closing client gets to answer our TLS close_notify before the socket is dropped.
SSL_SHUTDOWN_TIMEOUT = 5.0
BACKLOG = 1024
_DEFAULT_MAX_MESSAGE_BYTES = ListenerConfig.__dataclass_fields__["max_message_bytes"].default


def upstream_context(ca_pem: bytes | None) -> ssl.SSLContext:
    """The client context for a `grpcs://` upstream: verified against `ca_pem` (else the system
    roots), host name checked, ALPN h2. Builds from PEM bytes; raises ssl.SSLError if unusable."""
    context = ssl.create_default_context(cadata=ca_pem.decode("ascii") if ca_pem else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.set_alpn_protocols(list(H2_ALPN))
    return context


class RelayListener:
    """A TLS gRPC listener that relays each HTTP/2 connection to its upstream as bytes."""

    def __init__(
        self,
        config: ListenerConfig,
        min_version: str,
        current: CurrentServing,
        *,
        reuse_port: bool = False,
        policy: ssl.SSLContext | None = None,
    ) -> None:
        if config.grpc_upstream is None:
            raise ConfigError([f"listener {config.name!r}: a grpc listener needs an upstream"])
        self._config = config
        self._upstream: GrpcUpstream = config.grpc_upstream
        self._current = current
        self._reuse_port = reuse_port
        # One long-lived context per listener holds the policy (versions, ciphers, ALPN h2); each
        # full handshake swaps in the current version's h2 material context.
        self._ssl_context = listening_context(min_version, lambda: current().tls.h2_context, H2_ALPN, policy=policy)
        self._server: asyncio.Server | None = None
        self._shared: RelayShared | None = None

    @property
    def port(self) -> int:
        server = self._server
        if server is None or not server.sockets:
            raise RuntimeError(f"listener {self._config.name!r} is not started")
        return int(server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Bind and serve. Raises ListenerError when there is nothing to serve, the upstream CA
        cannot be used, or the address cannot be bound."""
        config = self._config
        name = config.name
        try:
            self._current()
        except RuntimeError as e:
            raise ListenerError(f"listener {name!r}: no certificate to serve: {e}") from e
        if config.max_message_bytes != _DEFAULT_MAX_MESSAGE_BYTES:
            log.warning("listener %r: max_message_bytes has no effect in relay mode; the client's and the upstream's limits apply", name)
        upstream_tls = None
        if self._upstream.tls:
            ca_pem = await read_upstream_ca(self._upstream, name)
            try:
                upstream_tls = await asyncio.to_thread(upstream_context, ca_pem)
            except (ssl.SSLError, UnicodeDecodeError) as e:
                raise ListenerError(f"listener {name!r}: upstream_ca holds no usable certificate: {e}") from e
        shared = RelayShared(name, config.limits, config.max_connection_age, self._upstream, upstream_tls, for_listener(name))
        loop = asyncio.get_running_loop()
        address = config.listen
        try:
            self._server = await loop.create_server(
                lambda: ClientSide(shared),
                address.host or None,
                address.port,
                reuse_port=self._reuse_port or None,
                backlog=BACKLOG,
                ssl=self._ssl_context,
                ssl_handshake_timeout=config.limits.handshake_timeout,
                ssl_shutdown_timeout=SSL_SHUTDOWN_TIMEOUT,
            )
        except OSError as e:
            raise ListenerError(f"listener {name!r} cannot listen on {address}: {e.strerror or e}") from e
        self._shared = shared
        log.info("%s: relaying gRPC on %s port %d to %s", name, address.host or "all addresses", self.port, self._upstream)

    async def stop(self, drain_seconds: float) -> None:
        """Stop accepting now; open connections get a GOAWAY and up to `drain_seconds` to finish
        their streams; then whatever is left is closed. Safe to call when never started."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        if self._shared is not None:
            await self._shared.drain(drain_seconds)
        await server.wait_closed()
        log.info("%s: stopped", self._config.name)
