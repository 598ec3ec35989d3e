"""Memory across many swaps (issue 6): the resident size of a real `edge-proxy run` process after
300 certificate swaps stays within 30% of its size after 20, with new handshakes on both
listeners between swaps; and again when long-lived connections, opened along the way and each
holding the certificate version it started with, stay open across the swaps and are then closed
(Envoy kept old TLS contexts alive while long connections held them: envoy#30019).

Last, TLS health checks that connect and leave must not grow the edge either.

The edge runs as a child process so that its RSS is its own, not the test client's as well."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from tests.support.edge import drop_files, upload_body
from tests.support.grpc_echo import running_upstream
from tests.support.load import Tally, grpc_call, h2_health_check, vm_rss_kib
from tests.support.pki import SERVER_NAME, Pki
from tests.support.probes import eventually, handshake_fingerprint, metric
from tests.support.process import EdgeProcess
from tests.support.web import read_response, upstream

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

SWAPS = 300
BASELINE_AT = 20
ALLOWED_GROWTH = 1.30
HOLD_EVERY = 10  # swaps between two new long-lived connections (one HTTPS, one gRPC)


@dataclass
class Child:
    """The edge process and the PKI its material comes from."""

    process: EdgeProcess
    pki: Pki
    swaps: int = 0
    rss_kib: dict[str, int] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        assert self.process.process is not None
        return self.process.process.pid

    async def swap(self) -> str:
        """A new leaf, by upload and by directory drop + reload in turn; returns its fingerprint.
        A reload reads the directory at once, so a drop costs no settle window here."""
        leaf = self.pki.leaf()
        material = self.pki.material(leaf)
        if self.swaps % 2 == 0:
            status, body = await self.process.admin("POST", "/api/v1/certificate", json=upload_body(material))
        else:
            await asyncio.to_thread(drop_files, self.process.cert_dir, material)
            status, body = await self.process.admin("POST", "/api/v1/reload")
        assert (status, body["fingerprint_sha256"]) == (200, leaf.fingerprint), body
        self.swaps += 1
        return leaf.fingerprint

    async def handshakes_see(self, fingerprint: str) -> None:
        """New connections to both listeners are shown `fingerprint`. The gRPC one starts HTTP/2
        before it leaves: a connection that leaves without is the subject of its own test."""
        https = await handshake_fingerprint(self.process.https_port, self.pki)
        grpc_ = await handshake_fingerprint(self.process.grpc_port, self.pki, alpn="h2", h2_preface=True)
        assert (https, grpc_) == (fingerprint, fingerprint)

    async def open_connections(self) -> float:
        """Client connections the edge holds open (a listener that does not count them adds 0)."""
        _, text = await self.process.admin("GET", "/metrics")
        return sum(metric(text, "edge_open_connections", listener=name) for name in ("web", "grpc"))

    def note_rss(self, label: str) -> None:
        self.rss_kib[label] = vm_rss_kib(self.pid)


@asynccontextmanager
async def child_edge(directory: Path, pki: Pki) -> AsyncIterator[Child]:
    async with upstream() as http_upstream, running_upstream() as grpc_upstream:
        process = EdgeProcess(directory, http_upstream.port, grpc_upstream_port=grpc_upstream.port)
        drop_files(process.cert_dir, pki.material(pki.leaf()))
        await process.start()
        try:
            yield Child(process, pki)
        finally:
            await process.stop()


async def test_rss_after_300_swaps_with_handshakes_stays_within_30_percent_of_rss_after_20(tmp_path: Path) -> None:
    async with child_edge(tmp_path, Pki()) as child:
        while child.swaps < SWAPS:
            await child.handshakes_see(await child.swap())
            if child.swaps == BASELINE_AT:
                child.note_rss("after 20 swaps")
        child.note_rss("after 300 swaps")
    print(f"\nedge RSS (KiB): {child.rss_kib}")
    assert child.rss_kib["after 300 swaps"] <= child.rss_kib["after 20 swaps"] * ALLOWED_GROWTH, child.rss_kib


class HeldHttps:
    """A keep-alive HTTPS connection that stays open: it answers a request when opened and again
    before it is closed, whatever was swapped in between."""

    def __init__(self, port: int, pki: Pki) -> None:
        self.port = port
        self.pki = pki
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(self) -> int:
        if self.streams is None:
            self.streams = await asyncio.open_connection("127.0.0.1", self.port, ssl=self.pki.client_context(), server_hostname=SERVER_NAME)
        reader, writer = self.streams
        writer.write(f"GET /held HTTP/1.1\r\nHost: {SERVER_NAME}\r\n\r\n".encode())
        return (await asyncio.wait_for(read_response(reader), 10)).status

    async def aclose(self) -> None:
        if self.streams is not None:
            writer = self.streams[1]
            writer.close()
            with suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()


async def test_rss_stays_within_30_percent_with_long_lived_connections_held_across_swaps_then_closed(tmp_path: Path) -> None:
    async with child_edge(tmp_path, Pki()) as child, AsyncExitStack() as held:
        https: list[HeldHttps] = []
        channels: list[grpc.aio.Channel] = []
        calls = Tally("held gRPC channels")
        while child.swaps < SWAPS:
            if child.swaps % HOLD_EVERY == 0:
                connection = HeldHttps(child.process.https_port, child.pki)
                held.push_async_callback(connection.aclose)
                assert await connection.request() == 200
                https.append(connection)
                # A local subchannel pool gives each channel a connection of its own.
                channel = child.pki.grpc_channel(child.process.grpc_port, options=(("grpc.use_local_subchannel_pool", 1),))
                held.push_async_callback(channel.close)
                await grpc_call(channel, calls, b"opening a held channel")
                channels.append(channel)
            await child.handshakes_see(await child.swap())
            if child.swaps == BASELINE_AT:
                child.note_rss("after 20 swaps")
        child.note_rss("after 300 swaps, connections open")

        # Every held connection outlived the swaps: each still answers, on HTTPS and on gRPC.
        assert [await connection.request() for connection in https] == [200] * len(https)
        for channel in channels:
            await grpc_call(channel, calls, b"before closing a held channel")
        assert (calls.ok, calls.failures) == (2 * len(channels), [])
        await held.aclose()

        async def all_closed() -> bool:
            return await child.open_connections() == 0

        await eventually(all_closed, timeout=15)
        await asyncio.sleep(0.5)  # let the gRPC side finish closing too
        child.note_rss("after 300 swaps, connections closed")
    print(f"\nedge RSS (KiB), {len(https)} HTTPS and {len(channels)} gRPC connections held: {child.rss_kib}")
    assert child.rss_kib["after 300 swaps, connections closed"] <= child.rss_kib["after 20 swaps"] * ALLOWED_GROWTH, child.rss_kib


PROBES = 500
PROBE_GROWTH = 1.10


async def test_rss_stays_flat_while_health_checks_connect_and_leave(tmp_path: Path) -> None:
    """Load balancers' TLS health checks and certificate monitors connect, finish the handshake
    (on gRPC: see the server's first HTTP/2 frame) and leave without a request, thousands of
    times a day. The edge must not grow with them."""
    async with child_edge(tmp_path, Pki()) as child:

        async def checks(count: int) -> None:
            for _ in range(count):
                await handshake_fingerprint(child.process.https_port, child.pki)
                await h2_health_check(child.process.grpc_port, child.pki)

        await checks(50)
        child.note_rss("after 50 checks")
        await checks(PROBES)
        await asyncio.sleep(1.0)
        child.note_rss(f"after {PROBES + 50} checks")
    print(f"\nedge RSS (KiB): {child.rss_kib}")
    assert child.rss_kib[f"after {PROBES + 50} checks"] <= child.rss_kib["after 50 checks"] * PROBE_GROWTH, child.rss_kib
