"""One HTTP/2 request stream answered from an HTTP/1.1 upstream: the HTTP/2 side of what
`proxy.http1.exchange.Exchange` does for an HTTP/1.1 client.

Owns the stream's upstream connection (taken from the route's pool, or dialled), the request body
towards it under HTTP/2 flow control (a DATA frame is acknowledged to the client only once it is
written upstream and the upstream socket is not full), the response as HEADERS and DATA within the
client's windows, and the 502/504 decisions with the single retry of an idempotent request on a
stale pooled connection. It knows nothing of frames or sockets: the connection (`H2Link`) does
the h2 calls and the writing.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from proxy.accesslog import CLIENT_CLOSED, AccessEntry
from proxy.connections import Shared
from proxy.http1.leg import UpstreamLeg
from proxy.http1.request import LOCAL_REASONS, Request
from proxy.http1.upstream import NO_BODY, UNTIL_CLOSE, UpstreamConnection, UpstreamPool
from proxy.http1.wire import HOP_BY_HOP, LAST_CHUNK, Headers, ResponseFacts, chunk_size_line, phrase

# Response bytes held per stream while the client's window is shut: past this the upstream is
# paused, so a slow reader costs at most this much per stream (100 streams at most).
STREAM_BUFFER_HIGH = 64 * 1024
# Request bytes held while no upstream connection is bound yet; the client's stream window
# (64 KiB, acknowledged only once written upstream) keeps it below this anyway.
REQUEST_BUFFER_HIGH = 256 * 1024
_STATUS = {s: str(s).encode() for s in range(100, 600)}


class Answering(Protocol):
    """What the connection sees of a request it serves: a `Stream` to an HTTP/1.1 upstream, or a
    gRPC call (`proxy.h2.grpc.GrpcCall`)."""

    stream_id: int
    out: deque[bytes]  # response bytes waiting for the client's window
    out_size: int
    end_pending: bool  # the response is complete once `out` (and `trailers`) are sent
    end_sent: bool
    trailers: Headers | None
    finished: bool
    head_deadline: float
    discard: bool  # no max_body_bytes accounting (answered already, or gRPC)
    body_seen: int

    def start(self) -> None: ...
    def request_body(self, data: bytes, flow_size: int) -> None: ...
    def request_end(self) -> None: ...
    def request_too_large(self) -> None: ...
    def client_reset(self) -> None: ...
    def window_opened(self) -> None: ...
    def sent_all(self) -> None: ...
    def head_timed_out(self) -> None: ...


class H2Link(Protocol):
    """What a stream needs from its HTTP/2 connection."""

    def send_head(self, stream_id: int, headers: Headers, end_stream: bool) -> None: ...
    def send_body(self, stream: Answering) -> None: ...
    def acknowledge(self, stream_id: int, size: int) -> None: ...
    def reset(self, stream_id: int, code: int) -> None: ...
    def stream_done(self, stream: Answering) -> None: ...
    def watch_upstream(self) -> None: ...


class Stream(UpstreamLeg):
    """Created when a request head arrives; started after the read that carried it was parsed
    (a stream the client reset in the same read never costs an upstream connection)."""

    __slots__ = (
        "_framing",
        "_held",
        "_held_size",
        "_unacked",
        "_upstream_full",
        "body_done",
        "body_seen",
        "discard",
        "end_pending",
        "end_sent",
        "link",
        "local_status",
        "log",
        "out",
        "out_size",
        "stream_id",
        "trailers",
    )

    def __init__(
        self, link: H2Link, shared: Shared, stream_id: int, request: Request, pool: UpstreamPool | None, local_status: int = 0
    ) -> None:
        super().__init__(shared, request, pool)
        self.link = link
        self.stream_id = stream_id
        self.local_status = local_status
        self.body_done = not request.has_body
        self.body_seen = 0
        self.end_pending = False  # the response ended upstream; END_STREAM once `out` is sent
        self.end_sent = False
        self.trailers: Headers | None = None  # never for HTTP/1.1 upstreams: the edge drops theirs
        self.discard = False  # the rest of the request body is not wanted (answered locally)
        self.out: deque[bytes] = deque()  # response bytes waiting for the client's window
        self.out_size = 0
        self._held: list[bytes] = []  # request bytes before an upstream connection is bound
        self._held_size = 0
        self._unacked = 0  # request bytes not yet acknowledged to the client (upstream full)
        self._upstream_full = False
        self._framing = NO_BODY
        self.log: AccessEntry | None = None  # set by the connection while the access log is on

    # --- driven by the connection --------------------------------------------------------------

    def start(self) -> None:
        if self.finished:
            return
        if self.pool is None:
            self._answer_locally(self.local_status)
            return
        self._take_or_connect()

    def request_body(self, data: bytes, flow_size: int) -> None:
        if self.log is not None:
            self.log.bytes_in += len(data)
        if self.finished or self.body_done or self.discard:
            self.link.acknowledge(self.stream_id, flow_size)
            return
        if self.request.chunked and data:
            data = b"".join((chunk_size_line(len(data)), data, b"\r\n"))
        if self.conn is not None:
            self.conn.write(data)
            if self._upstream_full:
                self._unacked += flow_size
            else:
                self.link.acknowledge(self.stream_id, flow_size)
        else:
            self._held.append(data)
            self._held_size += len(data)
            self._unacked += flow_size

    def request_end(self) -> None:
        if self.body_done:
            return
        self.body_done = True
        if self.request.chunked:
            self._send(LAST_CHUNK)  # trailers are not forwarded to HTTP/1.1
        if self.conn is not None and not self.resp_started:
            self._arm_timer()

    def request_too_large(self) -> None:
        """The body passed max_body_bytes: 413 when nothing was answered yet; the upstream never
        sees the rest."""
        self.discard = True
        self._fail(413, "", "")

    def client_reset(self) -> None:
        """The client reset the stream (RST_STREAM, or the connection is gone)."""
        if self.finished:
            return
        self._log_end(None if self.resp_started else CLIENT_CLOSED, "client_closed")
        self.finished = True
        self.head_deadline = 0.0
        self._drop_upstream()
        self.out.clear()

    def window_opened(self) -> None:
        """Some response bytes went out: resume the upstream once the buffer is low."""
        if self.conn is not None and self.out_size < STREAM_BUFFER_HIGH // 2:
            self.conn.resume_reading()

    def sent_all(self) -> None:
        """`out` is empty: finish if the upstream had ended the response."""
        if self.end_pending and not self.finished:
            self._finish()

    # --- ResponseSink: driven by the upstream connection --------------------------------------

    def on_interim(self, status: int, reason: bytes, headers: Headers) -> None:
        self.link.send_head(self.stream_id, [(b":status", _STATUS[status]), *_response_headers(headers, None)], False)

    def on_head(self, status: int, reason: bytes, headers: Headers, facts: ResponseFacts, framing: int) -> None:
        self._head_arrived()
        self._framing = framing
        h2_headers = [(b":status", _STATUS.get(status) or str(status).encode()), *_response_headers(headers, facts)]
        end = framing == NO_BODY
        self.link.send_head(self.stream_id, h2_headers, end)
        self.shared.tally.request(status)
        if self.log is not None:
            self.log.status = status
        if end:
            self.end_pending = self.end_sent = True

    def on_body(self, data: bytes) -> None:
        if data:
            self.out.append(data)
            self.out_size += len(data)
            if self.log is not None:
                self.log.bytes_out += len(data)

    def on_end(self) -> None:
        if self._framing != NO_BODY:
            self.end_pending = True

    def after_data(self) -> None:
        if self.finished:
            return
        if self.out or self.end_pending:
            self.link.send_body(self)  # calls sent_all when everything went out
        if not self.finished and self.out_size > STREAM_BUFFER_HIGH and self.conn is not None:
            self.conn.pause_reading()

    def on_upgrade(self, reason: bytes, headers: Headers, rest: bytes) -> None:
        self._fail(502, "upstream_protocol", f"upstream {self._upstream()} switched protocols unasked")

    def on_tunnel_data(self, data: bytes) -> None:
        """Never: no upgrade is asked for over HTTP/2."""

    def on_lost(self, exc: Exception | None) -> None:
        conn, self.conn = self.conn, None
        if self.finished or conn is None:
            return
        if not self.resp_started:
            self._lost_before_answer(conn)
        elif self._framing == UNTIL_CLOSE and not self.end_pending:
            self.end_pending = True
            self.link.send_body(self)
        elif not self.end_pending:
            self._abandon()  # a truncated body must not look complete to the client

    def on_write_paused(self, paused: bool) -> None:
        self._upstream_full = paused
        if not paused and self._unacked:
            size, self._unacked = self._unacked, 0
            self.link.acknowledge(self.stream_id, size)

    # --- internals -------------------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        if self.conn is not None:
            self.conn.write(data)
        elif not self.finished:
            self._held.append(data)
            self._held_size += len(data)

    def _bind(self, conn: UpstreamConnection) -> None:
        self.conn = conn
        conn.attach(self, self.request.is_head)
        held, self._held, self._held_size = self._held, [], 0
        conn.write(b"".join((self.request.head, *held)) if held else self.request.head)
        if self._unacked and not self._upstream_full:
            size, self._unacked = self._unacked, 0
            self.link.acknowledge(self.stream_id, size)
        self._sent_at = self.shared.loop.time()
        if self.body_done:
            self._arm_timer()

    def _arm_timer(self) -> None:
        self.head_deadline = self.shared.loop.time() + self.shared.limits.upstream_timeout
        self.link.watch_upstream()

    def _answer_locally(self, status: int) -> None:
        self.discard = True
        body = b"%d %s\n" % (status, phrase(status))
        headers = [
            (b":status", _STATUS[status]),
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
        ]
        self.resp_started = True
        self.shared.tally.request(status)
        entry = self.log
        if entry is not None:
            entry.status, entry.bytes_out = status, entry.bytes_out + (0 if self.request.is_head else len(body))
            entry.reason = entry.reason or LOCAL_REASONS.get(status, "refused")
        if self.request.is_head:
            self.link.send_head(self.stream_id, headers, True)
            self.end_pending = self.end_sent = True
            self._finish()
            return
        self.link.send_head(self.stream_id, headers, False)
        self.out.append(body)
        self.out_size += len(body)
        self.end_pending = True
        self.link.send_body(self)

    def _fail(self, status: int, kind: str, why: str) -> None:
        if self.finished:
            return
        self._abort_upstream()
        self._report(status, kind, why)
        if kind and self.log is not None:
            self.log.reason = kind
        if self.resp_started:
            self._abandon()
            return
        self.pool = None
        self.discard = True
        self.out.clear()
        self.out_size = 0
        self._answer_locally(status)

    def _abandon(self) -> None:
        self._log_end(reason="upstream_truncated")
        self.finished = True
        self.out.clear()
        self.link.reset(self.stream_id, 2)  # INTERNAL_ERROR: the response is incomplete
        self.link.stream_done(self)

    def _log_end(self, status: int | None = None, reason: str | None = None) -> None:
        """Write this stream's access log line (once; nothing when the log is off)."""
        entry, self.log = self.log, None
        if entry is not None and self.shared.access is not None:
            self.shared.access.write(entry, status, reason)

    def _finish(self) -> None:
        self._log_end()
        self.finished = True
        self.head_deadline = 0.0
        conn, self.conn = self.conn, None
        if conn is not None:
            if conn.keep_alive and conn.done and not conn.dirty and self.body_done and self.pool is not None:
                self.pool.put(conn)
            else:
                conn.detach()
                conn.close()
        if not self.body_done:
            self.link.reset(self.stream_id, 0)  # NO_ERROR: answered; the rest of the body is not needed
        self.link.stream_done(self)


def _response_headers(headers: Headers, facts: ResponseFacts | None) -> Headers:
    """An HTTP/1.1 response's headers as HTTP/2 fields: names lowercased, hop-by-hop and those
    named in Connection dropped (RFC 9113 8.2.2)."""
    drop = HOP_BY_HOP | facts.tokens if facts is not None and facts.tokens else HOP_BY_HOP
    out: Headers = []
    for name, value in headers:
        lowered = name.lower()
        if lowered not in drop:
            out.append((lowered, value))
    return out
