"""gRPC calls that arrive on an HTTP/2 connection the engine serves (one that began with a browser
or API request): each goes to `grpc_upstream` as a stream of the client connection's own HTTP/2
connection there, with its headers, messages, trailers, resets and flow control passed through.

Owns that upstream connection (python-hyper h2 as the client side, dialled on the first call,
closed with the client's connection) and one `GrpcCall` per call. The edge reads nothing of
gRPC but the stream boundaries: metadata, deadlines (`grpc-timeout`), status, details and
trailing metadata travel as the fields they are. Knows nothing of routes or HTTP/1.1.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, cast

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import H2Error

from proxy.accesslog import AccessEntry
from proxy.connections import Shared
from proxy.http1.wire import Headers

if TYPE_CHECKING:
    from proxy.h2.stream import H2Link
    from proxy.h2relay.connection import RelayTarget

log = logging.getLogger("proxy.grpc")

_CONFIG = H2Configuration(client_side=True, header_encoding=None, validate_outbound_headers=False, normalize_outbound_headers=False)
# Response bytes held for the client per call before the upstream's window is left shut.
CALL_BUFFER_HIGH = 64 * 1024
UPSTREAM_WINDOW = 1024 * 1024
UNAVAILABLE: Headers = [
    (b":status", b"200"),
    (b"content-type", b"application/grpc"),
    (b"grpc-status", b"14"),
    (b"grpc-message", b"edge-proxy: the upstream is unavailable"),
]


class GrpcCall:
    """One gRPC call: the client's stream on the edge's HTTP/2 engine and its twin upstream."""

    __slots__ = (
        "_pending",
        "_request_done",
        "_unacked_up",
        "body_seen",
        "discard",
        "end_pending",
        "end_sent",
        "finished",
        "head_deadline",
        "headers",
        "link",
        "log",
        "out",
        "out_size",
        "resp_started",
        "shared",
        "stream_id",
        "trailers",
        "up_ended",
        "up_id",
        "upstream",
    )

    def __init__(
        self, link: H2Link, shared: Shared, stream_id: int, headers: Headers, end_stream: bool, upstream: GrpcUpstreamLink
    ) -> None:
        self.link = link
        self.shared = shared
        self.stream_id = stream_id
        self.headers = headers
        self.upstream = upstream
        self.up_id = 0  # the upstream stream, once opened
        self.up_ended = False  # END_STREAM sent upstream (h2 closes a stream that gets two)
        self.out: deque[bytes] = deque()
        self.out_size = 0
        self.end_pending = self.end_sent = self.finished = self.resp_started = False
        self.trailers: Headers | None = None
        self.head_deadline = 0.0  # the client's deadline does this job for gRPC
        self.discard = True  # max_body_bytes does not apply: message limits are end to end
        self.body_seen = 0
        self._pending: deque[tuple[bytes, int]] = deque()  # request bytes (and their flow size) for upstream
        self._request_done = end_stream
        self._unacked_up = 0
        self.log: AccessEntry | None = None  # set by the connection while the access log is on

    # --- driven by the client's connection -----------------------------------------------------

    def start(self) -> None:
        if not self.finished:
            self.upstream.open(self)

    def request_body(self, data: bytes, flow_size: int) -> None:
        if self.log is not None:
            self.log.bytes_in += len(data)
        if self.finished:
            self.link.acknowledge(self.stream_id, flow_size)
            return
        self._pending.append((data, flow_size))
        self.upstream.send_pending(self)

    def request_end(self) -> None:
        self._request_done = True
        self.upstream.send_pending(self)

    def client_reset(self) -> None:
        if not self.finished:
            self._log_end("CANCELLED", "client_closed")
            self.finished = True
            self.out.clear()
            self.upstream.cancel(self)

    def window_opened(self) -> None:
        if self._unacked_up and self.out_size < CALL_BUFFER_HIGH // 2:
            size, self._unacked_up = self._unacked_up, 0
            self.upstream.acknowledge(self, size)

    def request_too_large(self) -> None:
        """Never: max_body_bytes does not apply to gRPC (`discard` is set)."""

    def head_timed_out(self) -> None:
        """Never: the client's deadline bounds a call, not upstream_timeout."""

    def sent_all(self) -> None:
        if not self.finished:
            self._log_end(grpc_status_name(self.trailers))
            self.finished = True
            self.link.stream_done(self)

    def _log_end(self, status: str, reason: str | None = None) -> None:
        """Write this call's access log line (once; nothing when the log is off)."""
        entry, self.log = self.log, None
        if entry is not None and self.shared.access is not None:
            self.shared.access.write(entry, status, reason)

    # --- driven by the upstream link ------------------------------------------------------------

    def pending(self) -> deque[tuple[bytes, int]]:
        return self._pending

    @property
    def request_done(self) -> bool:
        return self._request_done

    def sent_upstream(self, flow_size: int) -> None:
        self.link.acknowledge(self.stream_id, flow_size)

    def on_response(self, headers: Headers, end_stream: bool) -> None:
        self.resp_started = True
        self.shared.tally.request(200)
        self.link.send_head(self.stream_id, headers, end_stream)
        if end_stream:  # trailers-only
            self.trailers = headers
            self.end_pending = self.end_sent = True
            self.sent_all()

    def on_data(self, data: bytes, flow_size: int) -> None:
        if self.finished:
            self.upstream.acknowledge(self, flow_size)
            return
        self.out.append(data)
        self.out_size += len(data)
        if self.log is not None:
            self.log.bytes_out += len(data)
        if self.out_size <= CALL_BUFFER_HIGH:
            self.upstream.acknowledge(self, flow_size)
        else:
            self._unacked_up += flow_size
        self.link.send_body(self)

    def on_trailers(self, trailers: Headers) -> None:
        self.trailers = trailers

    def on_end(self) -> None:
        if self.finished or self.end_sent:
            return
        self.end_pending = True
        self.link.send_body(self)

    def on_reset(self, code: int) -> None:
        if not self.finished:
            self._log_end("INTERNAL" if self.resp_started else "UNAVAILABLE", "upstream_reset")
            self.finished = True
            self.out.clear()
            self.link.reset(self.stream_id, code)
            self.link.stream_done(self)

    def unavailable(self) -> None:
        """The upstream could not be reached, or went away before answering this call."""
        if self.finished:
            return
        if self.resp_started:
            self.on_reset(ErrorCodes.INTERNAL_ERROR)
            return
        self.shared.tally.request(200)
        self.link.send_head(self.stream_id, UNAVAILABLE, True)
        self._log_end("UNAVAILABLE", "upstream_unreachable")
        self.finished = self.end_pending = self.end_sent = True
        if not self._request_done:
            self.link.reset(self.stream_id, ErrorCodes.NO_ERROR)
        self.link.stream_done(self)


