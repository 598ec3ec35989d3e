"""Every validation rule, with the exact sentence an operator reads."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID

from proxy.certstore.pem import Material
from proxy.certstore.roots import Roots, system_roots
from proxy.certstore.validate import NamePolicy, dns_name_matches, validate_material
from proxy.errors import MaterialError
from tests.support.pki import Issuer, key_pem, new_key, pem, resigned_weakly

NOW = datetime.now(UTC)


def problems(material: Material, policy: NamePolicy) -> tuple[str, ...]:
    with pytest.raises(MaterialError) as caught:
        validate_material(material, policy, NOW)
    return caught.value.problems


def test_good_chain_with_ca_is_accepted(root: Issuer, issuing: Issuer, policy: NamePolicy) -> None:
    leaf = issuing.leaf("edge.example", ips=("127.0.0.1",))
    valid = validate_material(leaf.material(root), policy, NOW)
    assert valid.fingerprint == leaf.fingerprint
    assert len(valid.chain) == 1
    assert valid.ca_pem is not None


@pytest.mark.parametrize("form", ["pkcs8", "pkcs1", "sec1"])
def test_every_key_format_is_accepted(root: Issuer, policy: NamePolicy, form: str) -> None:
    key = new_key("rsa" if form == "pkcs1" else "ec")
    leaf = root.leaf("edge.example", key=key)
    text = key_pem(key, form)
    assert (b"RSA PRIVATE KEY" in text) == (form == "pkcs1")
    assert (b"EC PRIVATE KEY" in text) == (form == "sec1")
    assert validate_material(Material(leaf.cert_pem, text, leaf.ca_pem()), policy, NOW).fingerprint == leaf.fingerprint


def test_mismatched_key(root: Issuer, policy: NamePolicy) -> None:
    leaf = root.leaf("edge.example")
    other = root.leaf("edge.example")
    with pytest.raises(MaterialError) as caught:
        validate_material(Material(leaf.cert_pem, other.key_pem, leaf.ca_pem()), policy, NOW)
    assert caught.value.problems == ("the private key does not match the certificate",)
    assert caught.value.may_settle


def test_expired(root: Issuer, policy: NamePolicy) -> None:
    leaf = root.leaf("edge.example", not_before=datetime(2025, 10, 1, tzinfo=UTC), not_after=datetime(2026, 10, 1, tzinfo=UTC))
    assert problems(leaf.material(), policy) == ("the certificate expired on 2026-10-01",)


def test_not_yet_valid(root: Issuer, policy: NamePolicy) -> None:
    start = NOW + timedelta(days=3)
    leaf = root.leaf("edge.example", not_before=start, not_after=start + timedelta(days=90))
    assert problems(leaf.material(), policy) == (f"the certificate is not valid before {start:%Y-%m-%d %H:%M} UTC",)


def test_wrong_name(root: Issuer) -> None:
    leaf = root.leaf("other.example", ips=("10.9.9.9",))
    assert problems(leaf.material(), NamePolicy("edge.example", ("10.0.0.5",))) == (
        "the certificate covers other.example, 10.9.9.9 but not edge.example or 10.0.0.5",
    )


def test_ip_address_alone_is_enough(root: Issuer) -> None:
    leaf = root.leaf(ips=("10.0.0.5",))
    assert validate_material(leaf.material(), NamePolicy("edge.example", ("10.0.0.5",)), NOW)


def test_no_san(root: Issuer, policy: NamePolicy) -> None:
    leaf = root.leaf(cn="edge.example")
    assert problems(leaf.material(), policy) == (
        "the certificate has no subjectAltName; browsers ignore the common name, so it must list edge.example or 127.0.0.1",
    )


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("*.example.com", "edge.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "a.b.example.com", False),
        ("*.com", "example.com", False),
        ("EDGE.example.com", "edge.EXAMPLE.com", True),
        ("e*.example.com", "edge.example.com", False),
    ],
)
def test_wildcards_match_as_browsers_do(pattern: str, name: str, expected: bool) -> None:
    assert dns_name_matches(pattern, name) is expected


def test_wildcard_certificate_covers_server_name(root: Issuer) -> None:
    leaf = root.leaf("*.example.com")
    assert validate_material(leaf.material(), NamePolicy("vertex.example.com"), NOW)
    assert problems(leaf.material(), NamePolicy("example.com")) == ("the certificate covers *.example.com but not example.com",)


def test_ca_certificate_as_leaf(root: Issuer, policy: NamePolicy) -> None:
    leaf = root.leaf("edge.example", ca=True, cn="Rogue CA")
    assert problems(leaf.material(), policy) == (
        "the certificate CN=Rogue CA is a CA certificate, not a server certificate; tls.crt must start with the server's own certificate",
    )


def test_client_auth_only(root: Issuer, policy: NamePolicy) -> None:
    leaf = root.leaf("edge.example", usages=(ExtendedKeyUsageOID.CLIENT_AUTH,))
    assert problems(leaf.material(), policy) == (
        "the certificate's extended key usage does not allow server authentication (it allows: clientAuth)",
    )


def test_no_extended_key_usage_is_fine(root: Issuer, policy: NamePolicy) -> None:
    assert validate_material(root.leaf("edge.example", usages=None).material(), policy, NOW)


def test_rsa_1024(root: Issuer, policy: NamePolicy) -> None:
    leaf = root.leaf("edge.example", key=new_key("rsa1024"))
    assert problems(leaf.material(), policy) == ("the RSA key has 1024 bits; at least 2048 are needed",)


def test_chain_out_of_order(issuing: Issuer, policy: NamePolicy) -> None:
    leaf = issuing.leaf("edge.example")
    reordered = Material(pem(issuing.cert) + pem(leaf.certificate), leaf.key_pem)
    found = problems(reordered, policy)
    assert found[0] == "tls.crt lists CN=Example Issuing CA before the leaf CN=edge.example; put the server certificate first"


def test_chain_not_signed_by_next(root: Issuer, policy: NamePolicy) -> None:
    stranger = Issuer("Unrelated CA")
    leaf = root.leaf("edge.example")
    found = problems(Material(leaf.cert_pem + pem(stranger.cert), leaf.key_pem), policy)
    assert found == (
        "tls.crt: CN=edge.example is not signed by CN=Unrelated CA, the certificate after it; "
        "list the leaf first, then each issuer in order",
    )


def test_missing_intermediate(root: Issuer, issuing: Issuer, policy: NamePolicy) -> None:
    leaf = issuing.leaf("edge.example")
    material = Material(pem(leaf.certificate), leaf.key_pem, pem(root.cert))
    assert problems(material, policy) == (
        "the chain does not lead to the CA in ca.crt: is an intermediate missing? (CN=edge.example was issued by CN=Example Issuing CA)",
    )


def test_wrong_ca(issuing: Issuer, policy: NamePolicy) -> None:
    leaf = issuing.leaf("edge.example")
    other = Issuer("Other Root CA")
    assert problems(leaf.material(other), policy) == (
        "the chain does not lead to the CA in ca.crt: is an intermediate missing? (CN=Example Issuing CA was issued by CN=Example Root CA)",
    )


def test_every_problem_is_named_at_once(root: Issuer) -> None:
    leaf = root.leaf(
        "other.example",
        key=new_key("rsa1024"),
        not_after=datetime(2026, 10, 1, tzinfo=UTC),
        not_before=datetime(2026, 1, 1, tzinfo=UTC),
    )
    other_key = root.leaf("x").key_pem
    found = problems(Material(leaf.cert_pem, other_key, leaf.ca_pem()), NamePolicy("edge.example"))
    assert found == (
        "the private key does not match the certificate",
        "the certificate expired on 2026-10-01",
        "the certificate covers other.example but not edge.example",
    )


# --- the files themselves -------------------------------------------------------------------


def test_empty_key(root: Issuer, policy: NamePolicy) -> None:
    leaf = root.leaf("edge.example")
    with pytest.raises(MaterialError) as caught:
        validate_material(Material(leaf.cert_pem, b""), policy, NOW)
    assert caught.value.problems == ("tls.key is empty",)
    assert caught.value.may_settle


def test_truncated_certificate(root: Issuer, policy: NamePolicy) -> None:
    leaf = root.leaf("edge.example")
    with pytest.raises(MaterialError) as caught:
        validate_material(Material(leaf.cert_pem[:200], leaf.key_pem), policy, NOW)
    assert caught.value.problems == ("tls.crt is cut off: a -----BEGIN line has no matching -----END line",)
    assert caught.value.may_settle


def test_garbage(policy: NamePolicy) -> None:
    assert problems(Material(b"hello", b"world"), policy) == (
        "tls.crt holds no PEM block; it should start with -----BEGIN CERTIFICATE-----",
        "tls.key holds no PEM block; it should start with -----BEGIN PRIVATE KEY-----",
    )


def test_der_instead_of_pem(root: Issuer, policy: NamePolicy) -> None:
    leaf = root.leaf("edge.example")
    der = leaf.certificate.public_bytes(serialization.Encoding.DER)
    assert problems(Material(der, leaf.key_pem), policy) == (
        "tls.crt looks like binary DER; convert it to PEM (openssl x509 -inform der) so it starts with -----BEGIN CERTIFICATE-----",
    )


def test_key_in_certificate_file(root: Issuer, policy: NamePolicy) -> None:
    leaf = root.leaf("edge.example")
    assert problems(Material(leaf.cert_pem + leaf.key_pem, leaf.key_pem), policy) == (
        "tls.crt contains a private key (PRIVATE KEY); keep the key in tls.key only",
    )


def test_certificate_in_key_file(root: Issuer, policy: NamePolicy) -> None:
    leaf = root.leaf("edge.example")
    assert problems(Material(leaf.cert_pem, leaf.key_pem + leaf.cert_pem), policy) == (
        "tls.key contains 1 certificate(s); certificates belong in tls.crt",
    )


def test_several_keys(root: Issuer, policy: NamePolicy) -> None:
    leaf = root.leaf("edge.example")
    assert problems(Material(leaf.cert_pem, leaf.key_pem + key_pem(new_key())), policy) == (
        "tls.key contains 2 private keys; it must hold exactly one",
    )


def test_encrypted_key(root: Issuer, policy: NamePolicy) -> None:
    leaf = root.leaf("edge.example")
    encrypted = leaf.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"secret")
    )
    assert problems(Material(leaf.cert_pem, encrypted), policy) == (
        "tls.key is encrypted with a passphrase; store it unencrypted (openssl pkey -in tls.key -out tls.key.plain)",
    )


def test_certificate_file_with_only_a_key(root: Issuer, policy: NamePolicy) -> None:
    leaf = root.leaf("edge.example")
    found = problems(Material(leaf.key_pem, leaf.key_pem), policy)
    assert found == ("tls.crt contains a private key (PRIVATE KEY); keep the key in tls.key only",)


def test_corrupt_base64(root: Issuer, policy: NamePolicy) -> None:
    leaf = root.leaf("edge.example")
    body = leaf.cert_pem.replace(b"M", b"!", 3)
    found = problems(Material(body, leaf.key_pem), policy)
    assert len(found) == 1 and found[0].startswith("tls.crt: certificate 1 cannot be parsed")


def test_a_certificate_with_an_extension_twice_cannot_be_parsed(root: Issuer, policy: NamePolicy) -> None:
    """Found by fuzzing: cryptography raises DuplicateExtension, no ValueError, for a
    certificate whose SubjectKeyIdentifier was turned into a second BasicConstraints."""
    leaf = root.leaf("edge.example")
    der = leaf.certificate.public_bytes(serialization.Encoding.DER)
    subject_key_identifier, basic_constraints = b"\x06\x03\x55\x1d\x0e", b"\x06\x03\x55\x1d\x13"
    assert der.count(subject_key_identifier) == 1 and der.count(basic_constraints) == 1
    doubled = der.replace(subject_key_identifier, basic_constraints)
    body = b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(doubled) + b"-----END CERTIFICATE-----\n"
    found = problems(Material(body, leaf.key_pem), policy)
    assert found == ("tls.crt: certificate 1 cannot be parsed (Duplicate 2.5.29.19 extension found)",)


# --- what can serve: keys, signatures, whole files, complete chains ------------------------

KEY_ADVICE = "use an ECDSA P-256 or P-384 key, or RSA with at least 2048 bits"


@pytest.mark.parametrize(
    ("make_key", "named"),
    [
        (ed25519.Ed25519PrivateKey.generate, "an Ed25519 key"),
        (ed448.Ed448PrivateKey.generate, "an Ed448 key"),
        (lambda: ec.generate_private_key(ec.SECP256K1()), "an ECDSA key on curve secp256k1"),
        (lambda: ec.generate_private_key(ec.SECP521R1()), "an ECDSA key on curve P-521 (secp521r1)"),
    ],
    ids=["ed25519", "ed448", "secp256k1", "p521"],
)
def test_keys_browsers_cannot_use_are_refused_naming_why(root: Issuer, policy: NamePolicy, make_key: Any, named: str) -> None:
    leaf = root.leaf("edge.example", key=make_key())
    assert problems(leaf.material(), policy) == (f"tls.key holds {named}, which browsers cannot use for TLS; {KEY_ADVICE}",)


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1()], ids=["p256", "p384"])
def test_p256_and_p384_keys_serve(root: Issuer, policy: NamePolicy, curve: ec.EllipticCurve) -> None:
    assert validate_material(root.leaf("edge.example", key=ec.generate_private_key(curve)).material(), policy, NOW)


def test_intermediate_with_a_key_browsers_cannot_verify(policy: NamePolicy) -> None:
    root = Issuer("Example Root CA")
    odd = Issuer("Odd Issuing CA", key=ec.generate_private_key(ec.SECP521R1()), parent=root)
    leaf = odd.leaf("edge.example")
    assert problems(leaf.material(), policy) == (
        "the intermediate CN=Odd Issuing CA in tls.crt has an ECDSA key on curve P-521 (secp521r1), which browsers cannot verify",
    )


@pytest.mark.parametrize(("algorithm", "named"), [("sha1", "SHA-1"), ("md5", "MD5")])
def test_weak_leaf_signature_is_named_as_such_not_as_a_broken_chain(policy: NamePolicy, algorithm: str, named: str) -> None:
    root = Issuer("RSA Root CA", key=new_key("rsa"))
    issuing = Issuer("RSA Issuing CA", key=new_key("rsa"), parent=root)
    leaf = issuing.leaf("edge.example")
    weak = resigned_weakly(leaf.certificate, issuing.key, algorithm)  # type: ignore[arg-type]
    material = Material(pem(weak) + pem(issuing.cert), leaf.key_pem, pem(root.cert))
    assert problems(material, policy) == (
        f"the certificate is signed with {named}, which browsers refuse; have it reissued with a SHA-256 signature",
    )


def test_weak_intermediate_signature_is_named(policy: NamePolicy) -> None:
    root = Issuer("RSA Root CA", key=new_key("rsa"))
    issuing = Issuer("RSA Issuing CA", key=new_key("rsa"), parent=root)
    leaf = issuing.leaf("edge.example")
    weak = resigned_weakly(issuing.cert, root.key, "sha1")  # type: ignore[arg-type]
    assert problems(Material(pem(leaf.certificate) + pem(weak), leaf.key_pem, pem(root.cert)), policy) == (
        "the intermediate CN=RSA Issuing CA in tls.crt is signed with SHA-1, which browsers refuse; "
        "have it reissued with a SHA-256 signature",
    )


def test_a_self_signed_sha1_root_at_the_end_of_the_chain_is_no_problem(policy: NamePolicy) -> None:
    root = Issuer("Old RSA Root CA", key=new_key("rsa"))
    old_root = resigned_weakly(root.cert, root.key, "sha1")  # type: ignore[arg-type]
    leaf = root.leaf("edge.example")
    assert validate_material(Material(leaf.cert_pem + pem(old_root), leaf.key_pem), policy, NOW)


def test_leaf_then_the_start_of_its_intermediate_is_a_half_written_file(issuing: Issuer, policy: NamePolicy) -> None:
    leaf = issuing.leaf("edge.example")
    with pytest.raises(MaterialError) as caught:
        validate_material(Material(pem(leaf.certificate) + b"-----BEG", leaf.key_pem, leaf.ca_pem()), policy, NOW)
    assert caught.value.problems == ("tls.crt has text after its last -----END line; it must hold whole PEM certificates only",)
    assert caught.value.may_settle


def test_unterminated_block_after_the_leaf_is_a_half_written_file(issuing: Issuer, policy: NamePolicy) -> None:
    leaf = issuing.leaf("edge.example")
    half = pem(leaf.certificate) + pem(issuing.cert)[:100]
    with pytest.raises(MaterialError) as caught:
        validate_material(Material(half, leaf.key_pem, leaf.ca_pem()), policy, NOW)
    assert caught.value.problems == ("tls.crt is cut off: a -----BEGIN line has no matching -----END line",)
    assert caught.value.may_settle


def test_chain_missing_its_intermediate_without_ca_is_incomplete(issuing: Issuer, policy: NamePolicy) -> None:
    leaf = issuing.leaf("edge.example")
    with pytest.raises(MaterialError) as caught:
        validate_material(Material(pem(leaf.certificate), leaf.key_pem), policy, NOW)
    assert caught.value.problems == (
        "tls.crt is incomplete: CN=Example Issuing CA, the issuer of CN=edge.example, is in neither tls.crt, ca.crt "
        "nor the system's trusted roots; append that intermediate certificate to tls.crt, or give the root it leads to as ca.crt",
    )
    assert not caught.value.may_settle


def test_chain_ending_at_an_intermediate_of_a_trusted_root_is_complete(root: Issuer, issuing: Issuer, policy: NamePolicy) -> None:
    leaf = issuing.leaf("edge.example")
    material = Material(leaf.cert_pem, leaf.key_pem)
    assert validate_material(material, policy, NOW, Roots.of([root.cert]))


def test_chain_ending_at_a_self_signed_root_is_complete(root: Issuer, issuing: Issuer, policy: NamePolicy) -> None:
    leaf = issuing.leaf("edge.example")
    assert validate_material(Material(leaf.cert_pem + pem(root.cert), leaf.key_pem), policy, NOW)


def test_system_roots_are_read_once() -> None:
    assert system_roots() is system_roots()
