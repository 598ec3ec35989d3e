"""Certificate drop -> served, beside API upload -> served, on the real `edge-proxy run`.

One edge per watch mode (`events`, then `poll`), one HTTPS listener and the admin API, all on
127.0.0.1. Each round drops a new certificate into `cert_dir` (tls.key, tls.crt and ca.crt,
each written to a temp file and renamed in) and times it until a brand-new TLS handshake is
shown the new leaf; then uploads another through `POST /api/v1/certificate` and times the round
trip (a handshake right after it must be shown the upload). Drops and uploads alternate in
the same run, so their figures compare. With `poll`, each drop waits a random part of
`poll_delay_ms` first, so drops land at every phase of the polling (back to back, they would all
land just after a read and measure the worst case). Bounded: ROUNDS rounds, 10 s at most per step.

    .venv/bin/python bench/cert_drop.py                      # 8 rounds, events then poll (500 ms)
    .venv/bin/python bench/cert_drop.py --rounds 12 --modes events
    .venv/bin/python bench/cert_drop.py --source /tmp/other  # the `proxy` package of another tree
    .venv/bin/python bench/cert_drop.py --idle-seconds 10    # also: the idle edge's CPU, first

Only the edge processes started here are stopped (by PID).
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import os
import random
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ports import free_ports  # bench/ is not a package

REPO = Path(__file__).resolve().parent.parent
STEP_TIMEOUT = 10.0
PROBE_PAUSE = 0.002  # between handshakes while waiting: leaves the edge's CPU to the edge

CONFIG = """\
# Written by bench/cert_drop.py.
[server]
drain_seconds = 1

[tls]
cert_dir = "certs"
state_dir = "state"
server_name = "localhost"
ip_addresses = ["127.0.0.1"]
watch = "{watch}"
poll_delay_ms = {poll_delay_ms}

[admin]
listen = "127.0.0.1:{admin_port}"
token_file = "state/admin.token"

[[listeners]]
name = "web"
protocol = "https"
listen = "127.0.0.1:{port}"
upstream = "http://127.0.0.1:{upstream_port}"
"""


@dataclass(frozen=True, slots=True)
class Pem:
    cert: bytes
    key: bytes
    ca: bytes
    fingerprint: str


class Issuer:
    """A test CA that signs ECDSA P-256 leaves for localhost and 127.0.0.1."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cert_drop bench CA")])
        self.name = name
        now = datetime.now(UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), False)
            .sign(self.key, hashes.SHA256())
        )

    def leaf(self) -> Pem:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False)
            .sign(self.key, hashes.SHA256())
        )
        return Pem(
            cert=cert.public_bytes(serialization.Encoding.PEM),
            key=key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
            ca=self.cert.public_bytes(serialization.Encoding.PEM),
            fingerprint=hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
        )


