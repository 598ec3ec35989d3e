"""The real `edge-proxy run` as a child process, for tests of the process model (workers,
signals, drain, memory) and of a fleet of replicas. Only loopback addresses; only the PIDs
started here are signalled."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp

from tests.support.config import Table, edge_config, write_config
from tests.support.pki import SERVER_IP
from tests.support.probes import free_port

REPO = Path(__file__).resolve().parents[2]


@dataclass
class EdgeProcess:
    """`edge-proxy run` on the config of `tests.support.config.edge_config`, its ports fixed in
    advance (the test must know where to connect). `grpc_upstream_port` defaults to a port
    nobody listens on: a gRPC listener rightly closes a client connection it cannot relay."""

    directory: Path
    upstream_port: int
    workers: int = 1
    watch: str = "events"
    drain_seconds: float = 10.0
    uploads: str = "auto"
    log_settings: Table | None = None  # the [log] table
    # Standard output a pipe whose reading end is closed (what a crashed log collector leaves);
    # standard error still goes to edge.log.
    closed_stdout: bool = False
    grpc_upstream_port: int = field(default_factory=free_port)
    https_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def cert_dir(self) -> Path:
        return self.directory / "certs"

    @property
    def config_path(self) -> Path:
        return self.directory / "edge.toml"

    def config(self) -> Table:
        return edge_config(
            http_upstream=self.upstream_port,
            grpc_upstream=self.grpc_upstream_port,
            watch=self.watch,
            admin_port=self.admin_port,
            https_port=self.https_port,
            grpc_port=self.grpc_port,
            server={"workers": self.workers, "drain_seconds": self.drain_seconds},
            admin={"uploads": self.uploads},
            log=self.log_settings,
        )

    def write_config(self) -> None:
        write_config(self.directory, self.config())

    @property
    def token(self) -> str:
        return (self.directory / "state" / "admin.token").read_text().strip()

    async def admin(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        """One admin API request with the token; (status, JSON body or text)."""
        headers = {"Authorization": f"Bearer {self.token}"}
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, f"http://{SERVER_IP}:{self.admin_port}{path}", headers=headers, **kwargs) as response,
        ):
            body = await response.json() if response.content_type == "application/json" else await response.text()
            return response.status, body

    async def healthy(self) -> bool:
        try:
            async with aiohttp.ClientSession() as session, session.get(f"http://{SERVER_IP}:{self.admin_port}/healthz") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    async def start(self, timeout: float = 30.0) -> None:
        self.write_config()
        log = (self.directory / "edge.log").open("wb")
        stdout: int | IO[bytes] = log
        if self.closed_stdout:
            reading_end, stdout = os.pipe()
            os.close(reading_end)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "proxy", "run", "--config", str(self.config_path)],
                cwd=self.directory,
                stdout=stdout,
                stderr=log,
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )
        finally:
            if isinstance(stdout, int):
                os.close(stdout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"edge exited with {self.process.returncode}:\n{self.log()}")
            if await self.healthy():
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"edge not healthy within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        path = self.directory / "edge.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    async def wait(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        return await asyncio.to_thread(self.process.wait, timeout)

    async def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.process.wait, 20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                await asyncio.to_thread(self.process.wait, 5)
