"""The certificate store: one immutable snapshot per certificate version, published atomically.

Owns versions, `last_error` and the publish step. It does not know how TLS objects are built
(an injected `prepare` turns a snapshot into them, off the event loop) and never imports a
listener: listeners read `store.current` once per handshake, or subscribe.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

from proxy.certstore.validate import ValidMaterial

log = logging.getLogger("proxy.certstore")

T = TypeVar("T")
SOURCES = ("self-signed", "directory", "upload")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One certificate version. Never mutated: a swap publishes a new one."""

    version: int
    source: str
    material: ValidMaterial
    loaded_at: datetime

    @property
    def fingerprint(self) -> str:
        return self.material.fingerprint


@dataclass(frozen=True, slots=True)
class Rejection:
    at: datetime
    source: str
    problems: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Serving(Generic[T]):
    """What listeners read: a snapshot and the TLS objects built for exactly that snapshot."""

    snapshot: Snapshot
    tls: T


@dataclass(frozen=True, slots=True)
class Offer:
    """The outcome of offering material: the serving snapshot and whether it is a new version."""

    snapshot: Snapshot
    swapped: bool


class CertStore(Generic[T]):
    """Holds the serving version. `publish` is serialised; reading `current` is lock-free and
    safe from any thread (one reference read)."""

    def __init__(self, prepare: Callable[[Snapshot], T], clock: Callable[[], datetime] = utcnow) -> None:
        self._prepare = prepare
        self._clock = clock
        self._current: Serving[T] | None = None
        self._last_error: Rejection | None = None
        self._lock = asyncio.Lock()
        self._subscribers: list[Callable[[Serving[T]], None]] = []

    @property
    def current(self) -> Serving[T]:
        current = self._current
        if current is None:
            raise RuntimeError("the certificate store has no version yet; call publish() first")
        return current

    @property
    def has_version(self) -> bool:
        return self._current is not None

    @property
    def last_error(self) -> Rejection | None:
        return self._last_error

    def subscribe(self, callback: Callable[[Serving[T]], None]) -> None:
        """Call `callback(serving)` on the event loop after each publish. It must not raise."""
        self._subscribers.append(callback)

    async def publish(self, material: ValidMaterial, source: str, *, before_swap: Callable[[], Awaitable[None]] | None = None) -> Offer:
        """Serve `material` unless it equals the serving leaf, chain and key.

        TLS objects are built in a thread before the version becomes visible, so a handshake
        never sees a version without them. `before_swap` runs once they are built (or when the
        material is the serving one), right before the swap. Raises whatever `prepare` or
        `before_swap` raises (nothing changes).
        """
        if source not in SOURCES:
            raise ValueError(f"unknown source {source!r}")
        async with self._lock:
            current = self._current
            if current is not None and current.snapshot.material.identity == material.identity:
                if before_swap is not None:
                    await before_swap()
                if material.ca_pem != current.snapshot.material.ca_pem:
                    # A new ca.crt alone is kept but is no new version.
                    material_now = dataclasses.replace(current.snapshot.material, ca=material.ca, ca_pem=material.ca_pem)
                    snapshot = dataclasses.replace(current.snapshot, material=material_now)
                    self._current = Serving(snapshot, current.tls)
                    return Offer(snapshot, swapped=False)
                return Offer(current.snapshot, swapped=False)
            version = 1 if current is None else current.snapshot.version + 1
            snapshot = Snapshot(version=version, source=source, material=material, loaded_at=self._clock())
            tls = await asyncio.to_thread(self._prepare, snapshot)
            if before_swap is not None:
                await before_swap()
            serving = Serving(snapshot, tls)
            self._current = serving  # the swap: one reference assignment
            self._last_error = None
        for callback in list(self._subscribers):
            try:
                callback(serving)
            except Exception:  # a subscriber's bug must not undo a swap that happened
                log.exception("certificate subscriber failed")
        return Offer(snapshot, swapped=True)

    def reject(self, source: str, problems: tuple[str, ...] | list[str]) -> Rejection:
        """Record a rejection; the serving version stays."""
        rejection = Rejection(at=self._clock(), source=source, problems=tuple(problems))
        self._last_error = rejection
        return rejection
