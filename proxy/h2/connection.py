"""One HTTP/2 client connection on an `https` listener with `http2 = true`: python-hyper h2 fed the
client's bytes, its events turned into streams (`stream.py`), its output written back.

Owns the connection's settings and limits (100 concurrent streams, a 64 KiB header list), the
guards against hostile peers that h2 leaves to its caller (rapid reset, PING and SETTINGS floods,
a client that stops reading or keeps its window shut), which requests are gRPC (to
`grpc_upstream` through `grpc.py`, or a trailers-only UNIMPLEMENTED without one), the idle and
upstream timers, and drain (a GOAWAY; open streams finish). It knows nothing of certificates,
and of HTTP/1.1 only what `proxy.h2.request` and the upstream pool provide.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import cast

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    PingReceived,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import H2Error, ProtocolError
from h2.settings import SettingCodes, Settings
from hyperframe.frame import GoAwayFrame

from proxy.accesslog import AccessEntry, ListenerAccess, new_entry
from proxy.connections import Shared
from proxy.h2.grpc import GrpcCall, GrpcUpstreamLink
from proxy.h2.request import interpret_h2, is_grpc
from proxy.h2.stream import Answering, Stream
from proxy.h2relay.connection import RelayTarget
from proxy.http1.request import Refused, Request
from proxy.http1.routing import Router
from proxy.http1.upstream import UpstreamPool
from proxy.http1.wire import Headers

log = logging.getLogger("proxy.http")

# nginx's http2_max_concurrent_streams and Envoy's default cap alike.
MAX_CONCURRENT_STREAMS = 100
# A request's header list, decoded (SETTINGS_MAX_HEADER_LIST_SIZE, RFC 9113 6.5.2): the HTTP/1.1
# engine's head limit. h2 refuses more (and more than 64 CONTINUATION frames: CVE-2024-27316).
MAX_HEADER_LIST = 64 * 1024
# The connection's receive window: enough for many uploading streams at once, each of which
# still gets only its 64 KiB stream window until the upstream has taken its bytes.
CONNECTION_WINDOW = 1024 * 1024
# Per one-second window: more client RST_STREAMs (CVE-2023-44487), PINGs or SETTINGS than this is
# abuse, and the connection ends with GOAWAY ENHANCE_YOUR_CALM (as nghttp2 and Envoy do).
MAX_RESETS_PER_SECOND = 100
MAX_CONTROL_PER_SECOND = 100
# Output waiting for a client that does not read (PING and SETTINGS ACKs included).
MAX_WRITE_BACKLOG = 1024 * 1024

_CONFIG = H2Configuration(client_side=False, header_encoding=None, validate_outbound_headers=False, normalize_outbound_headers=False)
_NO_REQUEST = Request(b"")
_GRPC_UNIMPLEMENTED: Headers = [
    (b":status", b"200"),
    (b"content-type", b"application/grpc"),
    (b"grpc-status", b"12"),
    (b"grpc-message", b"edge-proxy: no gRPC upstream on this port"),
]


class H2Server(asyncio.Protocol):
    """A client's HTTP/2 connection, served stream by stream."""

    __slots__ = (
        "_blocked",
        "_client",
        "_client_ip",
        "_closed",
        "_control",
        "_flush_pending",
        "_going_away",
        "_grpc",
        "_grpc_link",
        "_h2",
        "_handshake_timer",
        "_idle_since",
        "_loop",
        "_resets",
        "_router",
        "_shared",
        "_starting",
        "_streams",
        "_timer",
        "_tls_version",
        "_window_start",
        "_writing_paused",
        "transport",
    )

    def __init__(self, shared: Shared, router: Router[UpstreamPool], *, grpc: RelayTarget | None = None) -> None:
        self._shared = shared
        self._router = router
        self._grpc = grpc
        self._grpc_link: GrpcUpstreamLink | None = None
        self._loop = shared.loop
        self.transport: asyncio.Transport | None = None
        self._h2 = H2Connection(_CONFIG)
        self._streams: dict[int, Answering] = {}
        self._starting: list[Answering] = []
        self._blocked: dict[Answering, float] = {}  # streams waiting for the client's window, since
        self._client_ip = b""
        self._client = ""  # for access log lines
        self._tls_version: str | None = None
        self._closed = False
        self._flush_pending = False
        self._going_away = False
        self._writing_paused = False
        self._idle_since = 0.0
        self._window_start = 0.0
        self._resets = 0
        self._control = 0
        self._timer: asyncio.TimerHandle | None = None
        self._handshake_timer: asyncio.TimerHandle | None = shared.watch_handshake(lambda: self.transport is not None)

    # --- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self.transport = transport
        shared = self._shared
        shared.tally.handshake()
        shared.opened(self)
        peer = transport.get_extra_info("peername")
        self._client_ip = str(peer[0]).encode() if peer else b"unknown"
        if shared.access is not None:
            self._client = str(peer[0]) if peer else "unknown"
            ssl_object = transport.get_extra_info("ssl_object")
            self._tls_version = ssl_object.version() if ssl_object is not None else None
        h2 = self._h2
        h2.local_settings = Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
                SettingCodes.ENABLE_PUSH: 0,
            },
        )
        h2.initiate_connection()
        h2.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self._idle_since = self._window_start = self._loop.time()
        if shared.draining:
            self.drain()
        self._flush()
        self._arm_timer()

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        now = self._loop.time()
        if now - self._window_start >= 1.0:
            self._window_start, self._resets, self._control = now, 0, 0
        try:
            events = self._h2.receive_data(data)
        except ProtocolError as e:  # h2 has queued the GOAWAY naming the error
            self._shared.tally.error("bad_request")
            log.debug("%s: HTTP/2 protocol error from %s: %s", self._shared.name, self._client_ip.decode(), e)
            self._end()
            return
        try:
            self._handle(events)
        except H2Error as e:  # a state h2 refuses to act on: end the connection, never raise
            log.debug("%s: HTTP/2 connection from %s ended: %s", self._shared.name, self._client_ip.decode(), e)
            self._send_goaway(ErrorCodes.INTERNAL_ERROR, self._h2.highest_inbound_stream_id)
            self._end()
            return
        if self._abusive():
            return
        self._flush()
        if self._going_away and not self._streams:
            self.close()

    def _handle(self, events: list[Event]) -> None:
        for event in events:
            kind = type(event)
            if kind is RequestReceived:
                self._request(event)  # type: ignore[arg-type]
            elif kind is DataReceived:
                self._data(event)  # type: ignore[arg-type]
            elif kind is StreamEnded:
                stream = self._streams.get(event.stream_id)  # type: ignore[attr-defined]
                if stream is not None:
                    stream.request_end()
            elif kind is WindowUpdated:
                self._window_updated(event.stream_id)  # type: ignore[attr-defined]
            elif kind is StreamReset:
                self._client_reset(event)  # type: ignore[arg-type]
            elif kind is PingReceived or kind is RemoteSettingsChanged:
                self._control += 1
                if kind is RemoteSettingsChanged and SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:  # type: ignore[attr-defined]
                    self._window_updated(0)
            elif kind is ConnectionTerminated:
                self._going_away = True  # the client's GOAWAY: finish what is open, then close
        if self._starting:
            starting, self._starting = self._starting, []
            for stream in starting:
                stream.start()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is None:  # the handshake failed
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._shared.closed(self)
        streams, self._streams = self._streams, {}
        self._blocked.clear()
        for stream in streams.values():
            stream.client_reset()
        if self._grpc_link is not None:
            self._grpc_link.close()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._window_updated(0)

    # --- H2Link: what streams use -------------------------------------------------------------------

    def send_head(self, stream_id: int, headers: Headers, end_stream: bool) -> None:
        if self._closed:
            return
        try:
            self._h2.send_headers(stream_id, headers, end_stream=end_stream)
        except H2Error:  # the client reset the stream, or sent GOAWAY (h2 then sends nothing more)
            stream = self._streams.get(stream_id)
            if stream is not None:
                stream.client_reset()
                self._forget(stream)

    def send_body(self, stream: Answering) -> None:
        if self._closed:
            return
        h2 = self._h2
        sid = stream.stream_id
        out = stream.out
        try:
            if not self._writing_paused:
                frame = h2.max_outbound_frame_size
                while out:
                    window = h2.local_flow_control_window(sid)
                    if window <= 0:
                        break
                    chunk = out[0]
                    size = min(window, frame)
                    if len(chunk) <= size:
                        out.popleft()
                        stream.out_size -= len(chunk)
                        last = not out and stream.end_pending and stream.trailers is None
                        h2.send_data(sid, chunk, end_stream=last)
                        if last:
                            stream.end_sent = True
                    else:
                        h2.send_data(sid, chunk[:size])
                        out[0] = chunk[size:]
                        stream.out_size -= size
                    self._blocked.pop(stream, None)
            if out:
                self._blocked.setdefault(stream, self._loop.time())
            elif stream.end_pending and not stream.end_sent:
                if stream.trailers is not None:
                    h2.send_headers(sid, stream.trailers, end_stream=True)
                else:
                    h2.end_stream(sid)
                stream.end_sent = True
        except H2Error:  # the client reset or closed the stream meanwhile
            stream.client_reset()
            self._forget(stream)
            return
        self._flush_soon()
        if not out:
            self._blocked.pop(stream, None)
            if stream.end_sent:
                stream.sent_all()
                return
        stream.window_opened()

    def acknowledge(self, stream_id: int, size: int) -> None:
        if size and not self._closed:
            try:
                self._h2.acknowledge_received_data(size, stream_id)
            except H2Error:
                return
            self._flush_soon()

    def reset(self, stream_id: int, code: int) -> None:
        if self._closed:
            return
        try:
            self._h2.reset_stream(stream_id, code)
        except H2Error:
            return
        self._flush_soon()

    def stream_done(self, stream: Answering) -> None:
        self._forget(stream)
        if not self._streams:
            self._idle_since = self._loop.time()
            if self._going_away:
                self.close()

    def watch_upstream(self) -> None:
        """The periodic timer checks `head_deadline`s; nothing to do per request."""

    # --- Connection: what the listener uses ---------------------------------------------------

    def drain(self) -> None:
        """GOAWAY (NO_ERROR): streams the client opened so far finish, no new one starts."""
        if self._closed or self._going_away:
            return
        self._going_away = True
        self._send_goaway(ErrorCodes.NO_ERROR, self._h2.highest_inbound_stream_id)
        if not self._streams:
            self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._flush_raw()
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        self._closed = True
        if self.transport is not None:
            self.transport.abort()

    # --- internals ------------------------------------------------------------------------------

    def _request(self, event: RequestReceived) -> None:
        sid = event.stream_id
        headers: Headers = event.headers  # bytes: header_encoding is None
        if self._going_away:
            self.reset(sid, ErrorCodes.REFUSED_STREAM)
            return
        end_stream = event.stream_ended is not None
        shared = self._shared
        if is_grpc(headers):
            if self._grpc is None:
                self.send_head(sid, _GRPC_UNIMPLEMENTED, True)
                if shared.access is not None:
                    shared.access.write(self._access_entry(shared.access, headers, None, "gRPC"), "UNIMPLEMENTED", "no_grpc_upstream")
                if not end_stream:
                    self.reset(sid, ErrorCodes.NO_ERROR)
                shared.tally.request(200)
                return
            if self._grpc_link is None:
                self._grpc_link = GrpcUpstreamLink(shared, self._grpc)
            call = GrpcCall(self, shared, sid, headers, end_stream, self._grpc_link)
            if shared.access is not None:
                call.log = self._access_entry(shared.access, headers, str(self._grpc.upstream), "gRPC")
            self._streams[sid] = call
            self._starting.append(call)
            return
        try:
            request, pool = interpret_h2(
                headers, self._router, end_stream=end_stream, client_ip=self._client_ip, max_body_bytes=shared.limits.max_body_bytes
            )
        except Refused as e:
            shared.tally.error("bad_request")
            if e.status == 400:  # malformed (RFC 9113 8.1.1): a stream error, nothing is forwarded
                self.reset(sid, ErrorCodes.PROTOCOL_ERROR)
                return
            stream = Stream(self, shared, sid, _NO_REQUEST, None, e.status)
            pool = None
        else:
            stream = Stream(self, shared, sid, request, pool, 0 if pool is not None else 404)
        if shared.access is not None:
            stream.log = self._access_entry(shared.access, headers, pool.label if pool is not None else None)
        self._streams[sid] = stream
        self._starting.append(stream)

    def _access_entry(self, access: ListenerAccess, headers: Headers, upstream: str | None, protocol: str = "HTTP/2") -> AccessEntry:
        """The access log's record of a request (or gRPC call) whose head just arrived."""
        fields = {name: value for name, value in headers if name[:1] == b":"}
        method, authority, path = fields.get(b":method"), fields.get(b":authority"), fields.get(b":path")
        return new_entry(
            access,
            self._client,
            self._tls_version,
            method.decode("latin-1") if method else None,
            authority.decode("latin-1") if authority else None,
            path.decode("utf-8", "backslashreplace") if path else None,
            time.monotonic(),
            sum(len(name) + len(value) for name, value in headers),
            upstream,
            protocol,
        )

    def _data(self, event: DataReceived) -> None:
        sid = event.stream_id
        stream = self._streams.get(sid)
        size = event.flow_controlled_length
        if stream is None:
            self.acknowledge(sid, size)
            return
        data = event.data
        limit = self._shared.limits.max_body_bytes
        if limit and not stream.discard:
            stream.body_seen += len(data)
            if stream.body_seen > limit:
                self._shared.tally.error("bad_request")
                stream.request_body(b"", 0)
                stream.request_too_large()
                self.acknowledge(sid, size)
                return
        stream.request_body(data, size)

    def _client_reset(self, event: StreamReset) -> None:
        if event.remote_reset:
            self._resets += 1
        stream = self._streams.get(event.stream_id)
        if stream is not None:
            stream.client_reset()
            self._forget(stream)
            if not self._streams:
                self._idle_since = self._loop.time()

    def _window_updated(self, stream_id: int) -> None:
        if not self._blocked or self._writing_paused:
            return
        if stream_id == 0:
            for stream in list(self._blocked):
                self.send_body(stream)
        else:
            one = self._streams.get(stream_id)
            if one is not None and one in self._blocked:
                self.send_body(one)

    def _forget(self, stream: Answering) -> None:
        self._streams.pop(stream.stream_id, None)
        self._blocked.pop(stream, None)

    def _abusive(self) -> bool:
        """Past a flood limit, or not reading its own output: GOAWAY ENHANCE_YOUR_CALM, closed."""
        transport = self.transport
        backlog = transport is not None and self._writing_paused and transport.get_write_buffer_size() > MAX_WRITE_BACKLOG
        if self._resets <= MAX_RESETS_PER_SECOND and self._control <= MAX_CONTROL_PER_SECOND and not backlog:
            return False
        why = "rapid resets" if self._resets > MAX_RESETS_PER_SECOND else "a flood of PING or SETTINGS" if not backlog else "unread output"
        self._calm(why)
        return True

    def _calm(self, why: str) -> None:
        self._shared.tally.error("http2_abuse")
        log.warning("%s: HTTP/2 client %s ended for %s", self._shared.name, self._client_ip.decode(), why)
        self._send_goaway(ErrorCodes.ENHANCE_YOUR_CALM, self._h2.highest_inbound_stream_id)
        self._end()

    def _send_goaway(self, code: int, last_stream_id: int) -> None:
        # Written by hand: h2's close_connection() would refuse every frame after it, and the
        # streams below last_stream_id still have to finish (RFC 9113 6.8).
        self._flush_raw()
        frame = GoAwayFrame(0, last_stream_id=last_stream_id, error_code=code)
        if self.transport is not None and not self._closed:
            self.transport.write(frame.serialize())

    def _end(self) -> None:
        """Close after the GOAWAY: every stream is abandoned."""
        self.close()
        streams, self._streams = self._streams, {}
        self._blocked.clear()
        for stream in streams.values():
            stream.client_reset()

    def _flush(self) -> None:
        if not self._closed:
            self._flush_raw()

    def _flush_soon(self) -> None:
        """Write what h2 has queued once this turn of the event loop is over: the answers of many
        streams, each arriving from its own upstream connection, then go out in one TLS write
        instead of one each (a TLS record and a send per write were a sixth of the CPU)."""
        if not self._flush_pending and not self._closed:
            self._flush_pending = True
            self._loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_pending = False
        self._flush()

    def _flush_raw(self) -> None:
        data = self._h2.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def _arm_timer(self) -> None:
        limits = self._shared.limits
        self._timer = self._loop.call_later(min(limits.idle_timeout, limits.upstream_timeout, 5.0), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._closed:
            return
        now = self._loop.time()
        limits = self._shared.limits
        for stream in list(self._streams.values()):
            if stream.head_deadline and now >= stream.head_deadline:
                stream.head_timed_out()
        if any(now - since >= limits.idle_timeout for since in self._blocked.values()):
            self._calm("a window kept shut")
            return
        if not self._streams and now - self._idle_since >= limits.idle_timeout:
            self.drain()
            return
        self._flush()
        self._arm_timer()
