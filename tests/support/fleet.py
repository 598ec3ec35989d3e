"""A simulated fleet for the deployment tests: certificate directories written the way the
kubelet writes a Secret volume for replicas of `edge-proxy run` (`tests.support.process`), and
a probe of how soon a replica serves a new certificate.

Only 127.0.0.1; only the processes started here are signalled. Nothing here asserts.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

from proxy.certstore.files import DATA_LINK
from tests.support.pki import Issuer, Leaf, pem
from tests.support.probes import handshake_fingerprint


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


def seconds_until_served(port: int, fingerprint: str, since: float, timeout: float = 10.0) -> float:
    """Fresh handshakes (no resumption) until `port` shows `fingerprint`; seconds from `since`
    (a `time.monotonic()`), or infinity when it did not within `timeout`. Blocking: run it in a
    thread, so the event loop's load never delays the probe."""
    while time.monotonic() - since < timeout:
        if asyncio.run(handshake_fingerprint(port)) == fingerprint:
            return time.monotonic() - since
        time.sleep(0.02)
    return float("inf")
