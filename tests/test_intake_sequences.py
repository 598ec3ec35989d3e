"""Certificate drops in quick succession, in both watch modes: every drop is served (the
fingerprint a brand-new TLS handshake gets), and a mismatched key dropped right after a swap is
reported, whatever the files' timestamps say. Real files, real watchfiles, real handshakes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proxy import metrics
from proxy.certstore import files
from proxy.certstore.watcher import DirectoryWatcher
from tests.support.edge import Admin, running_admin
from tests.support.intake import Intake, drop, fresh, kubelet_write, start_intake
from tests.support.listeners import RunningListener, https, route, running_listener
from tests.support.pki import Issuer, Leaf
from tests.support.probes import eventually, free_port, handshake_fingerprint

pytestmark = pytest.mark.slow

DROPS = 6
# A timestamp every drop's files get in the same-timestamp tests: what `cp -p`, `tar x` or
# `rsync -t` leave behind, and what a filesystem with whole-second (or 2 s) times shows for
# drops made within the same second.
FIXED_MTIME_NS = 1_700_000_000 * 10**9


class Handshakes:
    """An HTTPS listener serving from the intake's store, as the edge's listeners do, and what a
    brand-new handshake on it is shown."""

    def __init__(self, listener: RunningListener) -> None:
        self.port = listener.port

    async def fingerprint(self) -> str:
        return await handshake_fingerprint(self.port)  # no trust: the test compares fingerprints

    async def serves(self, leaf: Leaf, timeout: float = 10.0) -> None:
        """Wait until a new handshake is shown `leaf`."""

        async def shown() -> bool:
            return await self.fingerprint() == leaf.fingerprint

        await eventually(shown, timeout)


@pytest.fixture(params=["events", "poll"])
async def watched(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Intake]:
    tmp_path.joinpath("certs").mkdir()
    intake = await start_intake(tmp_path, watch=request.param)
    yield intake
    assert intake.watcher is not None
    await intake.watcher.stop()


@pytest.fixture
async def handshakes(watched: Intake) -> AsyncIterator[Handshakes]:
    async with running_listener(https(route(free_port())), store=watched.store) as listener:
        yield Handshakes(listener)


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
        await eventually(lambda: watched.store.last_error is not None, timeout=10)
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
        await eventually(lambda: (metrics.REGISTRY.get_sample_value("edge_certificate_dir_last_read_timestamp_seconds") or 0) > first)
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
        await eventually(lambda: admin.service.store.current.snapshot.fingerprint == leaf.fingerprint)
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
        async with running_listener(https(route(free_port())), store=intake.store) as listener:
            second = fresh(root)
            drop(outside, second)
            await Handshakes(listener).serves(second)
    finally:
        await watcher.stop()
