"""What one listener shares among its connections, whatever protocol they speak: limits, the
tally of its metrics, the access log, background tasks, the registry of open connections, draining, and the
timer that notices a failed TLS handshake.

Built by a listener (`proxy.listeners`) and handed to every connection it accepts. It holds no
protocol logic and knows nothing of TLS objects, parsing or routing.
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_left
from collections.abc import Callable
from typing import Protocol

from prometheus_client import Counter

from proxy.accesslog import ListenerAccess
from proxy.config import Limits
from proxy.metrics import ListenerMetrics, add_observations, bucket_bounds
from proxy.tasks import TaskSet

log = logging.getLogger("proxy.listener")

# How stale the request and latency series may be (a Prometheus scrape is typically every 15 s).
FLUSH_SECONDS = 1.0
# asyncio makes a protocol at accept, before the handshake, and never reports a failed handshake:
# one that has not completed this long after handshake_timeout has failed (asyncio gave up on it).
HANDSHAKE_GRACE = 1.0


class Connection(Protocol):
    def drain(self) -> None:
        """Finish what is in flight, take nothing new, then close."""

    def abort(self) -> None:
        """Close now."""


class Tally:
    """A listener's series. Requests, upstream latencies and handshakes are tallied in plain
    numbers and added to the Prometheus series at most once a second: on the hot path a request
    then costs two list increments instead of three locks and a bucket search written in Python,
    and a new connection one addition instead of a lock."""

    __slots__ = (
        "_bounds",
        "_by_class",
        "_errors",
        "_flush",
        "_handshakes",
        "_latency_counts",
        "_latency_sum",
        "_loop",
        "_requests",
        "series",
    )

    def __init__(self, series: ListenerMetrics) -> None:
        self.series = series
        self._loop = asyncio.get_running_loop()
        self._by_class = {n: series.requests(f"{n}xx") for n in range(1, 6)}
        self._errors: dict[str, Counter] = {}
        self._requests = [0] * 10  # by status // 100; llhttp allows 100..999
        self._bounds = bucket_bounds(series.upstream_latency)
        self._latency_counts = [0] * len(self._bounds)
        self._latency_sum = 0.0
        self._handshakes = 0
        self._flush: asyncio.TimerHandle | None = None

    def request(self, status: int) -> None:
        self._requests[status // 100] += 1
        if self._flush is None:
            self._flush = self._loop.call_later(FLUSH_SECONDS, self.flush)

    def handshake(self) -> None:
        self._handshakes += 1
        if self._flush is None:
            self._flush = self._loop.call_later(FLUSH_SECONDS, self.flush)

    def handshake_failed(self) -> None:
        """Rare, and noticed late already (see HANDSHAKE_GRACE): counted at once."""
        self.series.handshake_failures.inc()

    def latency(self, seconds: float) -> None:
        self._latency_counts[bisect_left(self._bounds, seconds)] += 1  # Prometheus buckets are `le`
        self._latency_sum += seconds

    def error(self, kind: str) -> None:
        """Rare by nature (a 502, a refused request): counted at once."""
        counter = self._errors.get(kind)
        if counter is None:
            counter = self._errors[kind] = self.series.errors(kind)
        counter.inc()

    def flush(self) -> None:
        """Add the tallies to the Prometheus series now."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        for status_class, count in enumerate(self._requests):
            counter = self._by_class.get(status_class)
            if count and counter is not None:
                counter.inc(count)
        self._requests = [0] * 10
        if self._handshakes:
            self.series.handshakes.inc(self._handshakes)
            self._handshakes = 0
        if any(self._latency_counts):
            add_observations(self.series.upstream_latency, self._latency_counts, self._latency_sum)
            self._latency_counts = [0] * len(self._bounds)
            self._latency_sum = 0.0


class Shared:
    """State of one listener that its connections read and report to. `access`: the access log,
    None when `log.access` is "off" (the one check a request then pays)."""

    __slots__ = ("_empty", "access", "connections", "draining", "limits", "loop", "name", "tally", "tasks")

    def __init__(self, name: str, limits: Limits, tally: Tally, access: ListenerAccess | None = None) -> None:
        self.name = name
        self.limits = limits
        self.tally = tally
        self.access = access
        self.loop = asyncio.get_running_loop()
        self.tasks = TaskSet()
        self.draining = False
        self.connections: set[Connection] = set()
        self._empty = asyncio.Event()
        self._empty.set()

    def opened(self, connection: Connection) -> None:
        self.connections.add(connection)
        self._empty.clear()

    def closed(self, connection: Connection) -> None:
        """`connection` serves nothing more: it is closed, or closing on our side."""
        self.connections.discard(connection)
        if not self.connections:
            self._empty.set()

    def watch_handshake(self, completed: Callable[[], bool]) -> asyncio.TimerHandle:
        """A timer that counts a failed handshake unless `completed()` by then; the connection
        cancels it once its handshake completes."""

        def expired() -> None:
            if not completed():
                self.tally.handshake_failed()

        return self.loop.call_later(self.limits.handshake_timeout + HANDSHAKE_GRACE, expired)

    async def drain(self, seconds: float) -> None:
        """Ask every connection to finish what it is doing, wait up to `seconds`, then abort the rest."""
        self.draining = True
        for connection in list(self.connections):
            connection.drain()
        if self.connections and seconds > 0:
            try:
                async with asyncio.timeout(seconds):
                    await self._empty.wait()
            except TimeoutError:
                busy = len(self.connections)
                log.warning("%s: %d connection(s) still busy after %.1f s of draining; closing them", self.name, busy, seconds)
        for connection in list(self.connections):
            connection.abort()
        await self.tasks.close()
        self.tally.flush()
