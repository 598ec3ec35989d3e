"""The upstream side of one request, whichever client protocol asked it (an HTTP/1.1 exchange, an
HTTP/2 stream): take a pooled connection or dial one, retry once on a fresh connection when a
pooled one turns out closed before it read anything (idempotent requests without a body), and
name the upstream when something fails.

The engine's class inherits this and says how a connection is bound, how a failure is answered
and when the response head arrived. Knows nothing of the client side.
"""

from __future__ import annotations

import asyncio
import logging

from proxy.connections import Shared
from proxy.http1.request import Request
from proxy.http1.upstream import ResponseSink, UpstreamConnection, UpstreamPool, UpstreamUnreachable

log = logging.getLogger("proxy.http")


class UpstreamLeg(ResponseSink):
    __slots__ = (
        "_connecting",
        "_retried",
        "_reused",
        "_sent_at",
        "conn",
        "finished",
        "head_deadline",
        "pool",
        "request",
        "resp_started",
        "shared",
    )

    def __init__(self, shared: Shared, request: Request, pool: UpstreamPool | None) -> None:
        self.shared = shared
        self.request = request
        self.pool = pool
        self.conn: UpstreamConnection | None = None
        self.finished = False
        self._connecting: asyncio.Task[None] | None = None
        self._reused = False
        self._retried = False
        self._sent_at = 0.0  # when the request went upstream
        self.head_deadline = 0.0  # when the response head is overdue (504); 0 when not waiting
        self.resp_started = False

    # --- what the engine provides ------------------------------------------------------------

    def _bind(self, conn: UpstreamConnection) -> None:
        """Send the request on `conn` and take its answer from now on."""
        raise NotImplementedError

    def _fail(self, status: int, kind: str, why: str) -> None:
        """Answer `status` from the edge (or end the response) and count `kind`."""
        raise NotImplementedError

    # --- shared ----------------------------------------------------------------------------------

    def _take_or_connect(self) -> None:
        assert self.pool is not None
        conn = self.pool.take()
        if conn is None:
            self._connect()
        else:
            self._reused = True
            self._bind(conn)

    def _connect(self) -> None:
        assert self.pool is not None
        self._connecting = self.shared.tasks.spawn(self._connect_and_bind(self.pool), f"connect {self.pool.upstream}")

    async def _connect_and_bind(self, pool: UpstreamPool) -> None:
        try:
            conn = await pool.connect()
        except UpstreamUnreachable as e:
            self._connecting = None
            self._fail(502, "upstream_unreachable", f"upstream {pool.upstream} unreachable: {e}")
            return
        self._connecting = None
        if self.finished:
            conn.close()
            return
        self._reused = False
        self._bind(conn)

    def _drop_upstream(self) -> None:
        """The client is gone: no orphaned upstream work, and the upstream sees it go too."""
        if self._connecting is not None:
            self._connecting.cancel()
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.detach()
            conn.close()

    def _abort_upstream(self) -> None:
        """Stop waiting and drop the upstream connection unfinished: it cannot be reused."""
        self.head_deadline = 0.0
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.detach()
            conn.abort()

    def _report(self, status: int, kind: str, why: str) -> None:
        """Count a failure of `kind` and say `why` in the log ("" for either: nothing)."""
        if kind:
            self.shared.tally.error(kind)
        if why:
            log.warning("%s: %s (%d)", self.shared.name, why, status)

    def _lost_before_answer(self, conn: UpstreamConnection) -> None:
        """The upstream closed before any response head: a pooled connection closed as we reused
        it processed nothing, so an idempotent request without a body goes again, once."""
        request = self.request
        if self._reused and not conn.got_bytes and not self._retried and request.idempotent and not request.has_body:
            self._retried = True
            self._connect()
        else:
            self._fail(502, "upstream_reset", f"upstream {self._upstream()} closed the connection before answering")

    def on_broken(self, reason: str) -> None:
        """The upstream's answer cannot be read as HTTP/1.1."""
        self._fail(502, "upstream_protocol", f"upstream {self._upstream()}: {reason}")

    def head_timed_out(self) -> None:
        """The response head is overdue: 504, unless the answer began meanwhile."""
        self.head_deadline = 0.0
        if not self.resp_started and not self.finished:
            limit = self.shared.limits.upstream_timeout
            self._fail(504, "upstream_timeout", f"upstream {self._upstream()} sent no response within {limit:g} s")

    def _head_arrived(self) -> None:
        self.head_deadline = 0.0
        self.resp_started = True
        self.shared.tally.latency(self.shared.loop.time() - self._sent_at)

    def _upstream(self) -> str:
        return str(self.pool.upstream) if self.pool is not None else "?"
