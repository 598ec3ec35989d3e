"""The upload switch (`admin.uploads`): in a fleet an upload would reach one replica's disk, so
uploads are refused with 405 where `cert_dir` is a mounted Secret, and only there, unless the
operator says otherwise. Real HTTP on 127.0.0.1, a real store, real files."""

from __future__ import annotations

import os
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from proxy.admin.uploads import secret_mount_reason, upload_policy
from proxy.certstore import files
from proxy.config import parse_config
from proxy.errors import ConfigError
from tests.support.config import Table, toml
from tests.support.edge import Admin, Upload, new_upload, running_admin
from tests.support.fleet import kubelet_update
from tests.support.pki import pem


def admin_with_uploads(base: Path, uploads: str) -> AbstractAsyncContextManager[Admin]:
    """The admin server over a real store and `base`/certs, with `admin.uploads = uploads`."""
    return running_admin(base, uploads=uploads)


def as_secret(upload: Upload) -> dict[str, bytes]:
    assert upload.root is not None
    return {"tls.crt": upload.leaf.cert_pem, "tls.key": upload.leaf.key_pem, "ca.crt": pem(upload.root.cert)}


def listing(directory: Path) -> list[str]:
    return sorted(os.listdir(directory)) if directory.exists() else []


async def test_uploads_off_answers_405_pointing_to_the_secret_and_changes_nothing(tmp_path: Path) -> None:
    async with admin_with_uploads(tmp_path, "off") as admin:
        before = await admin.certificate()
        async with admin.session.post(admin.url("/api/v1/certificate"), json=new_upload().body(), headers=admin.auth) as response:
            assert response.status == 405
            assert response.headers["Allow"] == "GET, HEAD"
            error = (await response.json())["error"]
        assert error.startswith('certificate uploads are off: admin.uploads is "off".')
        assert f"Kubernetes Secret mounted at {tmp_path / 'certs'}" in error
        assert await admin.certificate() == before
        assert listing(tmp_path / "certs") == []
        status, _ = await admin.post("/api/v1/reload", headers=admin.auth)  # reading the directory still works
        assert status == 200


async def test_uploads_off_still_needs_the_token_first(tmp_path: Path) -> None:
    async with admin_with_uploads(tmp_path, "off") as admin:
        status, body = await admin.post("/api/v1/certificate", json=new_upload().body())
        assert (status, body) == (401, {"error": "unauthorized"})


async def test_auto_on_a_kubelet_written_secret_answers_405(tmp_path: Path) -> None:
    mounted = new_upload()
    kubelet_update(tmp_path / "certs", as_secret(mounted))
    async with admin_with_uploads(tmp_path, "auto") as admin:
        assert (await admin.certificate())["fingerprint_sha256"] == mounted.fingerprint
        before = listing(tmp_path / "certs")
        status, body = await admin.upload(new_upload().body())
        assert status == 405
        assert "is a mounted Kubernetes Secret (..data points at .." in body["error"]
        assert "Kubernetes Secret mounted at" in body["error"]
        assert listing(tmp_path / "certs") == before
        assert (await admin.certificate())["fingerprint_sha256"] == mounted.fingerprint


async def test_auto_on_a_plain_directory_takes_uploads_again_and_again(tmp_path: Path) -> None:
    """Our own uploads write the `..data` layout too; they must not turn uploads off."""
    first, second = new_upload(), new_upload()
    first.write_into(tmp_path / "certs")
    async with admin_with_uploads(tmp_path, "auto") as admin:
        for upload in (new_upload(), second):
            status, body = await admin.upload(upload.body())
            assert status == 200, body
            assert (body["source"], body["fingerprint_sha256"]) == ("upload", upload.fingerprint)
        assert (tmp_path / "certs" / files.DATA_LINK).is_symlink()
        assert (await admin.certificate())["version"] == 3


async def test_on_takes_uploads_even_into_a_kubelet_style_directory(tmp_path: Path) -> None:
    kubelet_update(tmp_path / "certs", as_secret(new_upload()))
    async with admin_with_uploads(tmp_path, "on") as admin:
        upload = new_upload()
        status, body = await admin.upload(upload.body())
        assert (status, body["fingerprint_sha256"]) == (200, upload.fingerprint)


# --- the detection rule, without HTTP ---------------------------------------------------------


def statvfs_with(flags: int) -> os.statvfs_result:
    return os.statvfs_result((4096, 4096, 0, 0, 0, 0, 0, 0, flags, 255))


def test_a_read_only_mount_counts_as_a_secret_whatever_its_layout(tmp_path: Path) -> None:
    new_upload().write_into(tmp_path)
    policy = upload_policy("auto", tmp_path, statvfs=lambda _: statvfs_with(os.ST_RDONLY))
    assert not policy.allowed
    assert policy.reason == f"{tmp_path} is on a read-only mount, as a mounted Kubernetes Secret is"
    assert upload_policy("auto", tmp_path, statvfs=lambda _: statvfs_with(0)).allowed
    assert upload_policy("on", tmp_path, statvfs=lambda _: statvfs_with(os.ST_RDONLY)).allowed


def test_the_folders_our_uploads_write_are_never_taken_for_the_kubelets(tmp_path: Path) -> None:
    material = new_upload().leaf
    for moment in (datetime(2026, 1, 2, 3, 4, 5, 0, UTC), datetime(2026, 12, 31, 23, 59, 59, 999999, UTC)):
        files.write_material_dir(tmp_path, material.material(), moment)
        assert secret_mount_reason(tmp_path) is None


def test_a_missing_directory_is_a_plain_one(tmp_path: Path) -> None:
    assert upload_policy("auto", tmp_path / "not-yet").allowed


# --- the config key ---------------------------------------------------------------------------


def config_text(admin: Table) -> str:
    listener = {"name": "web", "protocol": "https", "listen": "127.0.0.1:0", "upstream": "http://127.0.0.1:8081"}
    return toml({"tls": {"server_name": "edge.example"}, "admin": admin, "listeners": [listener]})


def test_admin_uploads_defaults_to_auto_and_takes_on_and_off() -> None:
    assert parse_config(config_text({})).admin.uploads == "auto"
    for mode in ("auto", "on", "off"):
        assert parse_config(config_text({"uploads": mode})).admin.uploads == mode


def test_admin_uploads_rejects_anything_else_naming_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config_text({"uploads": "never"}))
    assert caught.value.problems == ('<embedded default>: admin.uploads: must be "auto", "on" or "off", not \'never\'',)
    with pytest.raises(ConfigError) as caught:
        parse_config(config_text({"uploads": False}))
    assert caught.value.problems == ("<embedded default>: admin.uploads: must be a string, not true or false False",)
