"""SIGHUP does what `POST /api/v1/reload` does, in a real `python -m proxy run` process."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.edge import MISMATCHED_KEY, new_upload
from tests.support.probes import eventually, free_port
from tests.support.process import EdgeProcess


@pytest.fixture
async def edge_process(tmp_path: Path) -> AsyncIterator[EdgeProcess]:
    edge = EdgeProcess(tmp_path, upstream_port=free_port(), watch="off")
    await edge.start()
    try:
        yield edge
        edge.signal(signal.SIGTERM)
        assert await edge.wait(15) == 0
    finally:
        await edge.stop()


async def certificate(edge: EdgeProcess) -> dict[str, Any]:
    status, body = await edge.admin("GET", "/api/v1/certificate")
    assert status == 200, body
    assert isinstance(body, dict)
    return body


async def test_sighup_picks_up_a_drop_when_watching_is_off(edge_process: EdgeProcess) -> None:
    first = await certificate(edge_process)
    assert first["source"] == "self-signed"
    drop = new_upload()
    drop.write_into(edge_process.cert_dir)
    # watch = off: nothing reads the directory until the signal (the in-process edge shows it
    # runs no watcher at all, in test_admin_edge.py).
    assert (await certificate(edge_process))["version"] == first["version"]

    edge_process.signal(signal.SIGHUP)

    async def serving_the_drop() -> bool:
        return (await certificate(edge_process))["fingerprint_sha256"] == drop.fingerprint

    await eventually(serving_the_drop, timeout=10)
    serving = await certificate(edge_process)
    assert (serving["version"], serving["source"]) == (first["version"] + 1, "directory")


async def test_sighup_with_a_bad_drop_records_the_problem_and_keeps_serving(edge_process: EdgeProcess) -> None:
    first = await certificate(edge_process)
    drop = new_upload()
    drop.write_into(edge_process.cert_dir)
    (edge_process.cert_dir / "tls.key").write_bytes(new_upload().leaf.key_pem)

    edge_process.signal(signal.SIGHUP)

    async def rejected() -> bool:
        return (await certificate(edge_process))["last_error"] is not None

    await eventually(rejected, timeout=10)
    serving = await certificate(edge_process)
    assert serving["last_error"]["problems"] == [MISMATCHED_KEY]
    assert serving["last_error"]["source"] == "directory"
    assert (serving["version"], serving["fingerprint_sha256"]) == (first["version"], first["fingerprint_sha256"])
