"""Test certificates, made fresh by each test run with cryptography: a CA, intermediates and
leaves with whatever flaw a test needs, and `Pki`, the root and issuing CA whose leaves the edge
serves in the tests. Nothing here is ever committed as a file."""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from proxy.certstore.pem import Material
from proxy.certstore.validate import NamePolicy, ValidMaterial, validate_material

# The one name and address every test certificate and every test config uses: the edge's
# `tls.server_name` and `tls.ip_addresses`. Clients connect to SERVER_IP and verify either.
SERVER_NAME = "edge.example"
SERVER_IP = "127.0.0.1"
POLICY = NamePolicy(SERVER_NAME, (SERVER_IP,))

NOW = datetime.now(UTC)


def new_key(kind: str = "ec") -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    if kind == "rsa1024":
        return rsa.generate_private_key(65537, 1024)
    if kind == "rsa":
        return rsa.generate_private_key(65537, 2048)
    return ec.generate_private_key(ec.SECP256R1())


def pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, form: str = "pkcs8") -> bytes:
    formats = {
        "pkcs8": serialization.PrivateFormat.PKCS8,
        "pkcs1": serialization.PrivateFormat.TraditionalOpenSSL,
        "sec1": serialization.PrivateFormat.TraditionalOpenSSL,
    }
    return key.private_bytes(serialization.Encoding.PEM, formats[form], serialization.NoEncryption())


@dataclass
class Issuer:
    """A CA (root or intermediate) that signs what the test asks for."""

    name: str
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = field(default_factory=new_key)
    certificate: x509.Certificate | None = None
    parent: Issuer | None = None

    def __post_init__(self) -> None:
        if self.certificate is None:
            signer = self.parent or self
            self.certificate = _build(
                subject=self.name,
                issuer=signer.name,
                public_key=self.key.public_key(),
                signing_key=signer.key,
                ca=True,
            )

    @property
    def cert(self) -> x509.Certificate:
        assert self.certificate is not None
        return self.certificate

    def intermediate(self, name: str) -> Issuer:
        return Issuer(name, parent=self)

    def leaf(
        self,
        *dns: str,
        ips: tuple[str, ...] = (),
        key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        ca: bool = False,
        usages: tuple[x509.ObjectIdentifier, ...] | None = (ExtendedKeyUsageOID.SERVER_AUTH,),
        cn: str | None = None,
    ) -> Leaf:
        key = key or new_key()
        certificate = _build(
            subject=cn or (dns[0] if dns else "leaf"),
            issuer=self.name,
            public_key=key.public_key(),
            signing_key=self.key,
            dns=dns,
            ips=ips,
            not_before=not_before,
            not_after=not_after,
            ca=ca,
            usages=usages,
        )
        chain: list[x509.Certificate] = []
        issuer: Issuer = self
        while issuer.parent is not None:
            chain.append(issuer.cert)
            issuer = issuer.parent
        return Leaf(certificate, key, tuple(chain), issuer.cert)


@dataclass
class Leaf:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    chain: tuple[x509.Certificate, ...] = ()
    # The self-signed root the chain leads to. The edge refuses a chain that ends at an issuer
    # it cannot find (tls.crt, ca.crt, the system's roots), so material gives it as ca.crt.
    root: x509.Certificate | None = None

    @property
    def cert_pem(self) -> bytes:
        """Full chain: the leaf, then intermediates."""
        return pem(self.certificate) + b"".join(pem(c) for c in self.chain)

    @property
    def key_pem(self) -> bytes:
        return key_pem(self.key)

    @property
    def fingerprint(self) -> str:
        return self.certificate.fingerprint(hashes.SHA256()).hex()

    def ca_pem(self, ca: Issuer | None = None) -> bytes | None:
        """ca.crt: the CA given, else the chain's own root."""
        if ca is not None:
            return pem(ca.cert)
        return pem(self.root) if self.root is not None else None

    def material(self, ca: Issuer | None = None) -> Material:
        return Material(self.cert_pem, self.key_pem, self.ca_pem(ca))

    def write(self, directory: Path, ca: Issuer | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "tls.crt").write_bytes(self.cert_pem)
        (directory / "tls.key").write_bytes(self.key_pem)
        ca_pem = self.ca_pem(ca)
        if ca_pem is not None:
            (directory / "ca.crt").write_bytes(ca_pem)


