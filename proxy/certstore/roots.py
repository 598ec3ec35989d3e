"""Trusted roots: the issuers a chain may end at without the operator naming them in ca.crt.

`Roots` is a pure lookup (issuer name and signature in, certificate out). `system_roots` is the
one place that reads the system's CA bundle (OpenSSL's default verify paths), once per process.
"""

from __future__ import annotations

import functools
import logging
import ssl
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

log = logging.getLogger("proxy.certstore")


@dataclass(frozen=True, slots=True)
class Roots:
    """Certificates trusted as chain anchors, by subject."""

    by_subject: dict[bytes, tuple[x509.Certificate, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, certificates: Iterable[x509.Certificate]) -> Roots:
        by_subject: dict[bytes, list[x509.Certificate]] = {}
        for certificate in certificates:
            by_subject.setdefault(certificate.subject.public_bytes(), []).append(certificate)
        return cls({k: tuple(v) for k, v in by_subject.items()})

    def issuer_of(self, certificate: x509.Certificate) -> x509.Certificate | None:
        """The root that signed `certificate`, or None."""
        for candidate in self.by_subject.get(certificate.issuer.public_bytes(), ()):
            try:
                certificate.verify_directly_issued_by(candidate)
            except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
                continue
            return candidate
        return None

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_subject.values())


@functools.cache
def system_roots() -> Roots:
    """The system's trusted roots (SSL_CERT_FILE / SSL_CERT_DIR honoured, as OpenSSL does).
    An unreadable bundle gives no roots: chains must then end at ca.crt or a self-signed root."""
    paths = ssl.get_default_verify_paths()
    certificates: list[x509.Certificate] = []
    files = [Path(paths.cafile)] if paths.cafile else []
    if not files and paths.capath and Path(paths.capath).is_dir():
        files = sorted(Path(paths.capath).glob("*.pem"))
    for path in files:
        try:
            with warnings.catch_warnings():  # old roots with negative serials are still roots
                warnings.simplefilter("ignore")
                certificates += x509.load_pem_x509_certificates(path.read_bytes())
        except (OSError, ValueError) as e:
            log.warning("cannot read trusted roots from %s: %s", path, e)
    return Roots.of(certificates)
