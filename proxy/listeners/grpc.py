"""The gRPC listener: TLS (ALPN h2) with the current certificate, then each HTTP/2 connection
relayed to the upstream as bytes (`proxy.h2relay`), so every gRPC semantic holds by construction.

Owns its TLS policy context (through `proxy.tlsmaterial`) and the TLS context that verifies a
`grpcs://` upstream. Certificates reach it only through `current_context`, read on every full
handshake, so a swap needs nothing from this module.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

from proxy.config import GrpcListenerConfig
from proxy.connections import Shared
from proxy.errors import ListenerError
from proxy.h2relay.connection import ClientSide, RelayTarget
from proxy.h2relay.upstream import read_upstream_ca, upstream_context
from proxy.listeners.base import TlsListener
from proxy.tlsmaterial import H2_ALPN


class GrpcListener(TlsListener):
    """A TLS gRPC listener that relays each HTTP/2 connection to its upstream as bytes."""

    config: GrpcListenerConfig

    alpn = H2_ALPN

    def describe(self) -> str:
        return f"relaying gRPC to {self.config.upstream}"

    async def _prepare(self, shared: Shared) -> tuple[Callable[[], asyncio.Protocol], ssl.SSLContext | None]:
        """Raises ListenerError when the upstream CA cannot be used."""
        config = self.config
        upstream_tls = None
        if config.upstream.tls:
            ca_pem = await read_upstream_ca(config.upstream, self.name)
            try:
                upstream_tls = await asyncio.to_thread(upstream_context, ca_pem)
            except (ssl.SSLError, UnicodeDecodeError) as e:
                raise ListenerError(f"listener {self.name!r}: upstream_ca holds no usable certificate: {e}") from e
        target = RelayTarget(config.upstream, upstream_tls, config.max_connection_age)
        return lambda: ClientSide(shared, target), self.ssl_context
