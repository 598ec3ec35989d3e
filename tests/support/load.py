"""Load for the reliability tests: clients of every kind (keep-alive, a new connection per
request, gRPC on one channel or a new channel per call, bare handshakes, TLS health checks) that
loop until told to stop and record every outcome, and probes for memory and file limits.

Nothing here knows what a test asserts: the loops record, the tests judge.
"""

from __future__ import annotations

import asyncio
import itertools
import resource
import ssl
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import grpc

from tests.support.grpc_echo import GRPC_UNARY
from tests.support.pki import SERVER_IP, SERVER_NAME, Issuer, Pki, pem
from tests.support.probes import handshake_fingerprint, peer_fingerprint
from tests.support.web import read_response


async def h2_health_check(port: int, pki: Pki) -> None:
    """What a TLS health check of an HTTP/2 server does: connect, see the server's first frame
    (its SETTINGS, sent unasked once TLS is up), and leave without a request."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(SERVER_IP, port, ssl=pki.client_context("h2"), server_hostname=SERVER_NAME), 10
    )
    try:
        frame_head = await asyncio.wait_for(reader.readexactly(9), 10)
        assert frame_head[3] == 0x4, f"the first frame is not SETTINGS: {frame_head!r}"
    finally:
        writer.close()


# --- load loops --------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What one kind of client saw: the successes, every failure with its reason, and the leaves
    its new TLS handshakes were shown (fingerprint -> count)."""

    name: str
    ok: int = 0
    connections: int = 0  # TCP connections the client opened (keep-alive clients: ideally one)
    failures: list[str] = field(default_factory=list)
    fingerprints: Counter[str] = field(default_factory=Counter)
    ok_by_port: Counter[int] = field(default_factory=Counter)  # clients that spread over replicas

    def fail(self, what: str) -> None:
        self.failures.append(f"{self.name}: {what}")


async def keep_alive_client(port: int, pki: Pki, stop: asyncio.Event, tally: Tally, path: str = "/keep-alive") -> None:
    """aiohttp with one pooled connection: every request after the first reuses it."""
    connector = aiohttp.TCPConnector(limit=1, ssl=pki.client_context())
    trace = aiohttp.TraceConfig()

    async def connected(*_: object) -> None:
        tally.connections += 1

    trace.on_connection_create_end.append(connected)
    async with aiohttp.ClientSession(connector=connector, trace_configs=[trace]) as session:
        while not stop.is_set():
            try:
                async with session.get(f"https://{SERVER_IP}:{port}{path}", timeout=aiohttp.ClientTimeout(total=10)) as response:
                    body = await response.read()
                    if response.status == 200 and path.encode() in body:
                        tally.ok += 1
                    else:
                        tally.fail(f"status {response.status}: {body[:200]!r}")
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                tally.fail(repr(e))


async def spread_requests(ports: Sequence[int], ca: Issuer, stop: asyncio.Event, *, fresh: bool, limit: int = 5000) -> Tally:
    """GET through each replica in turn until `stop` is set (or `limit` requests), verifying
    the certificate against `ca` for 127.0.0.1 as a real client would. `fresh`: a new TLS
    connection for every request, else keep-alive connections. A non-200, an answer that is not
    the upstream's echo of the request, or any exception is a failure, recorded with the port."""
    context = ssl.create_default_context(cadata=pem(ca.cert).decode())
    connector = aiohttp.TCPConnector(ssl=context, force_close=fresh)
    tally = Tally("fresh connections" if fresh else "keep-alive")
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:
        for count in range(limit):
            if stop.is_set():
                break
            port, path = ports[count % len(ports)], f"/api/ping?n={count}"
            try:
                async with session.get(f"https://{SERVER_IP}:{port}{path}") as response:
                    body = await response.read()
                if response.status == 200 and path.encode() in body:
                    tally.ok += 1
                    tally.ok_by_port[port] += 1
                else:
                    tally.fail(f"{port}: HTTP {response.status} {body[:80]!r}")
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                tally.fail(f"{port}: {type(e).__name__}: {e}")
    return tally


async def new_connection_request(port: int, pki: Pki, path: str) -> tuple[int, str]:
    """One request on its own new, verified TLS connection: (status, the leaf it was shown)."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(SERVER_IP, port, ssl=pki.client_context(), server_hostname=SERVER_NAME), 10
    )
    try:
        shown = peer_fingerprint(writer)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {SERVER_NAME}\r\nConnection: close\r\n\r\n".encode())
        response = await asyncio.wait_for(read_response(reader), 10)
        return response.status, shown
    finally:
        writer.close()


async def new_connection_client(port: int, pki: Pki, stop: asyncio.Event, tally: Tally) -> None:
    while not stop.is_set():
        try:
            status, shown = await new_connection_request(port, pki, "/new-connection")
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, TimeoutError) as e:
            tally.fail(repr(e))
            continue
        tally.fingerprints[shown] += 1
        if status == 200:
            tally.ok += 1
        else:
            tally.fail(f"status {status}")


async def grpc_call(channel: grpc.aio.Channel, tally: Tally, payload: bytes) -> None:
    """One unary call through the edge to the echo upstream; the echo must come back unchanged."""
    try:
        answer = await channel.unary_unary(GRPC_UNARY)(payload, timeout=10)
    except grpc.aio.AioRpcError as e:
        tally.fail(f"{e.code().name}: {e.details()}")
        return
    if answer == payload:
        tally.ok += 1
    else:
        tally.fail(f"echo {answer[:80]!r} for {payload!r}")


async def grpc_unary_loop(channel: grpc.aio.Channel, stop: asyncio.Event, tally: Tally) -> None:
    """Calls one after another on one channel: one long-lived HTTP/2 connection."""
    for n in itertools.count():
        if stop.is_set():
            return
        await grpc_call(channel, tally, b"call %d" % n)


async def grpc_new_channel_loop(port: int, pki: Pki, stop: asyncio.Event, tally: Tally) -> None:
    """A new channel, hence a new TLS connection, for every call. With a local subchannel pool,
    or grpc would quietly reuse another channel's connection to the same target."""
    while not stop.is_set():
        async with pki.grpc_channel(port, options=(("grpc.use_local_subchannel_pool", 1),)) as channel:
            await grpc_call(channel, tally, b"fresh channel")


async def handshake_loop(port: int, pki: Pki, stop: asyncio.Event, tally: Tally, *, alpn: str) -> None:
    """New verified TLS connections, one after another, recording the leaf each was shown."""
    while not stop.is_set():
        try:
            tally.fingerprints[await handshake_fingerprint(port, pki, alpn=alpn)] += 1
            tally.ok += 1
        except (OSError, ssl.SSLError, TimeoutError) as e:
            tally.fail(repr(e))


# --- upstreams that misbehave on purpose -------------------------------------------------------------


# --- probes of the process ---------------------------------------------------------------------------


def vm_rss_kib(pid: int | None = None) -> int:
    """Resident set size of a process (this one by default), in KiB, from /proc."""
    status = Path(f"/proc/{pid or 'self'}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1])


def ensure_open_files(wanted: int) -> None:
    """Raise this process's soft RLIMIT_NOFILE to `wanted` when the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
