"""One listener of the edge on its own, for the tests of what one protocol does: its
`[[listeners]]` table built as a dict and parsed like a config file, a certificate store serving a
leaf of a test PKI, and the listener started on 127.0.0.1 port 0. The whole edge (admin API,
watcher, every listener) is `tests.support.edge.running_edge`.

Nothing here knows what a test asserts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from proxy.certstore.store import CertStore, Serving
from proxy.config import Limits
from proxy.connections import Shared, Tally
from proxy.http1.client import ClientConnection
from proxy.http1.routing import Router
from proxy.listeners import BaseListener, bind_open_connections, build_listeners
from proxy.metrics import for_listener
from proxy.tlsmaterial import TlsObjects, tls_preparer
from tests.support.config import Table, parse
from tests.support.grpc_echo import message_options
from tests.support.pki import SERVER_IP, SERVER_NAME, Pki
from tests.support.probes import free_port, handshake_fingerprint

LOOPBACK_ANY_PORT = f"{SERVER_IP}:0"
# How long a listener drains when a test leaves it. HTTPS tests end with keep-alive clients
# still connected; the gRPC tests close their channels first.
DRAIN_SECONDS = {"https": 1.0}


def route(upstream_port: int, path_prefix: str = "/", host: str | None = None) -> Table:
    """One `[[listeners.routes]]` table to an HTTP upstream on 127.0.0.1."""
    table: Table = {"upstream": f"http://{SERVER_IP}:{upstream_port}", "path_prefix": path_prefix}
    if host is not None:
        table["host"] = host
    return table


def https(*routes: Table, name: str = "web", **keys: Any) -> Table:
    """An https listener table with `routes` and `keys` (limits, `listen`, ...)."""
    return {"name": name, "protocol": "https", "listen": LOOPBACK_ANY_PORT, "routes": list(routes), **keys}


def grpc_relay(upstream: int | str, *, name: str = "grpc", **keys: Any) -> Table:
    """A grpc listener table; `upstream` is a port on 127.0.0.1 or an address ("grpcs://...")."""
    target = f"{SERVER_IP}:{upstream}" if isinstance(upstream, int) else upstream
    return {"name": name, "protocol": "grpc", "listen": LOOPBACK_ANY_PORT, "upstream": target, **keys}


def redirect(redirect_port: int = 8443, **keys: Any) -> Table:
    return {"name": "redirect", "protocol": "http-redirect", "listen": LOOPBACK_ANY_PORT, "redirect_port": redirect_port, **keys}


async def new_store(pki: Pki, min_version: str = "1.2") -> CertStore[TlsObjects]:
    """A store already serving a fresh leaf of `pki`."""
    store: CertStore[TlsObjects] = CertStore(tls_preparer(min_version))
    await store.publish(pki.valid_material(), "directory")
    return store


@dataclass
class RecordingReader:
    """The listener's `current()`: read once per full TLS handshake, so the fingerprints recorded
    here are the certificates new handshakes were given, in order, and their number tells a test
    when a client made a new connection."""

    store: CertStore[TlsObjects]
    handed_out: list[str] = field(default_factory=list)

    def __call__(self) -> Serving[TlsObjects]:
        serving = self.store.current
        self.handed_out.append(serving.snapshot.fingerprint)
        return serving

    @property
    def reads(self) -> int:
        return len(self.handed_out)


def build_listener(
    table: Table,
    reader: RecordingReader,
    *,
    min_version: str = "1.2",
    reuse_port: bool = False,
    server: Table | None = None,
    base_dir: Path = Path("."),
) -> BaseListener:
    """The listener the edge builds for the `[[listeners]]` `table` (with `server` as the
    `[server]` table; `reuse_port` as with `server.workers > 1`), reading certificates through
    `reader`; not started. Its open connections are what `edge_open_connections` reports."""
    server = {**(server or {}), **({"workers": 2} if reuse_port else {})}
    config = parse({"server": server, "tls": {"server_name": SERVER_NAME, "min_version": min_version}, "listeners": [table]}, base_dir)
    listeners = build_listeners(config, lambda: reader().tls)
    bind_open_connections(listeners)
    return listeners[table["name"]]


@dataclass
class RunningListener:
    """A started listener, the store it serves from and the PKI its clients trust."""

    listener: BaseListener
    store: CertStore[TlsObjects]
    pki: Pki
    reader: RecordingReader

    @property
    def port(self) -> int:
        return self.listener.port

    @property
    def certificate_reads(self) -> int:
        return self.reader.reads

    @property
    def target(self) -> str:
        return f"{SERVER_IP}:{self.port}"

    def channel(self, max_message_bytes: int | None = None) -> grpc.aio.Channel:
        """A grpc client channel that trusts the PKI's root, verifying 127.0.0.1."""
        options = message_options(max_message_bytes) if max_message_bytes else []
        return grpc.aio.secure_channel(self.target, grpc.ssl_channel_credentials(self.pki.root_pem), options=options)

    async def publish_new_certificate(self) -> str:
        """Serve a fresh leaf of the same PKI; returns its fingerprint."""
        await self.store.publish(self.pki.valid_material(), "directory")
        return self.store.current.snapshot.fingerprint

    async def handshake_fingerprint(self, alpn: str = "h2") -> str:
        return await handshake_fingerprint(self.port, self.pki, alpn=alpn)


