"""The edge's listeners, one kind per protocol: each binds, serves with the current certificate
(through a callable it is given), drains and stops. `build_listeners` makes them from the config.

Listeners never import the certificate store: they read the current version's TLS objects through
the callable `current`. The protocols they speak are the engines' (`proxy.http1`, `proxy.h2relay`).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from typing import Protocol

from proxy import metrics
from proxy.accesslog import AccessLog
from proxy.config import Config
from proxy.listeners.base import BaseListener, offered_alpn
from proxy.listeners.grpc import GrpcListener
from proxy.listeners.https import HttpsListener
from proxy.listeners.redirect import RedirectListener
from proxy.tlsmaterial import TlsObjects, policy_context

__all__ = [
    "BaseListener",
    "GrpcListener",
    "HttpsListener",
    "Listener",
    "RedirectListener",
    "bind_open_connections",
    "build_listeners",
    "policy_contexts",
]


class Listener(Protocol):
    async def start(self) -> None: ...
    async def stop(self, drain_seconds: float) -> None: ...
    @property
    def port(self) -> int: ...


def build_listeners(
    config: Config,
    current: Callable[[], TlsObjects],
    policies: Mapping[str, ssl.SSLContext] | None = None,
    access: AccessLog | None = None,
) -> dict[str, BaseListener]:
    """One listener per `[[listeners]]` table, by name; none started yet. `policies`: the
    listening contexts made before workers were forked (`policy_contexts`), by listener name.
    `access`: the access log, None when it is off."""
    policies = policies or {}
    reuse = config.server.workers > 1
    min_version = config.tls.min_version
    listeners: dict[str, BaseListener] = {}
    for cfg in config.listeners:
        policy = policies.get(cfg.name)
        listener: BaseListener
        if cfg.protocol == "https":
            listener = HttpsListener(cfg, min_version, current, reuse_port=reuse, policy=policy, access=access)
        elif cfg.protocol == "grpc":
            listener = GrpcListener(cfg, min_version, current, reuse_port=reuse, policy=policy, access=access)
        else:
            listener = RedirectListener(cfg, reuse_port=reuse, access=access)
        listeners[cfg.name] = listener
    return listeners


def policy_contexts(config: Config) -> dict[str, ssl.SSLContext]:
    """The listening contexts' policies of the listeners that terminate TLS, by listener name.
    Each holds the session-ticket keys of its listener."""
    policies: dict[str, ssl.SSLContext] = {}
    for cfg in config.listeners:
        alpn = offered_alpn(cfg)
        if alpn is not None:
            policies[cfg.name] = policy_context(config.tls.min_version, alpn, config.tls.policy)
    return policies


def bind_open_connections(listeners: Mapping[str, BaseListener]) -> None:
    """Point each listener's `edge_open_connections` gauge at its registry, read when scraped:
    opening and closing a connection then costs no metric update."""
    for name, listener in listeners.items():
        metrics.OPEN_CONNECTIONS.labels(name).set_function(_counter_of(listener))


def _counter_of(listener: BaseListener) -> Callable[[], float]:
    return lambda: listener.open_connections
