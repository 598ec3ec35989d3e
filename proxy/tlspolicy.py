"""TLS policies (`tls.policy`): what every HTTPS and gRPC listener offers, applied to each
context `proxy.tlsmaterial` makes, and proved by handshakes in memory.

Owns the two policies, the browser-like canary client and the proof that a listening context
enforces its policy. Knows nothing of certificates, the store or listeners: it takes contexts.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from proxy import openssl

log = logging.getLogger("proxy.tls")

PROTOCOLS = {"1.2": ("TLSv1.2", "TLSv1.3"), "1.3": ("TLSv1.3",)}


@dataclass(frozen=True, slots=True)
class TlsPolicy:
    name: str
    tls13_suites: tuple[str, ...]
    tls12_ciphers: str  # an OpenSSL cipher string; TLS 1.2 only
    groups: tuple[str, ...]  # OpenSSL group names, in the server's order of preference


POLICIES = {
    # Mozilla's "intermediate" profile (https://wiki.mozilla.org/Security/Server_Side_TLS), its
    # ECDHE suites: X448 and P-521 are not among its groups, and scanners flag them.
    "default": TlsPolicy(
        "default",
        ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"),
        "ECDHE+AESGCM:ECDHE+CHACHA20",
        ("X25519", "P-256", "P-384"),
    ),
    # NIST SP 800-52r2 3.3.1 and 3.4.2.1: AES-GCM suites with ECDHE, on NIST curves only.
    "fips": TlsPolicy("fips", ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384"), "ECDHE+AESGCM", ("P-256", "P-384")),
}

# What Chrome and Firefox offer (2026): the canary's client must fail where a browser would.
BROWSER_TLS13_SUITES = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
BROWSER_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:ECDHE+AES"
BROWSER_GROUPS = "X25519:P-256:P-384"
BROWSER_SIGALGS = "ECDSA+SHA256:rsa_pss_rsae_sha256:RSA+SHA256:ECDSA+SHA384:rsa_pss_rsae_sha384:RSA+SHA384:rsa_pss_rsae_sha512:RSA+SHA512"
_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def apply(context: ssl.SSLContext, name: str) -> None:
    """Set policy `name` on `context`. Raises OpenSSLError when this Python/OpenSSL cannot set
    TLS 1.3 suites and groups; for "default" that is logged once and Python's defaults stay."""
    policy = POLICIES[name]
    context.set_ciphers(policy.tls12_ciphers)
    try:
        openssl.set_tls13_suites(context, ":".join(policy.tls13_suites))
        openssl.set_groups(context, ":".join(policy.groups))
    except openssl.OpenSSLError as e:
        if name != "default":
            raise
        _warn_once(str(e))


_WARNED: set[str] = set()


def _warn_once(reason: str) -> None:
    if reason not in _WARNED:
        _WARNED.add(reason)
        log.warning("tls.policy default: cannot restrict TLS 1.3 suites and groups (%s); OpenSSL's own defaults apply", reason)


def describe(name: str, min_version: str) -> dict[str, Any]:
    """The policy as `GET /api/v1/tls` shows it: only what is enforced (null where it is not)."""
    policy = POLICIES[name]
    enforced = openssl.unavailable() is None
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    probe.set_ciphers(policy.tls12_ciphers)
    tls12 = [c["name"] for c in probe.get_ciphers() if c["protocol"] == "TLSv1.2"] if min_version == "1.2" else []
    return {
        "policy": name,
        "protocols": list(PROTOCOLS[min_version]),
        "tls13_suites": list(policy.tls13_suites) if enforced else None,
        "tls12_suites": tls12,
        "groups": list(policy.groups) if enforced else None,
        "openssl": ssl.OPENSSL_VERSION,
        "fips_provider": openssl.fips_provider_active(),
    }


# --- handshakes in memory ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Handshake:
    version: str | None
    cipher: str | None
    error: str | None  # the failing side's OpenSSL reason and text

    @property
    def ok(self) -> bool:
        return self.error is None


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, server_name: str | None = None) -> Handshake:
    """One TLS handshake between `client` and `server` through memory buffers: no socket, the
    server's callbacks (sni_callback) run as on a listener."""
    server_in, server_out, client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    server_side = server.wrap_bio(server_in, server_out, server_side=True)
    client_side = client.wrap_bio(client_in, client_out, server_hostname=server_name)
    done = {"client": False, "server": False}
    for _ in range(8):  # TLS 1.2 needs 2 round trips, 1.3 one; a stalled exchange is a failure
        for side, obj, outgoing, peer in (("client", client_side, client_out, server_in), ("server", server_side, server_out, client_in)):
            if not done[side]:
                try:
                    obj.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError as e:
                    return Handshake(None, None, f"the {side} refused it: {_text(e)}")
            data = outgoing.read()
            if data:
                peer.write(data)
        if all(done.values()):
            cipher = client_side.cipher()
            return Handshake(client_side.version(), cipher[0] if cipher else None, None)
    return Handshake(None, None, "the handshake stalled")


def _text(error: ssl.SSLError) -> str:
    """OpenSSL's words and reason code: "no shared cipher (NO_SHARED_CIPHER)"."""
    text = error.args[1] if len(error.args) > 1 and isinstance(error.args[1], str) else str(error)
    text = text.split(" (_ssl.c")[0]
    if text.startswith("[") and "] " in text:
        text = text.split("] ", 1)[1]
    return f"{text} ({error.reason})" if error.reason else text


