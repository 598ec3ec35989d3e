"""Certificate drops in quick succession, in both watch modes: every drop is served (the
fingerprint a brand-new TLS handshake gets), and a mismatched key dropped right after a swap is
reported, whatever the files' timestamps say. Real files, real watchfiles, real handshakes.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proxy import metrics
from proxy.certstore import files
from proxy.certstore.store import CertStore
from proxy.certstore.watcher import DirectoryWatcher
from proxy.tlsmaterial import TlsObjects, listening_context
from tests.admin_helpers import Admin, running_admin
from tests.certs import Issuer, Leaf, pem
from tests.test_intake import Intake, fresh, kubelet_write, start_intake, wait_for

pytestmark = pytest.mark.slow

DROPS = 6
# A timestamp every drop's files get in the same-timestamp tests: what `cp -p`, `tar x` or
# `rsync -t` leave behind, and what a filesystem with whole-second (or 2 s) times shows for
# drops made within the same second.
FIXED_MTIME_NS = 1_700_000_000 * 10**9


class Handshakes:
    """A TLS server on 127.0.0.1 that hands each new handshake the store's current version,
    as the listeners do, and a client that reports which leaf it was shown."""

    def __init__(self, store: CertStore[TlsObjects]) -> None:
        self._context = listening_context("1.2", lambda: store.current.tls.ssl_context)
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Handshakes:
        async def close(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        self._server = await asyncio.start_server(close, "127.0.0.1", 0, ssl=self._context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def fingerprint(self) -> str:
        """SHA-256 of the leaf a new connection is shown (a fresh client: no resumption)."""
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.check_hostname = False
        client.verify_mode = ssl.CERT_NONE  # the test compares fingerprints; trust is not the question
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port, ssl=client), 10)
        try:
            ssl_object = writer.get_extra_info("ssl_object")
            return hashlib.sha256(ssl_object.getpeercert(binary_form=True)).hexdigest()
        finally:
            writer.close()

    async def serves(self, leaf: Leaf, timeout: float = 10.0) -> None:
        """Wait until a new handshake is shown `leaf`; fails naming what it was shown instead."""
        seen = ""
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            seen = await self.fingerprint()
            if seen == leaf.fingerprint:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"a new handshake was still shown {seen}, not the dropped {leaf.fingerprint}, after {timeout} s")


def drop(directory: Path, leaf: Leaf | None, *, key: bytes | None = None, ca: Issuer | None = None, mtime_ns: int | None = None) -> None:
    """Write tls.key, then tls.crt, then ca.crt, each to a temp file renamed into place (what
    `install` and most deploy hooks do); with `mtime_ns` every file gets that timestamp."""
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


@pytest.fixture(params=["events", "poll"])
async def watched(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Intake]:
    tmp_path.joinpath("certs").mkdir()
    intake = await start_intake(tmp_path, watch=request.param)
    yield intake
    assert intake.watcher is not None
    await intake.watcher.stop()


@pytest.fixture
async def handshakes(watched: Intake) -> AsyncIterator[Handshakes]:
    async with Handshakes(watched.store) as server:
        yield server


def rejections() -> float:
    return metrics.REGISTRY.get_sample_value("edge_certificate_rejections_total", {"source": "directory"}) or 0.0


async def test_drops_back_to_back_are_each_served(watched: Intake, handshakes: Handshakes, root: Issuer) -> None:
    """Each drop lands as soon as the previous one serves: several within one second."""
    for _ in range(DROPS):
        leaf = fresh(root)
        drop(watched.cert_dir, leaf, ca=root)
        await handshakes.serves(leaf)
        assert watched.fingerprint == leaf.fingerprint
    assert watched.published == list(range(2, DROPS + 2))
    assert watched.store.last_error is None


async def test_drops_with_identical_timestamps_are_each_served(watched: Intake, handshakes: Handshakes, root: Issuer) -> None:
    """Every file of every drop carries the same timestamp (and an ECDSA key the same size):
    only the content tells the drops apart."""
    for _ in range(DROPS):
        leaf = fresh(root)
        drop(watched.cert_dir, leaf, mtime_ns=FIXED_MTIME_NS)
        await handshakes.serves(leaf)
    assert watched.published == list(range(2, DROPS + 2))
    assert watched.store.last_error is None


async def test_mismatched_key_dropped_right_after_a_swap_is_reported(watched: Intake, handshakes: Handshakes, root: Issuer) -> None:
    for round_ in range(3):
        leaf = fresh(root)
        drop(watched.cert_dir, leaf, mtime_ns=FIXED_MTIME_NS)
        await handshakes.serves(leaf)
        assert watched.store.last_error is None
        counted = rejections()
        drop(watched.cert_dir, None, key=fresh(root).key_pem, mtime_ns=FIXED_MTIME_NS)
        await wait_for(lambda: watched.store.last_error is not None, timeout=10)
        error = watched.store.last_error
        assert error is not None, round_
        assert (error.source, error.problems) == ("directory", ("the private key does not match the certificate",))
        assert rejections() == counted + 1
        assert await handshakes.fingerprint() == leaf.fingerprint  # the previous certificate keeps serving
    assert watched.published == [2, 3, 4]


async def test_kubernetes_secret_updates_back_to_back_are_each_served(watched: Intake, handshakes: Handshakes, root: Issuer) -> None:
    for number in range(DROPS):
        leaf = fresh(root)
        kubelet_write(watched.cert_dir, leaf, f"..2026_11_28_10_00_{number:02d}.000000001")
        await handshakes.serves(leaf)
    assert watched.published == list(range(2, DROPS + 2))


async def test_polling_reads_the_directory_without_any_change(tmp_path: Path) -> None:
    """What the last-read metric shows: each pass, changed or not."""
    tmp_path.joinpath("certs").mkdir()
    intake = await start_intake(tmp_path, watch="poll")
    try:
        first = metrics.REGISTRY.get_sample_value("edge_certificate_dir_last_read_timestamp_seconds")
        assert first is not None and first > 0
        await wait_for(lambda: (metrics.REGISTRY.get_sample_value("edge_certificate_dir_last_read_timestamp_seconds") or 0) > first)
        assert intake.published == []
    finally:
        assert intake.watcher is not None
        await intake.watcher.stop()


async def test_metrics_show_when_the_directory_was_last_read(tmp_path: Path, root: Issuer) -> None:
    tmp_path.joinpath("certs").mkdir()
    async with running_admin(tmp_path, watch=True) as admin:
        before = await last_read(admin)
        leaf = fresh(root)
        drop(tmp_path / "certs", leaf)
        await wait_for(lambda: admin.service.store.current.snapshot.fingerprint == leaf.fingerprint)
        assert await last_read(admin) > before


async def last_read(admin: Admin) -> float:
    """The gauge as GET /metrics shows it."""
    status, text = await admin.get("/metrics")
    assert status == 200
    lines = [line for line in text.splitlines() if line.startswith("edge_certificate_dir_last_read_timestamp_seconds ")]
    assert len(lines) == 1, text
    return float(lines[0].split()[1])


def test_a_directory_read_is_told_apart_by_content_alone(tmp_path: Path, root: Issuer) -> None:
    first, second = fresh(root), fresh(root)
    drop(tmp_path, first, mtime_ns=FIXED_MTIME_NS)
    before = files.read_cert_dir(tmp_path)
    drop(tmp_path, first)  # the same bytes again, new files and timestamps
    assert files.read_cert_dir(tmp_path).digest == before.digest
    drop(tmp_path, second, mtime_ns=FIXED_MTIME_NS)  # new bytes, the old timestamps
    assert files.read_cert_dir(tmp_path).digest != before.digest
    (tmp_path / "tls.key").unlink()
    missing = files.read_cert_dir(tmp_path)
    assert missing.absent == ("tls.key", "ca.crt") and missing.digest != before.digest


async def test_files_symlinked_from_outside_the_directory_are_read_again_without_events(tmp_path: Path, root: Issuer) -> None:
    """A change behind a symlink that leads out of `cert_dir` raises no event in it (as when
    tls.crt points into certbot's `live/`); the periodic read serves it all the same."""
    outside, certs = tmp_path / "outside", tmp_path / "certs"
    outside.mkdir()
    certs.mkdir()
    first = fresh(root)
    drop(outside, first)
    for name in ("tls.crt", "tls.key"):
        (certs / name).symlink_to(outside / name)
    intake = await start_intake(tmp_path, watch="off")
    assert intake.fingerprint == first.fingerprint
    watcher = DirectoryWatcher(certs, intake.service.directory_changed, rescan_seconds=0.3)
    await watcher.start()
    try:
        async with Handshakes(intake.store) as server:
            second = fresh(root)
            drop(outside, second)
            await server.serves(second)
    finally:
        await watcher.stop()
