"""`tls.policy`: what real clients (openssl s_client, Python's ssl, grpcio) get on the HTTPS and
the gRPC relay port under "default" and "fips", what `GET /api/v1/tls` says, and that the edge
refuses to claim a policy its contexts do not enforce."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import trustme

from proxy.app import prove_policy
from proxy.errors import ConfigError
from tests.support.config import parse, write_config
from tests.support.grpc_echo import GRPC_UNARY
from tests.support.pki import SERVER_NAME
from tests.support.policy import OPENSSL, policy_config, policy_table, python_client, python_handshake, running_edge, s_client

pytestmark = pytest.mark.skipif(OPENSSL is None, reason="needs the openssl command line tool")

ALPN = {"web": "http/1.1", "grpc": "h2"}

# (s_client options, handshake completes?) per policy, on every HTTPS and gRPC listener.
FIPS_CASES = [
    (("-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"), False),
    (("-tls1_3", "-groups", "X25519"), False),
    (("-tls1_3", "-groups", "X448"), False),
    (("-tls1_3", "-groups", "P-256"), True),
    (("-tls1_3", "-groups", "P-384"), True),
    (("-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256"), True),
    (("-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384"), True),
    (("-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"), False),
    (("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA"), False),
    (("-tls1_2", "-groups", "X25519"), False),
    (("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256", "-groups", "P-256"), True),
    # TLS 1.2 also needs the certificate's curve (P-256 here) among the client's groups (RFC 8422 5.1).
    (("-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384", "-groups", "P-384:P-256"), True),
    (("-tls1_1",), False),
]
DEFAULT_CASES = [
    (("-tls1_3", "-groups", "X448"), False),
    (("-tls1_3", "-groups", "P-521"), False),
    (("-tls1_2", "-groups", "P-521"), False),
    (("-tls1_3", "-groups", "X25519"), True),
    (("-tls1_3", "-groups", "P-256"), True),
    (("-tls1_3", "-groups", "P-384"), True),
    (("-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"), True),
    (("-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"), True),
    (("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA"), False),
    (("-tls1_1",), False),
]


@pytest.mark.parametrize("policy", ["default", "fips"])
async def test_openssl_clients_get_exactly_the_policy_on_https_and_grpc_ports(tmp_path: Path, policy: str) -> None:
    cases = FIPS_CASES if policy == "fips" else DEFAULT_CASES
    async with running_edge(tmp_path, policy) as running:
        ca = tmp_path / "root.pem"
        ca.write_bytes(running.pki.root_pem)
        for name, port in running.ports.items():
            for options, expected in cases:
                result = await s_client(port, *options, alpn=ALPN[name], ca=ca)
                assert result.ok == expected, f"{policy} {name} {' '.join(options)}:\n{result.output}"


async def test_under_fips_what_a_default_client_negotiates_is_aes_gcm_on_a_nist_curve(tmp_path: Path) -> None:
    async with running_edge(tmp_path, "fips") as running:
        ca = tmp_path / "root.pem"
        ca.write_bytes(running.pki.root_pem)
        for name, port in running.ports.items():
            result = await s_client(port, alpn=ALPN[name], ca=ca)
            assert result.ok and result.protocol == "TLSv1.3", result.output
            assert result.cipher in {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384"}, result.output
            assert "Server Temp Key: ECDH, prime256v1" in result.output or "Server Temp Key: ECDH, secp384r1" in result.output


@pytest.mark.parametrize("policy", ["default", "fips"])
async def test_python_clients_on_https_and_grpc_ports(tmp_path: Path, policy: str) -> None:
    async with running_edge(tmp_path, policy) as running:
        pki = running.pki
        for name, port in running.ports.items():
            alpn = ALPN[name]
            x25519 = await python_handshake(port, python_client(pki, "1.3", groups="X25519", alpn=alpn))
            chacha = await python_handshake(port, python_client(pki, "1.3", suites="TLS_CHACHA20_POLY1305_SHA256", alpn=alpn))
            p384 = await python_handshake(port, python_client(pki, "1.3", groups="P-384", alpn=alpn))
            tls12 = await python_handshake(port, python_client(pki, "1.2", groups="P-256", alpn=alpn))
            assert p384 == ("TLSv1.3", "TLS_AES_256_GCM_SHA384") or p384 == ("TLSv1.3", "TLS_AES_128_GCM_SHA256")
            assert isinstance(tls12, tuple) and tls12[0] == "TLSv1.2" and "GCM" in tls12[1]
            if policy == "fips":
                assert isinstance(x25519, str), x25519  # the handshake failed: the error's text
                assert isinstance(chacha, str), chacha
            else:
                assert x25519[0] == "TLSv1.3" and chacha == ("TLSv1.3", "TLS_CHACHA20_POLY1305_SHA256")


@pytest.mark.parametrize("policy", ["default", "fips"])
async def test_grpc_and_https_requests_pass_under_each_policy(tmp_path: Path, policy: str) -> None:
    async with running_edge(tmp_path, policy) as running:
        pki = running.pki
        async with pki.grpc_channel(running.ports["grpc"]) as channel:
            assert await channel.unary_unary(GRPC_UNARY)(b"ping", timeout=10) == b"ping"
        url = f"https://127.0.0.1:{running.ports['web']}/anything"
        connector = aiohttp.TCPConnector(ssl=pki.client_context())
        async with aiohttp.ClientSession(connector=connector) as session, session.get(url, server_hostname=SERVER_NAME) as response:
            assert response.status == 200


@pytest.mark.parametrize("policy", ["default", "fips"])
async def test_api_tls_shows_the_policy_in_force(tmp_path: Path, policy: str) -> None:
    async with running_edge(tmp_path, policy) as running:
        status, _ = await running.admin.get("/api/v1/tls")
        assert status == 401
        status, body = await running.admin.get("/api/v1/tls", headers=running.admin.auth)
    assert status == 200
    fips = policy == "fips"
    assert body == {
        "policy": policy,
        "protocols": ["TLSv1.2", "TLSv1.3"],
        "tls13_suites": ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384"] + ([] if fips else ["TLS_CHACHA20_POLY1305_SHA256"]),
        "tls12_suites": [
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            "ECDHE-RSA-AES256-GCM-SHA384",
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            "ECDHE-RSA-AES128-GCM-SHA256",
        ]
        + ([] if fips else ["ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305"]),
        "groups": ["P-256", "P-384"] if fips else ["X25519", "P-256", "P-384"],
        "openssl": ssl.OPENSSL_VERSION,
        "fips_provider": False,  # this machine's OpenSSL runs without its FIPS provider
    }


async def test_min_version_13_under_fips_lists_tls13_only_and_refuses_tls12(tmp_path: Path) -> None:
    async with running_edge(tmp_path, "fips", min_version="1.3") as running:
        _, body = await running.admin.get("/api/v1/tls", headers=running.admin.auth)
        assert (body["protocols"], body["tls12_suites"]) == (["TLSv1.3"], [])
        assert not (await s_client(running.ports["web"], "-tls1_2")).ok
        assert (await s_client(running.ports["grpc"], "-tls1_3", "-groups", "P-384", alpn="h2")).ok


def test_a_listening_context_without_the_policy_is_caught_by_the_proof(tmp_path: Path) -> None:
    """What `run` and `check-config` do when the platform cannot enforce the policy: the proof
    names each client that got through, and the edge exits 2 rather than claim it."""
    config = policy_config("fips", Path("."))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # Python's defaults: ChaCha20 and X25519 included
    trustme.CA().issue_cert(SERVER_NAME).configure_cert(server)
    with pytest.raises(ConfigError) as caught:
        prove_policy(config, {"web": server, "grpc": server})
    assert caught.value.problems[:2] == (
        "edge.toml: listener 'web': tls.policy = \"fips\" does not hold: a client offering only ChaCha20 "
        "(TLS_CHACHA20_POLY1305_SHA256) completed a TLS 1.3 handshake",
        "edge.toml: listener 'web': tls.policy = \"fips\" does not hold: a client offering only the group X25519 "
        "completed a TLS 1.3 handshake",
    )


def test_check_config_proves_the_policy_and_exits_0(tmp_path: Path) -> None:
    write_config(tmp_path, policy_table("fips"))
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "check-config", "--config", "edge.toml"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_unknown_policy_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(policy_table("strict"), tmp_path)
    assert caught.value.problems == (f'{tmp_path / "edge.toml"}: tls.policy: must be "default" or "fips", not \'strict\'',)
