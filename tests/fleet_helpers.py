"""A simulated fleet for the deployment tests: replicas of the real `edge-proxy run`, each
with a certificate directory the way the kubelet writes a Secret volume, a real aiohttp upstream
and a client that spreads requests across the replicas and counts every failure.

Only 127.0.0.1; only the processes started here are signalled. Nothing here asserts.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from proxy.certstore.files import DATA_LINK
from tests.certs import Issuer, Leaf, pem
from tests.edge_process import EdgeProcess, peer_fingerprint

UPSTREAM_BODY = b"served by the upstream\n"


def kubelet_update(directory: Path, files: dict[str, bytes]) -> float:
    """Write `files` into `directory` in the order of the kubelet's atomic writer and return the
    `time.monotonic()` of the `..data` rename, the one moment a reader can see the change.

    The order: a new `..<UTC time>.<random>` folder (Go's os.MkdirTemp puts a random uint32 in
    decimal there) with every file; a `..data_tmp` symlink to it renamed over `..data`; the
    visible names created as symlinks through `..data` where missing; the old folder removed.
    """
    directory.mkdir(parents=True, exist_ok=True)
    folder = directory / f"..{datetime.now(UTC):%Y_%m_%d_%H_%M_%S}.{random.randrange(10**9, 2**32)}"
    folder.mkdir(mode=0o755)
    for name, data in files.items():
        (folder / name).write_bytes(data)
        (folder / name).chmod(0o644)  # a Secret volume's defaultMode
    data_link = directory / DATA_LINK
    old = os.readlink(data_link) if data_link.is_symlink() else None
    (directory / f"{DATA_LINK}_tmp").symlink_to(folder.name)
    os.replace(directory / f"{DATA_LINK}_tmp", data_link)
    renamed_at = time.monotonic()
    for name in files:
        if not (directory / name).is_symlink():
            (directory / name).symlink_to(f"{DATA_LINK}/{name}")
    if old:
        shutil.rmtree(directory / old)
    return renamed_at


def secret_files(leaf: Leaf, ca: Issuer) -> dict[str, bytes]:
    """A cert-manager TLS Secret's keys: the full chain, the key and the CA."""
    return {"tls.crt": leaf.cert_pem, "tls.key": leaf.key_pem, "ca.crt": pem(ca.cert)}


@dataclass
class Replica(EdgeProcess):
    """One pod: EdgeProcess with `admin.uploads` set and a short drain, so stopping is quick."""

    uploads: str = "auto"
    drain_seconds: float = 2.0

    def write_config(self) -> None:
        super().write_config()
        text = self.config_path.read_text()
        assert "[admin]\n" in text, "tests/edge_process.py changed its config layout"
        self.config_path.write_text(text.replace("[admin]\n", f'[admin]\nuploads = "{self.uploads}"\n', 1))

    @property
    def token(self) -> str:
        return (self.directory / "state" / "admin.token").read_text().strip()

    async def admin(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, f"http://127.0.0.1:{self.admin_port}{path}", headers=headers, **kwargs) as response,
        ):
            return response.status, await response.json()


@asynccontextmanager
async def upstream() -> AsyncIterator[int]:
    """A real aiohttp upstream on 127.0.0.1; yields its port."""

    async def hello(request: web.Request) -> web.Response:
        return web.Response(body=UPSTREAM_BODY)

    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


@dataclass
class Tally:
    ok_by_port: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


async def spread_requests(ports: Sequence[int], ca: Issuer, stop: asyncio.Event, *, fresh: bool, limit: int = 5000) -> Tally:
    """GET through each replica in turn until `stop` is set (or `limit` requests), verifying
    the certificate against `ca` for 127.0.0.1 as a real client would. `fresh`: a new TLS
    connection for every request, else keep-alive connections. A non-200, a wrong body or any
    exception is a failure, recorded with the port."""
    context = ssl.create_default_context(cadata=pem(ca.cert).decode())
    connector = aiohttp.TCPConnector(ssl=context, force_close=fresh)
    tally = Tally()
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        for count in range(limit):
            if stop.is_set():
                break
            port = ports[count % len(ports)]
            try:
                async with session.get(f"https://127.0.0.1:{port}/api/ping?n={count}") as response:
                    body = await response.read()
                if response.status == 200 and body == UPSTREAM_BODY:
                    tally.ok_by_port[port] = tally.ok_by_port.get(port, 0) + 1
                else:
                    tally.failures.append(f"{port}: HTTP {response.status} {body[:80]!r}")
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                tally.failures.append(f"{port}: {type(e).__name__}: {e}")
    return tally


def seconds_until_served(port: int, fingerprint: str, since: float, timeout: float = 10.0) -> float:
    """Fresh handshakes (no resumption) until `port` shows `fingerprint`; seconds from `since`
    (a `time.monotonic()`), or infinity when it did not within `timeout`. Blocking: run it in a
    thread, so the event loop's load never delays the probe."""
    while time.monotonic() - since < timeout:
        if peer_fingerprint(port) == fingerprint:
            return time.monotonic() - since
        time.sleep(0.02)
    return float("inf")
