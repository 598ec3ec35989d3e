"""HTTP/2 clients for the tests of `http2 = true`: curl `--http2` as a user runs it, and a client on
python-hyper h2 that can also send frames no well-behaved client sends (floods, resets, raw bytes).

Nothing here knows what a test asserts.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from h2.config import H2Configuration
from h2.connection import ConnectionState, H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
)
from h2.exceptions import ProtocolError

from tests.support.pki import SERVER_IP, SERVER_NAME, Pki

Headers = list[tuple[str, str]]


# What a gRPC client sends with each call, and one length-prefixed gRPC message (no compression).
GRPC_HEADERS = [("content-type", "application/grpc"), ("te", "trailers")]


def grpc_message(payload: bytes) -> bytes:
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def curl_available() -> bool:
    return shutil.which("curl") is not None


async def curl(port: int, pki: Pki, tmp: Path, path: str, *args: str) -> tuple[str, bytes]:
    """curl --http2 to `path` on 127.0.0.1:`port` (as SERVER_NAME), trusting the PKI's root:
    (the HTTP version and status as `%{http_version} %{http_code}`, the body)."""
    root = pki.write_ca(tmp / "root.pem")
    body = tmp / "body.out"
    command = [
        "curl", "--silent", "--show-error", "--http2", "--cacert", str(root),
        "--resolve", f"{SERVER_NAME}:{port}:{SERVER_IP}", "--output", str(body),
        "--write-out", "%{http_version} %{http_code}", "--max-time", "30",
        *args, f"https://{SERVER_NAME}:{port}{path}",
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(*command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode(), body.read_bytes() if body.exists() else b""


@dataclass
class Answer:
    """What came back on one stream."""

    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    trailers: dict[str, str] = field(default_factory=dict)
    ended: bool = False
    reset: int | None = None

    @property
    def status(self) -> int:
        return int(self.headers.get(":status", "0"))


class H2Client:
    """One TLS connection with ALPN h2, driven by h2's client state machine. `raw()` writes bytes
    past it; `goaway` holds the error code of a GOAWAY the server sent."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, validate: bool = True) -> None:
        self.reader, self.writer = reader, writer
        config = H2Configuration(
            client_side=True, header_encoding="utf-8", validate_outbound_headers=validate, normalize_outbound_headers=validate
        )
        self.h2 = H2Connection(config)
        self.answers: dict[int, Answer] = {}
        self.goaway: int | None = None
        self.goaway_last_stream: int | None = None
        self.closed = False

    @classmethod
    async def connect(cls, port: int, pki: Pki, *, validate: bool = True) -> H2Client:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(SERVER_IP, port, ssl=pki.client_context("h2"), server_hostname=SERVER_NAME), 10
        )
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
        client = cls(reader, writer, validate)
        client.h2.initiate_connection()
        client.flush()
        return client

    def headers(self, path: str = "/", method: str = "GET", extra: Headers = (), authority: str = f"{SERVER_NAME}") -> Headers:  # type: ignore[assignment]
        return [(":method", method), (":scheme", "https"), (":authority", authority), (":path", path), *extra]

    def request(self, path: str = "/", method: str = "GET", extra: Headers = (), *, body: bytes | None = None) -> int:  # type: ignore[assignment]
        sid = self.h2.get_next_available_stream_id()
        self.h2.send_headers(sid, self.headers(path, method, extra), end_stream=body is None)
        if body is not None:
            self.h2.send_data(sid, body, end_stream=True)
        self.answers[sid] = Answer()
        self.flush()
        return sid

    def send_headers(self, headers: Headers, *, end_stream: bool = True) -> int:
        """A request of exactly these fields, pseudo-headers included."""
        sid = self.h2.get_next_available_stream_id()
        self.h2.send_headers(sid, headers, end_stream=end_stream)
        self.answers[sid] = Answer()
        self.flush()
        return sid

    def open(self, path: str = "/", method: str = "POST", extra: Headers = ()) -> int:  # type: ignore[assignment]
        """A request whose body the caller sends (h2.send_data, trailers, ...)."""
        sid = self.h2.get_next_available_stream_id()
        self.h2.send_headers(sid, self.headers(path, method, extra))
        self.answers[sid] = Answer()
        return sid

    async def send_all(self, sid: int, body: bytes) -> None:
        """Send `body` on `sid` and end the stream, within the windows the server opens."""
        while body:
            size = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size, len(body))
            if size <= 0:
                await self.pump()
                continue
            self.h2.send_data(sid, body[:size])
            body = body[size:]
            self.flush()
        self.h2.end_stream(sid)
        self.flush()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    def raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def pump(self, timeout: float = 10.0) -> list[Event]:
        """Read once and handle what came; [] once the server closed."""
        try:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
        except (ConnectionError, OSError):
            data = b""
        if not data:
            self.closed = True
            return []
        try:
            events = self.h2.receive_data(data)
        except ProtocolError:
            self.closed = True
            return []
        for event in events:
            answer = self.answers.setdefault(getattr(event, "stream_id", 0) or 0, Answer())
            if isinstance(event, ResponseReceived):
                answer.headers = dict(event.headers)  # type: ignore[arg-type]
            elif isinstance(event, DataReceived):
                answer.body += event.data or b""
                self.h2.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id or 0)
            elif isinstance(event, TrailersReceived):
                answer.trailers = dict(event.headers)  # type: ignore[arg-type]
            elif isinstance(event, StreamEnded):
                answer.ended = True
            elif isinstance(event, StreamReset):
                answer.reset = event.error_code
            elif isinstance(event, ConnectionTerminated):
                self.goaway = int(event.error_code or 0)
                self.goaway_last_stream = event.last_stream_id
                # h2 takes nothing more after a GOAWAY; RFC 9113 6.8 lets the streams up to
                # last_stream_id finish, which is what the tests watch.
                self.h2.state_machine.state = ConnectionState.CLIENT_OPEN
        self.flush()
        return events

    async def until(self, done: callable, timeout: float = 10.0) -> None:  # type: ignore[valid-type]
        """Pump until `done()` or the connection closes."""
        async with asyncio.timeout(timeout):
            while not done() and not self.closed:
                await self.pump(timeout)

    async def answer(self, sid: int, timeout: float = 10.0) -> Answer:
        answer = self.answers[sid]
        await self.until(lambda: answer.ended or answer.reset is not None, timeout)
        return answer

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()
