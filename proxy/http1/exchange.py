"""One request/response exchange: a parsed client request, relayed to an upstream and back.

Owns the request body relay (buffered until a connection is bound, then written through), the
response framing towards the client, the 502/504 decisions, the single retry of an idempotent
request on a stale pooled connection, and the byte tunnel after a 101. It does not parse client
bytes (the client connection does and feeds it), and knows nothing of TLS or routing.
"""

from __future__ import annotations

from proxy.accesslog import CLIENT_CLOSED, AccessEntry
from proxy.connections import Shared
from proxy.http1.leg import UpstreamLeg
from proxy.http1.request import LOCAL_REASONS, HeadLimit, Request
from proxy.http1.upstream import LENGTH, NO_BODY, UNTIL_CLOSE, UpstreamConnection, UpstreamPool
from proxy.http1.wire import LAST_CHUNK, Headers, ResponseFacts, chunk_size_line, client_response_head, edge_response, total_length

# Why a client connection stops reading; reading resumes when no reason is left.
PAUSE_UPSTREAM, PAUSE_BUFFER, PAUSE_QUEUE, PAUSE_STOP = 1, 2, 4, 8
# Request bytes held while no upstream connection is bound yet (connecting, or queued behind a
# pipelined request): past this the client is paused, so a body is never buffered whole.
BUFFER_HIGH = 64 * 1024


