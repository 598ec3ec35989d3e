"""Route selection for one HTTPS listener: request host and path in, the route's target out.

Pure: built once from the listener's routes, then only read. It knows nothing of sockets or
pools; each route's target is whatever value the caller pairs with it (a pool, in the listener).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from proxy.config import HttpUpstream, Route

T = TypeVar("T")


class Router(Generic[T]):
    """An exact host match beats a route without a host; then the longest path prefix wins.

    A host whose routes match no prefix falls back to the routes without a host, so adding a
    host-specific `/v2/` route never hides the listener's catch-all for that host.
    """

    def __init__(self, routes: Iterable[Route], target: Callable[[HttpUpstream], T]) -> None:
        by_host: dict[bytes | None, list[tuple[bytes, T]]] = {}
        for route in routes:
            host = route.host.lower().rstrip(".").encode() if route.host else None
            by_host.setdefault(host, []).append((route.path_prefix.encode(), target(route.upstream)))
        # Longest prefix first; on equal prefixes the first route written in the config wins.
        self._by_host = {host: sorted(entries, key=lambda e: -len(e[0])) for host, entries in by_host.items()}
        self._any_host = self._by_host.pop(None, [])

    def match(self, host: bytes, path: bytes) -> T | None:
        """`host` is a routing key (see `wire.host_key`); `path` the request path without query."""
        entries = self._by_host.get(host) if self._by_host else None
        if entries is not None:
            for prefix, target in entries:
                if path.startswith(prefix):
                    return target
        for prefix, target in self._any_host:
            if path.startswith(prefix):
                return target
        return None
