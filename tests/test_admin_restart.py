"""An upload as the rest of the edge sees it afterwards: the directory watcher, and a restart."""

from __future__ import annotations

import time
from pathlib import Path

from tests.support.edge import new_upload, running_admin


async def test_watcher_seeing_the_uploads_own_write_makes_no_second_version(tmp_path: Path) -> None:
    async with running_admin(tmp_path, watch=True) as admin:
        status, uploaded = await admin.upload(new_upload().body())
        assert status == 200
        assert admin.passes is not None
        await admin.passes.after(time.monotonic())  # the watcher has read what the upload wrote
        assert await admin.certificate() == uploaded


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
