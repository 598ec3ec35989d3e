"""The upload switch (`admin.uploads`): whether `POST /api/v1/certificate` may write `cert_dir`.

Owns the rule that tells a mounted Kubernetes Secret from a directory this edge may write. It
reads file metadata only (a symlink's target, the mount's flags) and knows nothing about HTTP.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from proxy.certstore.files import DATA_LINK

# The folder name `files.write_material_dir` gives its uploads: `..` + UTC time + `.` + six
# digits of microseconds. The kubelet's atomic writer names its folders with Go's
# os.MkdirTemp, which puts a random uint32 in decimal (mostly nine or ten digits) where our
# microseconds are, so a `..data` that points anywhere else was written by somebody else.
OWN_FOLDER = re.compile(r"\.\.\d{4}_\d{2}_\d{2}_\d{2}_\d{2}_\d{2}\.\d{6}")


@dataclass(frozen=True, slots=True)
class UploadPolicy:
    """`allowed`, or why not: `reason` finishes the sentence "uploads are off: ..."."""

    allowed: bool
    reason: str = ""


def upload_policy(mode: str, cert_dir: Path, *, statvfs: Callable[[Path], os.statvfs_result] = os.statvfs) -> UploadPolicy:
    """Apply `admin.uploads` ("auto", "on" or "off") to `cert_dir` as it is now. Never raises:
    a directory that cannot be inspected is taken as a plain one (an upload then reports the
    actual write error)."""
    if mode == "on":
        return UploadPolicy(True)
    if mode == "off":
        return UploadPolicy(False, 'admin.uploads is "off"')
    reason = secret_mount_reason(cert_dir, statvfs)
    return UploadPolicy(False, reason) if reason else UploadPolicy(True)


def secret_mount_reason(cert_dir: Path, statvfs: Callable[[Path], os.statvfs_result] = os.statvfs) -> str | None:
    """Why `cert_dir` looks like a mounted Secret, or None when it looks like a plain directory.

    Either rule is enough. (1) `..data` is a symlink to a folder our own uploads never name: the
    atomic-writer layout is not proof alone, since our uploads write it too. (2) The directory
    is on a read-only mount, as every Secret volume is since Kubernetes 1.10; this also covers
    the rare kubelet folder whose random suffix happens to look like our microseconds, and any
    read-only mount where an upload could only fail.
    """
    try:
        target = os.readlink(cert_dir / DATA_LINK)
    except OSError:  # no `..data`, or not a symlink: not the atomic-writer layout
        target = None
    if target is not None and not OWN_FOLDER.fullmatch(target.rstrip("/")):
        return f"{cert_dir} is a mounted Kubernetes Secret ({DATA_LINK} points at {target}, a folder the kubelet wrote)"
    try:
        read_only = bool(statvfs(cert_dir).f_flag & os.ST_RDONLY)
    except OSError:  # missing yet: an upload creates it
        return None
    return f"{cert_dir} is on a read-only mount, as a mounted Kubernetes Secret is" if read_only else None


def uploads_off_message(policy: UploadPolicy, cert_dir: Path) -> str:
    """The 405 answer: what is off, why, and how a fleet gets new material instead."""
    return (
        f"certificate uploads are off: {policy.reason}. With several replicas an upload would reach only "
        f"this one's disk. Put the new certificate into the Kubernetes Secret mounted at {cert_dir} "
        "(kubectl apply, or let cert-manager renew it), or into the files your deployment tool writes there; "
        "every replica serves it once its directory changes. POST /api/v1/reload re-reads the directory now."
    )