def _build(
    *,
    subject: str,
    issuer: str,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    signing_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    ca: bool = False,
    usages: tuple[x509.ObjectIdentifier, ...] | None = None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - timedelta(days=1))
        .not_valid_after(not_after or NOW + timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        # As public CAs issue them; strict path validation (sslyze, webpki) needs both.
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True,
        )
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if usages is not None and not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def ca_and_leaf(*dns: str, ips: tuple[str, ...] = ()) -> tuple[Issuer, Leaf]:
    """A root, an intermediate under it and a leaf under that: the usual shape of real material."""
    root = Issuer("Example Root CA")
    intermediate = root.intermediate("Example Issuing CA")
    return root, intermediate.leaf(*dns, ips=ips)


class Pki:
    """A root and an issuing CA. Every leaf covers SERVER_NAME and SERVER_IP, so clients verify
    the chain and the name exactly as browsers and gRPC clients do."""

    def __init__(self, name: str = "Test") -> None:
        self.root = Issuer(f"{name} Root CA")
        self.issuing = self.root.intermediate(f"{name} Issuing CA")

    @property
    def root_pem(self) -> bytes:
        return pem(self.root.cert)

    def leaf(self, **options: Any) -> Leaf:
        return self.issuing.leaf(SERVER_NAME, ips=(SERVER_IP,), **options)

    def material(self, leaf: Leaf | None = None) -> Material:
        """`leaf` (a fresh one by default) with its chain and the root as `ca.crt`."""
        leaf = leaf or self.leaf()
        return Material(leaf.cert_pem, leaf.key_pem, self.root_pem)

    def valid_material(self, leaf: Leaf | None = None) -> ValidMaterial:
        """`material()` as the store takes it: validated for SERVER_NAME and SERVER_IP."""
        return validate_material(self.material(leaf), POLICY, datetime.now(UTC))

    def client_context(self, alpn: str | None = "http/1.1") -> ssl.SSLContext:
        """A client that trusts the root only, offering `alpn` (None: no ALPN)."""
        context = ssl.create_default_context(cadata=self.root_pem.decode())
        if alpn is not None:
            context.set_alpn_protocols([alpn])
        return context

    def grpc_channel(self, port: int, *, options: tuple[tuple[str, Any], ...] = ()) -> grpc.aio.Channel:
        """A grpc client channel to 127.0.0.1:`port` that trusts the root only."""
        return grpc.aio.secure_channel(f"{SERVER_IP}:{port}", grpc.ssl_channel_credentials(self.root_pem), options=list(options))

    def write_ca(self, path: Path) -> Path:
        path.write_bytes(self.root_pem)
        return path


# DER AlgorithmIdentifiers of equal length: sha256WithRSAEncryption, and what replaces it.
_RSA_SHA256 = bytes.fromhex("300d06092a864886f70d01010b0500")
_RSA_WEAK = {"sha1": bytes.fromhex("300d06092a864886f70d0101050500"), "md5": bytes.fromhex("300d06092a864886f70d0101040500")}


def resigned_weakly(certificate: x509.Certificate, issuer_key: rsa.RSAPrivateKey, algorithm: str) -> x509.Certificate:
    """`certificate` (signed by `issuer_key` with SHA-256) signed again with SHA-1 or MD5, as old
    CAs did. cryptography no longer makes such signatures, so the DER is rewritten: the two
    AlgorithmIdentifiers have the same length, and so has an RSA signature."""
    from cryptography.hazmat.primitives.asymmetric import padding

    weak = _RSA_WEAK[algorithm]
    tbs = certificate.tbs_certificate_bytes
    weak_tbs = tbs.replace(_RSA_SHA256, weak, 1)
    hash_algorithm = hashes.SHA1() if algorithm == "sha1" else hashes.MD5()
    signature = issuer_key.sign(weak_tbs, padding.PKCS1v15(), hash_algorithm)
    der = certificate.public_bytes(serialization.Encoding.DER).replace(tbs, weak_tbs, 1)
    head, _, tail = der.rpartition(_RSA_SHA256)  # the outer AlgorithmIdentifier, after the TBS
    assert tail.endswith(certificate.signature)
    return x509.load_der_x509_certificate(head + weak + tail[: -len(certificate.signature)] + signature)
