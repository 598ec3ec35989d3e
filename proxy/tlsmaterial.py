"""The one place that turns a certificate snapshot into TLS library objects.

Builds, per version, one `ssl.SSLContext` per ALPN list a listener offers (HTTPS, gRPC, both on
one port); and, per listener, the long-lived listening context
whose `sni_callback` hands each new handshake the current version's context. Listeners never
parse PEM themselves.
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from proxy import tlspolicy
from proxy.certstore.store import Snapshot
from proxy.errors import MaterialError

log = logging.getLogger("proxy.tls")

# TLS 1.2 suites of upstream clients: forward-secret AEAD only. Listeners take theirs, TLS 1.3
# suites and groups from `tls.policy` (proxy.tlspolicy).
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
Alpn = tuple[str, ...]
HTTPS_ALPN: Alpn = ("http/1.1",)
# The gRPC relay speaks only HTTP/2 (RFC 9113 3.2: "h2" over TLS).
H2_ALPN: Alpn = ("h2",)
# HTTPS and gRPC on one port. OpenSSL picks the server's first protocol that the client offers:
# browsers, curl and API clients offer both and get HTTP/1.1; gRPC clients offer only h2.
ONE_PORT_ALPN: Alpn = ("http/1.1", "h2")
# `http2 = true`: HTTP/2 first, for browsers and API clients too (RFC 9113 3.2).
HTTP2_ALPN: Alpn = ("h2", "http/1.1")
ALPN_LISTS: tuple[Alpn, ...] = (HTTPS_ALPN, H2_ALPN, ONE_PORT_ALPN, HTTP2_ALPN)


@dataclass(frozen=True, slots=True)
class TlsObjects:
    """TLS objects for one snapshot: the same chain and key in one material context per ALPN list
    a listener offers, since a swapped-in context's ALPN is the one that answers the client.
    Built once, never mutated after."""

    contexts: Mapping[Alpn, ssl.SSLContext]

    def context(self, alpn: Alpn) -> ssl.SSLContext:
        return self.contexts[alpn]

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """The HTTPS listeners' context (ALPN http/1.1)."""
        return self.contexts[HTTPS_ALPN]

    @property
    def h2_context(self) -> ssl.SSLContext:
        """The gRPC listeners' context (ALPN h2)."""
        return self.contexts[H2_ALPN]


def _base_context(min_version: str, alpn: Sequence[str], policy: str = "default") -> ssl.SSLContext:
    """Policy goes on listening and material contexts alike: measured on OpenSSL 3.0, groups
    come from the listening context, and TLS 1.3 suites from both (a mismatch fails with
    BAD_CIPHER), while TLS 1.2 ciphers come from the material context sni_callback selects."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[min_version]
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    tlspolicy.apply(context, policy)
    context.set_alpn_protocols(alpn)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    return context


def material_context(
    snapshot: Snapshot, min_version: str = "1.2", alpn: Sequence[str] = HTTPS_ALPN, policy: str = "default"
) -> ssl.SSLContext:
    """A fresh context holding this snapshot's chain and key.

    `load_cert_chain` reads only files, so the validated bytes pass through an anonymous
    in-memory file (Linux memfd: the key never reaches a disk, and no writable /tmp is needed),
    or else a private (0600) temporary file removed at once. Raises ssl.SSLError if OpenSSL
    refuses them.
    """
    context = _base_context(min_version, alpn, policy)
    material = snapshot.material
    with _private_file(material.cert_pem + material.key_pem) as path:
        context.load_cert_chain(path)
    return context


@contextlib.contextmanager
def _private_file(data: bytes) -> Iterator[str]:
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create("edge-proxy-material", os.MFD_CLOEXEC)
        try:
            with os.fdopen(fd, "wb", closefd=False) as file:
                file.write(data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    fd, path = tempfile.mkstemp(prefix="edge-proxy-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def tls_preparer(min_version: str, policy: str = "default") -> Callable[[Snapshot], TlsObjects]:
    """The store's `prepare` hook: every listener kind's objects, built together, off the loop,
    then proved by the canary. Raises MaterialError with the handshake's reason when a browser
    could not connect with them, or when OpenSSL refuses the material."""

    def prepare(snapshot: Snapshot) -> TlsObjects:
        try:
            objects = TlsObjects({alpn: material_context(snapshot, min_version, alpn, policy) for alpn in ALPN_LISTS})
        except ssl.SSLError as e:
            raise MaterialError([f"OpenSSL refused the material: {e}"]) from e
        problems = canary(objects, min_version)
        if problems:
            raise MaterialError(problems)
        return objects

    return prepare


def canary(objects: TlsObjects, min_version: str) -> list[str]:
    """A browser's TLS 1.3 and 1.2 handshakes, in memory, against the contexts about to serve:
    material that loads is no proof that it serves (FIELD-NOTES: secp256k1, Ed25519)."""
    return tlspolicy.canary([(context, alpn) for alpn, context in objects.contexts.items()], min_version)


def policy_context(min_version: str, alpn: Sequence[str] = HTTPS_ALPN, policy: str = "default") -> ssl.SSLContext:
    """A listener's policy (versions, ciphers, ALPN), before it knows where certificates come
    from. OpenSSL makes its session-ticket keys here, once: processes forked after this share
    them, so a client resumes its session on any of them."""
    return _base_context(min_version, alpn, policy)


def listening_context(
    min_version: str, current: Callable[[], ssl.SSLContext], alpn: Sequence[str] = HTTPS_ALPN, *, policy: ssl.SSLContext | None = None
) -> ssl.SSLContext:
    """The listener's own context: it carries policy (versions, ciphers, ALPN) and swaps in the
    current version's material context on every full handshake, with SNI or without.

    `current` must be cheap and must not raise: it runs on the event loop in OpenSSL's callback.
    `alpn` must match the ALPN of the contexts `current` returns. `policy`, from
    `policy_context` with the same version and ALPN, is used instead of a new context.
    """
    context = policy if policy is not None else _base_context(min_version, alpn)

    def on_server_name(sslobj: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext) -> None:
        try:
            sslobj.context = current()
        except Exception:  # an exception here only resets the connection, silently
            log.exception("could not select the certificate for a handshake")

    context.sni_callback = on_server_name
    return context
