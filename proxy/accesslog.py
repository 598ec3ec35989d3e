"""The access log (`log.access`, `log.access_file`): one line per HTTP request, WebSocket session,
redirect and relayed gRPC connection, as JSON or as key=value text.

Owns the line formats and their fields. Engines gather a request's fields in an `AccessEntry`
(`new_entry`) as it runs and hand it to `ListenerAccess.write` when it ends (HTTP/1.1, HTTP/2
and gRPC calls), or call `ListenerAccess.request` with all of them at once (redirects), or
`.connection` (the gRPC relay, which sees no calls). It knows nothing of sockets or parsers.

A request's line is made where lines are written, by the `LineWriter`'s thread: the event loop
only records the end's two clock readings and hands the entry over. Made in batches, one after
another, lines cost less than the same code run on the loop between a request's parsing and
writes (in memory, bench/https_micro.py: about 2.3 us a line against 4). A JSON line is one f-string of a dozen pieces:
what a connection's lines share (listener, client address, protocol, TLS version) is quoted
once per connection, the other strings lines repeat (method, host, upstream, status) are
quoted once and kept, only the path is escaped each time, the timestamp text is made once a
millisecond (its date and time once a second), and numbers below 1000 and the fractions come
from tables. Rare lines are made on the spot, through orjson.

Entries wait in the writer's queue for up to its linger, so they are kept out of the garbage
collector's sight, which would otherwise walk each one a few times before it is written: an
entry holds only strings and numbers, none of which can lead back to it, and Cython then leaves
the type untracked. The writer makes their lines through the log's `RequestLines`.
"""

from __future__ import annotations

from json.encoder import encode_basestring_ascii as _json_string
from time import monotonic
from time import time as wall_clock

import orjson

from proxy.logs import THOUSANDTHS, Timestamps, second_text
from proxy.logwriter import LineMaker, LineWriter

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


# Decimal texts of 0-999: most heads' sizes and most durations in milliseconds.
_DECIMALS = tuple(str(n) for n in range(1000))


def _decimal(n: int) -> str:
    return _DECIMALS[n] if 0 <= n < 1000 else str(n)


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
        writer.maker = RequestLines(self.json)

    def for_listener(self, name: str) -> ListenerAccess:
        return ListenerAccess(self, name)

    def start(self) -> None:
        self.writer.start()

    def reopen(self) -> None:
        self.writer.reopen()

    def close(self) -> None:
        self.writer.close()


class RequestLines(LineMaker):
    """Makes the lines of an access log's entries, in its writer's thread once it runs: one
    thread at a time uses its caches."""

    __slots__ = ("_client", "_head", "_json", "_listener", "_protocol", "_tail", "_timestamps", "_tls_version")

    def __init__(self, json: bool) -> None:
        self._json = json
        self._timestamps = _MillisecondTimestamps()
        # The JSON around the fields of the last connection that wrote a line: its lines (and
        # most lines) come one after another.
        self._listener = self._client = self._head = self._tail = ""
        self._tls_version: str | None = None
        self._protocol: str | None = None  # no line yet: the first one makes them

    def _connection_json(self, entry: AccessEntry) -> None:
        """The JSON a connection's lines share: from the listener to the method's key, and the TLS version."""
        listener, client, tls_version, protocol = entry.listener, entry.client, entry.tls_version, entry.protocol
        self._listener, self._client, self._tls_version, self._protocol = listener, client, tls_version, protocol
        self._head = f',"listener":{_json_string(listener)},"client":{_json_string(client)},"protocol":{_json_string(protocol)},"method":'
        self._tail = f',"tls_version":{"null" if tls_version is None else _json_string(tls_version)}'

    def line(self, item: object) -> str:
        """The line of a request that ended (`item`: its `AccessEntry`)."""
        entry: AccessEntry = item  # type: ignore[assignment]
        micros = int((entry.ended - entry.began) * 1_000_000)
        if not self._json:
            fields = (
                ("method", entry.method),
                ("host", entry.host),
                ("path", entry.path),
                ("status", _status(entry)),
                ("bytes_in", entry.bytes_in),
                ("bytes_out", entry.bytes_out),
                ("duration_ms", micros / 1000),  # round() costs 4x this
                ("upstream", entry.upstream),
                ("tls_version", entry.tls_version),
            )
            return _text_line(self._timestamps.stamp(entry.wall) + "Z", entry.listener, entry.protocol, entry.client, fields, entry.reason)
        # One f-string: its keys and separators are constants, compiled or not the fastest way
        # to put fourteen values in a line.
        if (
            entry.client != self._client
            or entry.tls_version != self._tls_version
            or entry.protocol != self._protocol
            or entry.listener != self._listener
        ):
            self._connection_json(entry)
        path = entry.path
        reason = entry.reason
        reason_text = "" if reason is None else ',"reason":' + _quoted(reason)
        status_name = entry.status_name
        status = _quoted(status_name) if status_name is not None else "null" if entry.status < 0 else _decimal(entry.status)
        return (
            f'{{"ts":"{self._timestamps.stamp(entry.wall)}Z"{self._head}{_quoted(entry.method)},"host":{_quoted(entry.host)},'
            f'"path":{"null" if path is None else _json_string(path)},"status":{status},"bytes_in":{_decimal(entry.bytes_in)},'
            f'"bytes_out":{_decimal(entry.bytes_out)},"duration_ms":{_decimal(micros // 1000)}{THOUSANDTHS[micros % 1000]},'
            f'"upstream":{_quoted(entry.upstream)}{self._tail}{reason_text}}}\n'
        )


