"""Every kind of bad material, by directory drop and by API upload, against the whole Edge
(issue 6): it is refused with the problem named, every listener (HTTPS and gRPC) keeps showing
new clients the certificate it showed before, and good material offered right after is served at
once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import pytest_asyncio
from cryptography.x509.oid import ExtendedKeyUsageOID

from proxy.certstore.pem import Material
from tests.support.edge import RunningEdge, drop_files, running_edge, upload_body
from tests.support.pki import NOW, SERVER_IP, SERVER_NAME, Issuer, Pki, key_pem, new_key, pem
from tests.support.probes import eventually, free_port

# One edge serves the whole module (starting one per case would double the run time); each case
# starts from whatever the previous one left serving and judges only what changes after it.
pytestmark = [pytest.mark.reliability, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


@dataclass(frozen=True)
class BadKind:
    name: str
    material: Callable[[Pki], Material]
    problem: str  # what the refusal must name, in the words an operator reads


def _with(pki: Pki, *, cert_pem: bytes | None = None, key_pem: bytes | None = None, ca_pem: bytes | None = None, **leaf: Any) -> Material:
    """A fresh leaf's material (with the PKI's root as ca.crt) with the parts given replaced."""
    made = pki.leaf(**leaf)
    return Material(cert_pem or made.cert_pem, made.key_pem if key_pem is None else key_pem, ca_pem or pki.root_pem)


def _wrong_name(pki: Pki) -> Material:
    leaf = pki.issuing.leaf("other.example", ips=("10.9.9.9",))
    return Material(leaf.cert_pem, leaf.key_pem, pki.root_pem)


def _key_in_cert_file(pki: Pki) -> Material:
    leaf = pki.leaf()
    return Material(leaf.cert_pem + leaf.key_pem, leaf.key_pem, pki.root_pem)


def _ca_as_leaf(pki: Pki) -> Material:
    return Material(pem(pki.issuing.cert), key_pem(pki.issuing.key), pki.root_pem)


def _out_of_order(pki: Pki) -> Material:
    leaf = pki.leaf()
    return Material(pem(pki.issuing.cert) + pem(leaf.certificate), leaf.key_pem, pki.root_pem)


def _missing_intermediate(pki: Pki) -> Material:
    leaf = pki.leaf()
    return Material(pem(leaf.certificate), leaf.key_pem, pki.root_pem)


KINDS = [
    BadKind("mismatched key", lambda pki: _with(pki, key_pem=pki.leaf().key_pem), "the private key does not match the certificate"),
    BadKind("expired", lambda pki: _with(pki, not_before=NOW - timedelta(days=90), not_after=NOW - timedelta(days=1)), "expired on"),
    BadKind("not yet valid", lambda pki: _with(pki, not_before=NOW + timedelta(days=1)), "is not valid before"),
    BadKind("wrong name", _wrong_name, f"covers other.example, 10.9.9.9 but not {SERVER_NAME} or {SERVER_IP}"),
    BadKind("garbage", lambda pki: _with(pki, cert_pem=b"\x00\x17this is no certificate\n" * 40), "tls.crt holds no PEM block"),
    BadKind("truncated", lambda pki: _with(pki, cert_pem=pki.leaf().cert_pem[:300]), "tls.crt is cut off"),
    BadKind("key in the cert file", _key_in_cert_file, "tls.crt contains a private key"),
    BadKind("CA certificate as leaf", _ca_as_leaf, "is a CA certificate, not a server certificate"),
    BadKind(
        "client-auth-only leaf",
        lambda pki: _with(pki, usages=(ExtendedKeyUsageOID.CLIENT_AUTH,)),
        "extended key usage does not allow server authentication",
    ),
    BadKind("RSA 1024", lambda pki: _with(pki, key=new_key("rsa1024")), "at least 2048 are needed"),
    BadKind("chain out of order", _out_of_order, "before the leaf"),
    BadKind("missing intermediate", _missing_intermediate, "the chain does not lead to the CA in ca.crt"),
    BadKind("wrong CA", lambda pki: _with(pki, ca_pem=pem(Issuer("Somebody Else's Root CA").cert)), "the chain does not lead to the CA"),
    BadKind("empty key", lambda pki: _with(pki, key_pem=b""), "tls.key is empty"),
]


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> AsyncIterator[RunningEdge]:
    # Only handshakes are made here: the upstreams are never called.
    base = tmp_path_factory.mktemp("bad-material")
    async with running_edge(base, pki=pki, http_upstream=free_port(), grpc_upstream=free_port()) as edge:
        yield edge


async def _serving(running: RunningEdge) -> dict[str, Any]:
    return await running.admin.certificate()


async def _assert_unchanged(running: RunningEdge, before: dict[str, Any], kind: BadKind, source: str) -> None:
    serving = await _serving(running)
    assert (serving["version"], serving["fingerprint_sha256"]) == (before["version"], before["fingerprint_sha256"])
    assert serving["last_error"] is not None and serving["last_error"]["source"] == source
    problems = serving["last_error"]["problems"]
    assert any(kind.problem in problem for problem in problems), problems
    assert await running.fingerprints() == running.everywhere(before["fingerprint_sha256"])


async def _assert_served(running: RunningEdge, fingerprint: str, version: int) -> None:
    serving = await _serving(running)
    assert (serving["version"], serving["fingerprint_sha256"], serving["last_error"]) == (version, fingerprint, None)
    assert await running.fingerprints() == running.everywhere(fingerprint)


@pytest.mark.parametrize("kind", KINDS, ids=[kind.name for kind in KINDS])
async def test_bad_material_dropped_in_the_directory_is_refused_and_the_next_good_drop_serves(
    running: RunningEdge, pki: Pki, kind: BadKind
) -> None:
    before = await _serving(running)
    assert await running.fingerprints() == running.everywhere(before["fingerprint_sha256"])

    await asyncio.to_thread(drop_files, running.cert_dir, kind.material(pki))

    async def rejected() -> bool:
        return (await _serving(running))["last_error"] not in (None, before["last_error"])

    # README, "Drop files": reported within 3 s of settling (a drop that may be half-written is retried for 2 s).
    await eventually(rejected, timeout=15)
    await _assert_unchanged(running, before, kind, "directory")

    good = pki.leaf()
    await asyncio.to_thread(drop_files, running.cert_dir, pki.material(good))

    async def served() -> bool:
        return bool((await _serving(running))["fingerprint_sha256"] == good.fingerprint)

    await eventually(served, timeout=15)
    await _assert_served(running, good.fingerprint, before["version"] + 1)


@pytest.mark.parametrize("kind", KINDS, ids=[kind.name for kind in KINDS])
async def test_bad_material_uploaded_is_refused_with_422_and_the_next_good_upload_serves(
    running: RunningEdge, pki: Pki, kind: BadKind
) -> None:
    before = await _serving(running)

    status, body = await running.admin.upload(upload_body(kind.material(pki)))

    assert status == 422, body
    assert any(kind.problem in problem for problem in body["problems"]), body
    await _assert_unchanged(running, before, kind, "upload")

    good = pki.leaf()
    status, body = await running.admin.upload(upload_body(pki.material(good)))
    assert (status, body["fingerprint_sha256"], body["source"]) == (200, good.fingerprint, "upload")
    await _assert_served(running, good.fingerprint, before["version"] + 1)
