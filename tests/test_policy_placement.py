"""Where OpenSSL takes TLS 1.3 suites and groups from when `sni_callback` swaps the material
context in (measured on OpenSSL 3.0): groups from the listening context, TLS 1.3 suites from
both (a mismatch fails every handshake), which is why `proxy.tlsmaterial` sets the policy on
listening and material contexts alike."""

from __future__ import annotations

import ssl

import pytest
import trustme

from proxy import openssl
from proxy.tlspolicy import client_context, handshake

FIPS_SUITES = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384"


def server_pair(on: str) -> ssl.SSLContext:
    """A listening context whose sni_callback swaps in a material context; the fips suites and
    groups set `on` "listening", "material" or "both"."""
    listening, material = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    trustme.CA().issue_cert("localhost").configure_cert(material)
    for name, context in (("listening", listening), ("material", material)):
        if on in (name, "both"):
            openssl.set_tls13_suites(context, FIPS_SUITES)
            openssl.set_groups(context, "P-256:P-384")
    listening.sni_callback = lambda sslobj, _name, _ctx: setattr(sslobj, "context", material)
    return listening


@pytest.mark.parametrize(
    ("on", "plain", "x25519_only", "chacha_only"),
    [
        ("material", True, True, True),  # neither groups nor suites hold
        ("listening", False, False, False),  # a plain client fails: the suites disagree
        ("both", True, False, False),
    ],
)
def test_groups_and_tls13_suites_must_be_on_both_contexts(on: str, plain: bool, x25519_only: bool, chacha_only: bool) -> None:
    server = server_pair(on)
    assert handshake(server, client_context("1.3")).ok == plain
    assert handshake(server, client_context("1.3", groups="X25519")).ok == x25519_only
    assert handshake(server, client_context("1.3", suites="TLS_CHACHA20_POLY1305_SHA256")).ok == chacha_only
