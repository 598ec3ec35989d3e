"""The edge in-process for tests: the whole `Edge` (admin API, listeners, watcher) from a config
written as TOML, or the admin server alone over a real store and real directories; material as
it reaches the edge (a directory drop, an upload body) and an admin client.

Nothing here knows what a test asserts.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from proxy import metrics
from proxy.admin.server import AdminServer
from proxy.app import Edge
from proxy.certstore.expiry import ExpiryWarnings
from proxy.certstore.pem import Material
from proxy.certstore.service import CertificateService
from proxy.certstore.store import CertStore
from proxy.certstore.watcher import DirectoryWatcher
from proxy.config import Config
from proxy.tlsmaterial import TlsObjects, tls_preparer
from tests.support.config import Table, edge_config, load, parse
from tests.support.pki import SERVER_IP, SERVER_NAME, Issuer, Leaf, Pki, new_key, pem
from tests.support.probes import eventually, handshake_fingerprint, metric

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
    """A root, an intermediate and a leaf for SERVER_NAME and SERVER_IP (unless told otherwise)."""
    pki = Pki("Admin Test")
    return Upload(pki.issuing.leaf(*(dns or (SERVER_NAME,)), ips=ips, **leaf_options), pki.root)


def edge_settings(
    base: Path, *, watch: str = "events", admin_port: int = 0, admin: Table | None = None, tls: Table | None = None
) -> Config:
    """The test config (`tests.support.config.edge_config`) with paths under `base`, for the
    parts the tests build by hand: its `tls` and `admin`. `admin` and `tls` add keys."""
    return parse(edge_config(http_upstream=1, grpc_upstream=1, watch=watch, admin_port=admin_port, admin=admin, tls=tls), base)


@dataclass
class WatcherPasses:
    """The directory watcher's callback (`CertificateService.directory_changed`), noting when each
    pass it finished began. A pass includes the re-check window of a drop that looks
    half-written, so once a pass that began after a change has finished, whatever the change will
    ever do is done: a test waits for that before it judges what a change did not do."""

    on_change: Callable[[], Awaitable[None]]
    began: list[float] = field(default_factory=list)  # of the finished passes, time.monotonic()

    async def __call__(self) -> None:
        began = time.monotonic()
        try:
            await self.on_change()
        finally:
            self.began.append(began)

    async def after(self, moment: float, timeout: float = 10.0) -> None:
        """Wait until a pass that began after `moment` (a time.monotonic()) has finished."""
        await eventually(lambda: any(began >= moment for began in self.began), timeout)


def directory_watcher(
    service: CertificateService, *, polling: bool = False, poll_delay_ms: int = 500
) -> tuple[DirectoryWatcher, WatcherPasses]:
    """The watcher the edge runs over `service`'s directory, its passes counted."""
    passes = WatcherPasses(service.directory_changed)
    return DirectoryWatcher(service.tls.cert_dir, passes, polling=polling, poll_delay_ms=poll_delay_ms), passes


@dataclass
class Admin:
    """An admin server on 127.0.0.1 port 0 with its service, token and a client session, and
    the passes of its directory watcher when it has one of its own."""

    server: AdminServer
    service: CertificateService
    token: str
    session: aiohttp.ClientSession
    passes: WatcherPasses | None = None

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
    base: Path, *, health: Callable[[], bool] = lambda: True, watch: bool = False, admin_port: int = 0, uploads: str = "auto"
) -> AsyncIterator[Admin]:
    """The admin server over a real CertStore and CertificateService on `base`/certs and
    `base`/state, optionally with the directory watcher, without any listener."""
    settings = edge_settings(base, admin_port=admin_port, admin={"uploads": uploads})
    store: CertStore[TlsObjects] = CertStore(tls_preparer(settings.tls.min_version))
    service = CertificateService(store, settings.tls)
    metrics.CERT_EXPIRY.set_function(service.seconds_to_expiry)  # as Edge.start binds it
    await service.load_initial()
    watcher, passes = directory_watcher(service) if watch else (None, None)
    if watcher is not None:
        await watcher.start()
    config = settings.admin
    server = AdminServer(config, service, health=health)
    await server.start()
    token = config.token_file.read_text().strip()
    try:
        async with aiohttp.ClientSession() as session:
            yield Admin(server, service, token, session, passes)
    finally:
        await server.stop(0)
        if watcher is not None:
            await watcher.stop()


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def upload_body(material: Material) -> dict[str, Any]:
    body: dict[str, Any] = {"certificate": material.cert_pem.decode(), "key": material.key_pem.decode()}
    if material.ca_pem is not None:
        body["ca"] = material.ca_pem.decode()
    return body