class ListenerAccess:
    """The access log as one listener's connections use it (`Shared.access`)."""

    __slots__ = ("_json", "_name", "_rare_timestamps", "_writer")

    def __init__(self, log: AccessLog, name: str) -> None:
        self._name = name
        self._json = log.json
        self._rare_timestamps = Timestamps()  # connection lines' (the event loop's; request lines' are the writer's)
        self._writer = log.writer

    def write(self, entry: AccessEntry, status: int | str | None = None, reason: str | None = None) -> None:
        """The request of `entry` ended (`status`: an int, or a gRPC status name; `reason`: if
        not set already): its line is written. The entry must not change from here on: the
        writer's thread makes its line."""
        if status is not None:
            if isinstance(status, str):
                entry.status_name = status
            else:
                entry.status = status
        if reason is not None:
            entry.reason = reason
        entry.ended = monotonic()
        entry.wall = wall_clock()
        self._writer.write(entry)

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
        its head began; `status`: an int, a gRPC status name, or None (written as null);
        `reason`: why the edge answered itself (no_route, upstream_unreachable, ...), None when
        the upstream answered. For an engine that has all of a request's fields at its end; the
        others gather them in an `AccessEntry` as the request runs, which writes the same line."""
        entry = new_entry(self, client, tls_version, method, host, path, began, bytes_in, upstream, protocol)
        entry.bytes_out = bytes_out
        if status is None:
            entry.status = _NO_STATUS
        self.write(entry, status, reason)

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
        stamp = self._rare_timestamps(wall_clock())
        if not self._json:
            self._writer.write(_text_line(stamp, self._name, protocol, client, fields[3:], reason))
            return
        line: dict[str, object] = {"ts": stamp, "listener": self._name, "client": client, "protocol": protocol}
        line.update(fields)
        if reason is not None:
            line["reason"] = reason
        self._writer.write(orjson.dumps(line, option=_NEWLINE).decode())


def _text_line(stamp: str, listener: str, protocol: str, client: str, fields: tuple[tuple[str, object], ...], reason: str | None) -> str:
    parts = [stamp, f"listener={_text_value(listener)}", f"client={_text_value(client)}", f"protocol={protocol}"]
    parts += [f"{key}={_text_value(value)}" for key, value in fields]
    if reason is not None:
        parts.append(f"reason={reason}")
    return " ".join(parts) + "\n"


# A request whose client left before it was answered, as nginx logs it.
CLIENT_CLOSED = 499
_NO_STATUS = -1


class AccessEntry:
    """What one request's access log line needs, gathered while it runs by the engine that
    answers it (made by `new_entry`). Made only while the access log is on; mutable, owned by
    one request until it ends (`ListenerAccess.write`), then by the log's writer, which makes
    its line. `status`: the HTTP status (`_NO_STATUS`: none); `status_name`: a gRPC status name,
    which the line shows instead."""

    __slots__ = (
        "began",
        "bytes_in",
        "bytes_out",
        "client",
        "ended",
        "host",
        "listener",
        "method",
        "path",
        "protocol",
        "reason",
        "status",
        "status_name",
        "tls_version",
        "upstream",
        "wall",
    )

    listener: str
    began: float
    ended: float
    wall: float
    bytes_in: int
    bytes_out: int
    status: int
    client: str
    host: str | None
    method: str | None
    path: str | None
    protocol: str
    reason: str | None
    status_name: str | None
    tls_version: str | None
    upstream: str | None


def _status(entry: AccessEntry) -> int | str | None:
    """The status a text line shows."""
    if entry.status_name is not None:
        return entry.status_name
    return None if entry.status < 0 else entry.status


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
    entry.listener = access._name
    entry.protocol = protocol
    entry.client = client
    entry.tls_version = tls_version
    entry.method = method
    entry.host = host
    entry.path = path
    entry.began = began
    entry.ended = entry.wall = 0.0
    entry.bytes_in = bytes_in
    entry.bytes_out = 0
    entry.status = 0
    entry.status_name = None
    entry.reason = None
    entry.upstream = upstream
    return entry
