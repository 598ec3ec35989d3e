"""The audit trail of the serving certificate: one line (logger `proxy.audit`) for every change
and every attempt, whatever the access log setting.

Owns what such a line says: what started the attempt (`source`: start, directory, upload, reload,
sighup), the admin client's address, the versions and fingerprints before and after, and the
problems of a refusal. It is handed snapshots, never material: no key, token or PEM body can
reach a line from here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from proxy.certstore.store import Snapshot

log = logging.getLogger("proxy.audit")

ATTEMPT_SOURCES = ("start", "directory", "upload", "reload", "sighup")


@dataclass(frozen=True, slots=True)
class Attempt:
    """Who or what offered material: `source` one of ATTEMPT_SOURCES; `client` the admin
    client's address for uploads and reloads through the API."""

    source: str
    client: str | None = None

    def __post_init__(self) -> None:
        if self.source not in ATTEMPT_SOURCES:
            raise ValueError(f"unknown attempt source {self.source!r}")

    def describe(self) -> str:
        return self.source + (f" by {self.client}" if self.client else "")


def _certificate(prefix: str, snapshot: Snapshot | None) -> dict[str, Any]:
    if snapshot is None:
        return {f"{prefix}_version": None, f"{prefix}_fingerprint": None}
    return {f"{prefix}_version": snapshot.version, f"{prefix}_fingerprint": snapshot.fingerprint}


def _leaf(snapshot: Snapshot) -> dict[str, Any]:
    leaf = snapshot.material.leaf
    return {
        "subject": leaf.subject.rfc4514_string(),
        "not_after": f"{leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}",
        "certificate_source": snapshot.source,
    }


def swapped(attempt: Attempt, before: Snapshot | None, after: Snapshot) -> None:
    """A new version serves."""
    fields = {
        "event": "certificate_swapped",
        "source": attempt.source,
        "client": attempt.client,
        **_certificate("old", before),
        **_certificate("new", after),
        **_leaf(after),
    }
    was = f"version {before.version} ({before.fingerprint})" if before is not None else "nothing"
    log.info(
        "serving certificate version %d from %s: fingerprint %s, subject %s, expires %s; was %s; offered by %s",
        after.version,
        after.source,
        after.fingerprint,
        fields["subject"],
        fields["not_after"],
        was,
        attempt.describe(),
        extra={"fields": fields},
    )


def unchanged(attempt: Attempt, serving: Snapshot) -> None:
    """Material was offered and equals what serves (a `ca.crt` alone may have changed)."""
    fields = {
        "event": "certificate_unchanged",
        "source": attempt.source,
        "client": attempt.client,
        **_certificate("old", serving),
        **_certificate("new", serving),
    }
    log.info(
        "certificate offered by %s is the serving version %d (%s): no swap",
        attempt.describe(),
        serving.version,
        serving.fingerprint,
        extra={"fields": fields},
    )


def refused(attempt: Attempt, serving: Snapshot | None, problems: Sequence[str]) -> None:
    """Material was refused; what served before still serves."""
    fields = {
        "event": "certificate_refused",
        "source": attempt.source,
        "client": attempt.client,
        **_certificate("old", serving),
        "problems": list(problems),
    }
    still = f"; still serving version {serving.version} ({serving.fingerprint})" if serving is not None else ""
    log.warning("rejected certificate from %s: %s%s", attempt.describe(), "; ".join(problems), still, extra={"fields": fields})
