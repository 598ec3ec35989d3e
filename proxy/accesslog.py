"""The access log (`log.access`, `log.access_file`): one line per HTTP request, WebSocket session,
redirect and relayed gRPC connection, as JSON or as key=value text.

Owns the line formats and their fields. Engines call `ListenerAccess.request` (HTTP/1.1 today;
an HTTP/2 engine calls the same, with protocol "HTTP/2" or "gRPC") or `.connection` (the gRPC
relay, which sees no calls). It knows nothing of sockets or parsers; lines go out through a
`LineWriter`, never from the event loop.

The HTTP/1.1 path calls this once per request, so the JSON is written by a format string over
values JSON-encoded once and cached (listener, client, method, upstream, TLS version), with only
the path encoded per request: a third of what `json.dumps` of a dict costs.
"""

from __future__ import annotations

import time
from json.encoder import encode_basestring_ascii as _json_string

from proxy.logs import Timestamps
from proxy.logwriter import LineWriter

_CACHE_LIMIT = 4096

# One line, in this key order; `reason` only for answers the edge made itself.
_JSON_REQUEST = (
    '{"ts":"%s","listener":%s,"client":%s,"protocol":"%s","method":%s,"host":%s,"path":%s,"status":%s,'
    '"bytes_in":%d,"bytes_out":%d,"duration_ms":%.3f,"upstream":%s,"tls_version":%s%s}\n'
)
_JSON_CONNECTION = (
    '{"ts":"%s","listener":%s,"client":%s,"protocol":"%s","method":null,"host":null,"path":null,"status":%s,'
    '"bytes_in":%d,"bytes_out":%d,"duration_ms":%.3f,"upstream":%s,"tls_version":%s,"streams":%d%s}\n'
)


class _Encoded(dict[str, str]):
    """str -> its JSON string, made once: most values repeat on every line."""

    def __missing__(self, value: str) -> str:
        if len(self) >= _CACHE_LIMIT:
            self.clear()
        encoded = self[value] = _json_string(value)
        return encoded


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
        self.timestamps = Timestamps()
        self.encoded = _Encoded()

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

    __slots__ = ("_encoded", "_json", "_name", "_name_json", "_timestamps", "_write")

    def __init__(self, log: AccessLog, name: str) -> None:
        self._name = name
        self._name_json = _json_string(name)
        self._json = log.json
        self._encoded = log.encoded
        self._timestamps = log.timestamps
        self._write = log.writer.write

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
        """One HTTP request (or WebSocket session) ended. `began`: its `time.monotonic()` when
        its head began; `status`: an int, or a gRPC status name; `reason`: why the edge answered
        itself (no_route, upstream_unreachable, ...), None when the upstream answered."""
        now = time.time()
        duration_ms = (time.monotonic() - began) * 1000.0
        if not self._json:
            fields = (
                ("method", method),
                ("host", host),
                ("path", path),
                ("status", status),
                ("bytes_in", bytes_in),
                ("bytes_out", bytes_out),
                ("duration_ms", f"{duration_ms:.3f}"),
                ("upstream", upstream),
                ("tls_version", tls_version),
            )
            self._text_line(now, protocol, client, fields, reason)
            return
        encoded = self._encoded
        self._write(
            _JSON_REQUEST
            % (
                self._timestamps(now),
                self._name_json,
                encoded[client],
                protocol,
                "null" if method is None else encoded[method],
                "null" if host is None else encoded[host],
                "null" if path is None else _json_string(path),
                "null" if status is None else status if isinstance(status, int) else encoded[status],
                bytes_in,
                bytes_out,
                duration_ms,
                "null" if upstream is None else encoded[upstream],
                "null" if tls_version is None else encoded[tls_version],
                "" if reason is None else ',"reason":' + encoded[reason],
            )
        )

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
        """One relayed connection ended: what the edge knows without decoding its calls."""
        now = time.time()
        duration_ms = (time.monotonic() - began) * 1000.0
        if not self._json:
            fields = (
                ("status", status),
                ("bytes_in", bytes_in),
                ("bytes_out", bytes_out),
                ("duration_ms", f"{duration_ms:.3f}"),
                ("upstream", upstream),
                ("tls_version", tls_version),
                ("streams", streams),
            )
            self._text_line(now, protocol, client, fields, reason)
            return
        encoded = self._encoded
        self._write(
            _JSON_CONNECTION
            % (
                self._timestamps(now),
                self._name_json,
                encoded[client],
                protocol,
                "null" if status is None else encoded[status],
                bytes_in,
                bytes_out,
                duration_ms,
                "null" if upstream is None else encoded[upstream],
                "null" if tls_version is None else encoded[tls_version],
                streams,
                "" if reason is None else ',"reason":' + encoded[reason],
            )
        )

    def _text_line(self, now: float, protocol: str, client: str, fields: tuple[tuple[str, object], ...], reason: str | None) -> None:
        parts = [self._timestamps(now), f"listener={_text_value(self._name)}", f"client={_text_value(client)}", f"protocol={protocol}"]
        parts += [f"{key}={_text_value(value)}" for key, value in fields]
        if reason is not None:
            parts.append(f"reason={reason}")
        self._write(" ".join(parts) + "\n")
