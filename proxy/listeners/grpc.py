"""The gRPC listener: TLS (ALPN h2) with the current certificate, then each HTTP/2 connection
relayed to the upstream as bytes (`proxy.h2relay`), so every gRPC semantic holds by construction.

Owns its TLS policy context (through `proxy.tlsmaterial`). Certificates reach it only through
`current`, read on every full handshake, so a swap needs nothing from this module.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

from proxy.config import GrpcListenerConfig
from proxy.connections import Shared
from proxy.h2relay.connection import ClientSide
from proxy.h2relay.upstream import relay_target
from proxy.listeners.base import TlsListener


class GrpcListener(TlsListener):
    """A TLS gRPC listener that relays each HTTP/2 connection to its upstream as bytes."""

    config: GrpcListenerConfig

    def describe(self) -> str:
        return f"relaying gRPC to {self.config.upstream}"

    async def _prepare(self, shared: Shared) -> tuple[Callable[[], asyncio.Protocol], ssl.SSLContext | None]:
        """Raises ListenerError when the upstream CA cannot be used."""
        target = await relay_target(self.config.upstream, self.config.max_connection_age, self.name)
        return lambda: ClientSide(shared, target), self.ssl_context
