"""PEM parsing: bytes of `tls.crt`, `tls.key` and `ca.crt` in, certificate and key objects out.

Pure: no files, no clock. Knows the file names only to word its messages. Every problem is
collected and raised together as MaterialError; anything else escaping from here is a bug.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from proxy.errors import MaterialError

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey

_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)
_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")
_KEY_LABELS = {b"PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY", b"ENCRYPTED PRIVATE KEY", b"DSA PRIVATE KEY"}
_KEY_FORMS = {b"PRIVATE KEY": "PKCS#8", b"RSA PRIVATE KEY": "PKCS#1", b"EC PRIVATE KEY": "SEC1"}
# `openssl ecparam -genkey` writes the curve parameters before a SEC1 key; they are harmless.
_IGNORED_IN_KEY = {b"EC PARAMETERS"}


@dataclass(frozen=True, slots=True)
class Material:
    """Raw material as an operator supplies it: the three files' bytes."""

    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes | None = None


@dataclass(frozen=True, slots=True)
class ParsedMaterial:
    certificates: tuple[x509.Certificate, ...]
    key: PrivateKey
    ca: tuple[x509.Certificate, ...]


@dataclass(frozen=True, slots=True)
class _Block:
    label: bytes
    body: bytes
    headers: bytes


def _blocks(data: bytes) -> tuple[list[_Block], bool, bool]:
    """The PEM blocks in `data`, whether a BEGIN line has no END line (a cut-off file), and
    whether anything but white space follows the last END line (a file still being written)."""
    blocks = []
    end = 0
    for match in _BLOCK.finditer(data):
        end = match.end()
        body = match.group(2)
        headers = b""
        if b"\n\n" in body.replace(b"\r\n", b"\n") and b":" in body.split(b"\n", 1)[0]:
            text = body.replace(b"\r\n", b"\n")
            headers, _, body = text.partition(b"\n\n")
        blocks.append(_Block(match.group(1), body, headers))
    truncated = len(_BEGIN.findall(data)) > len(blocks)
    trailing = bool(blocks) and bool(data[end:].strip())
    return blocks, truncated, trailing


def _der(block: _Block) -> bytes:
    return base64.b64decode(b"".join(block.body.split()), validate=True)


def _describe(labels: list[bytes]) -> str:
    names = sorted({label.decode() for label in labels})
    return ", ".join(names)


def parse_certificates(data: bytes, filename: str, problems: list[str], settling: list[str]) -> list[x509.Certificate]:
    """Certificates from a PEM bundle, in file order. Problems go to `problems`; those a
    half-written file would also cause go to `settling` too."""
    if not data.strip():
        _add(f"{filename} is empty", problems, settling)
        return []
    blocks, truncated, trailing = _blocks(data)
    if truncated:
        _add(f"{filename} is cut off: a -----BEGIN line has no matching -----END line", problems, settling)
    elif trailing:
        _add(f"{filename} has text after its last -----END line; it must hold whole PEM certificates only", problems, settling)
    if not blocks:
        if not truncated:
            problems.append(_no_pem(data, filename, "-----BEGIN CERTIFICATE-----"))
        return []
    keys = [b.label for b in blocks if b.label in _KEY_LABELS]
    if keys:
        problems.append(f"{filename} contains a private key ({_describe(keys)}); keep the key in tls.key only")
    others = [b.label for b in blocks if b.label != b"CERTIFICATE" and b.label not in _KEY_LABELS]
    if others:
        problems.append(f"{filename} contains {_describe(others)}, which is not a certificate")
    certificates = []
    certificate_blocks = [b for b in blocks if b.label == b"CERTIFICATE"]
    for index, block in enumerate(certificate_blocks):
        try:
            certificates.append(_load_certificate(_der(block)))
        except (ValueError, TypeError, binascii.Error, UnsupportedAlgorithm, x509.InvalidVersion, x509.DuplicateExtension) as e:
            problems.append(f"{filename}: certificate {index + 1} cannot be parsed ({_short(e)})")
    if not certificate_blocks and not keys and not others and not truncated:
        problems.append(f"{filename} holds no certificate")
    return certificates


