"""An upload as the rest of the edge sees it afterwards: the directory watcher, and a restart."""

from __future__ import annotations

from pathlib import Path

from tests.support.edge import new_upload, running_admin
from tests.support.probes import eventually


async def test_watcher_seeing_the_uploads_own_write_makes_no_second_version(tmp_path: Path) -> None:
    async with running_admin(tmp_path, watch=True) as admin:
        status, uploaded = await admin.upload(new_upload().body())
        assert status == 200
        # Reading the directory the upload wrote (what the watcher does next) makes no new version.
        status, reloaded = await admin.post("/api/v1/reload", headers=admin.auth)
        assert (status, reloaded) == (200, uploaded)
        # A later drop is the watcher's next version: its pass over the upload's write made none.
        drop = new_upload()
        drop.write_into(admin.service.tls.cert_dir)

        async def drop_served() -> bool:
            return (await admin.certificate())["fingerprint_sha256"] == drop.fingerprint

        await eventually(drop_served)
        assert (await admin.certificate())["version"] == uploaded["version"] + 1


async def test_upload_survives_a_restart(tmp_path: Path) -> None:
    upload = new_upload()
    async with running_admin(tmp_path) as admin:
        status, _ = await admin.upload(upload.body())
        assert status == 200
    async with running_admin(tmp_path) as admin:
        serving = await admin.certificate()
    assert serving["fingerprint_sha256"] == upload.fingerprint
    assert serving["source"] == "upload"
    assert serving["version"] == 1, "a new process counts its own versions"
