"""One relayed gRPC connection: the client's TLS connection and an upstream connection of its own,
joined by two asyncio Protocols that pass the HTTP/2 bytes through unchanged.

Owns a connection's life: dialling the upstream within connect_timeout, flow control both ways,
half-closes, the idle timer, max_connection_age and drain (a GOAWAY written between two upstream
frames), and the UNAVAILABLE answer a client gets when its upstream cannot be reached. It reads
only frame headers (frames.py). It knows nothing of certificates (the TLS layer below already
chose one) and nothing of gRPC methods: every call is just frames on a stream.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from typing import cast

from proxy.config import GrpcUpstream
from proxy.connections import Shared
from proxy.h2relay.frames import (
    CLIENT_PREFACE,
    SETTINGS_ACK_FRAME,
    SETTINGS_FRAME,
    FrameScanner,
    Streams,
    goaway_frame,
    trailers_only_frame,
    unavailable_block,
)

log = logging.getLogger("proxy.grpc")

# After our GOAWAY, streams the client sent before it read the GOAWAY may still arrive; the
# connection stays open at least this long so they are relayed rather than cut.
GOAWAY_GRACE = 1.0
# Client bytes held while the upstream connection is being made, before the client is paused.
PENDING_LIMIT = 256 * 1024
# A refused client (upstream unreachable) has this long to read its answers and close.
REFUSAL_LINGER = 2.0
UNAVAILABLE_BLOCK = unavailable_block("edge-proxy: the upstream is unavailable")

# Why the client's reading is paused; reading resumes when no reason is left.
_PAUSED_PENDING = 1
_PAUSED_UPSTREAM_FULL = 2


class RelayTarget:
    """Where one listener's connections are relayed to, and whether that upstream was last
    found unreachable: an outage is logged once, not once per connection."""

    __slots__ = ("down", "label", "max_connection_age", "tls", "upstream")

    def __init__(self, upstream: GrpcUpstream, tls: ssl.SSLContext | None, max_connection_age: float) -> None:
        self.upstream = upstream
        self.label = str(upstream)  # as the access log names it
        self.tls = tls
        self.max_connection_age = max_connection_age
        self.down = False

    def unreachable(self, shared: Shared, reason: str) -> None:
        shared.tally.error("upstream_unavailable")
        if not self.down:
            log.warning("%s: gRPC upstream %s is unreachable: %s", shared.name, self.upstream, reason)
            self.down = True


class UpstreamSide(asyncio.Protocol):
    """The upstream connection of one relay: hands everything to its ClientSide."""

    __slots__ = ("_relay",)

    def __init__(self, relay: ClientSide) -> None:
        self._relay = relay

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._relay.upstream_made(cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        self._relay.from_upstream(data)

    def eof_received(self) -> bool:
        # HTTP/2 has no half-close: an upstream that stops sending is done. Returning False closes
        # this transport; connection_lost then closes the client after what it was sent.
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._relay.upstream_lost(exc)

    def pause_writing(self) -> None:
        self._relay.pause_client(_PAUSED_UPSTREAM_FULL)

    def resume_writing(self) -> None:
        self._relay.resume_client(_PAUSED_UPSTREAM_FULL)


class ClientSide(asyncio.Protocol):
    """A client's TLS connection, relayed to its own upstream connection."""

    __slots__ = (
        "_age_timer",
        "_began",
        "_busy",
        "_bytes_in",
        "_bytes_out",
        "_client_paused",
        "_closed",
        "_dial",
        "_down",
        "_goaway_pending",
        "_going_away",
        "_grace_over",
        "_handshake_timer",
        "_idle_since",
        "_idle_timer",
        "_loop",
        "_pending",
        "_pending_size",
        "_refusing",
        "_shared",
        "_streams",
        "_target",
        "_transport",
        "_up",
        "_upstream",
        "_who",
    )

    def __init__(self, shared: Shared, target: RelayTarget) -> None:
        self._shared = shared
        self._target = target
        self._loop = shared.loop
        self._transport: asyncio.Transport | None = None
        self._upstream: asyncio.Transport | None = None
        self._dial: asyncio.Task[None] | None = None
        self._streams = Streams()
        # Client to upstream: the connection preface, then frames. Upstream to client: frames.
        self._up = FrameScanner(self._streams.from_client, skip=len(CLIENT_PREFACE))
        self._down = FrameScanner(self._streams.from_server)
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._client_paused = 0
        self._busy = False
        self._idle_since = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._age_timer: asyncio.TimerHandle | None = None
        self._going_away = False
        self._goaway_pending = False
        self._grace_over = False
        self._refusing = False
        self._closed = False
        self._handshake_timer: asyncio.TimerHandle | None = shared.watch_handshake(lambda: self._transport is not None)
        self._began = 0.0
        self._bytes_in = self._bytes_out = 0
        self._who: tuple[str, str | None, bool] = ("", None, False)  # client, TLS version, h2 (access log on)

    # --- the client's transport -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        self._transport = transport
        shared = self._shared
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        shared.tally.handshake()
        shared.opened(self)
        self._began = time.monotonic()
        ssl_object = transport.get_extra_info("ssl_object")
        if shared.access is not None:
            peer = transport.get_extra_info("peername")
            self._who = (
                str(peer[0]) if peer else "unknown",
                ssl_object.version() if ssl_object is not None else None,
                ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2",
            )
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2" or shared.draining:
            # Not HTTP/2 (no ALPN, or another protocol): nothing the upstream could understand.
            self._closed = True
            transport.abort()
            return
        self._dial = shared.tasks.spawn(self._connect_upstream(), f"{shared.name}: connect upstream")
        self._quiet()
        age = self._target.max_connection_age
        if age > 0:
            # Up to 10% sooner, as grpc does, so clients that connected together do not all
            # reconnect together.
            self._age_timer = self._loop.call_later(age * random.uniform(0.9, 1.0), self.go_away)

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        self._bytes_in += len(data)
        self._up.feed(data)
        upstream = self._upstream
        if upstream is not None:
            upstream.write(data)
        elif self._refusing:
            self._refuse_new_streams()
        else:
            self._pending.append(data)
            self._pending_size += len(data)
            if self._pending_size > PENDING_LIMIT:
                self.pause_client(_PAUSED_PENDING)
        self._after_frames()

    def eof_received(self) -> bool:
        # The client has finished sending; under TLS asyncio closes the transport whatever we
        # answer, and connection_lost closes the upstream after what it was sent.
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is None:  # the handshake failed: asyncio still reports the loss
            return
        if self._shared.access is not None:
            self._log()
        self._closed = True
        self._shared.closed(self)
        for timer in (self._idle_timer, self._age_timer):
            if timer is not None:
                timer.cancel()
        self._idle_timer = self._age_timer = None
        if self._dial is not None and not self._dial.done():
            self._dial.cancel()
        if self._upstream is not None:
            self._upstream.close()  # after what the client sent has been written

    def _log(self) -> None:
        """The connection's access log line: what the edge knows without decoding its calls."""
        assert self._shared.access is not None
        client, tls_version, h2 = self._who
        self._shared.access.connection(
            "gRPC",
            client,
            tls_version,
            "UNAVAILABLE" if self._refusing else None,
            self._bytes_in,
            self._bytes_out,
            self._began,
            self._target.label,
            (self._streams.last_client_stream + 1) // 2,
            "upstream_unreachable" if self._refusing else None if h2 else "not_h2",
        )

    def pause_writing(self) -> None:
        if self._upstream is not None:
            self._upstream.pause_reading()

    def resume_writing(self) -> None:
        if self._upstream is not None and not self._upstream.is_closing():
            self._upstream.resume_reading()

    def pause_client(self, reason: int) -> None:
        if not self._client_paused and self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()
        self._client_paused |= reason

    def resume_client(self, reason: int) -> None:
        was_paused = self._client_paused
        self._client_paused &= ~reason
        if was_paused and not self._client_paused and self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    # --- the upstream -----------------------------------------------------------------------------

    async def _connect_upstream(self) -> None:
        shared, target = self._shared, self._target
        address = target.upstream.address
        tls = target.tls
        try:
            await asyncio.wait_for(
                self._loop.create_connection(
                    lambda: UpstreamSide(self), address.host, address.port, ssl=tls, server_hostname=address.host if tls else None
                ),
                shared.limits.connect_timeout,
            )
        except TimeoutError:
            self._refuse(f"no connection within {shared.limits.connect_timeout:g} s")
        except OSError as e:  # refused, unreachable, TLS verification failed (ssl.SSLError)
            self._refuse(e.strerror or str(e))

    def upstream_made(self, transport: asyncio.Transport) -> None:
        if self._closed:
            transport.close()
            return
        if self._target.tls is not None:
            ssl_object = transport.get_extra_info("ssl_object")
            protocol = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
            if protocol not in ("h2", None):  # None: a server without ALPN, h2 by prior knowledge
                transport.abort()
                self._refuse(f"the upstream chose ALPN {protocol!r}, not h2")
                return
        self._upstream = transport
        self._target.down = False
        if self._pending:
            transport.write(b"".join(self._pending))
            self._pending.clear()
            self._pending_size = 0
        self.resume_client(_PAUSED_PENDING)

    def from_upstream(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or self._closed:
            return
        if self._goaway_pending:
            at = self._down.feed(data, want_boundary=True)
            if at >= 0:
                self._goaway_pending = False
                if not self._streams.server_goaway:  # the upstream's own GOAWAY already went out
                    data = data[:at] + goaway_frame() + data[at:]
        else:
            self._down.feed(data)
        self._bytes_out += len(data)
        transport.write(data)
        self._after_frames()

    def upstream_lost(self, exc: Exception | None) -> None:
        self._upstream = None
        if self._closed:
            return
        if not self._down.started:
            # The upstream closed before it said anything: no stream was answered, so each can
            # still get an honest UNAVAILABLE instead of a dropped connection.
            self._refuse("the upstream closed the connection" + (f": {exc}" if exc else ""))
            return
        self.close()

    # --- when streams come and go ---------------------------------------------------------------

    def _after_frames(self) -> None:
        if self._streams.open:
            self._busy = True
        elif self._busy:
            self._busy = False
            self._quiet()
        if self._grace_over and not self._streams.open:
            self.close()

    def _quiet(self) -> None:
        """No stream is open from now: the idle clock starts."""
        self._idle_since = self._loop.time()
        if self._idle_timer is None and not self._closed:
            self._idle_timer = self._loop.call_at(self._idle_since + self._shared.limits.idle_timeout, self._idle_check)

    def _idle_check(self) -> None:
        # One timer per connection, moved on lazily rather than re-armed on every stream.
        self._idle_timer = None
        if self._closed or self._streams.open:
            return  # _quiet restarts the clock when the last stream ends
        due = self._idle_since + self._shared.limits.idle_timeout
        if self._loop.time() >= due:
            self.go_away()
        else:
            self._idle_timer = self._loop.call_at(due, self._idle_check)

    def drain(self) -> None:
        self.go_away()

    def go_away(self) -> None:
        """Tell the client to open no new streams here (GOAWAY), then close once its open streams
        have finished. Used for idle connections, max_connection_age and drain."""
        if self._going_away or self._closed:
            return
        self._going_away = True
        if self._age_timer is not None:
            self._age_timer.cancel()
            self._age_timer = None
        if not self._refusing and not self._streams.server_goaway:
            if self._upstream is not None and self._transport is not None and self._down.at_boundary:
                self._transport.write(goaway_frame())
            else:
                self._goaway_pending = True  # written at the next frame boundary from upstream
        self._loop.call_later(GOAWAY_GRACE, self._end_grace)

    def _end_grace(self) -> None:
        self._grace_over = True
        if not self._streams.open:
            self.close()

    # --- when the upstream cannot be reached --------------------------------------------------

    def _refuse(self, reason: str) -> None:
        """Answer the client ourselves: each stream it opens gets UNAVAILABLE naming the edge.

        The client already speaks HTTP/2 to us, so this is a well-formed answer rather than a
        dropped connection; grpc clients report it as UNAVAILABLE with our message. No GOAWAY
        comes first: a grpc client that gets one right after the server's SETTINGS keeps retrying
        its call on that connection until the deadline. The connection is closed after
        REFUSAL_LINGER, so the next connection dials the upstream again.
        """
        transport = self._transport
        if self._closed or self._refusing or transport is None:
            return
        self._refusing = True
        self._upstream = None
        self._pending.clear()
        self.resume_client(_PAUSED_PENDING | _PAUSED_UPSTREAM_FULL)
        self._target.unreachable(self._shared, reason)
        transport.write(SETTINGS_FRAME)  # nothing has reached the client yet: this is our preface
        self._refuse_new_streams()
        self._loop.call_later(REFUSAL_LINGER, self._end_refusal)

    def _refuse_new_streams(self) -> None:
        streams = self._streams
        transport = self._transport
        if transport is None:
            return
        answers = [SETTINGS_ACK_FRAME] * streams.client_settings
        answers += [trailers_only_frame(stream, UNAVAILABLE_BLOCK) for stream in streams.open]
        streams.client_settings = 0
        streams.open.clear()
        if answers:
            transport.write(b"".join(answers))

    def _end_refusal(self) -> None:
        # Every stream up to the last one seen has its answer; one sent after this GOAWAY is
        # not processed, so the client may retry it on a new connection (RFC 9113 6.8).
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(goaway_frame(self._streams.last_client_stream))
        self.close()

    # --- closing ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close both connections after what each was sent has been written."""
        self._closed = True
        self._shared.closed(self)
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()
        if self._upstream is not None:
            self._upstream.close()

    def abort(self) -> None:
        self._closed = True
        self._shared.closed(self)
        if self._transport is not None:
            self._transport.abort()
        if self._upstream is not None:
            self._upstream.abort()
