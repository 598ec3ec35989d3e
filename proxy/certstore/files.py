"""The certificate store's files: reading `cert_dir`, writing uploads into it atomically, and
the proxy's own state (last good material, the self-signed default) in `state_dir`.

All file I/O of the store lives here; nothing here validates or knows about TLS objects.
Private keys are written with mode 0600, every write is temp-file-then-rename.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from proxy.certstore.pem import Material
from proxy.errors import MaterialError, MaterialMissing

CERT_FILE, KEY_FILE, CA_FILE = "tls.crt", "tls.key", "ca.crt"
# The Kubernetes atomic-writer layout: files are symlinks through `..data`, which points at a
# timestamped folder and is swapped with one rename.
DATA_LINK = "..data"
LAST_GOOD = "last-good.json"
SELF_SIGNED_CERT, SELF_SIGNED_KEY = "self-signed.crt", "self-signed.key"
MAX_FILE_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class DirectoryRead:
    """One read of `cert_dir`: each file's bytes (None when absent) and what could not be read.

    `digest` covers exactly these bytes, so two reads with equal digests found the same
    content, whatever the files' timestamps, sizes, inodes or symlinks say.
    """

    cert_dir: Path
    cert: bytes | None
    key: bytes | None
    ca: bytes | None
    absent: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for part in (self.cert, self.key, self.ca):
            h.update(b"-" if part is None else b"%d:" % len(part) + part)
        for problem in self.problems:
            h.update(problem.encode())
        return h.hexdigest()

    def material(self) -> Material:
        """Raises MaterialMissing when `tls.crt` or `tls.key` is absent, MaterialError when a
        file exists but could not be read."""
        missing = [name for name in (CERT_FILE, KEY_FILE) if name in self.absent]
        if missing:
            raise MaterialMissing(f"{self.cert_dir}: no {' and no '.join(missing)} yet")
        if self.problems or self.cert is None or self.key is None:
            raise MaterialError(self.problems or [f"{self.cert_dir}: tls.crt or tls.key could not be read"])
        return Material(self.cert, self.key, self.ca)


def read_cert_dir(cert_dir: Path) -> DirectoryRead:
    """Read `tls.crt`, `tls.key` and the optional `ca.crt`, symlinks followed (a dangling link
    or a missing directory counts as absent). Never raises for a file; problems are kept."""
    absent: list[str] = []
    problems: list[str] = []
    cert = _read(cert_dir, CERT_FILE, absent, problems)
    key = _read(cert_dir, KEY_FILE, absent, problems)
    ca = _read(cert_dir, CA_FILE, absent, problems)
    return DirectoryRead(cert_dir, cert, key, ca, tuple(absent), tuple(problems))


def read_material_dir(cert_dir: Path) -> Material:
    """`read_cert_dir(cert_dir).material()`: raises MaterialMissing or MaterialError."""
    return read_cert_dir(cert_dir).material()


def _read(cert_dir: Path, name: str, absent: list[str], problems: list[str]) -> bytes | None:
    try:
        with (cert_dir / name).open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError):
        absent.append(name)
        return None
    except OSError as e:
        problems.append(f"{name} cannot be read: {e.strerror or e}")
        return None
    if len(data) > MAX_FILE_BYTES:
        problems.append(f"{name} is larger than {MAX_FILE_BYTES // 1024} KiB; it is not a certificate file")
        return None
    return data


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write `data` to `path` atomically (temp file in the same folder, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def write_material_dir(cert_dir: Path, material: Material, now: datetime) -> None:
    """Write material into `cert_dir` so that a reader sees all three files change together.

    The files go into a new timestamped folder; `..data` is repointed with one rename; the
    visible names are symlinks through `..data` (converted from plain files the first time).
    Raises OSError (read-only mount, permissions): nothing visible has changed then.
    """
    cert_dir.mkdir(parents=True, exist_ok=True)
    folder = cert_dir / f"..{now:%Y_%m_%d_%H_%M_%S.%f}"
    folder.mkdir(mode=0o755)
    try:
        write_private(folder / CERT_FILE, material.cert_pem, 0o644)
        write_private(folder / KEY_FILE, material.key_pem, 0o600)
        if material.ca_pem is not None:
            write_private(folder / CA_FILE, material.ca_pem, 0o644)
        _replace_symlink(cert_dir / DATA_LINK, folder.name)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    for name in (CERT_FILE, KEY_FILE, CA_FILE):
        link = cert_dir / name
        if material.ca_pem is None and name == CA_FILE:
            if link.exists() and not link.is_symlink():
                link.unlink()  # a plain ca.crt from earlier no longer belongs to the material
            continue
        if not (link.is_symlink() and os.readlink(link) == f"{DATA_LINK}/{name}"):
            _replace_symlink(link, f"{DATA_LINK}/{name}")
    for old in cert_dir.glob("..*_*_*"):
        if old.is_dir() and not old.is_symlink() and old.name != folder.name:
            shutil.rmtree(old, ignore_errors=True)


def _replace_symlink(link: Path, target: str) -> None:
    temp = link.with_name(f"{link.name}.tmp{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()
    os.symlink(target, temp)
    os.replace(temp, link)


def save_last_good(state_dir: Path, material: Material, source: str) -> None:
    """Keep the serving material so a restart never falls back to the self-signed default."""
    record = {
        "source": source,
        "certificate": material.cert_pem.decode("ascii"),
        "key": material.key_pem.decode("ascii"),
        "ca": material.ca_pem.decode("ascii") if material.ca_pem is not None else None,
    }
    write_private(state_dir / LAST_GOOD, json.dumps(record).encode())


def load_last_good(state_dir: Path) -> tuple[Material, str] | None:
    """The material saved by `save_last_good`, or None when there is none or it is unreadable."""
    try:
        record = json.loads((state_dir / LAST_GOOD).read_bytes())
        ca = record.get("ca")
        material = Material(record["certificate"].encode(), record["key"].encode(), ca.encode() if ca else None)
        source = record.get("source", "directory")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return material, source if source in ("directory", "upload") else "directory"


def load_self_signed(state_dir: Path) -> Material | None:
    try:
        return Material((state_dir / SELF_SIGNED_CERT).read_bytes(), (state_dir / SELF_SIGNED_KEY).read_bytes())
    except OSError:
        return None


def save_self_signed(state_dir: Path, material: Material) -> None:
    write_private(state_dir / SELF_SIGNED_KEY, material.key_pem, 0o600)
    write_private(state_dir / SELF_SIGNED_CERT, material.cert_pem, 0o644)