def _load_certificate(der: bytes) -> x509.Certificate:
    """Load and touch every part validation reads: cryptography parses some of them lazily,
    and a damaged extension must fail here, as a parse problem, not later."""
    certificate = x509.load_der_x509_certificate(der)
    certificate.public_key()
    for extension in certificate.extensions:
        _ = extension.value
    certificate.subject.rfc4514_string()
    certificate.issuer.rfc4514_string()
    _ = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    return certificate


def parse_private_key(data: bytes, problems: list[str], settling: list[str], filename: str = "tls.key") -> PrivateKey | None:
    """The one private key in `tls.key` (PKCS#8, PKCS#1 or SEC1, unencrypted)."""
    if not data.strip():
        _add(f"{filename} is empty", problems, settling)
        return None
    blocks, truncated, trailing = _blocks(data)
    if truncated:
        _add(f"{filename} is cut off: a -----BEGIN line has no matching -----END line", problems, settling)
    elif trailing:
        _add(f"{filename} has text after its last -----END line; it must hold one whole PEM key only", problems, settling)
    if not blocks:
        if not truncated:
            problems.append(_no_pem(data, filename, "-----BEGIN PRIVATE KEY-----"))
        return None
    certs = [b for b in blocks if b.label == b"CERTIFICATE"]
    if certs:
        problems.append(f"{filename} contains {len(certs)} certificate(s); certificates belong in tls.crt")
    keys = [b for b in blocks if b.label in _KEY_LABELS]
    others = [b.label for b in blocks if b.label not in _KEY_LABELS and b.label != b"CERTIFICATE" and b.label not in _IGNORED_IN_KEY]
    if others:
        problems.append(f"{filename} contains {_describe(others)}, which is not a private key")
    if len(keys) > 1:
        problems.append(f"{filename} contains {len(keys)} private keys; it must hold exactly one")
        return None
    if not keys:
        if not truncated:
            problems.append(f"{filename} holds no private key")
        return None
    block = keys[0]
    if block.label == b"ENCRYPTED PRIVATE KEY" or b"ENCRYPTED" in block.headers:
        problems.append(
            f"{filename} is encrypted with a passphrase; store it unencrypted (openssl pkey -in {filename} -out {filename}.plain)"
        )
        return None
    if block.label == b"DSA PRIVATE KEY":
        problems.append(f"{filename} holds a DSA key, which TLS servers do not use; use an ECDSA or RSA key")
        return None
    try:
        key = serialization.load_der_private_key(_der(block), password=None)
    except (ValueError, TypeError, binascii.Error, UnsupportedAlgorithm) as e:
        problems.append(f"{filename}: the {_KEY_FORMS.get(block.label, 'PEM')} private key cannot be parsed ({_short(e)})")
        return None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        problems.append(f"{filename} holds a {type(key).__name__}, not an RSA, ECDSA or Ed25519 key")
        return None
    return key


def parse_material(material: Material) -> ParsedMaterial:
    """Parse all three files. Raises MaterialError naming every problem in every file."""
    problems: list[str] = []
    settling: list[str] = []
    certificates = parse_certificates(material.cert_pem, "tls.crt", problems, settling)
    key = parse_private_key(material.key_pem, problems, settling)
    ca: list[x509.Certificate] = []
    if material.ca_pem is not None and material.ca_pem.strip():
        ca = parse_certificates(material.ca_pem, "ca.crt", problems, settling)
    if problems or key is None:
        raise MaterialError(problems or ["tls.key holds no private key"], may_settle=bool(settling))
    return ParsedMaterial(tuple(certificates), key, tuple(ca))


def _add(problem: str, problems: list[str], settling: list[str]) -> None:
    problems.append(problem)
    settling.append(problem)


def _no_pem(data: bytes, filename: str, expected: str) -> str:
    if data[:1] == b"\x30":
        return f"{filename} looks like binary DER; convert it to PEM (openssl x509 -inform der) so it starts with {expected}"
    return f"{filename} holds no PEM block; it should start with {expected}"


def _short(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."
