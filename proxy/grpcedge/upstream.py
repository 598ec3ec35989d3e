"""The channel from the edge to one gRPC upstream: plaintext h2c, or TLS verified against a CA.

Owns the upstream hop's options (message limits, connect timeout, reconnect pacing) and reading
the upstream CA file. It knows nothing of the listening side, certificates it serves, or calls.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc

from proxy.config import GrpcUpstream, Limits
from proxy.errors import ListenerError

# After a failed connect, grpc waits before the next attempt and fails new calls fast meanwhile.
# grpc's own ceiling is 120 s, far too long for an edge: an upstream back from a restart would
# stay unreachable for up to two minutes. 10 s bounds that while still backing off.
MAX_RECONNECT_BACKOFF_MS = 10_000


def channel_options(limits: Limits, max_message_bytes: int) -> list[tuple[str, Any]]:
    """Options for the upstream channel.

    grpc uses `min_reconnect_backoff_ms` as the floor of each connect attempt's deadline, so it
    is where `connect_timeout` lives: an upstream that does not answer fails calls with
    UNAVAILABLE after that long, not after each call's full deadline.
    """
    connect_ms = max(1, int(limits.connect_timeout * 1000))
    return [
        # The 4 MiB default applies at every hop: the edge must accept what it lets clients send.
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.min_reconnect_backoff_ms", connect_ms),
        ("grpc.max_reconnect_backoff_ms", max(connect_ms, MAX_RECONNECT_BACKOFF_MS)),
    ]


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


def open_channel(upstream: GrpcUpstream, ca_pem: bytes | None, options: list[tuple[str, Any]]) -> grpc.aio.Channel:
    """An asyncio channel to `upstream`; it connects lazily, on the first call.

    Must run on the event loop that will use the channel.
    """
    target = str(upstream.address)
    if not upstream.tls:
        return grpc.aio.insecure_channel(target, options=options)
    # The upstream's certificate must name the host written in the config; grpc checks that.
    credentials = grpc.ssl_channel_credentials(root_certificates=ca_pem)
    return grpc.aio.secure_channel(target, credentials, options=options)
