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
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from proxy.certstore.pem import Material, PrivateKey, parse_material
from proxy.certstore.roots import Roots
from proxy.errors import MaterialError

MIN_RSA_BITS = 2048
# Browsers verify ECDSA only on these curves, and TLS 1.3 signs with nothing else (RFC 8446
# 4.2.3 ties each ECDSA scheme to its curve; Chrome and Firefox never offer P-521).
SERVING_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384"}
_CURVE_NAMES = {"secp521r1": "P-521 (secp521r1)", "secp256k1": "secp256k1"}
_KEY_ADVICE = "use an ECDSA P-256 or P-384 key, or RSA with at least 2048 bits"
# Browsers refuse these signatures anywhere in a chain (CA/Browser Forum BR 7.1.3).
_WEAK_HASHES = {"sha1": "SHA-1", "md5": "MD5"}
_NO_ROOTS = Roots()


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


def validate_material(material: Material, policy: NamePolicy, now: datetime, roots: Roots = _NO_ROOTS) -> ValidMaterial:
    """Check `material` against every rule. Raises MaterialError with all problems found.

    `roots` are the trusted roots a chain may end at without ca.crt (the system's, in the edge).
    Whether the material serves is for a handshake to prove (`proxy.tlsmaterial`), not this."""
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
    problems += _key_problems(key, certificates)
    problems += _weak_signature_problems(certificates)
    problems += _chain_problems(certificates)
    if parsed.ca:
        problems += _ca_problems(certificates, parsed.ca)
    else:
        problems += _anchor_problems(certificates, roots)
    problems += _validity_problems(certificates, now)
    problems += _name_problems(leaf, policy)
    problems += _usage_problems(leaf)
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


def _weak_hash(certificate: x509.Certificate) -> str | None:
    """ "SHA-1" or "MD5" when the certificate is signed with it. Asked before any signature
    check: cryptography refuses to verify such signatures, which would read as "not signed by"."""
    try:
        algorithm = certificate.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return None
    return _WEAK_HASHES.get(algorithm.name) if algorithm is not None else None


def _self_signed(certificate: x509.Certificate) -> bool:
    return certificate.issuer == certificate.subject and (_weak_hash(certificate) is not None or _signed_by(certificate, certificate))


def _issued_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Signed by `issuer`; for a weak signature (named as such elsewhere), the names decide."""
    if _weak_hash(child) is not None:
        return child.issuer == issuer.subject
    return _signed_by(child, issuer)


def _describe_key(key: object) -> str | None:
    """What is wrong with a public key for serving, or None."""
    if isinstance(key, rsa.RSAPublicKey):
        return None if key.key_size >= MIN_RSA_BITS else f"an RSA key of {key.key_size} bits"
    if isinstance(key, ec.EllipticCurvePublicKey):
        name = key.curve.name
        return None if name in SERVING_CURVES else f"an ECDSA key on curve {_CURVE_NAMES.get(name, name)}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "an Ed25519 key"
    if isinstance(key, ed448.Ed448PublicKey):
        return "an Ed448 key"
    return f"a {type(key).__name__.removeprefix('_')} key"


def _key_problems(key: PrivateKey, certificates: Sequence[x509.Certificate]) -> list[str]:
    problems = []
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < MIN_RSA_BITS:
        problems.append(f"the RSA key has {key.key_size} bits; at least {MIN_RSA_BITS} are needed")
    else:
        what = _describe_key(key.public_key())
        if what is not None:
            problems.append(f"tls.key holds {what}, which browsers cannot use for TLS; {_KEY_ADVICE}")
    for certificate in certificates[1:]:
        if _self_signed(certificate):
            continue  # a root's key signs nothing a browser checks here
        what = _describe_key(certificate.public_key())
        if what is not None:
            problems.append(f"the intermediate {_name(certificate)} in tls.crt has {what}, which browsers cannot verify")
    return problems


def _weak_signature_problems(certificates: Sequence[x509.Certificate]) -> list[str]:
    problems = []
    for index, certificate in enumerate(certificates):
        weak = _weak_hash(certificate)
        if weak is None or (index > 0 and _self_signed(certificate)):
            continue  # nobody checks a root's signature on itself
        what = "the certificate" if index == 0 else f"the intermediate {_name(certificate)} in tls.crt"
        problems.append(f"{what} is signed with {weak}, which browsers refuse; have it reissued with a SHA-256 signature")
    return problems


def _anchor_problems(certificates: Sequence[x509.Certificate], roots: Roots) -> list[str]:
    """Without ca.crt, the chain must end at a self-signed root or at one the system trusts."""
    top = certificates[-1]
    if _self_signed(top) or roots.issuer_of(top) is not None:
        return []
    if any(_issued_by(top, c) for c in certificates[:-1]):
        return []  # out of order: named by the chain rule
    return [
        f"tls.crt is incomplete: {top.issuer.rfc4514_string()}, the issuer of {_name(top)}, is in neither tls.crt, "
        "ca.crt nor the system's trusted roots; append that intermediate certificate to tls.crt, "
        "or give the root it leads to as ca.crt"
    ]


def _signed_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _chain_problems(certificates: Sequence[x509.Certificate]) -> list[str]:
    problems = []
    for child, issuer in itertools.pairwise(certificates):
        if not _issued_by(child, issuer):
            problems.append(
                f"tls.crt: {_name(child)} is not signed by {_name(issuer)}, the certificate after it; "
                "list the leaf first, then each issuer in order"
            )
    return problems


def _ca_problems(certificates: Sequence[x509.Certificate], ca: Sequence[x509.Certificate]) -> list[str]:
    top = certificates[-1]
    ca_der = {c.public_bytes(serialization.Encoding.DER) for c in ca}
    if top.public_bytes(serialization.Encoding.DER) in ca_der or any(_issued_by(top, root) for root in ca):
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
