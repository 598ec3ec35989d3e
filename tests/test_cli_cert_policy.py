"""`edge-proxy cert check --config` applies the config's `tls.policy` and the rules for what can
serve, exactly as the running edge does."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.support.pki import Issuer, pem
from tests.test_cli_cert import cert_check


def write_config(tmp_path: Path, policy: str) -> Path:
    config = tmp_path / "edge.toml"
    config.write_text(
        f'[tls]\nserver_name = "edge.example"\npolicy = "{policy}"\n\n'
        '[[listeners]]\nname = "web"\nprotocol = "https"\nlisten = "127.0.0.1:8443"\nupstream = "http://127.0.0.1:8081"\n'
    )
    return config


def test_cert_check_names_the_policy_it_applied(tmp_path: Path, root: Issuer, issuing: Issuer) -> None:
    issuing.leaf("edge.example").write(tmp_path, ca=root)
    config = str(write_config(tmp_path, "fips"))
    result = cert_check("--cert", "tls.crt", "--key", "tls.key", "--ca", "ca.crt", "--config", config, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "  tls policy:  fips (a browser's TLS handshakes with it succeed)" in result.stdout.splitlines()


def test_cert_check_refuses_an_ed25519_leaf_and_an_incomplete_chain(tmp_path: Path, issuing: Issuer) -> None:
    leaf = issuing.leaf("edge.example", key=ed25519.Ed25519PrivateKey.generate())  # type: ignore[arg-type]
    (tmp_path / "tls.crt").write_bytes(pem(leaf.certificate))
    (tmp_path / "tls.key").write_bytes(leaf.key_pem)
    result = cert_check("--cert", "tls.crt", "--key", "tls.key", "--config", str(write_config(tmp_path, "default")), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "refused: the edge would not serve this material",
        "  - tls.key holds an Ed25519 key, which browsers cannot use for TLS; "
        "use an ECDSA P-256 or P-384 key, or RSA with at least 2048 bits",
        "  - tls.crt is incomplete: CN=Example Issuing CA, the issuer of CN=edge.example, is in neither tls.crt, ca.crt nor the "
        "system's trusted roots; append that intermediate certificate to tls.crt, or give the root it leads to as ca.crt",
    ]
