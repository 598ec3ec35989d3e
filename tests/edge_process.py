"""Running the real `edge-proxy run` as a child process for tests of the process model:
worker processes, signals, drain. Only loopback addresses; only the PIDs started here are
signalled."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class EdgeProcess:
    directory: Path
    upstream_port: int
    workers: int = 1
    watch: str = "events"
    drain_seconds: float = 10.0
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

    def write_config(self) -> None:
        self.config_path.write_text(
            f"""
[server]
workers = {self.workers}
drain_seconds = {self.drain_seconds}

[tls]
cert_dir = "certs"
state_dir = "state"
server_name = "edge.example"
ip_addresses = ["127.0.0.1"]
watch = "{self.watch}"

[admin]
listen = "127.0.0.1:{self.admin_port}"

[[listeners]]
name = "web"
protocol = "https"
listen = "127.0.0.1:{self.https_port}"
upstream = "http://127.0.0.1:{self.upstream_port}"

[[listeners]]
name = "grpc"
protocol = "grpc"
listen = "127.0.0.1:{self.grpc_port}"
upstream = "127.0.0.1:{free_port()}"
"""
        )

    async def start(self, timeout: float = 30.0) -> None:
        self.write_config()
        log = (self.directory / "edge.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "proxy", "run", "--config", str(self.config_path)],
            cwd=self.directory,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise AssertionError(f"edge exited with {self.process.returncode}:\n{self.log()}")
                try:
                    async with session.get(f"http://127.0.0.1:{self.admin_port}/healthz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
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


def peer_fingerprint(port: int, server_name: str | None = None) -> str:
    """SHA-256 of the certificate a fresh TLS handshake to 127.0.0.1:port gets."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, context.wrap_socket(raw, server_hostname=server_name) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()
