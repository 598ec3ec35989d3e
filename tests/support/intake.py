"""The certificate intake on its own, for the tests of how material reaches the store: the
store, the service and (unless `watch = "off"`) the directory watcher with its passes counted,
over real directories; and the ways files land in a watched directory.

Nothing here knows what a test asserts.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from proxy.certstore.service import CertificateService
from proxy.certstore.store import CertStore, Serving
from proxy.certstore.watcher import DirectoryWatcher
from proxy.config import TlsConfig
from proxy.tlsmaterial import TlsObjects, tls_preparer
from tests.support.edge import WatcherPasses, directory_watcher, edge_settings
from tests.support.pki import SERVER_IP, SERVER_NAME, Issuer, Leaf, pem
from tests.support.probes import eventually


@dataclass
class Intake:
    tls: TlsConfig
    store: CertStore[TlsObjects]
    service: CertificateService
    watcher: DirectoryWatcher | None
    passes: WatcherPasses | None = None
    published: list[int] = field(default_factory=list)

    @property
    def cert_dir(self) -> Path:
        return self.tls.cert_dir

    @property
    def fingerprint(self) -> str:
        return self.store.current.snapshot.fingerprint

    @property
    def version(self) -> int:
        return self.store.current.snapshot.version

    async def served(self, leaf: Leaf, timeout: float = 10.0) -> None:
        await eventually(lambda: self.fingerprint == leaf.fingerprint, timeout)

    async def watcher_read_since(self, moment: float) -> None:
        """Wait until the watcher has finished a pass that began after `moment`."""
        assert self.passes is not None
        await self.passes.after(moment)


async def start_intake(tmp_path: Path, *, watch: str = "events", cert_dir: Path | None = None) -> Intake:
    tls = edge_settings(tmp_path, watch=watch, tls={"cert_dir": str(cert_dir or tmp_path / "certs"), "poll_delay_ms": 100}).tls
    store: CertStore[TlsObjects] = CertStore(tls_preparer("1.2"))
    service = CertificateService(store, tls)
    await service.load_initial()
    intake = Intake(tls, store, service, None)

    def on_publish(serving: Serving[TlsObjects]) -> None:
        intake.published.append(serving.snapshot.version)

    store.subscribe(on_publish)
    if watch != "off":
        intake.watcher, intake.passes = directory_watcher(service, polling=watch == "poll", poll_delay_ms=100)
        await intake.watcher.start()
    return intake


def fresh(issuer: Issuer) -> Leaf:
    return issuer.leaf(SERVER_NAME, ips=(SERVER_IP,))


def kubelet_write(directory: Path, leaf: Leaf, stamp: str) -> None:
    folder = directory / stamp
    folder.mkdir()
    (folder / "tls.crt").write_bytes(leaf.cert_pem)
    (folder / "tls.key").write_bytes(leaf.key_pem)
    (folder / "ca.crt").write_bytes(leaf.ca_pem() or b"")
    (directory / "..data_tmp").symlink_to(stamp)
    old = os.readlink(directory / "..data") if (directory / "..data").is_symlink() else None
    os.replace(directory / "..data_tmp", directory / "..data")
    for name in ("tls.crt", "tls.key", "ca.crt"):
        if not (directory / name).is_symlink():
            (directory / name).symlink_to(f"..data/{name}")
    if old:
        shutil.rmtree(directory / old)


def drop(directory: Path, leaf: Leaf | None, *, key: bytes | None = None, ca: Issuer | None = None, mtime_ns: int | None = None) -> None:
    """Write tls.key, then tls.crt, then ca.crt, each to a temp file renamed into place (what
    `install` and most deploy hooks do); with `mtime_ns` every file gets that timestamp. `key`
    alone (no leaf) replaces only the key."""
    files: list[tuple[str, bytes]] = []
    if key is not None or leaf is not None:
        files.append(("tls.key", key if key is not None else leaf.key_pem))  # type: ignore[union-attr]
    if leaf is not None:
        # Without ca.crt the root ends tls.crt: a chain must end at a root the edge can find.
        anchor = pem(leaf.root) if ca is None and leaf.root is not None else b""
        files.append(("tls.crt", leaf.cert_pem + anchor))
    if ca is not None:
        files.append(("ca.crt", pem(ca.cert)))
    for name, data in files:
        temp = directory / f".{name}.tmp"
        temp.write_bytes(data)
        if mtime_ns is not None:
            os.utime(temp, ns=(mtime_ns, mtime_ns))
        os.replace(temp, directory / name)
