"""The access log (`log.access`, `log.access_file`): one line per HTTP request, WebSocket session,
redirect and relayed gRPC connection, as JSON or as key=value text.

Owns the line formats and their fields. Engines call `ListenerAccess.request` (HTTP/1.1 today;
an HTTP/2 engine calls the same, with protocol "HTTP/2" or "gRPC") or `.connection` (the gRPC
relay, which sees no calls). It knows nothing of sockets or parsers; lines go out through a
`LineWriter`, never from the event loop.

The HTTP/1.1 path calls this once per request, so a JSON request line is one f-string of a
dozen pieces: what a connection's lines share (listener, client address, protocol, TLS version)
is quoted once per connection, the other strings lines repeat (method, host, upstream, status)
are quoted once and kept, only the path is escaped each time, the timestamp text is made once a
millisecond (its date and time once a second), and the fractions come from a table. Rarer lines
go through orjson.
"""

from __future__ import annotations

from json.encoder import encode_basestring_ascii as _json_string
from time import monotonic
from time import time as wall_clock

import orjson

from proxy.logs import THOUSANDTHS, second_text
from proxy.logwriter import LineWriter

_NEWLINE = orjson.OPT_APPEND_NEWLINE


class _MillisecondTimestamps:
    """Timestamps without their "Z", the last one kept: at tens of thousands of lines a second,
    most lines share their millisecond with the line before, and all of them their second."""

    __slots__ = ("_last", "_last_ms", "_prefix", "_second")

    def __init__(self) -> None:
        self._last_ms = self._second = -1
        self._last = self._prefix = ""

    def stamp(self, now: float) -> str:
        ms = int(now * 1000)
        if ms != self._last_ms:
            self._last_ms = ms
            second = ms // 1000
            if second != self._second:
                self._second = second
                self._prefix = second_text(second)
            self._last = self._prefix + THOUSANDTHS[ms - second * 1000]
        return self._last


# JSON texts of the values access lines repeat, made once: few distinct ones in practice
# (methods, upstreams, hosts, statuses, gRPC status names), bounded all the same.
_QUOTED: dict[str | int | None, str] = {None: "null"}
_MAX_QUOTED = 4096


def _quoted(value: str | int | None) -> str:
    """`value` as JSON: a string (ASCII, escaped), a number, or null."""
    text = _QUOTED.get(value)
    if text is None:
        if len(_QUOTED) >= _MAX_QUOTED:
            _QUOTED.clear()
            _QUOTED[None] = "null"
        text = _QUOTED[value] = str(value) if isinstance(value, int) else _json_string(value or "")
    return text


def _text_value(value: object) -> str:
    if value is None:
        return "-"
    text = str(value)
    if not text or any(c in text for c in ' "=\\') or not text.isprintable():
        return _json_string(text)  # quoted, escaped: the line stays one line, one field a key
    return text


class AccessLog:
    """One process's access log: its format and its writer."""

    def __init__(self, access_format: str, writer: LineWriter) -> None:
        if access_format not in ("text", "json"):
            raise ValueError(f"unknown access log format {access_format!r}")
        self.json = access_format == "json"
        self.writer = writer
        self.timestamps = _MillisecondTimestamps()

    def for_listener(self, name: str) -> ListenerAccess:
        return ListenerAccess(self, name)

    def start(self) -> None:
        self.writer.start()

    def reopen(self) -> None:
        self.writer.reopen()

    def close(self) -> None:
        self.writer.close()


