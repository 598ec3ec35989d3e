"""The gRPC listener: grpcio's asyncio server with TLS fed from the certificate store.

Owns the server's lifecycle (bind, serve, drain), its options, and the certificate fetcher that
hands grpc each new certificate version. It does not parse PEM (the store's `tls.grpc_config`
is already built), does not know how calls are forwarded (passthrough.py), and never imports
the store itself: it is given a `current()` that returns the serving version.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

import grpc

from proxy.certstore.store import Serving
from proxy.config import Address, ListenerConfig
from proxy.errors import ConfigError, ListenerError
from proxy.grpcedge.passthrough import Passthrough
from proxy.grpcedge.upstream import channel_options, open_channel, read_upstream_ca
from proxy.metrics import for_listener
from proxy.tlsmaterial import TlsObjects

log = logging.getLogger("proxy.grpc")

CurrentServing = Callable[[], Serving[TlsObjects]]


class CertificateFetcher:
    """grpc's certificate configuration fetcher for one listener.

    grpc calls it on its own C-core threads, one call at a time, before every new TLS handshake.
    So it only reads the already-built configuration of the serving version (no files, no event
    loop) and answers None while the version is the one it last handed out, which keeps grpc
    from rebuilding its TLS state per connection. Open connections keep the version they got.
    """

    def __init__(self, current: CurrentServing, listener: str) -> None:
        self._current = current
        self._listener = listener
        serving = current()
        self.initial: grpc.ServerCertificateConfiguration = serving.tls.grpc_config
        self.version = serving.snapshot.version

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        try:
            serving = self._current()
        except Exception:  # raising into grpc's core would only fail this handshake, silently
            log.exception("listener %r: could not read the serving certificate", self._listener)
            return None
        if serving.snapshot.version == self.version:
            return None
        self.version = serving.snapshot.version
        log.info("listener %r: new handshakes get certificate version %d", self._listener, self.version)
        return serving.tls.grpc_config


def server_options(config: ListenerConfig, reuse_port: bool) -> list[tuple[str, Any]]:
    limits = config.limits
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.server_handshake_timeout_ms", _ms(limits.handshake_timeout)),
        # A connection with no call open for idle_timeout is closed with a GOAWAY.
        ("grpc.max_connection_idle_ms", _ms(limits.idle_timeout)),
        # grpc turns SO_REUSEPORT on by default; off, a second listener on the port fails to bind
        # instead of silently splitting the traffic with it.
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ]
    if config.max_connection_age > 0:
        # After this age a connection gets a GOAWAY: its client opens new calls on a new
        # connection, which verifies the current certificate. The grace is left at grpc's default
        # (unbounded) on purpose: calls already open on the old connection finish on it, because
        # a certificate swap must never cut a stream.
        options.append(("grpc.max_connection_age_ms", _ms(config.max_connection_age)))
    return options


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class GrpcListener:
    """A TLS gRPC listener that passes every call through to its upstream."""

    def __init__(self, config: ListenerConfig, min_version: str, current: CurrentServing, *, reuse_port: bool = False) -> None:
        if config.grpc_upstream is None:
            raise ConfigError([f"listener {config.name!r}: a grpc listener needs an upstream"])
        if min_version not in ("1.2", "1.3"):
            raise ConfigError([f'listener {config.name!r}: min_version must be "1.2" or "1.3", not {min_version!r}'])
        self._config = config
        self._upstream = config.grpc_upstream
        self._min_version = min_version
        self._current = current
        self._reuse_port = reuse_port
        self._server: grpc.aio.Server | None = None
        self._channel: grpc.aio.Channel | None = None
        self._port: int | None = None
        self._fetcher: CertificateFetcher | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"listener {self._config.name!r} is not started")
        return self._port

    async def start(self) -> None:
        """Bind and serve. Raises ListenerError when there is nothing to serve or no port."""
        name = self._config.name
        try:
            self._fetcher = CertificateFetcher(self._current, name)
        except RuntimeError as e:
            raise ListenerError(f"listener {name!r}: no certificate to serve: {e}") from e
        if self._min_version == "1.3":
            log.warning(
                "listener %r: grpcio cannot refuse TLS 1.2, so this gRPC listener accepts TLS 1.2 and 1.3 "
                "although tls.min_version is 1.3 (grpc/grpc#28382, #37161)",
                name,
            )
        ca_pem = await read_upstream_ca(self._upstream, name)
        channel = open_channel(self._upstream, ca_pem, channel_options(self._config.limits, self._config.max_message_bytes))
        metrics = for_listener(name)
        server = grpc.aio.server(
            handlers=(Passthrough(channel, str(self._upstream), metrics),),
            options=server_options(self._config, self._reuse_port),
        )
        credentials = grpc.dynamic_ssl_server_credentials(self._fetcher.initial, self._fetcher, require_client_authentication=False)
        address = self._config.listen
        try:
            port: int = server.add_secure_port(str(address), credentials)
        except RuntimeError as e:
            await channel.close()
            raise ListenerError(f"listener {name!r} cannot listen on {address}: {bind_problem(address, self._reuse_port)}") from e
        await server.start()
        self._server, self._channel, self._port = server, channel, port

    async def stop(self, drain_seconds: float) -> None:
        """Refuse new calls at once; calls in flight get up to `drain_seconds`, then are cancelled
        (and their upstream calls with them). Safe to call when never started."""
        server, channel = self._server, self._channel
        self._server = self._channel = None
        if server is not None:
            await server.stop(drain_seconds)
        if channel is not None:
            await channel.close()


def bind_problem(address: Address, reuse_port: bool) -> str:
    """Why `address` cannot be bound, found by trying it with the socket module.

    grpc only says "Failed to bind"; the operator needs errno's reason (in use, not permitted,
    not an address of this host).
    """
    try:
        infos = socket.getaddrinfo(address.host or None, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        return f"cannot resolve {address.host!r}: {e.strerror}"
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            probe.bind(sockaddr)
        except OSError as e:
            return e.strerror or str(e)
    return "grpc refused the address (run with GRPC_VERBOSITY=debug to see grpc's reason)"
