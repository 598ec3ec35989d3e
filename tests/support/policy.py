"""Shared pieces of the TLS policy tests: the whole edge in this process (admin API, an HTTPS and
a relay gRPC listener) under a chosen `tls.policy`, with real upstreams, and `openssl s_client`
as a client that offers exactly what it is told.

Everything listens on 127.0.0.1. Nothing here knows what a test asserts.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy import openssl
from proxy.certstore.pem import Material
from proxy.config import Config
from tests.support.config import edge_config, parse
from tests.support.edge import RunningEdge
from tests.support.edge import running_edge as edge_running
from tests.support.grpc_echo import running_upstream
from tests.support.pki import SERVER_IP, SERVER_NAME, Pki
from tests.support.web import upstream

OPENSSL = shutil.which("openssl")


def policy_config(policy: str, base: Path, *, http_upstream: int = 1, grpc_upstream: int = 2, min_version: str = "1.2") -> Config:
    """The edge's config (HTTPS "web", gRPC "grpc", admin) under `policy`, parsed, not written."""
    return parse(policy_table(policy, http_upstream=http_upstream, grpc_upstream=grpc_upstream, min_version=min_version), base)


def policy_table(policy: str, *, http_upstream: int = 1, grpc_upstream: int = 2, min_version: str = "1.2") -> dict[str, Any]:
    tls = {"policy": policy, "min_version": min_version}
    return edge_config(http_upstream=http_upstream, grpc_upstream=grpc_upstream, tls=tls)


@asynccontextmanager
async def running_edge(
    base: Path, policy: str, *, min_version: str = "1.2", material: Material | None = None
) -> AsyncIterator[RunningEdge]:
    """The whole edge (`tests.support.edge.running_edge`) under `policy`, with real upstreams,
    serving `material` or a fresh leaf of a new PKI (root as ca.crt)."""
    tls = {"policy": policy, "min_version": min_version}
    async with (
        upstream() as http,
        running_upstream() as grpc_upstream,
        edge_running(
            base, http_upstream=http.port, grpc_upstream=grpc_upstream.port, pki=Pki("Policy"), material=material, tls=tls
        ) as edge,
    ):
        yield edge


@dataclass(frozen=True)
class SClient:
    ok: bool
    protocol: str | None
    cipher: str | None
    output: str


async def s_client(port: int, *options: str, alpn: str = "http/1.1", ca: Path | None = None) -> SClient:
    """`openssl s_client -brief` against 127.0.0.1:port with `options` (-tls1_3, -groups X25519,
    ...). ok: the handshake completed."""
    assert OPENSSL is not None
    args = [OPENSSL, "s_client", "-brief", "-connect", f"{SERVER_IP}:{port}", "-servername", SERVER_NAME, "-alpn", alpn, *options]
    if ca is not None:
        args += ["-CAfile", str(ca), "-verify_return_error"]
    process = await asyncio.create_subprocess_exec(
        *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(process.communicate(), 20)
    text = out.decode(errors="replace")
    fields = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    ok = "CONNECTION ESTABLISHED" in text
    return SClient(ok, fields.get("Protocol version"), fields.get("Ciphersuite"), text)


def python_client(
    pki: Pki, version: str, *, groups: str | None = None, suites: str | None = None, alpn: str = "http/1.1"
) -> ssl.SSLContext:
    """A verifying Python client for one TLS version offering only `groups` / TLS 1.3 `suites`
    (set through OpenSSL directly: Python's ssl has no setting for either before 3.15)."""
    context = pki.client_context(alpn)
    tls_version = ssl.TLSVersion.TLSv1_3 if version == "1.3" else ssl.TLSVersion.TLSv1_2
    context.minimum_version = context.maximum_version = tls_version
    if groups:
        openssl.set_groups(context, groups)
    if suites:
        openssl.set_tls13_suites(context, suites)
    return context


async def python_handshake(port: int, context: ssl.SSLContext) -> tuple[str, str] | str:
    """(TLS version, cipher) of a real connection to 127.0.0.1:port, or the error's text."""
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(SERVER_IP, port, ssl=context, server_hostname=SERVER_NAME), 10)
    except (ssl.SSLError, ConnectionError) as e:
        return f"{type(e).__name__}: {e}"
    ssl_object = writer.get_extra_info("ssl_object")
    result = (ssl_object.version(), ssl_object.cipher()[0])
    writer.close()
    with suppress(ssl.SSLError, ConnectionError):
        await writer.wait_closed()
    return result
