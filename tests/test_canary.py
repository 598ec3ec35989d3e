"""The canary: before material is published, a browser's TLS 1.3 and TLS 1.2 handshakes run in
memory against the very contexts about to serve. It catches what the rules alone would not:
fed material the rules never saw (a secp256k1 or Ed25519 key), it refuses it with the
handshake's reason, and the serving certificate stays."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from proxy import tlspolicy
from proxy.certstore.service import CertificateService
from proxy.certstore.store import CertStore, Snapshot
from proxy.certstore.validate import _valid
from proxy.config import TlsConfig
from proxy.errors import MaterialError
from proxy.tlsmaterial import HTTPS_ALPN, TlsObjects, listening_context, tls_preparer
from tests.support.pki import Issuer

NOW = datetime.now(UTC)
TLS13_SECP256K1 = (
    "a browser's TLS 1.3 handshake with this material fails (the server refused it: unsupported protocol (UNSUPPORTED_PROTOCOL))"
)
TLS13_ED25519 = (
    "a browser's TLS 1.3 handshake with this material fails "
    "(the server refused it: no suitable signature algorithm (NO_SUITABLE_SIGNATURE_ALGORITHM))"
)
TLS12 = "a browser's TLS 1.2 handshake with this material fails (the server refused it: no shared cipher (NO_SHARED_CIPHER))"
NOTHING = "; nothing could connect"


def unchecked_snapshot(root: Issuer, key: Any, version: int = 1) -> Snapshot:
    """A snapshot of material that never went through the rules (which refuse these keys)."""
    leaf = root.leaf("edge.example", ips=("127.0.0.1",), key=key)
    return Snapshot(version, "directory", _valid([leaf.certificate], leaf.key, (), None), NOW)


@pytest.mark.parametrize("policy", ["default", "fips"])
@pytest.mark.parametrize(
    ("key", "tls13"),
    [(lambda: ec.generate_private_key(ec.SECP256K1()), TLS13_SECP256K1), (ed25519.Ed25519PrivateKey.generate, TLS13_ED25519)],
    ids=["secp256k1", "ed25519"],
)
def test_prepare_refuses_material_no_browser_could_connect_with(root: Issuer, policy: str, key: Any, tls13: str) -> None:
    # OpenSSL loads both without complaint: only a handshake shows they cannot serve.
    with pytest.raises(MaterialError) as caught:
        tls_preparer("1.2", policy)(unchecked_snapshot(root, key()))
    assert caught.value.problems == (tls13 + NOTHING, TLS12 + NOTHING)


def test_with_min_version_13_only_the_tls13_canary_runs(root: Issuer) -> None:
    with pytest.raises(MaterialError) as caught:
        tls_preparer("1.3")(unchecked_snapshot(root, ec.generate_private_key(ec.SECP256K1())))
    assert caught.value.problems == (TLS13_SECP256K1 + NOTHING,)


async def test_a_refused_canary_publishes_nothing_and_handshakes_keep_the_serving_certificate(root: Issuer) -> None:
    store: CertStore[TlsObjects] = CertStore(tls_preparer("1.2", "fips"))
    good = root.leaf("edge.example", ips=("127.0.0.1",))
    await store.publish(_valid([good.certificate], good.key, (), None), "directory")
    listening = listening_context("1.2", lambda: store.current.tls.ssl_context)
    tlspolicy.apply(listening, "fips")
    bad = unchecked_snapshot(root, ec.generate_private_key(ec.SECP256K1()))
    with pytest.raises(MaterialError):
        await store.publish(bad.material, "upload")
    assert store.current.snapshot.fingerprint == good.fingerprint and store.current.snapshot.version == 1
    for version in ("1.3", "1.2"):
        result = tlspolicy.handshake(listening, tlspolicy.browser(version, HTTPS_ALPN))
        assert result.ok, result.error


async def test_an_upload_the_canary_refuses_writes_nothing(tmp_path: Path, root: Issuer) -> None:
    """The canary runs before the files are written: a refused upload leaves cert_dir as it was."""

    def refusing(snapshot: Snapshot) -> TlsObjects:
        if snapshot.version > 1:
            raise MaterialError(["a browser's TLS 1.3 handshake with this material fails (...)"])
        return tls_preparer("1.2")(snapshot)

    tls = TlsConfig(tmp_path / "certs", tmp_path / "state", "edge.example", ("127.0.0.1",), watch="off")
    service = CertificateService(CertStore(refusing), tls)
    await service.load_initial()
    with pytest.raises(MaterialError) as caught:
        await service.upload(root.leaf("edge.example").material())
    assert caught.value.problems == ("a browser's TLS 1.3 handshake with this material fails (...)",)
    assert not tls.cert_dir.exists() or list(tls.cert_dir.iterdir()) == []
    last_error = service.store.last_error
    assert last_error is not None and last_error.source == "upload"
    assert service.store.current.snapshot.source == "self-signed"
