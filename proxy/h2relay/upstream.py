"""The TLS side of a `grpcs://` upstream: reading its CA file and the client context that verifies it.

Knows nothing of the listening side, the certificates the edge serves, or what crosses a connection.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from proxy.config import GrpcUpstream
from proxy.errors import ListenerError
from proxy.tlsmaterial import H2_ALPN, TLS12_CIPHERS


async def read_upstream_ca(upstream: GrpcUpstream, listener: str) -> bytes | None:
    """The CA bundle that verifies a `grpcs://` upstream, or None for the system roots.

    Raises ListenerError naming the file when it cannot be read.
    """
    if not upstream.tls or upstream.ca_file is None:
        return None
    path: Path = upstream.ca_file
    try:
        return await asyncio.to_thread(path.read_bytes)
    except OSError as e:
        raise ListenerError(f"listener {listener!r}: cannot read upstream_ca {str(path)!r}: {e.strerror or e}") from e


def upstream_context(ca_pem: bytes | None) -> ssl.SSLContext:
    """The client context for a `grpcs://` upstream: verified against `ca_pem` (else the system
    roots), host name checked, ALPN h2. Builds from PEM bytes; raises ssl.SSLError if unusable."""
    context = ssl.create_default_context(cadata=ca_pem.decode("ascii") if ca_pem else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.set_alpn_protocols(list(H2_ALPN))
    return context
