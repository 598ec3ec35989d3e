"""Where a listener relays its HTTP/2 connections: the upstream, and for a `grpcs://` upstream,
its CA file and the client context that verifies it.

Knows nothing of the listening side, the certificates the edge serves, or what crosses a connection.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from proxy.config import GrpcUpstream
from proxy.errors import ListenerError
from proxy.h2relay.connection import RelayTarget
from proxy.tlsmaterial import H2_ALPN, TLS12_CIPHERS


async def read_upstream_ca(upstream: GrpcUpstream, listener: str, ca_key: str = "upstream_ca") -> bytes | None:
    """The CA bundle that verifies a `grpcs://` upstream, or None for the system roots.

    Raises ListenerError naming the file when it cannot be read.
    """
    if not upstream.tls or upstream.ca_file is None:
        return None
    path: Path = upstream.ca_file
    try:
        return await asyncio.to_thread(path.read_bytes)
    except OSError as e:
        raise ListenerError(f"listener {listener!r}: cannot read {ca_key} {str(path)!r}: {e.strerror or e}") from e


def upstream_context(ca_pem: bytes | None) -> ssl.SSLContext:
    """The client context for a `grpcs://` upstream: verified against `ca_pem` (else the system
    roots), host name checked, ALPN h2. Builds from PEM bytes; raises ssl.SSLError if unusable."""
    context = ssl.create_default_context(cadata=ca_pem.decode("ascii") if ca_pem else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.set_alpn_protocols(list(H2_ALPN))
    return context


async def relay_target(upstream: GrpcUpstream, max_connection_age: float, listener: str, ca_key: str = "upstream_ca") -> RelayTarget:
    """What a listener's relayed connections need to reach `upstream`; `ca_key` names the config
    key of its CA file. Raises ListenerError when that file cannot be read or holds no usable
    certificate."""
    upstream_tls = None
    if upstream.tls:
        ca_pem = await read_upstream_ca(upstream, listener, ca_key)
        try:
            upstream_tls = await asyncio.to_thread(upstream_context, ca_pem)
        except (ssl.SSLError, UnicodeDecodeError) as e:
            raise ListenerError(f"listener {listener!r}: {ca_key} holds no usable certificate: {e}") from e
    return RelayTarget(upstream, upstream_tls, max_connection_age)
