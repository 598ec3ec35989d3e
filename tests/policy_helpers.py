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

import aiohttp

from proxy import openssl
from proxy.app import Edge
from proxy.certstore.pem import Material
from proxy.config import parse_config
from tests.admin_helpers import Admin, edge_config_toml
from tests.grpc_helpers import running_upstream
from tests.https_helpers import upstream
from tests.reliability_helpers import Pki, drop_files

OPENSSL = shutil.which("openssl")


@dataclass
class PolicyEdge:
    edge: Edge
    admin: Admin
    pki: Pki

    @property
    def ports(self) -> dict[str, int]:
        return {"web": self.edge.listeners["web"].port, "grpc": self.edge.listeners["grpc"].port}

    @property
    def serving_fingerprint(self) -> str:
        return self.edge.store.current.snapshot.fingerprint


def config_text(policy: str, *, http_upstream: int, grpc_upstream: int, min_version: str = "1.2") -> str:
    text = edge_config_toml(http_upstream=http_upstream, grpc_upstream=grpc_upstream)
    return text.replace('watch = "events"', f'watch = "events"\npolicy = "{policy}"\nmin_version = "{min_version}"', 1)


@asynccontextmanager
async def running_edge(base: Path, policy: str, *, min_version: str = "1.2", material: Material | None = None) -> AsyncIterator[PolicyEdge]:
    """The edge under `policy`, serving `material` or a fresh leaf of a new PKI (root as ca.crt)."""
    pki = Pki()
    drop_files(base / "certs", material or pki.material(pki.leaf()))
    async with upstream() as http, running_upstream() as grpc_upstream:
        text = config_text(policy, http_upstream=http.port, grpc_upstream=grpc_upstream.port, min_version=min_version)
        edge = Edge(parse_config(text, source=str(base / "edge.toml"), base_dir=base))
        await edge.start()
        try:
            assert edge.admin is not None
            token = edge.config.admin.token_file.read_text().strip()
            async with aiohttp.ClientSession() as session:
                yield PolicyEdge(edge, Admin(edge.admin, edge.service, token, session), pki)  # type: ignore[arg-type]
        finally:
            await edge.stop(0)


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
    args = [OPENSSL, "s_client", "-brief", "-connect", f"127.0.0.1:{port}", "-servername", "localhost", "-alpn", alpn, *options]
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
        _reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost"), 10)
    except (ssl.SSLError, ConnectionError) as e:
        return f"{type(e).__name__}: {e}"
    ssl_object = writer.get_extra_info("ssl_object")
    result = (ssl_object.version(), ssl_object.cipher()[0])
    writer.close()
    with suppress(ssl.SSLError, ConnectionError):
        await writer.wait_closed()
    return result