def client_context(
    version: str, *, suites: str | None = None, ciphers: str | None = None, groups: str | None = None, alpn: Sequence[str] = ()
) -> ssl.SSLContext:
    """A client for one TLS version that verifies nothing (the rules did that) and offers what
    it is told. Raises OpenSSLError when suites or groups cannot be set here."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = context.maximum_version = _VERSIONS[version]
    if ciphers:
        context.set_ciphers(ciphers)
    if suites:
        openssl.set_tls13_suites(context, suites)
    if groups:
        openssl.set_groups(context, groups)
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


def browser(version: str, alpn: Sequence[str]) -> ssl.SSLContext:
    """A client offering what browsers offer. Where OpenSSL's functions cannot be reached it
    offers Python's defaults (the key rules then stand alone for Ed25519)."""
    context = client_context(version, ciphers=BROWSER_TLS12_CIPHERS, alpn=alpn)
    try:
        openssl.set_tls13_suites(context, BROWSER_TLS13_SUITES)
        openssl.set_groups(context, BROWSER_GROUPS)
        openssl.set_sigalgs(context, BROWSER_SIGALGS)
    except openssl.OpenSSLError:
        pass
    return context


def canary(contexts: Sequence[tuple[ssl.SSLContext, Sequence[str]]], min_version: str) -> list[str]:
    """A browser's TLS 1.3 and TLS 1.2 handshake (1.3 alone with min_version 1.3) against each
    (context, ALPN) about to serve. Returns the failures in operator words."""
    problems = []
    for version in reversed(PROTOCOLS[min_version]):
        label = version.replace("TLSv", "TLS ")
        for context, alpn in contexts:
            result = handshake(context, browser(version[4:], alpn))
            if not result.ok:
                problems.append(f"a browser's {label} handshake with this material fails ({result.error}); nothing could connect")
                break
    return problems


# --- the proof at start ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Probe:
    what: str  # "a client offering only X25519"
    version: str
    expect_ok: bool
    options: dict[str, str]


def probes(name: str, min_version: str) -> list[Probe]:
    """The handshakes that show policy `name` holds: what must fail and what must succeed."""
    tls12 = min_version == "1.2"
    if name == "fips":
        cases = [
            Probe("offering only ChaCha20 (TLS_CHACHA20_POLY1305_SHA256)", "1.3", False, {"suites": "TLS_CHACHA20_POLY1305_SHA256"}),
            Probe("offering only the group X25519", "1.3", False, {"groups": "X25519"}),
            Probe("offering only the group P-256", "1.3", True, {"groups": "P-256"}),
            Probe("offering only the group P-384", "1.3", True, {"groups": "P-384"}),
            Probe("offering only TLS_AES_128_GCM_SHA256", "1.3", True, {"suites": "TLS_AES_128_GCM_SHA256"}),
        ]
        if tls12:
            cases += [
                Probe("offering only ECDHE with ChaCha20", "1.2", False, {"ciphers": "ECDHE+CHACHA20"}),
                Probe("offering only ECDHE with AES-CBC", "1.2", False, {"ciphers": "ECDHE+AES:-AESGCM"}),
                Probe("offering only the group X25519", "1.2", False, {"groups": "X25519"}),
                Probe("offering only the group P-256", "1.2", True, {"groups": "P-256"}),
            ]
        return cases
    cases = [
        Probe("offering only the group X448", "1.3", False, {"groups": "X448"}),
        Probe("offering only the group P-521", "1.3", False, {"groups": "P-521"}),
        Probe("offering only the group X25519", "1.3", True, {"groups": "X25519"}),
        Probe("offering only the group P-256", "1.3", True, {"groups": "P-256"}),
        Probe("offering only the group P-384", "1.3", True, {"groups": "P-384"}),
    ]
    if tls12:
        cases.append(Probe("offering only the group P-521", "1.2", False, {"groups": "P-521"}))
    return cases


def prove(name: str, min_version: str, listening: ssl.SSLContext, alpn: Sequence[str]) -> list[str]:
    """Handshakes against `listening` (its sni_callback selects the material, as for any
    client) showing that policy `name` holds there. Returns what does not hold, with the fix."""
    reason = openssl.unavailable()
    if reason is not None:
        if name == "default":
            _warn_once(reason)
            return []
        return [f'tls.policy = "{name}" cannot be enforced here: {reason}. {FIX}']
    problems = []
    for probe in probes(name, min_version):
        result = handshake(listening, client_context(probe.version, alpn=alpn, **probe.options))
        if result.ok != probe.expect_ok:
            outcome = (
                f"completed a TLS {probe.version} handshake" if result.ok else f"failed its TLS {probe.version} handshake ({result.error})"
            )
            problems.append(f'tls.policy = "{name}" does not hold: a client {probe.what} {outcome}')
    return problems


FIX = (
    "Run the edge on CPython 3.11 to 3.14 whose ssl module links OpenSSL 3 dynamically "
    '(the python3 of Debian 12, Ubuntu 22.04 or later, RHEL 9), or set tls.policy = "default"'
)


def prove_all(name: str, min_version: str, listening: Sequence[tuple[str, ssl.SSLContext, Sequence[str]]]) -> list[str]:
    """`prove` for each (listener name, listening context, ALPN)."""
    problems = []
    for listener, context, alpn in listening:
        problems += [f"listener {listener!r}: {p}" for p in prove(name, min_version, context, alpn)]
    return problems
