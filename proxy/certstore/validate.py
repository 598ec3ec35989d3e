"""Validation of certificate material: the rules an operator's material must meet to serve.

Pure: material bytes, the names to serve and a clock in; a ValidMaterial or a MaterialError
naming every problem out. It knows nothing of files, the store or listeners.
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from proxy.certstore.pem import Material, PrivateKey, parse_material
from proxy.errors import MaterialError

MIN_RSA_BITS = 2048


@dataclass(frozen=True, slots=True)
class NamePolicy:
    """The names the serving certificate must cover: at least one of them."""

    server_name: str | None
    ip_addresses: tuple[str, ...] = ()

    def describe(self) -> str:
        names = ([self.server_name] if self.server_name else []) + list(self.ip_addresses)
        return " or ".join(names)


@dataclass(frozen=True, slots=True)
class ValidMaterial:
    """Material that passed every rule, with the parsed objects and canonical PEM bytes."""

    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...]  # intermediates, leaf excluded, in serving order
    key: PrivateKey
    ca: tuple[x509.Certificate, ...]
    cert_pem: bytes  # leaf then intermediates
    key_pem: bytes  # PKCS#8
    ca_pem: bytes | None
    fingerprint: str  # SHA-256 over the leaf's DER, lowercase hex
    identity: str  # SHA-256 over leaf, chain and key: equal identity means no swap


def validate_material(material: Material, policy: NamePolicy, now: datetime) -> ValidMaterial:
    """Check `material` against every rule. Raises MaterialError with all problems found."""
    parsed = parse_material(material)
    certificates, key = parsed.certificates, parsed.key
    problems: list[str] = []
    settling = False
    if not certificates:
        raise MaterialError(["tls.crt holds no certificate"])
    leaf = certificates[0]
    if not _public_keys_equal(leaf, key):
        position = next((i for i, c in enumerate(certificates) if _public_keys_equal(c, key)), None)
        if position is not None:
            problems.append(
                f"tls.crt lists {_name(leaf)} before the leaf {_name(certificates[position])}; put the server certificate first"
            )
        else:
            problems.append("the private key does not match the certificate")
            settling = True
    elif _is_ca(leaf):
        problems.append(
            f"the certificate {_name(leaf)} is a CA certificate, not a server certificate; "
            "tls.crt must start with the server's own certificate"
        )
    problems += _chain_problems(certificates)
    if parsed.ca:
        problems += _ca_problems(certificates, parsed.ca)
    problems += _validity_problems(certificates, now)
    problems += _name_problems(leaf, policy)
    problems += _usage_problems(leaf)
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < MIN_RSA_BITS:
        problems.append(f"the RSA key has {key.key_size} bits; at least {MIN_RSA_BITS} are needed")
    if problems:
        raise MaterialError(problems, may_settle=settling)
    return _valid(certificates, key, parsed.ca, material.ca_pem)


def _valid(
    certificates: Sequence[x509.Certificate], key: PrivateKey, ca: tuple[x509.Certificate, ...], ca_pem: bytes | None
) -> ValidMaterial:
    cert_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    identity = hashlib.sha256()
    for certificate in certificates:
        identity.update(certificate.public_bytes(serialization.Encoding.DER))
    identity.update(key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    ca_text = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in ca) if ca else None
    return ValidMaterial(
        leaf=certificates[0],
        chain=tuple(certificates[1:]),
        key=key,
        ca=ca,
        cert_pem=cert_pem,
        key_pem=key_pem,
        ca_pem=ca_text if ca_pem is not None else None,
        fingerprint=fingerprint(certificates[0]),
        identity=identity.hexdigest(),
    )


def fingerprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex()


def _public_keys_equal(certificate: x509.Certificate, key: PrivateKey) -> bool:
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    try:
        return bool(certificate.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki))
    except ValueError:
        return False


def _name(certificate: x509.Certificate) -> str:
    return certificate.subject.rfc4514_string() or "(empty subject)"


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return bool(certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _signed_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _chain_problems(certificates: Sequence[x509.Certificate]) -> list[str]:
    problems = []
    for child, issuer in itertools.pairwise(certificates):
        if not _signed_by(child, issuer):
            problems.append(
                f"tls.crt: {_name(child)} is not signed by {_name(issuer)}, the certificate after it; "
                "list the leaf first, then each issuer in order"
            )
    return problems


def _ca_problems(certificates: Sequence[x509.Certificate], ca: Sequence[x509.Certificate]) -> list[str]:
    top = certificates[-1]
    ca_der = {c.public_bytes(serialization.Encoding.DER) for c in ca}
    if top.public_bytes(serialization.Encoding.DER) in ca_der or any(_signed_by(top, root) for root in ca):
        return []
    return [
        "the chain does not lead to the CA in ca.crt: is an intermediate missing? "
        f"({_name(top)} was issued by {top.issuer.rfc4514_string()})"
    ]


def _validity_problems(certificates: Sequence[x509.Certificate], now: datetime) -> list[str]:
    problems = []
    for index, certificate in enumerate(certificates):
        what = "the certificate" if index == 0 else f"the intermediate {_name(certificate)} in tls.crt"
        if now > certificate.not_valid_after_utc:
            problems.append(f"{what} expired on {certificate.not_valid_after_utc:%Y-%m-%d}")
        elif now < certificate.not_valid_before_utc:
            problems.append(f"{what} is not valid before {certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    return problems


def san_names(certificate: x509.Certificate) -> tuple[list[str], list[str]]:
    """The DNS names and IP addresses in the certificate's subjectAltName."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    dns = [name.lower() for name in san.get_values_for_type(x509.DNSName)]
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return dns, ips


def dns_name_matches(pattern: str, name: str) -> bool:
    """Match as browsers do (RFC 6125): a wildcard only as the whole leftmost label, covering
    exactly one label, never a public suffix alone (`*.com`)."""
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if not pattern.startswith("*."):
        return pattern == name
    rest = pattern[2:]
    if "*" in rest or rest.count(".") < 1:
        return False
    head, dot, tail = name.partition(".")
    return bool(dot) and bool(head) and tail == rest


def covers(certificate: x509.Certificate, policy: NamePolicy) -> list[str]:
    """Which of the policy's names the certificate covers."""
    dns, ips = san_names(certificate)
    covered = []
    if policy.server_name and any(dns_name_matches(p, policy.server_name) for p in dns):
        covered.append(policy.server_name)
    for ip in policy.ip_addresses:
        if ipaddress.ip_address(ip) in {ipaddress.ip_address(x) for x in ips}:
            covered.append(ip)
    return covered


def _name_problems(leaf: x509.Certificate, policy: NamePolicy) -> list[str]:
    if not policy.server_name and not policy.ip_addresses:
        return []
    dns, ips = san_names(leaf)
    if not dns and not ips:
        return [f"the certificate has no subjectAltName; browsers ignore the common name, so it must list {policy.describe()}"]
    if covers(leaf, policy):
        return []
    return [f"the certificate covers {', '.join(dns + ips)} but not {policy.describe()}"]


def _usage_problems(leaf: x509.Certificate) -> list[str]:
    try:
        usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return []
    allowed = set(usages)
    if ExtendedKeyUsageOID.SERVER_AUTH in allowed or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in allowed:
        return []
    names = ", ".join(getattr(oid, "_name", None) or oid.dotted_string for oid in usages)
    return [f"the certificate's extended key usage does not allow server authentication (it allows: {names})"]
