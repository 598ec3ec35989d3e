"""What one gRPC relay listener shares with its connections: settings, metrics, the registry of
open connections, the tasks that dial upstreams, and draining them all.

Knows nothing of frames, sockets or TLS; a connection is anything that can go away or abort.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Protocol

from proxy.config import GrpcUpstream, Limits
from proxy.metrics import ListenerMetrics
from proxy.tasks import TaskSet

log = logging.getLogger("proxy.grpc")


class Relayed(Protocol):
    def go_away(self) -> None: ...

    def abort(self) -> None: ...


class RelayShared:
    """What one relay listener shares with its connections: settings, metrics, the registry of
    open connections and the tasks that dial upstreams."""

    def __init__(
        self,
        name: str,
        limits: Limits,
        max_connection_age: float,
        upstream: GrpcUpstream,
        upstream_tls: ssl.SSLContext | None,
        metrics: ListenerMetrics,
    ) -> None:
        self.name = name
        self.limits = limits
        self.max_connection_age = max_connection_age
        self.upstream = upstream
        self.upstream_tls = upstream_tls
        self.metrics = metrics
        self.loop = asyncio.get_running_loop()
        self.connections: set[Relayed] = set()
        self.tasks = TaskSet()
        self.draining = False
        self.upstream_down = False
        self._all_closed = asyncio.Event()
        self._all_closed.set()

    def opened(self, connection: Relayed) -> None:
        self.connections.add(connection)
        self._all_closed.clear()

    def closed(self, connection: Relayed) -> None:
        """`connection` relays nothing more: it is closed, or closing on our side.

        Closing counts: asyncio then waits up to ssl_shutdown_timeout for the client's TLS
        close_notify, which grpc clients holding a finished call object never send; a drain
        need not wait for that.
        """
        self.connections.discard(connection)
        if not self.connections:
            self._all_closed.set()

    def upstream_unreachable(self, reason: str) -> None:
        self.metrics.errors("upstream_unavailable").inc()
        if not self.upstream_down:
            # Once per outage, not once per connection: a down upstream under load would flood the log.
            log.warning("%s: gRPC upstream %s is unreachable: %s", self.name, self.upstream, reason)
            self.upstream_down = True

    async def drain(self, seconds: float) -> None:
        """Ask every client to go away; wait up to `seconds` for their streams; cut the rest."""
        self.draining = True
        for connection in list(self.connections):
            connection.go_away()
        if seconds > 0 and self.connections:
            try:
                await asyncio.wait_for(self._all_closed.wait(), seconds)
            except TimeoutError:
                log.info("%s: %d connections still open after the drain; closing them", self.name, len(self.connections))
        for connection in list(self.connections):
            connection.abort()
        await self.tasks.close()