@dataclass
class Edge:
    """One `edge-proxy run` child process in a temporary directory."""

    directory: Path
    watch: str
    poll_delay_ms: int
    source: Path
    process: subprocess.Popen[bytes] | None = None
    ports: list[int] = field(default_factory=lambda: free_ports(3))

    @property
    def port(self) -> int:
        return self.ports[0]

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.ports[1]}"

    @property
    def cert_dir(self) -> Path:
        return self.directory / "certs"

    def start(self, first: Pem) -> None:
        drop(self.cert_dir, first)
        config = self.directory / "edge.toml"
        config.write_text(
            CONFIG.format(
                watch=self.watch, poll_delay_ms=self.poll_delay_ms, admin_port=self.ports[1], port=self.port, upstream_port=self.ports[2]
            )
        )
        log = (self.directory / "edge.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "proxy", "run", "--config", str(config)],
            cwd=self.directory,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(self.source)},
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"the edge exited with {self.process.returncode}; see {self.directory / 'edge.log'}")
            try:
                with urllib.request.urlopen(f"{self.admin}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise SystemExit("the edge did not become healthy within 30 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def upload(self, material: Pem) -> None:
        token = (self.directory / "state" / "admin.token").read_text().strip()
        body = json.dumps({"certificate": material.cert.decode(), "key": material.key.decode(), "ca": material.ca.decode()}).encode()
        request = urllib.request.Request(
            f"{self.admin}/api/v1/certificate",
            data=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=STEP_TIMEOUT) as response:
            if response.status != 200:
                raise SystemExit(f"upload answered {response.status}")


def drop(directory: Path, material: Pem) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in (("tls.key", material.key), ("tls.crt", material.cert), ("ca.crt", material.ca)):
        temp = directory / f".{name}.tmp"
        temp.write_bytes(data)
        os.replace(temp, directory / name)


def handshake_fingerprint(port: int) -> str:
    """SHA-256 of the leaf a brand-new TLS connection is shown (a fresh context: no resumption)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the bench compares fingerprints; trust is not the question
    with socket.create_connection(("127.0.0.1", port), timeout=STEP_TIMEOUT) as raw, context.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def until_served(port: int, fingerprint: str, started: float) -> float | None:
    """Seconds from `started` to the first new handshake shown `fingerprint`, or None."""
    while time.perf_counter() - started < STEP_TIMEOUT:
        if handshake_fingerprint(port) == fingerprint:
            return time.perf_counter() - started
        time.sleep(PROBE_PAUSE)
    return None


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Figures:
    idle_cpu_ms_per_s: float | None = None
    drop_served: list[float] = field(default_factory=list)
    upload_round_trip: list[float] = field(default_factory=list)
    missed_drops: int = 0
    upload_not_served: int = 0


def run_mode(watch: str, poll_delay_ms: int, rounds: int, source: Path, issuer: Issuer, idle_seconds: float = 0.0) -> Figures:
    figures = Figures()
    with tempfile.TemporaryDirectory(prefix="edge-cert-drop-") as temp:
        edge = Edge(Path(temp), watch, poll_delay_ms, source)
        try:
            edge.start(issuer.leaf())
            if idle_seconds > 0 and edge.process is not None:
                time.sleep(1.0)  # past start-up
                before = cpu_seconds(edge.process.pid)
                time.sleep(idle_seconds)
                figures.idle_cpu_ms_per_s = (cpu_seconds(edge.process.pid) - before) * 1000 / idle_seconds
            for _ in range(rounds):
                material = issuer.leaf()
                if watch == "poll":
                    time.sleep(random.uniform(0, poll_delay_ms / 1000))
                started = time.perf_counter()
                drop(edge.cert_dir, material)
                served = until_served(edge.port, material.fingerprint, started)
                if served is None:
                    figures.missed_drops += 1
                else:
                    figures.drop_served.append(served)
                material = issuer.leaf()
                started = time.perf_counter()
                edge.upload(material)
                figures.upload_round_trip.append(time.perf_counter() - started)
                if handshake_fingerprint(edge.port) != material.fingerprint:
                    figures.upload_not_served += 1
        finally:
            edge.stop()
    return figures


def summary(values: list[float]) -> str:
    if not values:
        return "-"
    ms = [v * 1000 for v in values]
    return f"median {statistics.median(ms):7.1f} ms   min {min(ms):7.1f}   max {max(ms):7.1f}   (n={len(ms)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8, help="drops and uploads per mode (default 8, at most 50)")
    parser.add_argument("--modes", default="events,poll", help="comma-separated watch modes (default events,poll)")
    parser.add_argument("--poll-delay-ms", type=int, default=500, help="tls.poll_delay_ms for the poll edge (default 500)")
    parser.add_argument("--idle-seconds", type=float, default=0.0, help="first measure the idle edge's CPU this long (at most 60)")
    parser.add_argument("--source", type=Path, default=REPO, help="a directory holding the `proxy` package to run (default: this tree)")
    args = parser.parse_args()
    rounds = max(1, min(args.rounds, 50))
    issuer = Issuer()
    print(f"edge-proxy from {args.source}; {rounds} rounds per mode; load average {os.getloadavg()[0]:.2f}")
    for watch in args.modes.split(","):
        figures = run_mode(watch, args.poll_delay_ms, rounds, args.source, issuer, min(args.idle_seconds, 60.0))
        label = f"{watch}" + (f" ({args.poll_delay_ms} ms)" if watch == "poll" else "")
        if figures.idle_cpu_ms_per_s is not None:
            print(f"{label:16} idle edge process: {figures.idle_cpu_ms_per_s:.1f} ms of CPU per second")
        print(f"{label:16} drop -> served on a new handshake   {summary(figures.drop_served)}")
        print(f"{label:16} upload round trip (served at return) {summary(figures.upload_round_trip)}")
        if figures.missed_drops or figures.upload_not_served:
            print(f"{label:16} NOT SERVED within {STEP_TIMEOUT:.0f} s: {figures.missed_drops} drops, {figures.upload_not_served} uploads")


if __name__ == "__main__":
    main()
