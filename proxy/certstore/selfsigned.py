"""The self-signed default certificate: what the edge serves until an operator brings material.

Pure: names and a clock in, PEM material out. ECDSA P-256, valid for a year, covering
`server_name`, every configured IP address and `localhost`.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from proxy.certstore.pem import Material
from proxy.certstore.validate import NamePolicy, san_names

VALIDITY = timedelta(days=365)


def generate_self_signed(policy: NamePolicy, now: datetime) -> Material:
    """A new self-signed certificate and key for the policy's names and `localhost`."""
    key = ec.generate_private_key(ec.SECP256R1())
    dns = [policy.server_name] if policy.server_name else []
    if "localhost" not in dns:
        dns.append("localhost")
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in policy.ip_addresses]
    common_name = policy.server_name or (policy.ip_addresses[0] if policy.ip_addresses else "localhost")
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edge-proxy self-signed"),
        ]
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return Material(certificate.public_bytes(serialization.Encoding.PEM), key_pem)


def still_fits(certificate: x509.Certificate, policy: NamePolicy, now: datetime) -> bool:
    """Whether a stored self-signed certificate may be reused: unexpired (a day to spare) and
    covering every configured name and `localhost`."""
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc - timedelta(days=1):
        return False
    dns, ips = san_names(certificate)
    wanted_dns = {"localhost"} | ({policy.server_name} if policy.server_name else set())
    wanted_ips = {str(ipaddress.ip_address(ip)) for ip in policy.ip_addresses}
    return wanted_dns <= set(dns) and wanted_ips <= {str(ipaddress.ip_address(ip)) for ip in ips}
