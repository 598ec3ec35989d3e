"""The edge-proxy side of bench/https.sh: its certificate and its configuration.

`setup DIR` writes DIR/cert/tls.crt and tls.key (ECDSA P-256 for localhost and 127.0.0.1, served
by both proxies under test) and DIR/edge.toml, a complete config with one HTTPS listener in front
of the bench upstream. The bench then runs `edge-proxy run --config DIR/edge.toml`: the same
program, process model and feature set (routing, X-Forwarded-*, metrics, timeouts, the admin
server and the certificate watcher) that an operator runs.
"""

from __future__ import annotations

import argparse
import ipaddress
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CONFIG = """\
# Written by bench/https_edge.py for bench/https.sh.
[server]
workers = {workers}
drain_seconds = 2  # the bench stops it with SIGTERM

[tls]
cert_dir = "cert"
state_dir = "state"
server_name = "localhost"
ip_addresses = ["127.0.0.1"]

[admin]
listen = "127.0.0.1:{admin_port}"
token_file = "state/admin.token"

[[listeners]]
name = "bench"
protocol = "https"
listen = "127.0.0.1:{port}"
upstream = "http://127.0.0.1:{upstream_port}"
"""

# With --one-port-port: the same listener once more, also serving gRPC (ALPN h2) on its port.
ONE_PORT_LISTENER = """
[[listeners]]
name = "bench-one-port"
protocol = "https"
listen = "127.0.0.1:{port}"
upstream = "http://127.0.0.1:{upstream_port}"
grpc_upstream = "127.0.0.1:{grpc_port}"
"""


# With --access-port: a second edge, the same but with the JSON access log written to a file.
ACCESS_LOG = """
[log]
access = "json"
access_file = "access.log"
"""


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    setup = commands.add_parser("setup")
    setup.add_argument("directory", type=Path)
    setup.add_argument("--port", type=int, required=True)
    setup.add_argument("--upstream-port", type=int, required=True)
    setup.add_argument("--admin-port", type=int, required=True)
    setup.add_argument("--workers", type=int, default=1)
    setup.add_argument("--one-port-port", type=int, help="also a listener that serves gRPC on its HTTPS port")
    setup.add_argument("--grpc-port", type=int, default=1, help="its grpc_upstream (HTTP/1.1 requests never dial it)")
    setup.add_argument("--access-port", type=int, help="also edge-access.toml: the same edge on this port with the JSON access log")
    setup.add_argument("--access-admin-port", type=int, default=0)
    setup.add_argument("--pure-port", type=int, help="also edge-pure.toml: the same edge on this port (run it on the pure-Python engine)")
    setup.add_argument("--pure-admin-port", type=int, default=0)
    args = parser.parse_args()
    write_cert(args.directory / "cert")
    (args.directory / "state").mkdir(exist_ok=True)
    config = CONFIG.format(workers=args.workers, admin_port=args.admin_port, port=args.port, upstream_port=args.upstream_port)
    if args.one_port_port:
        config += ONE_PORT_LISTENER.format(port=args.one_port_port, upstream_port=args.upstream_port, grpc_port=args.grpc_port)
    (args.directory / "edge.toml").write_text(config)
    if args.access_port:
        access = second_edge(args.directory, "access", args.workers, args.access_admin_port, args.access_port, args.upstream_port)
        (args.directory / "edge-access.toml").write_text(access + ACCESS_LOG)
    if args.pure_port:
        pure = second_edge(args.directory, "pure", args.workers, args.pure_admin_port, args.pure_port, args.upstream_port)
        (args.directory / "edge-pure.toml").write_text(pure)


def second_edge(directory: Path, name: str, workers: int, admin_port: int, port: int, upstream_port: int) -> str:
    """The config of another edge process beside the first: the same, with ports and state of its own."""
    config = CONFIG.format(workers=workers, admin_port=admin_port, port=port, upstream_port=upstream_port)
    config = config.replace('state_dir = "state"', f'state_dir = "state-{name}"')
    config = config.replace('"state/admin.token"', f'"state-{name}/admin.token"')
    (directory / f"state-{name}").mkdir(exist_ok=True)
    return config


if __name__ == "__main__":
    main()