class ClientSide(HeadLimit):
    """What an exchange needs from the client connection it answers; the client connection
    inherits it and overrides every method. A base class rather than a typing.Protocol, so the
    compiled engine calls these methods in C; it extends HeadLimit only because a compiled class
    has a single base, and the client connection needs both."""

    __slots__ = ("writing_paused",)

    def __init__(self) -> None:
        super().__init__()
        self.writing_paused = False  # the client's transport asked us to stop writing

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def write_pieces(self, pieces: list[bytes]) -> None:
        raise NotImplementedError

    def pause_reading(self, reason: int) -> None:
        raise NotImplementedError

    def resume_reading(self, reason: int) -> None:
        raise NotImplementedError

    def exchange_done(self, exchange: Exchange, keep_alive: bool) -> None:
        raise NotImplementedError

    def watch_upstream(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError


class Exchange(UpstreamLeg):
    """Created when a request head is parsed, started when every earlier exchange on its client
    connection has finished (responses go out in request order), finished exactly once."""

    __slots__ = (
        "_body_done",
        "_buffer",
        "_buffered",
        "_close_client",
        "_framing",
        "_out",
        "_rechunk",
        "_resp_done",
        "_tunneling",
        "client",
        "local_status",
        "log",
        "started",
    )

    def __init__(self, client: ClientSide, shared: Shared, request: Request, pool: UpstreamPool | None, local_status: int = 0) -> None:
        super().__init__(shared, request, pool)
        self.client = client
        self.local_status = local_status  # an answer from the edge itself (404, 4xx on bad input)
        self.started = False
        self._body_done = not request.has_body
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._resp_done = False
        self._framing = NO_BODY
        self._rechunk = False
        self._close_client = False
        self._out: list[bytes] = []
        self._tunneling = False
        self.log: AccessEntry | None = None  # set by the client connection while the access log is on

    # --- driven by the client connection -----------------------------------------------------

    def start(self) -> None:
        self.started = True
        if self.pool is None:
            self._answer_locally()
            return
        self._take_or_connect()

    def request_body(self, data: bytes) -> None:
        if self.log is not None:
            self.log.bytes_in += len(data)
        if self.request.chunked:
            data = b"".join((chunk_size_line(len(data)), data, b"\r\n"))
        self._send(data)

    def request_end(self) -> None:
        if self.request.chunked:
            self._send(LAST_CHUNK)  # trailers are not forwarded
        self._body_done = True
        if self.conn is not None and not self.resp_started:
            self._arm_timer(self.shared.loop.time())

    def request_failed(self, status: int) -> None:
        """The rest of the request is unusable (bad chunk, body too large): answer `status` and close."""
        self._close_client = True
        if self.started:
            self._fail(status, "", "")  # the client connection counts its own rejections
        else:
            self.pool, self.local_status = None, status

    def tunnel_from_client(self, data: bytes) -> None:
        if self.log is not None:
            self.log.bytes_in += len(data)
        if self._tunneling and self.conn is not None:
            self.conn.write(data)
        elif not self.finished:
            self._hold(data)  # sent once the upstream answers 101

    def client_lost(self) -> None:
        if self.log is not None and not self.finished:
            if self._tunneling:
                self._log_end()  # a WebSocket session ends when either side closes
            else:
                self._log_end(None if self.resp_started else CLIENT_CLOSED, "client_closed")
        self.finished = True
        self._cancel_timer()
        self._drop_upstream()

    def client_write_paused(self, paused: bool) -> None:
        if self.conn is not None:
            if paused:
                self.conn.pause_reading()
            else:
                self.conn.resume_reading()

    # --- driven by the upstream connection (ResponseSink) ------------------------------------

    def on_interim(self, status: int, reason: bytes, headers: Headers) -> None:
        if not self.request.http10:  # HTTP/1.0 clients do not expect 1xx (RFC 9110 15.2)
            self._out.append(client_response_head(status, reason, headers))

    def on_head(self, status: int, reason: bytes, headers: Headers, facts: ResponseFacts, framing: int) -> None:
        self._head_arrived()
        request = self.request
        close = self._must_close()
        if framing in (NO_BODY, LENGTH):
            rechunk = False
        elif request.http10:
            rechunk, close = False, True  # no chunked for HTTP/1.0: the close ends the body
        else:
            rechunk = True  # chunked or close-delimited upstream: re-framed as chunked
        self._framing, self._rechunk, self._close_client = framing, rechunk, close
        keep_alive_10 = request.http10 and not close
        self._out.append(client_response_head(status, reason, headers, facts, chunked=rechunk, close=close, keep_alive_10=keep_alive_10))
        self.shared.tally.request(status)
        if self.log is not None:
            self.log.status = status

    def on_body(self, data: bytes) -> None:
        if self._rechunk:
            self._out += (chunk_size_line(len(data)), data, b"\r\n")
        else:
            self._out.append(data)

    def on_end(self) -> None:
        if self._rechunk:
            self._out.append(LAST_CHUNK)
        self._resp_done = True

    def after_data(self) -> None:
        out = self._out
        if out:
            self._out = []
            self.client.write_pieces(out)
            if self.log is not None:
                self.log.bytes_out += total_length(out)
        if self._resp_done and not self.finished:
            self._finish()

    def on_upgrade(self, reason: bytes, headers: Headers, rest: bytes) -> None:
        if not self.request.upgrade or self.conn is None:
            self._fail(502, "upstream_protocol", f"upstream {self._upstream()} switched protocols unasked")
            return
        self._head_arrived()
        self._tunneling = True
        self._out.append(client_response_head(101, reason, headers, upgrade=True))
        if rest:
            self._out.append(rest)
        self.shared.tally.request(101)
        if self.log is not None:
            self.log.status = 101
        if self._buffer:
            self.conn.write(b"".join(self._buffer))
            self._buffer, self._buffered = [], 0
        self.client.resume_reading(PAUSE_BUFFER)

    def on_tunnel_data(self, data: bytes) -> None:
        if self.log is not None:
            self.log.bytes_out += len(data)
        self.client.write(data)

    def on_lost(self, exc: Exception | None) -> None:
        conn, self.conn = self.conn, None
        if self.finished or conn is None:
            return
        if self._tunneling:
            self.finished = True
            self._log_end()
            self.client.close()
        elif not self.resp_started:
            self._lost_before_answer(conn)
        elif self._framing == UNTIL_CLOSE and not self._resp_done:
            self.on_end()
            self.after_data()
        elif not self._resp_done:
            self.finished = True
            self._log_end(reason="upstream_truncated")
            self.client.abort()  # a truncated body must not look complete to the client

    def on_write_paused(self, paused: bool) -> None:
        if paused:
            self.client.pause_reading(PAUSE_UPSTREAM)
        else:
            self.client.resume_reading(PAUSE_UPSTREAM)

    # --- internals ----------------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        if self.conn is not None:
            self.conn.write(data)
        elif not self.finished:
            self._hold(data)

    def _hold(self, data: bytes) -> None:
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered > BUFFER_HIGH:
            self.client.pause_reading(PAUSE_BUFFER)

    def _bind(self, conn: UpstreamConnection) -> None:
        self.conn = conn
        conn.attach(self, self.request.is_head)
        if self.client.writing_paused:
            conn.pause_reading()
        if self.request.upgrade:
            conn.write(self.request.head)  # bytes after an Upgrade request wait for the 101
        else:
            pieces, self._buffer, self._buffered = [self.request.head, *self._buffer], [], 0
            conn.write(pieces[0] if len(pieces) == 1 else b"".join(pieces))
            self.client.resume_reading(PAUSE_BUFFER)
        self._sent_at = now = self.shared.loop.time()
        if self._body_done:
            self._arm_timer(now)

    def _arm_timer(self, now: float) -> None:
        # The client connection's timer watches this deadline: no timer per request.
        self.head_deadline = now + self.shared.limits.upstream_timeout
        self.client.watch_upstream()

    def _cancel_timer(self) -> None:
        self.head_deadline = 0.0

    def _must_close(self) -> bool:
        request = self.request
        # A refused upgrade closes too: the client connection stopped parsing at that request.
        return self._close_client or not request.keep_alive or not self._body_done or request.upgrade or self.shared.draining

    def _answer_locally(self) -> None:
        close = self._must_close()
        self._close_client = close
        keep_alive_10 = self.request.http10 and not close
        response = edge_response(self.local_status, close=close, head_only=self.request.is_head, keep_alive_10=keep_alive_10)
        self.client.write(response)
        self.shared.tally.request(self.local_status)
        entry = self.log
        if entry is not None:
            entry.status, entry.bytes_out = self.local_status, entry.bytes_out + len(response)
            entry.reason = entry.reason or LOCAL_REASONS.get(self.local_status, "refused")
        self.resp_started = self._resp_done = True
        self._finish()

    def _fail(self, status: int, kind: str, why: str) -> None:
        if self.finished:
            return
        self._abort_upstream()
        self._report(status, kind, why)
        if kind and self.log is not None:
            self.log.reason = kind
        self._out = []
        if self.resp_started:
            self.finished = True
            self._log_end()
            self.client.abort()
            return
        self.pool, self.local_status = None, status
        self._answer_locally()

    def _finish(self) -> None:
        self.finished = True
        self._cancel_timer()
        conn, self.conn = self.conn, None
        if conn is not None:
            # After a refused Upgrade the upstream may be waiting for the other protocol: never reuse.
            reusable = conn.keep_alive and conn.done and not conn.dirty and self._body_done and not self.request.upgrade
            if reusable and self.pool is not None:
                self.pool.put(conn)
            else:
                conn.detach()
                conn.close()
        if self.log is not None:
            self._log_end()
        self.client.resume_reading(PAUSE_UPSTREAM | PAUSE_BUFFER)
        self.client.exchange_done(self, keep_alive=not self._close_client)

    def _log_end(self, status: int | None = None, reason: str | None = None) -> None:
        """Write this exchange's access log line (once; nothing when the log is off)."""
        entry, self.log = self.log, None
        if entry is not None and self.shared.access is not None:
            self.shared.access.write(entry, status, reason)
