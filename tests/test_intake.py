"""Certificate drops as operators and tools make them, against real files and real watchfiles.

Each test asserts what is served afterwards (version and fingerprint) and, for drops that are
half-written for a while, that nothing in between was published or reported.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from proxy.certstore import files
from proxy.certstore.pem import Material
from proxy.certstore.service import CertificateService
from proxy.certstore.store import CertStore
from proxy.errors import MaterialError
from proxy.tlsmaterial import TlsObjects, tls_preparer
from tests.support.edge import edge_settings
from tests.support.intake import Intake, fresh, kubelet_write, start_intake
from tests.support.pki import Issuer, Leaf, pem
from tests.support.probes import eventually

pytestmark = pytest.mark.slow


@pytest.fixture
async def intake(tmp_path: Path) -> AsyncIterator[Intake]:
    tmp_path.joinpath("certs").mkdir()
    result = await start_intake(tmp_path)
    yield result
    if result.watcher:
        await result.watcher.stop()


@pytest.fixture
def issuer(root: Issuer) -> Issuer:
    return root


async def serve_fresh(intake: Intake, issuer: Issuer) -> Leaf:
    """A fresh leaf written into the directory, once it is served."""
    leaf = fresh(issuer)
    leaf.write(intake.cert_dir)
    await intake.served(leaf)
    return leaf


# --- start-up ---------------------------------------------------------------------------------


async def test_first_start_serves_a_self_signed_default_and_reuses_it(tmp_path: Path) -> None:
    first = await start_intake(tmp_path, watch="off")
    snapshot = first.store.current.snapshot
    assert (snapshot.version, snapshot.source) == (1, "self-signed")
    assert snapshot.material.leaf.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert (tmp_path / "state" / files.SELF_SIGNED_KEY).stat().st_mode & 0o777 == 0o600
    again = await start_intake(tmp_path, watch="off")
    assert again.fingerprint == first.fingerprint


async def test_self_signed_is_made_anew_when_the_names_change(tmp_path: Path) -> None:
    first = await start_intake(tmp_path, watch="off")
    other = edge_settings(tmp_path, watch="off", tls={"server_name": "other.example", "ip_addresses": ["10.0.0.5"]}).tls
    store: CertStore[TlsObjects] = CertStore(tls_preparer("1.2"))
    await CertificateService(store, other).load_initial()
    assert store.current.snapshot.fingerprint != first.fingerprint
    from proxy.certstore.validate import san_names

    assert san_names(store.current.snapshot.material.leaf) == (["other.example", "localhost"], ["10.0.0.5"])


async def test_valid_directory_material_at_start(tmp_path: Path, issuer: Issuer) -> None:
    leaf = fresh(issuer)
    leaf.write(tmp_path / "certs")
    started = await start_intake(tmp_path, watch="off")
    assert (started.version, started.store.current.snapshot.source, started.fingerprint) == (1, "directory", leaf.fingerprint)


async def test_restart_prefers_last_good_over_self_signed_and_invalid_material_never_stops_start(tmp_path: Path, issuer: Issuer) -> None:
    good = fresh(issuer)
    good.write(tmp_path / "certs")
    await start_intake(tmp_path, watch="off")
    assert (tmp_path / "state" / files.LAST_GOOD).stat().st_mode & 0o777 == 0o600
    (tmp_path / "certs" / "tls.key").write_bytes(fresh(issuer).key_pem)  # now mismatched
    restarted = await start_intake(tmp_path, watch="off")
    assert restarted.fingerprint == good.fingerprint
    assert restarted.store.current.snapshot.source == "directory"
    error = restarted.store.last_error
    assert error is not None and error.problems == ("the private key does not match the certificate",)


async def test_missing_cert_dir_at_start_is_not_an_error(tmp_path: Path) -> None:
    started = await start_intake(tmp_path, watch="off")
    assert started.store.current.snapshot.source == "self-signed"
    assert started.store.last_error is None


# --- drops while running ----------------------------------------------------------------------


async def test_plain_drop_into_an_empty_directory(intake: Intake, issuer: Issuer) -> None:
    leaf = fresh(issuer)
    leaf.write(intake.cert_dir)
    await intake.served(leaf)
    assert intake.version == 2 and intake.store.current.snapshot.source == "directory"
    assert intake.published == [2]


async def test_rename_drop(intake: Intake, issuer: Issuer, tmp_path: Path) -> None:
    leaf = fresh(issuer)
    staging = tmp_path / "staging"
    leaf.write(staging)
    os.replace(staging / "ca.crt", intake.cert_dir / "ca.crt")
    os.replace(staging / "tls.key", intake.cert_dir / "tls.key")
    os.replace(staging / "tls.crt", intake.cert_dir / "tls.crt")
    await intake.served(leaf)
    assert intake.published == [2]


async def test_slow_in_place_write_publishes_once_and_reports_nothing(intake: Intake, issuer: Issuer) -> None:
    await serve_fresh(intake, issuer)
    second = fresh(issuer)
    (intake.cert_dir / "tls.key").write_bytes(second.key_pem)
    data = second.cert_pem
    with (intake.cert_dir / "tls.crt").open("wb") as out:
        for start in range(0, len(data), 64):
            out.write(data[start : start + 64])
            out.flush()
            await asyncio.sleep(0.03)  # about 0.4 s in all, each pause shorter than the settle time
    await intake.served(second)
    assert intake.published == [2, 3]
    assert intake.store.last_error is None


async def test_key_written_seconds_before_the_certificate_is_no_error(intake: Intake, issuer: Issuer) -> None:
    first = await serve_fresh(intake, issuer)
    second = fresh(issuer)
    (intake.cert_dir / "tls.key").write_bytes(second.key_pem)
    await asyncio.sleep(1.2)  # settled with a mismatch: still inside the 2 s re-check window
    assert intake.fingerprint == first.fingerprint and intake.store.last_error is None
    (intake.cert_dir / "tls.crt").write_bytes(second.cert_pem)
    written = time.monotonic()
    await intake.served(second)
    await intake.watcher_read_since(written)  # every pass that could report the mismatch is over
    assert intake.store.last_error is None
    assert intake.published == [2, 3]


async def test_mismatch_that_never_settles_is_reported_within_3_seconds(intake: Intake, issuer: Issuer) -> None:
    first = await serve_fresh(intake, issuer)
    (intake.cert_dir / "tls.key").write_bytes(fresh(issuer).key_pem)
    changed = time.monotonic()
    await eventually(lambda: intake.store.last_error is not None, timeout=10)
    assert time.monotonic() - changed < 6  # 3 s promised; the margin is for a loaded machine
    assert intake.store.last_error is not None
    assert intake.store.last_error.problems == ("the private key does not match the certificate",)
    assert intake.store.last_error.source == "directory"
    assert intake.fingerprint == first.fingerprint


async def test_invalid_drop_keeps_serving_then_good_drop_clears_the_error(intake: Intake, issuer: Issuer) -> None:
    first = await serve_fresh(intake, issuer)
    wrong = issuer.leaf("other.example")
    wrong.write(intake.cert_dir)
    await eventually(lambda: intake.store.last_error is not None)
    assert intake.store.last_error is not None
    assert intake.store.last_error.problems == ("the certificate covers other.example but not edge.example or 127.0.0.1",)
    assert intake.fingerprint == first.fingerprint
    good = fresh(issuer)
    good.write(intake.cert_dir)
    await intake.served(good)
    assert intake.store.last_error is None


async def test_kubernetes_secret_volume_update(intake: Intake, issuer: Issuer) -> None:
    """The kubelet's atomic writer: files are symlinks through ..data; an update writes a new
    timestamped folder, points ..data_tmp at it and renames that over ..data."""
    first, second = fresh(issuer), fresh(issuer)
    kubelet_write(intake.cert_dir, first, "..2026_11_28_10_00_00.000000001")
    await intake.served(first)
    kubelet_write(intake.cert_dir, second, "..2026_11_28_10_05_00.000000002")
    await intake.served(second)
    assert intake.published == [2, 3]


async def test_cert_dir_created_after_start(tmp_path: Path, issuer: Issuer) -> None:
    started = await start_intake(tmp_path, cert_dir=tmp_path / "later" / "certs")
    try:
        assert started.watcher is not None and started.watcher.watching
        leaf = fresh(issuer)
        leaf.write(tmp_path / "later" / "certs")
        await started.served(leaf)
    finally:
        assert started.watcher is not None
        await started.watcher.stop()


async def test_polling_mode_sees_a_drop(tmp_path: Path, issuer: Issuer) -> None:
    (tmp_path / "certs").mkdir()
    started = await start_intake(tmp_path, watch="poll")
    try:
        leaf = fresh(issuer)
        leaf.write(tmp_path / "certs")
        await started.served(leaf)
    finally:
        assert started.watcher is not None
        await started.watcher.stop()


async def test_missing_files_alone_are_never_a_rejection(intake: Intake, issuer: Issuer) -> None:
    first = await serve_fresh(intake, issuer)
    (intake.cert_dir / "tls.key").unlink()
    await intake.watcher_read_since(time.monotonic())
    assert intake.store.last_error is None and intake.fingerprint == first.fingerprint


async def test_same_material_again_and_ca_alone_are_no_new_version(intake: Intake, issuer: Issuer, root: Issuer) -> None:
    leaf = fresh(issuer)
    leaf.write(intake.cert_dir)
    await intake.served(leaf)
    (intake.cert_dir / "tls.crt").write_bytes(leaf.cert_pem)  # touched, same bytes
    (intake.cert_dir / "ca.crt").write_bytes(pem(root.cert))

    def ca_kept() -> bool:
        saved = files.load_last_good(intake.tls.state_dir)
        return saved is not None and saved[0].ca_pem is not None

    await eventually(lambda: intake.store.current.snapshot.material.ca_pem is not None and ca_kept())
    assert intake.version == 2 and intake.published == [2]


# --- upload and reload (the admin API's calls) ------------------------------------------------


async def test_upload_writes_all_files_atomically_and_the_watcher_adds_no_version(intake: Intake, issuer: Issuer, root: Issuer) -> None:
    leaf = fresh(issuer)
    offer = await intake.service.upload(leaf.material(root))
    assert offer.swapped and offer.snapshot.source == "upload" and intake.fingerprint == leaf.fingerprint
    assert (intake.cert_dir / "tls.crt").is_symlink() and (intake.cert_dir / "..data").is_symlink()
    assert files.read_material_dir(intake.cert_dir).key_pem == leaf.key_pem
    assert (intake.cert_dir / "..data" / "tls.key").stat().st_mode & 0o777 == 0o600
    await intake.watcher_read_since(time.monotonic())  # the watcher has read what the upload wrote
    assert intake.published == [2] and intake.store.current.snapshot.source == "upload"
    second = fresh(issuer)
    # Without ca.crt, the root ends tls.crt.
    await intake.service.upload(Material(second.cert_pem + pem(root.cert), second.key_pem))
    await intake.watcher_read_since(time.monotonic())
    assert intake.published == [2, 3] and not (intake.cert_dir / "ca.crt").exists()
    assert len([p for p in intake.cert_dir.iterdir() if p.is_dir() and not p.is_symlink()]) == 1


async def test_rejected_upload_changes_nothing(intake: Intake, issuer: Issuer) -> None:
    leaf = fresh(issuer)
    before = intake.fingerprint
    with pytest.raises(MaterialError) as caught:
        await intake.service.upload(Material(leaf.cert_pem, fresh(issuer).key_pem, leaf.ca_pem()))
    assert caught.value.problems == ("the private key does not match the certificate",)
    assert intake.fingerprint == before and list(intake.cert_dir.iterdir()) == []
    error = intake.store.last_error
    assert error is not None and error.source == "upload"


async def test_reload_with_watching_off(tmp_path: Path, issuer: Issuer) -> None:
    started = await start_intake(tmp_path, watch="off")
    leaf = fresh(issuer)
    leaf.write(tmp_path / "certs")
    assert started.watcher is None  # watch = "off": nothing reads the directory until asked
    assert started.store.current.snapshot.source == "self-signed"
    offer = await started.service.reload()
    assert offer.swapped and started.fingerprint == leaf.fingerprint
    again = await started.service.reload()
    assert not again.swapped and again.snapshot.version == 2


def test_loaded_at_is_utc(tmp_path: Path) -> None:
    started = asyncio.run(start_intake(tmp_path, watch="off"))
    assert started.store.current.snapshot.loaded_at.tzinfo is UTC
    assert abs((datetime.now(UTC) - started.store.current.snapshot.loaded_at).total_seconds()) < 60