def drop_files(cert_dir: Path, material: Material) -> None:
    """An operator's drop: each file written beside its name and renamed over it, the key first
    (so the watcher may well see the new key with the old certificate for a moment). Without a CA
    the directory ends up without `ca.crt`: exactly this material, nothing left over."""
    cert_dir.mkdir(parents=True, exist_ok=True)
    files = [("tls.key", material.key_pem), ("tls.crt", material.cert_pem)]
    if material.ca_pem is not None:
        files.append(("ca.crt", material.ca_pem))
    else:
        (cert_dir / "ca.crt").unlink(missing_ok=True)
    for name, data in files:
        temp = cert_dir / f".{name}.partial"
        temp.write_bytes(data)
        os.replace(temp, cert_dir / name)


def copy_files(cert_dir: Path, material: Material) -> None:
    """`cp` into the directory: each file truncated and rewritten in place (through a symlink,
    into whatever it points at), the key first. A reader can catch an empty or half-written file."""
    for name, data in (("tls.key", material.key_pem), ("tls.crt", material.cert_pem), ("ca.crt", material.ca_pem)):
        if data is not None:
            with (cert_dir / name).open("wb") as file:
                file.write(data[: len(data) // 2])
                file.flush()
                file.write(data[len(data) // 2 :])


@dataclass
class RunningEdge:
    """The whole Edge (admin API, the HTTPS listener "web", the gRPC listener "grpc", the
    watcher) and an admin client for it. `pki` is what clients trust (None: they trust nothing
    and only compare fingerprints)."""

    edge: Edge
    admin: Admin
    pki: Pki | None

    @property
    def https_port(self) -> int:
        return self.edge.listeners["web"].port

    @property
    def grpc_port(self) -> int:
        return self.edge.listeners["grpc"].port

    @property
    def ports(self) -> dict[str, int]:
        """Listener name -> port, of the two TLS listeners."""
        return {"web": self.https_port, "grpc": self.grpc_port}

    @property
    def cert_dir(self) -> Path:
        return self.edge.config.tls.cert_dir

    @property
    def serving_fingerprint(self) -> str:
        return self.edge.store.current.snapshot.fingerprint

    async def fingerprints(self) -> dict[str, str]:
        """Listener name -> the leaf a brand-new client is shown there."""
        return {
            "web": await handshake_fingerprint(self.https_port, self.pki),
            "grpc": await handshake_fingerprint(self.grpc_port, self.pki, alpn="h2"),
        }

    @staticmethod
    def everywhere(fingerprint: str) -> dict[str, str]:
        """What `fingerprints()` returns when every listener shows `fingerprint`."""
        return {"web": fingerprint, "grpc": fingerprint}

    async def metric(self, name: str, **labels: str) -> float:
        _, text = await self.admin.get("/metrics")
        return metric(text, name, **labels)


@asynccontextmanager
async def running_edge(
    base: Path,
    *,
    http_upstream: int,
    grpc_upstream: int,
    pki: Pki | None = None,
    first: Leaf | None = None,
    material: Material | None = None,
    watch: str = "events",
    server: Table | None = None,
    tls: Table | None = None,
    log: Table | None = None,
    web: Table | None = None,
    listeners: list[Table] | None = None,
    expiry: ExpiryWarnings | None = None,
) -> AsyncIterator[RunningEdge]:
    """The Edge on `base` (edge.toml, certs/, state/). With `pki` it serves `material`, or
    `first`, or a fresh leaf of `pki` (dropped before the start); without, the self-signed
    default. `server`, `tls`, `log`, `web` and `listeners` as in `tests.support.config.edge_config`;
    `expiry` as `Edge` takes it."""
    if pki is not None:
        drop_files(base / "certs", material or pki.material(first))
    config = edge_config(
        http_upstream=http_upstream,
        grpc_upstream=grpc_upstream,
        watch=watch,
        server=server,
        tls=tls,
        log=log,
        web=web,
        listeners=listeners,
    )
    edge = Edge(load(base, config), expiry=expiry)
    await edge.start()
    try:
        assert edge.admin is not None
        token = edge.config.admin.token_file.read_text().strip()
        async with aiohttp.ClientSession() as session:
            yield RunningEdge(edge, Admin(edge.admin, edge.service, token, session), pki)  # type: ignore[arg-type]
    finally:
        await edge.stop(0)
