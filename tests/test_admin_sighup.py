"""SIGHUP does what `POST /api/v1/reload` does, in a real `python -m proxy run` process."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.admin_helpers import MISMATCHED_KEY, edge_config_toml, eventually, free_port, new_upload


class EdgeProcess:
    def __init__(self, process: asyncio.subprocess.Process, admin_port: int, token_file: Path, session: aiohttp.ClientSession) -> None:
        self.process = process
        self.admin = f"http://127.0.0.1:{admin_port}"
        self.token_file = token_file
        self.session = session

    async def certificate(self) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token_file.read_text().strip()}"}
        async with self.session.get(f"{self.admin}/api/v1/certificate", headers=headers) as response:
            assert response.status == 200
            body: dict[str, Any] = await response.json()
            return body

    async def healthy(self) -> bool:
        try:
            async with self.session.get(f"{self.admin}/healthz") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False


@pytest.fixture
async def edge_process(tmp_path: Path) -> AsyncIterator[EdgeProcess]:
    admin_port = free_port()  # the test must know where to ask, so the admin gets a fixed port
    config = tmp_path / "edge.toml"
    config.write_text(edge_config_toml(admin_port=admin_port, http_upstream=free_port(), grpc_upstream=free_port(), watch="off"))
    log = (tmp_path / "edge.log").open("wb")
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "proxy", "run", "--config", str(config), stdout=log, stderr=log)
    try:
        async with aiohttp.ClientSession() as session:
            edge = EdgeProcess(process, admin_port, tmp_path / "state" / "admin.token", session)
            await eventually(edge.healthy, timeout=20)
            yield edge
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        log.close()


async def test_sighup_picks_up_a_drop_when_watching_is_off(edge_process: EdgeProcess, tmp_path: Path) -> None:
    first = await edge_process.certificate()
    assert first["source"] == "self-signed"
    drop = new_upload()
    drop.write_into(tmp_path / "certs")
    await asyncio.sleep(0.5)
    assert (await edge_process.certificate())["version"] == first["version"], "watch = off: nothing happens by itself"

    edge_process.process.send_signal(signal.SIGHUP)

    async def serving_the_drop() -> bool:
        return (await edge_process.certificate())["fingerprint_sha256"] == drop.fingerprint

    await eventually(serving_the_drop, timeout=10)
    serving = await edge_process.certificate()
    assert (serving["version"], serving["source"]) == (first["version"] + 1, "directory")


async def test_sighup_with_a_bad_drop_records_the_problem_and_keeps_serving(edge_process: EdgeProcess, tmp_path: Path) -> None:
    first = await edge_process.certificate()
    drop = new_upload()
    drop.write_into(tmp_path / "certs")
    (tmp_path / "certs" / "tls.key").write_bytes(new_upload().leaf.key_pem)

    edge_process.process.send_signal(signal.SIGHUP)

    async def rejected() -> bool:
        return (await edge_process.certificate())["last_error"] is not None

    await eventually(rejected, timeout=10)
    serving = await edge_process.certificate()
    assert serving["last_error"]["problems"] == [MISMATCHED_KEY]
    assert serving["last_error"]["source"] == "directory"
    assert (serving["version"], serving["fingerprint_sha256"]) == (first["version"], first["fingerprint_sha256"])