class ListenerAccess:
    """The access log as one listener's connections use it (`Shared.access`)."""

    __slots__ = ("_client", "_head", "_json", "_name", "_protocol", "_tail", "_timestamps", "_tls_version", "_writer")

    def __init__(self, log: AccessLog, name: str) -> None:
        self._name = name
        self._json = log.json
        self._timestamps = log.timestamps
        self._writer = log.writer
        # The JSON around the fields of the last connection that wrote a line: its lines (and
        # most lines) come one after another.
        self._client = self._head = self._tail = ""
        self._tls_version: str | None = None
        self._protocol: str | None = None  # no line yet: the first one makes them

    def _connection_json(self, client: str, tls_version: str | None, protocol: str) -> None:
        """The JSON a connection's lines share: from the listener to the method's key, and the TLS version."""
        self._client, self._tls_version, self._protocol = client, tls_version, protocol
        self._head = f',"listener":{_json_string(self._name)},"client":{_json_string(client)},"protocol":{_json_string(protocol)},"method":'
        self._tail = f',"tls_version":{"null" if tls_version is None else _json_string(tls_version)}'

    def request(
        self,
        protocol: str,
        client: str,
        tls_version: str | None,
        method: str | None,
        host: str | None,
        path: str | None,
        status: int | str | None,
        bytes_in: int,
        bytes_out: int,
        began: float,
        upstream: str | None,
        reason: str | None = None,
    ) -> None:
        """One HTTP request (or WebSocket session) ended. `began`: its `monotonic()` when
        its head began; `status`: an int, or a gRPC status name; `reason`: why the edge answered
        itself (no_route, upstream_unreachable, ...), None when the upstream answered. The hook
        for every engine: HTTP/1.1 calls it with protocol "HTTP/1.1", an HTTP/2 engine with
        "HTTP/2" or, for a call it decodes, "gRPC"."""
        now = wall_clock()
        micros = int((monotonic() - began) * 1_000_000)
        duration_ms = micros / 1000  # round() costs 4x this
        if not self._json:
            fields = (
                ("method", method),
                ("host", host),
                ("path", path),
                ("status", status),
                ("bytes_in", bytes_in),
                ("bytes_out", bytes_out),
                ("duration_ms", duration_ms),
                ("upstream", upstream),
                ("tls_version", tls_version),
            )
            self._text_line(now, protocol, client, fields, reason)
            return
        # One f-string: its keys and separators are constants, compiled or not the fastest way
        # to put fourteen values in a line.
        if client != self._client or tls_version != self._tls_version or protocol != self._protocol:
            self._connection_json(client, tls_version, protocol)
        reason_text = "" if reason is None else ',"reason":' + _quoted(reason)
        line = (
            f'{{"ts":"{self._timestamps.stamp(now)}Z"{self._head}{_quoted(method)},"host":{_quoted(host)},'
            f'"path":{"null" if path is None else _json_string(path)},"status":{_quoted(status)},"bytes_in":{bytes_in},'
            f'"bytes_out":{bytes_out},"duration_ms":{micros // 1000}{THOUSANDTHS[micros % 1000]},"upstream":{_quoted(upstream)}'
            f"{self._tail}{reason_text}}}\n"
        )
        self._writer.write(line)

    def connection(
        self,
        protocol: str,
        client: str,
        tls_version: str | None,
        status: str | None,
        bytes_in: int,
        bytes_out: int,
        began: float,
        upstream: str | None,
        streams: int,
        reason: str | None = None,
    ) -> None:
        """One relayed connection ended: what the edge knows without decoding its calls. Rare
        beside requests, so its line is built the general way."""
        fields = (
            ("method", None),
            ("host", None),
            ("path", None),
            ("status", status),
            ("bytes_in", bytes_in),
            ("bytes_out", bytes_out),
            ("duration_ms", int((monotonic() - began) * 1_000_000) / 1000),
            ("upstream", upstream),
            ("tls_version", tls_version),
            ("streams", streams),
        )
        now = wall_clock()
        if not self._json:
            self._text_line(now, protocol, client, fields[3:], reason)
            return
        line: dict[str, object] = {"ts": self._timestamps.stamp(now) + "Z", "listener": self._name, "client": client, "protocol": protocol}
        line.update(fields)
        if reason is not None:
            line["reason"] = reason
        self._writer.write(orjson.dumps(line, option=_NEWLINE).decode())

    def _text_line(self, now: float, protocol: str, client: str, fields: tuple[tuple[str, object], ...], reason: str | None) -> None:
        parts = [
            self._timestamps.stamp(now) + "Z",
            f"listener={_text_value(self._name)}",
            f"client={_text_value(client)}",
            f"protocol={protocol}",
        ]
        parts += [f"{key}={_text_value(value)}" for key, value in fields]
        if reason is not None:
            parts.append(f"reason={reason}")
        self._writer.write(" ".join(parts) + "\n")


# A request whose client left before it was answered, as nginx logs it.
CLIENT_CLOSED = 499


class AccessEntry:
    """What one request's access log line needs, gathered while it runs by the engine that
    answers it (made by `new_entry`). Made only while the access log is on; mutable, owned by
    one request."""

    __slots__ = (
        "access",
        "began",
        "bytes_in",
        "bytes_out",
        "client",
        "host",
        "method",
        "path",
        "protocol",
        "reason",
        "status",
        "tls_version",
        "upstream",
    )

    access: ListenerAccess
    began: float
    bytes_in: int
    bytes_out: int
    client: str
    host: str | None
    method: str | None
    path: str | None
    protocol: str
    reason: str | None
    status: int | str | None
    tls_version: str | None
    upstream: str | None

    def write(self, status: int | str | None = None, reason: str | None = None) -> None:
        self.access.request(
            self.protocol,
            self.client,
            self.tls_version,
            self.method,
            self.host,
            self.path,
            self.status if status is None else status,
            self.bytes_in,
            self.bytes_out,
            self.began,
            self.upstream,
            self.reason if reason is None else reason,
        )


def new_entry(
    access: ListenerAccess,
    client: str,
    tls_version: str | None,
    method: str | None,
    host: str | None,
    path: str | None,
    began: float,
    bytes_in: int,
    upstream: str | None,
    protocol: str = "HTTP/1.1",
) -> AccessEntry:
    """The entry of a request whose head just arrived. A function rather than a constructor:
    compiled, it is one C call that fills the fields, where a constructor parses its arguments."""
    entry = AccessEntry.__new__(AccessEntry)
    entry.access = access
    entry.protocol = protocol
    entry.client = client
    entry.tls_version = tls_version
    entry.method = method
    entry.host = host
    entry.path = path
    entry.began = began
    entry.bytes_in = bytes_in
    entry.bytes_out = 0
    entry.status = 0
    entry.reason = None
    entry.upstream = upstream
    return entry
