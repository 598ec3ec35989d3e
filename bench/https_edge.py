"""The edge-proxy side of bench/https.sh: one HTTPS listener on uvloop, in one process.

`cert DIR` writes an ECDSA P-256 certificate for localhost and 127.0.0.1 (tls.crt, tls.key) that
both proxies under test serve; `serve` runs the listener until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from proxy.certstore.pem import Material
from proxy.certstore.store import CertStore
from proxy.certstore.validate import NamePolicy, validate_material
from proxy.config import Address, HttpUpstream, Limits, ListenerConfig, Route
from proxy.http import HttpsListener
from proxy.tlsmaterial import TlsObjects, tls_preparer


def write_cert(directory: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tls.crt").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (directory / "tls.key").write_bytes(key_pem)
    (directory / "tls.key").chmod(0o600)


async def serve(cert_dir: Path, port: int, upstream_port: int) -> None:
    material = Material((cert_dir / "tls.crt").read_bytes(), (cert_dir / "tls.key").read_bytes())
    store: CertStore[TlsObjects] = CertStore(tls_preparer("1.2"))
    await store.publish(validate_material(material, NamePolicy("localhost", ("127.0.0.1",)), datetime.now(UTC)), "directory")
    config = ListenerConfig(
        name="bench",
        protocol="https",
        listen=Address("127.0.0.1", port),
        limits=Limits(),
        routes=(Route(HttpUpstream("http", "127.0.0.1", upstream_port)),),
    )
    listener = HttpsListener(config, "1.2", lambda: store.current.tls.ssl_context)
    await listener.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"edge-proxy listening on 127.0.0.1:{listener.port}", flush=True)
    await stop.wait()
    await listener.stop(drain_seconds=1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    cert = commands.add_parser("cert")
    cert.add_argument("directory", type=Path)
    run = commands.add_parser("serve")
    run.add_argument("--cert-dir", type=Path, required=True)
    run.add_argument("--port", type=int, required=True)
    run.add_argument("--upstream-port", type=int, required=True)
    args = parser.parse_args()
    if args.command == "cert":
        write_cert(args.directory)
    else:
        logging.basicConfig(level=logging.WARNING)
        uvloop.run(serve(args.cert_dir, args.port, args.upstream_port))


if __name__ == "__main__":
    main()
