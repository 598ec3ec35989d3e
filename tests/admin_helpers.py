"""Shared pieces of the admin and demo tests: upload bodies made fresh with cryptography, the admin
server running against a real store and real directories, edge configs on 127.0.0.1 port 0, and
probes (a fresh TLS handshake, a metric's value).

Nothing here knows what a test asserts.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from proxy import metrics
from proxy.admin.server import AdminServer
from proxy.certstore.service import CertificateService
from proxy.certstore.store import CertStore
from proxy.certstore.watcher import DirectoryWatcher
from proxy.config import Address, AdminConfig, TlsConfig
from proxy.tlsmaterial import TlsObjects, tls_preparer
from tests.certs import Issuer, Leaf, new_key, pem
from tests.edge_process import free_port  # noqa: F401 - re-exported for the admin tests

SERVER_NAME = "localhost"
SERVER_IP = "127.0.0.1"
MISMATCHED_KEY = "the private key does not match the certificate"


@dataclass
class Upload:
    """One piece of material as the admin API takes it, and what serving it would look like."""

    leaf: Leaf
    root: Issuer | None

    @property
    def fingerprint(self) -> str:
        return self.leaf.fingerprint

    def body(self, *, ca: bool = True) -> dict[str, Any]:
        """With `ca=False` the root ends tls.crt instead: a chain must end at a root the edge can find."""
        certificate = self.leaf.cert_pem
        if not ca and self.root is not None:
            certificate += pem(self.root.cert)
        body: dict[str, Any] = {"certificate": certificate.decode(), "key": self.leaf.key_pem.decode()}
        if ca and self.root is not None:
            body["ca"] = pem(self.root.cert).decode()
        return body

    def with_wrong_key(self) -> dict[str, Any]:
        """The certificate with somebody else's key: the classic mixed-up drop."""
        return {**self.body(), "key": Leaf(self.leaf.certificate, new_key()).key_pem.decode()}

    def write_into(self, cert_dir: Path) -> None:
        """Drop the files as an operator would copy them: plain files, key first."""
        cert_dir.mkdir(parents=True, exist_ok=True)
        (cert_dir / "tls.key").write_bytes(self.leaf.key_pem)
        (cert_dir / "tls.crt").write_bytes(self.leaf.cert_pem)
        if self.root is not None:
            (cert_dir / "ca.crt").write_bytes(pem(self.root.cert))


def new_upload(*dns: str, ips: tuple[str, ...] = (SERVER_IP,), **leaf_options: Any) -> Upload:
    """A root, an intermediate and a leaf for `localhost` and 127.0.0.1 (unless told otherwise)."""
    root = Issuer("Admin Test Root CA")
    intermediate = root.intermediate("Admin Test Issuing CA")
    return Upload(intermediate.leaf(*(dns or (SERVER_NAME,)), ips=ips, **leaf_options), root)


def tls_config(base: Path, *, watch: str = "events") -> TlsConfig:
    return TlsConfig(cert_dir=base / "certs", state_dir=base / "state", server_name=SERVER_NAME, ip_addresses=(SERVER_IP,), watch=watch)


@dataclass
class Admin:
    """An admin server on 127.0.0.1 port 0 with its service, token and a client session."""

    server: AdminServer
    service: CertificateService
    token: str
    session: aiohttp.ClientSession

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.port}{path}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.session.get(self.url(path), **kwargs) as response:
            return response.status, await _body(response)

    async def post(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.session.post(self.url(path), **kwargs) as response:
            return response.status, await _body(response)

    async def certificate(self) -> dict[str, Any]:
        status, body = await self.get("/api/v1/certificate", headers=self.auth)
        assert status == 200, body
        assert isinstance(body, dict)
        return body

    async def upload(self, body: dict[str, Any]) -> tuple[int, Any]:
        return await self.post("/api/v1/certificate", json=body, headers=self.auth)


async def _body(response: aiohttp.ClientResponse) -> Any:
    if response.content_type == "application/json":
        return await response.json()
    return await response.text()


@asynccontextmanager
async def running_admin(
    base: Path, *, health: Callable[[], bool] = lambda: True, watch: bool = False, admin_port: int = 0
) -> AsyncIterator[Admin]:
    """The admin server over a real CertStore and CertificateService on `base`/certs and
    `base`/state, optionally with the directory watcher, without any listener."""
    store: CertStore[TlsObjects] = CertStore(tls_preparer("1.2"))
    service = CertificateService(store, tls_config(base))
    metrics.CERT_EXPIRY.set_function(service.seconds_to_expiry)  # as Edge.start binds it
    await service.load_initial()
    watcher = DirectoryWatcher(service.tls.cert_dir, service.directory_changed) if watch else None
    if watcher is not None:
        await watcher.start()
    config = AdminConfig(listen=Address("127.0.0.1", admin_port), token_file=base / "state" / "admin.token")
    server = AdminServer(config, service, health=health)
    await server.start()
    token = config.token_file.read_text().strip()
    try:
        async with aiohttp.ClientSession() as session:
            yield Admin(server, service, token, session)
    finally:
        await server.stop(0)
        if watcher is not None:
            await watcher.stop()


async def handshake_fingerprint(port: int, *, alpn: str = "http/1.1") -> str:
    """SHA-256 of the leaf a brand-new TLS connection is shown (no session resumption)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the test compares fingerprints; trust is not the question
    context.set_alpn_protocols([alpn])
    _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=context), 10)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
    return hashlib.sha256(der).hexdigest()


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text, 0 when the series does not exist yet."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def edge_config_toml(*, admin_port: int = 0, http_upstream: int, grpc_upstream: int, watch: str = "events") -> str:
    """A complete config on loopback: every listener on port 0, the admin on `admin_port`."""
    return f"""
[server]
drain_seconds = 1

[tls]
cert_dir = "certs"
state_dir = "state"
server_name = "{SERVER_NAME}"
ip_addresses = ["{SERVER_IP}"]
watch = "{watch}"

[admin]
listen = "127.0.0.1:{admin_port}"
token_file = "state/admin.token"

[[listeners]]
name = "web"
protocol = "https"
listen = "127.0.0.1:0"
upstream = "http://127.0.0.1:{http_upstream}"

[[listeners]]
name = "grpc"
protocol = "grpc"
listen = "127.0.0.1:0"
upstream = "127.0.0.1:{grpc_upstream}"
"""


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0, interval: float = 0.05) -> None:
    """Poll `check` until it holds; fail with the timeout otherwise."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout} s")
        await asyncio.sleep(interval)


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