@asynccontextmanager
async def running_listener(
    table: Table,
    *,
    pki: Pki | None = None,
    store: CertStore[TlsObjects] | None = None,
    min_version: str = "1.2",
    reuse_port: bool = False,
    drain_seconds: float | None = None,
    server: Table | None = None,
    base_dir: Path = Path("."),
) -> AsyncIterator[RunningListener]:
    """The listener `table` describes on 127.0.0.1 (with `server` as the config's `[server]`
    table), serving from `store` (by default a new store serving a leaf of `pki`, by default a
    new PKI). Stopped with `drain_seconds` on the way out."""
    if drain_seconds is None:
        drain_seconds = DRAIN_SECONDS.get(table["protocol"], 0.0)
    pki = pki or Pki()
    store = store or await new_store(pki, min_version)
    reader = RecordingReader(store)
    listener = build_listener(table, reader, min_version=min_version, reuse_port=reuse_port, server=server, base_dir=base_dir)
    await listener.start()
    try:
        yield RunningListener(listener, store, pki, reader)
    finally:
        await listener.stop(drain_seconds)


def running_grpc_listener(
    upstream: int | str, *, min_version: str = "1.2", reuse_port: bool = False, pki: Pki | None = None, **keys: Any
) -> AbstractAsyncContextManager[RunningListener]:
    """`running_listener` of a gRPC listener to `upstream` with table `keys`."""
    return running_listener(grpc_relay(upstream, **keys), min_version=min_version, reuse_port=reuse_port, pki=pki)


def running_one_port_listener(
    upstream: int | str, *, min_version: str = "1.2", pki: Pki | None = None, **keys: Any
) -> AbstractAsyncContextManager[RunningListener]:
    """`running_listener` of an https listener whose port also relays gRPC (ALPN h2) to
    `upstream` (a port on 127.0.0.1 or an address); its HTTP route leads to a port nothing
    listens on. `keys` are table keys (limits, `max_connection_age`, ...)."""
    target = f"{SERVER_IP}:{upstream}" if isinstance(upstream, int) else upstream
    table = https(route(free_port()), grpc_upstream=target, **keys)
    return running_listener(table, min_version=min_version, pki=pki)


# Either listener that relays gRPC, for the tests that hold for both: (upstream port or address,
# table keys) -> a running listener.
GrpcServing = Callable[..., AbstractAsyncContextManager[RunningListener]]
GRPC_SERVING: dict[str, GrpcServing] = {
    "grpc listener": running_grpc_listener,
    "https listener with grpc_upstream": running_one_port_listener,
}


def client_connection_without_routes(name: str, **limits: Any) -> ClientConnection:
    """The HTTPS listener's per-connection protocol with no listener, socket or upstream around
    it, for feeding bytes in memory: with no routes, every request it accepts gets the edge's 404."""
    shared = Shared(name, Limits(**limits), Tally(for_listener(name)))
    return ClientConnection(shared, Router((), lambda upstream: upstream))