class GrpcUpstreamLink(asyncio.Protocol):
    """The h2 client connection to `grpc_upstream` that one client connection's calls share."""

    def __init__(self, shared: Shared, target: RelayTarget) -> None:
        self._shared = shared
        self._target = target
        self._h2 = H2Connection(_CONFIG)
        self._transport: asyncio.Transport | None = None
        self._calls: dict[int, GrpcCall] = {}
        self._waiting: list[GrpcCall] = []  # calls before the connection is up
        self._dial: asyncio.Task[None] | None = None
        self._closed = False

    def open(self, call: GrpcCall) -> None:
        if self._closed:
            call.unavailable()
        elif self._transport is None:
            self._waiting.append(call)
            if self._dial is None:
                self._dial = self._shared.tasks.spawn(self._connect(), f"{self._shared.name}: connect gRPC upstream")
        else:
            self._start(call)

    def send_pending(self, call: GrpcCall) -> None:
        if not call.up_id or self._transport is None or call.finished or call.up_ended:
            return
        h2, pending = self._h2, call.pending()
        try:
            while pending:
                data, flow = pending[0]
                window = min(h2.local_flow_control_window(call.up_id), h2.max_outbound_frame_size)
                if len(data) > window:
                    if window <= 0:
                        break
                    h2.send_data(call.up_id, data[:window])
                    pending[0] = (data[window:], flow)
                    continue
                pending.popleft()
                h2.send_data(call.up_id, data)
                call.sent_upstream(flow)
            if not pending and call.request_done:
                call.up_ended = True
                h2.end_stream(call.up_id)
        except H2Error:
            call.unavailable()
        self._flush()

    def acknowledge(self, call: GrpcCall, size: int) -> None:
        if size and call.up_id and not self._closed:
            try:
                self._h2.acknowledge_received_data(size, call.up_id)
            except H2Error:
                return
            self._flush()

    def cancel(self, call: GrpcCall) -> None:
        if call in self._waiting:
            self._waiting.remove(call)
        if call.up_id and not self._closed:
            self._calls.pop(call.up_id, None)
            try:
                self._h2.reset_stream(call.up_id, ErrorCodes.CANCEL)
            except H2Error:
                return
            self._flush()

    def close(self) -> None:
        self._closed = True
        if self._dial is not None and not self._dial.done():
            self._dial.cancel()
        if self._transport is not None:
            self._transport.close()

    # --- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._h2.initiate_connection()
        self._h2.increment_flow_control_window(UPSTREAM_WINDOW - 65535)
        self._target.down = False
        waiting, self._waiting = self._waiting, []
        for call in waiting:
            self._start(call)
        self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
            self._handle(events)
        except H2Error as e:
            log.warning("%s: gRPC upstream %s broke HTTP/2: %s", self._shared.name, self._target.upstream, e)
            self._flush()
            self._fail_all()
            return
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_all()

    # --- internals --------------------------------------------------------------------------------

    async def _connect(self) -> None:
        address, tls = self._target.upstream.address, self._target.tls
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: self, address.host, address.port, ssl=tls, server_hostname=address.host if tls else None),
                self._shared.limits.connect_timeout,
            )
        except (OSError, TimeoutError) as e:
            self._target.unreachable(self._shared, str(e) or "no connection in time")
            self._fail_all()

    def _start(self, call: GrpcCall) -> None:
        try:
            call.up_id = self._h2.get_next_available_stream_id()
            call.up_ended = call.request_done and not call.pending()
            self._h2.send_headers(call.up_id, call.headers, end_stream=call.up_ended)
        except H2Error:
            call.unavailable()
            return
        self._calls[call.up_id] = call
        self.send_pending(call)

    def _handle(self, events: list[Event]) -> None:
        calls = self._calls
        for event in events:
            kind = type(event)
            call = calls.get(getattr(event, "stream_id", 0) or 0)
            if kind is DataReceived:
                if call is not None:
                    call.on_data(event.data, event.flow_controlled_length)  # type: ignore[attr-defined]
                else:
                    self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)  # type: ignore[attr-defined]
            elif call is None:
                if kind is WindowUpdated:
                    for each in list(calls.values()):
                        self.send_pending(each)
                elif kind is ConnectionTerminated:
                    self._closed = True  # calls it took finish; new ones get UNAVAILABLE
            elif kind is ResponseReceived:
                call.on_response(event.headers, event.stream_ended is not None)  # type: ignore[attr-defined]
            elif kind is TrailersReceived:
                call.on_trailers(event.headers)  # type: ignore[attr-defined]
            elif kind is StreamEnded:
                calls.pop(call.up_id, None)
                call.on_end()
            elif kind is StreamReset:
                calls.pop(call.up_id, None)
                call.on_reset(event.error_code)  # type: ignore[attr-defined]
            elif kind is WindowUpdated:
                self.send_pending(call)

    def _fail_all(self) -> None:
        self._closed = True
        calls = [*self._waiting, *self._calls.values()]
        self._waiting, self._calls = [], {}
        for call in calls:
            call.unavailable()

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)


# grpc-status codes by number (https://grpc.github.io/grpc/core/md_doc_statuscodes.html).
GRPC_STATUS_NAMES = (
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
)  # fmt: skip


def grpc_status_name(trailers: Headers | None) -> str:
    """The name of the call's grpc-status, as the access log writes it; UNKNOWN when it has none."""
    for name, value in trailers or ():
        if name == b"grpc-status" and value.isdigit() and int(value) < len(GRPC_STATUS_NAMES):
            return GRPC_STATUS_NAMES[int(value)]
    return "UNKNOWN"
