"""The access log (`log.access`, `log.access_file`): one line per HTTP request, WebSocket session,
redirect and relayed gRPC connection, as JSON or as key=value text.

Owns the line formats and their fields. Engines call `ListenerAccess.request` (HTTP/1.1 today;
an HTTP/2 engine calls the same, with protocol "HTTP/2" or "gRPC") or `.connection` (the gRPC
relay, which sees no calls). It knows nothing of sockets or parsers; lines go out through a
`LineWriter`, never from the event loop.

The HTTP/1.1 path calls this once per request, so a JSON request line is one f-string:
its keys and separators are constant, the strings lines repeat (listener, client address,
method, host, upstream, TLS version) are quoted once and kept, only the path is escaped each
time, and the timestamp text is made once a millisecond. Rarer lines go through orjson.
"""

from __future__ import annotations

from json.encoder import encode_basestring_ascii as _json_string
from time import monotonic
from time import time as wall_clock

import orjson

from proxy.logs import Timestamps
from proxy.logwriter import LineWriter

_NEWLINE = orjson.OPT_APPEND_NEWLINE


class _MillisecondTimestamps:
    """Timestamps, the last one kept: at tens of thousands of lines a second, most lines share
    their millisecond with the line before."""

    __slots__ = ("_format", "_last", "_last_ms")

    def __init__(self) -> None:
        self._format = Timestamps()
        self._last_ms = -1
        self._last = ""

    def stamp(self, now: float) -> str:
        ms = int(now * 1000)
        if ms != self._last_ms:
            self._last_ms = ms
            self._last = self._format(now)
        return self._last


# JSON texts of the strings access lines repeat, made once: few distinct values in practice
# (listeners, methods, upstreams, TLS versions, hosts and client addresses), bounded all the same.
_QUOTED: dict[str | None, str] = {None: "null"}
_MAX_QUOTED = 4096


def _quoted(value: str | None) -> str:
    """`value` as a JSON string (ASCII, escaped), or null."""
    text = _QUOTED.get(value)
    if text is None:
        if len(_QUOTED) >= _MAX_QUOTED:
            _QUOTED.clear()
            _QUOTED[None] = "null"
        text = _QUOTED[value] = _json_string(value or "")  # None is always there: only strings miss
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

    __slots__ = ("_json", "_name", "_timestamps", "_writer")

    def __init__(self, log: AccessLog, name: str) -> None:
        self._name = name
        self._json = log.json
        self._timestamps = log.timestamps
        self._writer = log.writer

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
        # One f-string: the keys and separators are constants, compiled or not the fastest way
        # to put fourteen values in a line.
        status_text = _quoted(status) if isinstance(status, str) else ("null" if status is None else str(status))
        path_text = "null" if path is None else _json_string(path)
        reason_text = "" if reason is None else ',"reason":' + _quoted(reason)
        line = (
            f'{{"ts":"{self._timestamps.stamp(now)}","listener":{_quoted(self._name)},"client":{_quoted(client)},'
            f'"protocol":{_quoted(protocol)},"method":{_quoted(method)},"host":{_quoted(host)},"path":{path_text},'
            f'"status":{status_text},"bytes_in":{bytes_in},"bytes_out":{bytes_out},"duration_ms":{micros // 1000}.{micros % 1000:03d},'
            f'"upstream":{_quoted(upstream)},"tls_version":{_quoted(tls_version)}{reason_text}}}\n'
        )
        self._writer.write(line.encode())

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
        line: dict[str, object] = {"ts": self._timestamps.stamp(now), "listener": self._name, "client": client, "protocol": protocol}
        line.update(fields)
        if reason is not None:
            line["reason"] = reason
        self._writer.write(orjson.dumps(line, option=_NEWLINE))

    def _text_line(self, now: float, protocol: str, client: str, fields: tuple[tuple[str, object], ...], reason: str | None) -> None:
        stamp = self._timestamps.stamp(now)
        parts = [stamp, f"listener={_text_value(self._name)}", f"client={_text_value(client)}", f"protocol={protocol}"]
        parts += [f"{key}={_text_value(value)}" for key, value in fields]
        if reason is not None:
            parts.append(f"reason={reason}")
        self._writer.write((" ".join(parts) + "\n").encode("utf-8", "backslashreplace"))


# A request whose client left before it was answered, as nginx logs it.
CLIENT_CLOSED = 499


class AccessEntry:
    """What one request's access log line needs, gathered while it runs by the engine that
    answers it. Made only while the access log is on; mutable, owned by one request."""

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

    def __init__(
        self,
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
    ) -> None:
        self.access = access
        self.protocol = protocol
        self.client = client
        self.tls_version = tls_version
        self.method = method
        self.host = host
        self.path = path
        self.began = began
        self.bytes_in = bytes_in
        self.bytes_out = 0
        self.status = 0
        self.reason: str | None = None
        self.upstream = upstream

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
