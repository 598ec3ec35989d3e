"""TLS termination on the socket itself: the accept loop, the handshake, and a transport.

Owns listening sockets and, per connection, an `ssl.SSLSocket` in non-blocking mode driven by
the event loop's readiness callbacks, exposed to a protocol as an `asyncio.Transport`. OpenSSL
reads and writes the socket directly, as nginx does: no memory BIO between the kernel and the
record layer, no second copy of every byte, and the protocol is only created once a handshake
has completed. It knows nothing of HTTP or of certificates: the context it is given picks them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import logging
import os
import socket
import ssl
from collections.abc import Callable
from typing import Any

log = logging.getLogger("proxy.tls")

# Connections taken from the backlog per readiness event, so a burst of new clients costs one
# wake-up per batch rather than one per client.
ACCEPT_BATCH = 32
# Plaintext asked of OpenSSL per read. One TLS record carries at most 16 KiB; more is returned
# by the next read without a system call.
READ_SIZE = 64 * 1024
# asyncio's defaults for a transport's write buffer (pause_writing above, resume_writing below).
HIGH_WATER = 64 * 1024
LOW_WATER = 16 * 1024
# After a close, unread bytes from the client are drained for up to this long, so the kernel
# sends our last answer and a FIN rather than a reset that could destroy that answer.
LINGER_SECONDS = 5.0
# Accept failures that are about the machine (no file descriptors or memory) pause accepting
# for a moment instead of spinning, as asyncio does.
ACCEPT_RETRY_SECONDS = 1.0
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

HandshakeHook = Callable[[bool], None]

# What a closing connection finds in its receive buffer.
_UNREAD_NONE, _UNREAD_DATA, _UNREAD_EOF = 0, 1, 2


def listen_sockets(host: str, port: int, *, reuse_port: bool, backlog: int) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for every address `host` resolves to.

    Raises OSError (with errno and strerror) when an address cannot be bound.
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class TlsServer:
    """Accepts TLS clients on listening sockets and hands each completed handshake a protocol.

    `on_handshake(ok)` is told the outcome of every handshake (ok=False: failed, timed out, or
    the client left first); it must not raise.
    """

    def __init__(
        self,
        sockets: list[socket.socket],
        context: ssl.SSLContext,
        protocol_factory: Callable[[], asyncio.Protocol],
        *,
        handshake_timeout: float,
        on_handshake: HandshakeHook | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self.sockets = sockets
        self._context = context
        self._factory = protocol_factory
        self._handshake_timeout = handshake_timeout
        self._on_handshake = on_handshake or _ignore
        self._serving = False

    def start(self) -> None:
        self._serving = True
        for sock in self.sockets:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def close(self) -> None:
        """Stop accepting and close the listening sockets. Handshakes under way may finish;
        established connections are the protocol's to end."""
        if not self._serving:
            return
        self._serving = False
        for sock in self.sockets:
            self._loop.remove_reader(sock.fileno())
            sock.close()

    def _accept(self, listening: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, peer = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno not in _RESOURCE_ERRNOS:
                    continue  # the client gave up while queued (ECONNABORTED and the like)
                log.error("cannot accept a connection on %s: %s; retrying in %.0f s", _name(listening), e.strerror, ACCEPT_RETRY_SECONDS)
                self._loop.remove_reader(listening.fileno())
                self._loop.call_later(ACCEPT_RETRY_SECONDS, self._resume_accepting, listening)
                return
            conn.setblocking(False)
            if conn.family != socket.AF_UNIX:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                tls = self._context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
            except OSError:
                conn.close()
                continue
            TlsTransport(self._loop, tls, peer, self._factory, self._handshake_timeout, self._on_handshake)

    def _resume_accepting(self, listening: socket.socket) -> None:
        if self._serving:
            self._loop.add_reader(listening.fileno(), self._accept, listening)


def _ignore(_: bool) -> None:
    pass


def _name(sock: socket.socket) -> str:
    try:
        return str(sock.getsockname())
    except OSError:
        return "a closed socket"


class TlsTransport(asyncio.Transport):
    """One TLS connection: handshake first, then an asyncio.Transport for its protocol.

    Writes go to OpenSSL at once; what the socket cannot take yet is kept, in order, and
    retried when it is writable (OpenSSL wants the very same buffer again). Reads hand the
    protocol each record's plaintext as it arrives. `close()` sends what is buffered, then
    TLS close_notify, then closes.
    """

    __slots__ = (
        "_buffer",
        "_buffer_size",
        "_closing",
        "_factory",
        "_fd",
        "_high_water",
        "_loop",
        "_lost",
        "_low_water",
        "_on_handshake",
        "_paused_protocol",
        "_peer",
        "_protocol",
        "_reading",
        "_timer",
        "_tls",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        tls: ssl.SSLSocket,
        peer: Any,
        factory: Callable[[], asyncio.Protocol],
        handshake_timeout: float,
        on_handshake: HandshakeHook,
    ) -> None:
        super().__init__()
        self._peer = peer
        self._loop = loop
        self._tls = tls
        self._fd = tls.fileno()
        self._factory = factory
        self._on_handshake = on_handshake
        self._protocol: asyncio.Protocol | None = None
        self._buffer: collections.deque[bytes] = collections.deque()
        self._buffer_size = 0
        self._high_water = HIGH_WATER
        self._low_water = LOW_WATER
        self._paused_protocol = False
        self._reading = False
        self._closing = False
        self._lost = False
        self._timer: asyncio.TimerHandle | None = loop.call_later(handshake_timeout, self._handshake_timed_out)
        loop.add_reader(self._fd, self._handshake)

    # --- the handshake ---------------------------------------------------------------------

    def _handshake(self) -> None:
        try:
            self._tls.do_handshake()
        except ssl.SSLWantReadError:
            self._loop.remove_writer(self._fd)
            self._loop.add_reader(self._fd, self._handshake)
            return
        except ssl.SSLWantWriteError:
            self._loop.remove_reader(self._fd)
            self._loop.add_writer(self._fd, self._handshake)
            return
        except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
            log.debug("TLS handshake from %s failed: %s", self._peer, e)
            self._handshake_failed()
            return
        self._loop.remove_writer(self._fd)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._on_handshake(True)
        protocol = self._protocol = self._factory()
        protocol.connection_made(self)
        if self._closing:
            return
        self._reading = True
        self._loop.add_reader(self._fd, self._read_ready)
        # A client's first request often travels with its last handshake message.
        self._read_ready()

    def _handshake_timed_out(self) -> None:
        self._timer = None
        log.debug("TLS handshake from %s timed out", self._peer)
        self._handshake_failed()

    def _handshake_failed(self) -> None:
        self._on_handshake(False)
        self._closing = True
        self._release()

    # --- reading ---------------------------------------------------------------------------

    def _read_ready(self) -> None:
        tls = self._tls
        protocol = self._protocol
        if protocol is None or not self._reading:
            return
        while True:
            try:
                data = tls.recv(READ_SIZE)
            except ssl.SSLWantReadError:
                return
            except ssl.SSLWantWriteError:
                # Only a TLS 1.2 renegotiation asks this, and renegotiation is refused anyway.
                self._fatal(None)
                return
            except (OSError, ValueError) as e:
                self._fatal(e)
                return
            if not data:  # close_notify or a plain TCP FIN
                self._eof()
                return
            try:
                protocol.data_received(data)
            except Exception as e:
                log.exception("the connection from %s failed", self._peer)
                self._fatal(e)
                return
            # OpenSSL reads one record at a time from the socket; only what remains of a record
            # already read needs another call now. The rest wakes this callback again.
            if not self._reading or not tls.pending():
                return

    def _eof(self) -> None:
        self._stop_reading()
        assert self._protocol is not None
        keep_open = self._protocol.eof_received()
        if not keep_open:
            self.close()

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def pause_reading(self) -> None:
        if self._reading and not self._closing:
            self._stop_reading()

    def resume_reading(self) -> None:
        if not self._reading and not self._closing and self._protocol is not None:
            self._reading = True
            self._loop.add_reader(self._fd, self._read_ready)
            if self._tls.pending():
                self._loop.call_soon(self._read_ready)

    def is_reading(self) -> bool:
        return self._reading

    # --- writing ---------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not data:
            return
        if self._buffer:
            self._buffer.append(bytes(data))
            self._buffer_size += len(data)
            self._maybe_pause_protocol()
            return
        try:
            self._tls.send(data)
        except ssl.SSLWantWriteError:
            # Part of it may be out already; OpenSSL wants the same bytes again when writable.
            self._buffer.append(bytes(data))
            self._buffer_size += len(data)
            self._loop.add_writer(self._fd, self._write_ready)
            self._maybe_pause_protocol()
        except (OSError, ValueError) as e:
            self._fatal(e)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def _write_ready(self) -> None:
        buffer = self._buffer
        while buffer:
            data = buffer[0]
            try:
                self._tls.send(data)
            except ssl.SSLWantWriteError:
                return
            except (OSError, ValueError) as e:
                self._fatal(e)
                return
            buffer.popleft()
            self._buffer_size -= len(data)
        self._loop.remove_writer(self._fd)
        if self._paused_protocol and self._buffer_size <= self._low_water:
            self._paused_protocol = False
            if self._protocol is not None:
                self._protocol.resume_writing()
        if self._closing:
            self._shutdown()

    def _maybe_pause_protocol(self) -> None:
        if not self._paused_protocol and self._buffer_size > self._high_water and self._protocol is not None:
            self._paused_protocol = True
            self._protocol.pause_writing()

    def get_write_buffer_size(self) -> int:
        return self._buffer_size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low_water, self._high_water

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high_water = HIGH_WATER if high is None else high
        self._low_water = self._high_water // 4 if low is None else low
        self._maybe_pause_protocol()

    def can_write_eof(self) -> bool:
        return False

    # --- closing ---------------------------------------------------------------------------

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Send what is buffered, then close_notify, then close the connection."""
        if self._closing:
            return
        self._closing = True
        self._stop_reading()
        if not self._buffer:
            self._shutdown()

    def abort(self) -> None:
        """Close at once; what is buffered is dropped."""
        self._closing = True
        self._stop_reading()
        self._release()

    def _fatal(self, exc: BaseException | None) -> None:
        if exc is not None:
            log.debug("TLS connection from %s ended: %s", self._peer, exc)
        self._closing = True
        self._stop_reading()
        self._release(exc if isinstance(exc, Exception) else None)

    def _shutdown(self) -> None:
        # One SSL_shutdown sends close_notify; waiting for the client's reply would only hold
        # the socket open. Anything the client still sends is drained, not read.
        with contextlib.suppress(OSError, ValueError):
            self._tls.unwrap()
        unread = self._discard_unread()
        if unread != _UNREAD_DATA:
            self._release()
            return
        # Closing a socket with unread bytes makes the kernel send a reset, which can destroy
        # the answer still on its way: half-close, and drain until the client closes too.
        try:
            self._tls.shutdown(socket.SHUT_WR)
        except OSError:
            self._release()
            return
        self._loop.add_reader(self._fd, self._linger)
        self._timer = self._loop.call_later(LINGER_SECONDS, self._release)

    def _discard_unread(self) -> int:
        """Read and drop what the client sent that nobody will read."""
        seen = False
        try:
            while os.read(self._fd, READ_SIZE):
                seen = True
        except (BlockingIOError, InterruptedError):
            return _UNREAD_DATA if seen else _UNREAD_NONE
        except OSError:
            pass
        return _UNREAD_EOF

    def _linger(self) -> None:
        if self._discard_unread() == _UNREAD_EOF:
            self._release()

    def _release(self, exc: Exception | None = None) -> None:
        """Forget the socket and tell the protocol, once."""
        if self._lost:
            return
        self._lost = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        self._buffer.clear()
        self._buffer_size = 0
        self._tls.close()
        if self._protocol is not None:
            self._loop.call_soon(self._protocol.connection_lost, exc)

    # --- asyncio.BaseTransport ---------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peer
        if name in ("socket", "ssl_object"):
            return self._tls
        # Asked for rarely: looked up when asked, not paid for on every connection.
        if not self._lost:
            tls = self._tls
            if name == "sockname":
                return tls.getsockname()
            if name == "cipher":
                return tls.cipher()
            if name == "peercert":
                return tls.getpeercert()
            if name == "sslcontext":
                return tls.context
        return default

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None
        return self._protocol
