"""Which engine an HTTP/2 connection on a port with a `grpc_upstream` gets: the gRPC byte relay
when its first request is gRPC (as every gRPC library's connection is), else the HTTP/2 engine.

Owns only that choice: the client's first bytes are decoded by a throwaway h2 state machine until
a request head shows, then handed, unchanged and whole, to the chosen engine, which sees the
connection from its first byte. Clients wait for the server's SETTINGS before their first request
(grpcio does), so an empty one (all defaults, committing to nothing) goes out first; the client's
ACK of it is taken out of what the relay passes on, since the upstream never sent that SETTINGS.
It knows neither engine's insides: both come as factories.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import RequestReceived
from h2.exceptions import H2Error

from proxy.h2.request import is_grpc

# A client that has not sent a request head by then (or sent this much without one) goes to the
# HTTP/2 engine; a gRPC client that has not acknowledged the empty SETTINGS by then, to the relay.
CHOOSE_WITHIN = 0.5
MAX_HELD = 64 * 1024
PREFACE_SIZE = 24
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_SETTINGS_ACK = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"
_CONFIG = H2Configuration(client_side=False, header_encoding=None)

EngineFactory = Callable[[], asyncio.Protocol]


class FirstRequest(asyncio.Protocol):
    __slots__ = ("_grpc", "_grpc_chosen", "_h2", "_held", "_http", "_timer", "_transport")

    def __init__(self, loop: asyncio.AbstractEventLoop, http: EngineFactory, grpc: EngineFactory) -> None:
        self._http = http
        self._grpc = grpc
        self._h2 = H2Connection(_CONFIG)
        self._held = bytearray()
        self._grpc_chosen = False
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = loop.call_later(CHOOSE_WITHIN, self._time_up)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._transport.write(EMPTY_SETTINGS)

    def data_received(self, data: bytes) -> None:
        self._held += data
        if self._grpc_chosen:
            self._strip_ack()
            return
        try:
            events = self._h2.receive_data(data)
        except H2Error:
            self._hand_over(self._http)  # the HTTP/2 engine refuses it properly
            return
        for event in events:
            if isinstance(event, RequestReceived):
                if is_grpc(event.headers):
                    self._grpc_chosen = True
                    self._strip_ack()
                else:
                    self._hand_over(self._http)
                return
        if len(self._held) > MAX_HELD:
            self._hand_over(self._http)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()

    def _strip_ack(self) -> None:
        """Hand the relay everything but the first SETTINGS ACK, once it has come."""
        held, position = self._held, PREFACE_SIZE
        while position + 9 <= len(held):
            if held[position : position + 9] == _SETTINGS_ACK:
                del held[position : position + 9]
                self._hand_over(self._grpc)
                return
            position += 9 + int.from_bytes(held[position : position + 3], "big")
        if len(held) > MAX_HELD:
            self._hand_over(self._grpc)

    def _time_up(self) -> None:
        self._timer = None
        self._hand_over(self._grpc if self._grpc_chosen else self._http)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _hand_over(self, factory: EngineFactory) -> None:
        self._cancel_timer()
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        engine = factory()
        transport.set_protocol(engine)
        engine.connection_made(transport)
        held, self._held = bytes(self._held), bytearray()
        if held:
            engine.data_received(held)
