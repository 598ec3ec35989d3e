"""`edge-proxy cert check`: the running edge's validation, offline, with its exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.config import write_config
from tests.support.pki import Issuer, pem

REPO = Path(__file__).resolve().parent.parent


def cert_check(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy", "cert", "check", *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def config_file(tmp_path: Path) -> Path:
    web = {"name": "web", "protocol": "https", "listen": "127.0.0.1:8443", "upstream": "http://127.0.0.1:8081"}
    return write_config(tmp_path, {"tls": {"server_name": "edge.example", "ip_addresses": ["10.0.0.5"]}, "listeners": [web]})


def test_good_material_exits_0_with_a_summary(tmp_path: Path, root: Issuer, issuing: Issuer) -> None:
    leaf = issuing.leaf("edge.example")
    leaf.write(tmp_path, ca=root)
    result = cert_check("--cert", "tls.crt", "--key", "tls.key", "--ca", "ca.crt", "--config", str(config_file(tmp_path)), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "ok: the edge would serve this certificate"
    assert f"  fingerprint: {leaf.fingerprint}" in result.stdout.splitlines()
    assert "  chain:       2 certificate(s), verified up to ca.crt" in result.stdout.splitlines()


def test_bad_material_exits_1_naming_every_problem(tmp_path: Path, root: Issuer) -> None:
    leaf = root.leaf("other.example")
    (tmp_path / "tls.crt").write_bytes(leaf.cert_pem)
    (tmp_path / "tls.key").write_bytes(root.leaf("x").key_pem)
    (tmp_path / "ca.crt").write_bytes(pem(root.cert))
    result = cert_check("--cert", "tls.crt", "--key", "tls.key", "--ca", "ca.crt", "--config", str(config_file(tmp_path)), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "refused: the edge would not serve this material",
        "  - the private key does not match the certificate",
        "  - the certificate covers other.example but not edge.example or 10.0.0.5",
    ]


def test_unreadable_file_is_named(tmp_path: Path, root: Issuer) -> None:
    (tmp_path / "tls.crt").write_bytes(pem(root.cert))
    result = cert_check("--cert", "tls.crt", "--key", "missing.key", "--config", str(config_file(tmp_path)), cwd=tmp_path)
    assert result.returncode == 1
    assert "missing.key: cannot read the key file: No such file or directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_without_config_uses_the_embedded_default_names(tmp_path: Path, root: Issuer) -> None:
    leaf = root.leaf("localhost", ips=("127.0.0.1",))
    leaf.write(tmp_path)
    result = cert_check("--cert", "tls.crt", "--key", "tls.key", "--ca", "ca.crt", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
