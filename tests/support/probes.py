"""What a test looks at from outside the edge: the certificate a brand-new TLS handshake is shown,
a metric's value, a free port, and waiting until something observable holds.

Nothing here knows what a test asserts.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import socket
import ssl
import time
from collections.abc import Awaitable, Callable

from prometheus_client.parser import text_string_to_metric_families

from tests.support.pki import SERVER_IP, SERVER_NAME, Pki

# Generous: only a hang takes this long; nothing here measures speed.
WAIT = 20

# What every HTTP/2 client sends first: the connection preface and an empty SETTINGS frame.
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def peer_fingerprint(writer: asyncio.StreamWriter) -> str:
    """SHA-256 of the leaf the other side of an open TLS connection showed."""
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    return hashlib.sha256(der).hexdigest()


async def handshake_fingerprint(
    port: int, pki: Pki | None = None, *, alpn: str = "http/1.1", server_name: str | None = SERVER_NAME, h2_preface: bool = False
) -> str:
    """SHA-256 of the leaf a brand-new TLS connection to 127.0.0.1:`port` is shown (no session
    resumption). With `pki` the client verifies the chain and `server_name` as a real client does
    (and raises on a failed handshake); without, trust is not the question. `server_name=None`
    sends no SNI. With `h2_preface` the client starts HTTP/2, as a gRPC client would, and leaves."""
    if pki is None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols([alpn])
    else:
        context = pki.client_context(alpn)
        context.check_hostname = server_name is not None
    _, writer = await asyncio.wait_for(asyncio.open_connection(SERVER_IP, port, ssl=context, server_hostname=server_name or ""), 10)
    try:
        if alpn == "h2":
            assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
        if h2_preface:
            writer.write(H2_PREFACE)
        return peer_fingerprint(writer)
    finally:
        writer.close()


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text, 0 when the series does not exist yet."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def eventually(check: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0, interval: float = 0.02) -> None:
    """Poll `check` (a function, or a coroutine function) until it holds; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout} s")
        await asyncio.sleep(interval)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind((SERVER_IP, 0))
        return int(probe.getsockname()[1])
