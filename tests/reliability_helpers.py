"""Shared pieces of the reliability tests (issue 6): the whole Edge in-process on 127.0.0.1 in
front of real aiohttp and grpc upstreams, one PKI whose leaves every client verifies, the two ways
material reaches the edge (a directory drop and an API upload), load loops that record every
outcome, and probes for memory and file limits.

Nothing here knows what a test asserts: the loops record, the tests judge.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import resource
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from aiohttp import web

from proxy.app import Edge
from proxy.certstore.pem import Material
from proxy.config import parse_config
from tests.admin_helpers import SERVER_IP, SERVER_NAME, Admin, edge_config_toml, metric
from tests.certs import Issuer, Leaf, pem
from tests.edge_process import EdgeProcess
from tests.https_helpers import peer_fingerprint, read_response

# The gRPC method every load loop calls: the echo upstream of tests/grpc_helpers.py.
GRPC_UNARY = "/echo.Echo/Unary"


class Pki:
    """A root and an issuing CA. Every leaf covers the names the edge is configured for, so
    clients verify the chain and the name, exactly as browsers and grpc clients do."""

    def __init__(self) -> None:
        self.root = Issuer("Reliability Root CA")
        self.issuing = self.root.intermediate("Reliability Issuing CA")

    @property
    def root_pem(self) -> bytes:
        return pem(self.root.cert)

    def leaf(self, **options: Any) -> Leaf:
        return self.issuing.leaf(SERVER_NAME, ips=(SERVER_IP,), **options)

    def material(self, leaf: Leaf) -> Material:
        return Material(leaf.cert_pem, leaf.key_pem, self.root_pem)

    def client_context(self, alpn: str = "http/1.1") -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=self.root_pem.decode())
        context.set_alpn_protocols([alpn])
        return context

    def grpc_channel(self, port: int, *, options: tuple[tuple[str, Any], ...] = ()) -> grpc.aio.Channel:
        return grpc.aio.secure_channel(f"{SERVER_IP}:{port}", grpc.ssl_channel_credentials(self.root_pem), options=list(options))


def upload_body(material: Material) -> dict[str, Any]:
    body: dict[str, Any] = {"certificate": material.cert_pem.decode(), "key": material.key_pem.decode()}
    if material.ca_pem is not None:
        body["ca"] = material.ca_pem.decode()
    return body


# --- material into the certificate directory -----------------------------------------------------


def drop_files(cert_dir: Path, material: Material) -> None:
    """An operator's drop: each file written beside its name and renamed over it, the key first
    (so the watcher may well see the new key with the old certificate for a moment). Without a CA
    the directory ends up without `ca.crt`: exactly this material, nothing left over."""
    cert_dir.mkdir(parents=True, exist_ok=True)
    files = [("tls.key", material.key_pem), ("tls.crt", material.cert_pem)]
    if material.ca_pem is not None:
        files.append(("ca.crt", material.ca_pem))
    else:
        (cert_dir / "ca.crt").unlink(missing_ok=True)
    for name, data in files:
        temp = cert_dir / f".{name}.partial"
        temp.write_bytes(data)
        os.replace(temp, cert_dir / name)


def copy_files(cert_dir: Path, material: Material) -> None:
    """`cp` into the directory: each file truncated and rewritten in place (through a symlink,
    into whatever it points at), the key first. A reader can catch an empty or half-written file."""
    for name, data in (("tls.key", material.key_pem), ("tls.crt", material.cert_pem), ("ca.crt", material.ca_pem)):
        if data is not None:
            with (cert_dir / name).open("wb") as file:
                file.write(data[: len(data) // 2])
                file.flush()
                file.write(data[len(data) // 2 :])


# --- the whole edge, in-process --------------------------------------------------------------------


# The edge's gRPC listeners, by name.
GRPC_LISTENERS = {"grpc": "relay"}


def edge_config(
    *,
    http_upstream: int,
    grpc_upstream: int,
    watch: str = "events",
    server: Mapping[str, float] | None = None,
) -> str:
    """`edge_config_toml` (HTTPS and gRPC listeners on port 0) with extra `[server]` keys
    (timeouts), and its gRPC listener."""
    text = edge_config_toml(http_upstream=http_upstream, grpc_upstream=grpc_upstream, watch=watch)
    # edge_config_toml ends with the gRPC listener's table: a key appended here belongs to it.
    assert "\n[server]\n" in text and text.rstrip().endswith(f'upstream = "127.0.0.1:{grpc_upstream}"')
    server_keys = "".join(f"{key} = {value}\n" for key, value in (server or {}).items())
    text = text.replace("\n[server]\n", "\n[server]\n" + server_keys, 1)
    return text


@dataclass
class RunningEdge:
    """The Edge (admin API, HTTPS and both gRPC listeners, watcher) and an admin client for it."""

    edge: Edge
    admin: Admin
    pki: Pki

    @property
    def https_port(self) -> int:
        return self.edge.listeners["web"].port

    @property
    def grpc_ports(self) -> dict[str, int]:
        """Listener name -> port, for each gRPC listener."""
        return {name: self.edge.listeners[name].port for name in GRPC_LISTENERS}

    @property
    def cert_dir(self) -> Path:
        return self.edge.config.tls.cert_dir

    @property
    def serving_fingerprint(self) -> str:
        return self.edge.store.current.snapshot.fingerprint

    async def fingerprints(self) -> dict[str, str]:
        """Listener name -> the leaf a brand-new client is shown there (verified)."""
        shown = {"web": await handshake(self.https_port, self.pki)}
        for name, port in self.grpc_ports.items():
            shown[name] = await handshake(port, self.pki, alpn="h2")
        return shown

    def everywhere(self, fingerprint: str) -> dict[str, str]:
        """What `fingerprints()` returns when every listener shows `fingerprint`."""
        return dict.fromkeys(["web", *GRPC_LISTENERS], fingerprint)

    async def metric(self, name: str, **labels: str) -> float:
        _, text = await self.admin.get("/metrics")
        return metric(text, name, **labels)


@asynccontextmanager
async def running_edge(
    base: Path, pki: Pki, *, http_upstream: int, grpc_upstream: int, first: Leaf | None = None, **config: Any
) -> AsyncIterator[RunningEdge]:
    """The Edge on `base`, serving `first` (dropped before the start) or a fresh leaf of `pki`."""
    drop_files(base / "certs", pki.material(first or pki.leaf()))
    text = edge_config(http_upstream=http_upstream, grpc_upstream=grpc_upstream, **config)
    edge = Edge(parse_config(text, source=str(base / "edge.toml"), base_dir=base))
    await edge.start()
    try:
        assert edge.admin is not None
        token = edge.config.admin.token_file.read_text().strip()
        async with aiohttp.ClientSession() as session:
            yield RunningEdge(edge, Admin(edge.admin, edge.service, token, session), pki)  # type: ignore[arg-type]
    finally:
        await edge.stop(0)


# What every HTTP/2 client sends first: the connection preface and an empty SETTINGS frame.
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


async def handshake(port: int, pki: Pki, *, alpn: str = "http/1.1", h2_preface: bool = False) -> str:
    """SHA-256 of the leaf a new, verifying TLS connection is shown; with `h2_preface` the client
    then starts HTTP/2 as a gRPC client would, before it leaves. Raises on a failed handshake."""
    _, writer = await asyncio.wait_for(
        asyncio.open_connection(SERVER_IP, port, ssl=pki.client_context(alpn), server_hostname=SERVER_NAME), 10
    )
    try:
        if h2_preface:
            writer.write(H2_PREFACE)
        return peer_fingerprint(writer)
    finally:
        writer.close()


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
                async with session.get(f"https://{SERVER_NAME}:{port}{path}", timeout=aiohttp.ClientTimeout(total=10)) as response:
                    body = await response.read()
                    if response.status == 200 and path.encode() in body:
                        tally.ok += 1
                    else:
                        tally.fail(f"status {response.status}: {body[:200]!r}")
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                tally.fail(repr(e))


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
            tally.fingerprints[await handshake(port, pki, alpn=alpn)] += 1
            tally.ok += 1
        except (OSError, ssl.SSLError, TimeoutError) as e:
            tally.fail(repr(e))


# --- upstreams that misbehave on purpose -------------------------------------------------------------


class RestartableUpstream:
    """An aiohttp upstream that can be stopped and started again on the same port, as a service
    restarting behind the edge. It answers every path with the path."""

    def __init__(self) -> None:
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, SERVER_IP, self.port).start()
        self.port = runner.addresses[0][1]
        self._runner = runner

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _answer(self, request: web.Request) -> web.Response:
        return web.Response(text=request.path)


class SilentUpstream:
    """Accepts connections and reads whatever arrives, and never answers. Counts connections and
    notices when the edge gives up on one."""

    def __init__(self) -> None:
        self.accepted = 0
        self.closed_by_edge = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> SilentUpstream:
        self._server = await asyncio.start_server(self._hold, SERVER_IP, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._server is not None:
            self._server.close()

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            while await reader.read(65536):
                pass
            self.closed_by_edge += 1
        except ConnectionError:
            self.closed_by_edge += 1
        finally:
            writer.close()


# --- the process -------------------------------------------------------------------------------------


@dataclass
class EdgeProcessWithGrpcUpstream(EdgeProcess):
    """`EdgeProcess` with a live gRPC upstream. Its config points gRPC at a port nobody listens
    on, and a gRPC listener that dials the upstream for each client connection (relay mode)
    rightly closes a client connection it cannot relay."""

    grpc_upstream_port: int = 0
    grpc_mode: str = "relay"

    def write_config(self) -> None:
        super().write_config()
        before, marker, grpc_table = self.config_path.read_text().partition('name = "grpc"')
        assert marker, "EdgeProcess's config has no gRPC listener any more"
        grpc_table = re.sub(r'upstream = "127\.0\.0\.1:\d+"', f'upstream = "127.0.0.1:{self.grpc_upstream_port}"', grpc_table)
        self.config_path.write_text(f"{before}{marker}{grpc_table}")


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
