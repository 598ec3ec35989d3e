"""Certificate intake: the one path from material (directory, upload, start-up) to the store.

Owns the order of things: read, validate, write (uploads), publish, persist, record and report
rejections, and when a directory read counts as settled. Watcher and admin API call in here;
this module does not know about either, nor about listeners. Validation runs in a thread;
nothing here blocks the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from proxy import metrics
from proxy.certstore import audit, files
from proxy.certstore.audit import Attempt
from proxy.certstore.pem import Material
from proxy.certstore.roots import Roots, system_roots
from proxy.certstore.selfsigned import generate_self_signed, still_fits
from proxy.certstore.store import CertStore, Offer, Rejection, Snapshot, utcnow
from proxy.certstore.validate import NamePolicy, ValidMaterial, validate_material
from proxy.config import TlsConfig
from proxy.errors import MaterialError, MaterialMissing

log = logging.getLogger("proxy.certstore")

# README, "Drop files". Material that reads complete and valid serves at once. Anything else is reported
# only once the directory's content has stayed the same for SETTLE_SECONDS, and material that
# looks half-written (a key that does not match yet, a cut-off PEM) is re-read for up to
# SETTLE_RETRY_SECONDS first; REPORT_WITHIN_SECONDS caps the wait for a directory that never
# stops changing.
SETTLE_SECONDS = 0.2
SETTLE_RETRY_SECONDS = 2.0
REPORT_WITHIN_SECONDS = 3.0
SETTLE_RETRY_INTERVAL = 0.05  # how often unsettled content is read again


class CertificateService:
    """Feeds the store. Every public coroutine is safe to call concurrently: intake is serial."""

    def __init__(
        self, store: CertStore[Any], tls: TlsConfig, clock: Callable[[], datetime] = utcnow, roots: Callable[[], Roots] = system_roots
    ) -> None:
        self.store = store
        self._roots = roots
        self.tls = tls
        self.policy = NamePolicy(tls.server_name, tls.ip_addresses)
        self._clock = clock
        self._intake = asyncio.Lock()
        self._last_rejected: str | None = None
        # The digest of the directory content the last read concluded on: a watcher pass that
        # finds the same content again has nothing to do (no validation, no log line).
        self._concluded: str | None = None

    # --- start-up ---------------------------------------------------------------------------

    async def load_initial(self) -> Snapshot:
        """Serve the directory's material if valid, else the last good, else the self-signed
        default. Invalid material never stops the start; it is recorded as `last_error`."""
        attempt = Attempt("start")
        async with self._intake:
            read = await self._read()
            self._concluded = read.digest
            rejection: Rejection | None = None
            try:
                valid = await self._validate(read.material())
            except MaterialMissing:
                log.info("no certificate in %s yet", self.tls.cert_dir)
            except MaterialError as e:
                rejection = self._record(e.problems, "directory", read.digest, attempt)
            else:
                try:
                    return (await self._publish(valid, await self._origin(valid), attempt)).snapshot
                except MaterialError:
                    rejection = self.store.last_error  # recorded by _publish
            snapshot = await self._fallback(attempt)
            if rejection is not None:
                self.store.reject(rejection.source, rejection.problems)  # the fallback is no fix
            return snapshot

    async def _origin(self, valid: ValidMaterial) -> str:
        """The directory's material is still "upload" after a restart when an upload wrote it."""
        last = await asyncio.to_thread(files.load_last_good, self.tls.state_dir)
        if last is not None and last[1] == "upload" and last[0].cert_pem == valid.cert_pem:
            return "upload"
        return "directory"

    async def _fallback(self, attempt: Attempt) -> Snapshot:
        last = await asyncio.to_thread(files.load_last_good, self.tls.state_dir)
        if last is not None:
            try:
                valid = await self._validate(last[0])
                log.info("serving the last good certificate from %s", self.tls.state_dir)
                return (await self._publish(valid, last[1], attempt)).snapshot
            except MaterialError as e:
                log.warning("the last good certificate in %s is no longer valid: %s", self.tls.state_dir, "; ".join(e.problems))
        return (await self._publish(await self._self_signed(), "self-signed", attempt)).snapshot

    async def _self_signed(self) -> ValidMaterial:
        now = self._clock()
        stored = await asyncio.to_thread(files.load_self_signed, self.tls.state_dir)
        if stored is not None:
            try:
                valid = await self._validate(stored)
                if still_fits(valid.leaf, self.policy, now):
                    return valid
            except MaterialError:
                pass
        material = await asyncio.to_thread(generate_self_signed, self.policy, now)
        await asyncio.to_thread(files.save_self_signed, self.tls.state_dir, material)
        log.info("generated a self-signed certificate in %s", self.tls.state_dir)
        return await self._validate(material)

    # --- intake -----------------------------------------------------------------------------

    async def upload(self, material: Material, client: str | None = None) -> Offer:
        """Validate, write into `cert_dir` as one atomic step, publish as "upload". `client`:
        the admin client's address, for the audit line.

        Raises MaterialError (recorded as `last_error`; nothing changed) or OSError when the
        directory cannot be written (nothing changed either).
        """
        attempt = Attempt("upload", client)
        async with self._intake:
            try:
                valid = await self._validate(material)
            except MaterialError as e:
                self._record(e.problems, "upload", None, attempt)
                raise
            stored = Material(valid.cert_pem, material.key_pem, material.ca_pem)

            async def write() -> None:
                # Once the canary passed, before the swap: a refusal writes nothing, and the
                # directory, a restart and what serves agree.
                await asyncio.to_thread(files.write_material_dir, self.tls.cert_dir, stored, self._clock())

            return await self._publish(valid, "upload", attempt, before_swap=write)

    async def reload(self, source: str = "reload", client: str | None = None) -> Offer:
        """Re-read `cert_dir` now. Missing files leave the serving certificate as it is.
        `source` ("reload" through the API, "sighup") and `client` are for the audit line.
        Raises MaterialError (recorded) when the material is invalid."""
        attempt = Attempt(source, client)
        async with self._intake:
            return await self._conclude(await self._read(), attempt, patient=False)

    async def directory_changed(self) -> None:
        """One watcher pass: re-read `cert_dir`. Content equal to what the last read concluded
        on is a no-op; complete, valid material serves at once; anything else is settled first
        (see SETTLE_SECONDS). Never raises MaterialError: a rejection is recorded and logged."""
        async with self._intake:
            read = await self._read()
            if read.digest == self._concluded:
                return
            with contextlib.suppress(MaterialError):  # recorded and logged already
                await self._conclude(read, Attempt("directory"), patient=True)

    async def _conclude(self, read: files.DirectoryRead, attempt: Attempt, *, patient: bool) -> Offer:
        """Serve, keep or reject what `read` found. `patient` (a watcher pass) keeps re-reading
        material that fails until the content has settled (see SETTLE_SECONDS) before it
        reports it; content that changes meanwhile is tried again at once."""
        clock = asyncio.get_running_loop().time
        started = changed = clock()
        give_up_at: float | None = None  # set once the material looks half-written
        while True:
            outcome = await self._offer(read, attempt)
            if isinstance(outcome, Offer):
                return outcome
            if outcome.may_settle and give_up_at is None:
                give_up_at = changed + SETTLE_RETRY_SECONDS
            report_at = max(changed + SETTLE_SECONDS, give_up_at or 0.0)
            newer = await self._next_content(read, min(report_at, started + REPORT_WITHIN_SECONDS)) if patient else None
            if newer is None:
                self._concluded = read.digest
                self._record(outcome.problems, "directory", read.digest, attempt)
                raise outcome
            read, changed = newer, clock()

    async def _offer(self, read: files.DirectoryRead, attempt: Attempt) -> Offer | MaterialError:
        """Publish what `read` found if it is valid; missing files keep the serving version.
        Returns the validation error unrecorded (the caller decides whether it is settled);
        raises MaterialError, recorded, when the TLS library refuses valid material."""
        try:
            valid = await self._validate(read.material())
        except MaterialMissing as e:
            # Never a rejection, and the missing file's arrival is a change of its own.
            self._concluded = read.digest
            log.info("%s; still serving version %d", e, self.store.current.snapshot.version)
            return Offer(self.store.current.snapshot, swapped=False)
        except MaterialError as e:
            return e
        self._concluded = read.digest
        return await self._publish(valid, "directory", attempt)

    async def _next_content(self, read: files.DirectoryRead, report_at: float) -> files.DirectoryRead | None:
        """Re-read `cert_dir` until its content differs from `read` (returned) or the loop's
        clock reaches `report_at` (None)."""
        loop = asyncio.get_running_loop()
        while loop.time() < report_at:
            await asyncio.sleep(min(SETTLE_RETRY_INTERVAL, max(report_at - loop.time(), 0.0)))
            again = await self._read()
            if again.digest != read.digest:
                return again
        return None

    async def _read(self) -> files.DirectoryRead:
        read = await asyncio.to_thread(files.read_cert_dir, self.tls.cert_dir)
        metrics.CERT_DIR_LAST_READ.set_to_current_time()
        return read

    async def _validate(self, material: Material) -> ValidMaterial:
        now = self._clock()
        return await asyncio.to_thread(lambda: validate_material(material, self.policy, now, self._roots()))

    async def _publish(
        self, valid: ValidMaterial, source: str, attempt: Attempt, before_swap: Callable[[], Awaitable[None]] | None = None
    ) -> Offer:
        before = self.store.current.snapshot if self.store.has_version else None
        try:
            offer = await self.store.publish(valid, source, before_swap=before_swap)
        except MaterialError as e:  # the canary handshake failed, or OpenSSL refused the material
            self._record(e.problems, source, None, attempt)
            raise
        except OSError:
            raise  # the upload could not be written: nothing changed
        except Exception as e:  # building the TLS objects failed in another way: still no swap
            problem = f"the TLS library refused the material: {e}"
            self._record([problem], source, None, attempt)
            raise MaterialError([problem]) from e
        self._last_rejected = None
        snapshot = offer.snapshot
        if offer.swapped:
            metrics.SWAPS.labels(source).inc()
            metrics.CERT_VERSION.set(snapshot.version)
            audit.swapped(attempt, before, snapshot)
        elif attempt.source != "directory":  # the watcher echoing an upload's own write says nothing
            audit.unchanged(attempt, snapshot)
        if source != "self-signed" and (offer.swapped or (before and before.material.ca_pem != snapshot.material.ca_pem)):
            stored = Material(snapshot.material.cert_pem, snapshot.material.key_pem, snapshot.material.ca_pem)
            try:
                await asyncio.to_thread(files.save_last_good, self.tls.state_dir, stored, snapshot.source)
            except OSError as e:
                log.error("could not keep the serving certificate in %s: %s", self.tls.state_dir, e)
        return offer

    def _record(self, problems: tuple[str, ...] | list[str], source: str, digest: str | None, attempt: Attempt) -> Rejection:
        """Record a rejection. The same directory content rejected twice in a row (a second
        event for an unchanged drop) is counted and logged once; an upload or a reload asked for
        is always logged."""
        serving = self.store.current.snapshot if self.store.has_version else None
        rejection = self.store.reject(source, problems)
        repeated = digest is not None and digest == self._last_rejected
        if not repeated:
            metrics.REJECTIONS.labels(source).inc()
        if not repeated or attempt.source not in ("directory", "start"):
            audit.refused(attempt, serving, problems)
        self._last_rejected = digest
        return rejection

    def seconds_to_expiry(self) -> float:
        """Seconds until the serving certificate expires (0 before there is one)."""
        if not self.store.has_version:
            return 0.0
        leaf = self.store.current.snapshot.material.leaf
        return (leaf.not_valid_after_utc - self._clock()).total_seconds()
