"""Material that would not serve browsers is refused, dropped or uploaded, under each policy:
the problem is named, the serving certificate stays, and every new handshake still succeeds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from proxy.certstore.pem import Material
from tests.support.edge import RunningEdge, drop_files, upload_body
from tests.support.pki import SERVER_IP, SERVER_NAME, Issuer, Pki, new_key, pem, resigned_weakly
from tests.support.policy import python_client, python_handshake, running_edge
from tests.support.probes import eventually, handshake_fingerprint

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Unservable:
    name: str
    make: Callable[[Pki], Material]
    problem: str  # the start of the problem an operator reads


def _with_key(key: Any) -> Callable[[Pki], Material]:
    def make(pki: Pki) -> Material:
        return pki.material(pki.leaf(key=key))

    return make


def _sha1_signed(pki: Pki) -> Material:
    root = Issuer("Old RSA Root CA", key=new_key("rsa"))
    leaf = root.leaf(SERVER_NAME, ips=(SERVER_IP,))
    weak = resigned_weakly(leaf.certificate, root.key, "sha1")  # type: ignore[arg-type]
    return Material(pem(weak), leaf.key_pem, pem(root.cert))


def _half_written(pki: Pki) -> Material:
    leaf = pki.leaf()
    return Material(pem(leaf.certificate) + b"-----BEG", leaf.key_pem, pki.root_pem)


def _without_intermediate_or_ca(pki: Pki) -> Material:
    leaf = pki.leaf()
    return Material(pem(leaf.certificate), leaf.key_pem, None)


KINDS = [
    Unservable("ed25519", _with_key(ed25519.Ed25519PrivateKey.generate()), "tls.key holds an Ed25519 key, which browsers cannot use"),
    Unservable("secp256k1", _with_key(ec.generate_private_key(ec.SECP256K1())), "tls.key holds an ECDSA key on curve secp256k1"),
    Unservable("p521", _with_key(ec.generate_private_key(ec.SECP521R1())), "tls.key holds an ECDSA key on curve P-521 (secp521r1)"),
    Unservable("sha1", _sha1_signed, "the certificate is signed with SHA-1, which browsers refuse"),
    Unservable("half-written", _half_written, "tls.crt has text after its last -----END line"),
    Unservable("incomplete", _without_intermediate_or_ca, "tls.crt is incomplete: CN=Policy Issuing CA, the issuer of"),
]


async def _all_handshakes_serve(running: RunningEdge, fingerprint: str) -> None:
    """A fresh, verifying handshake on every listener shows `fingerprint`, in TLS 1.3 and 1.2."""
    for name, port in running.ports.items():
        alpn = "h2" if name == "grpc" else "http/1.1"
        assert await handshake_fingerprint(port, running.pki, alpn=alpn) == fingerprint
        for version in ("1.3", "1.2"):
            result = await python_handshake(port, python_client(running.pki, version, alpn=alpn))
            assert isinstance(result, tuple), f"{name} TLS {version}: {result}"


def _problems(body: dict[str, Any]) -> list[str]:
    error = body["last_error"]
    return list(error["problems"]) if error else []


@pytest.mark.parametrize("policy", ["default", "fips"])
async def test_each_unservable_kind_is_refused_by_drop_and_upload_and_every_handshake_still_succeeds(tmp_path: Path, policy: str) -> None:
    async with running_edge(tmp_path, policy) as running:
        admin = running.admin
        serving = running.serving_fingerprint
        version = (await admin.certificate())["version"]
        await _all_handshakes_serve(running, serving)
        for kind in KINDS:
            material = kind.make(running.pki)
            status, body = await admin.upload(upload_body(material))
            assert status == 422, (kind.name, body)
            assert any(p.startswith(kind.problem) for p in body["problems"]), (kind.name, body["problems"])

            drop_files(tmp_path / "certs", material)

            async def refused(kind: Unservable = kind) -> bool:
                certificate = await admin.certificate()
                return (
                    certificate["last_error"] is not None
                    and certificate["last_error"]["source"] == "directory"
                    and any(p.startswith(kind.problem) for p in _problems(certificate))
                )

            await eventually(refused, timeout=10)
            certificate = await admin.certificate()
            assert (certificate["fingerprint_sha256"], certificate["version"]) == (serving, version), kind.name
            await _all_handshakes_serve(running, serving)
        good = running.pki.leaf()
        drop_files(tmp_path / "certs", running.pki.material(good))
        await eventually(lambda: _served(running, good.fingerprint), timeout=10)
        await _all_handshakes_serve(running, good.fingerprint)


async def _served(running: RunningEdge, fingerprint: str) -> bool:
    return running.serving_fingerprint == fingerprint


async def test_unservable_material_at_start_starts_on_the_self_signed_default_naming_why(tmp_path: Path) -> None:
    pki = Pki("Policy")
    material = _with_key(ec.generate_private_key(ec.SECP256K1()))(pki)
    async with running_edge(tmp_path, "fips", material=material) as running:
        certificate = await running.admin.certificate()
        assert certificate["source"] == "self-signed"
        assert _problems(certificate)[0].startswith("tls.key holds an ECDSA key on curve secp256k1")
        for name, port in running.ports.items():
            result = await python_handshake(port, python_client(running.pki, "1.3", alpn="h2" if name == "grpc" else "http/1.1"))
            assert "CERTIFICATE_VERIFY_FAILED" in str(result)  # a handshake that got as far as the self-signed certificate
