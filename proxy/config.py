"""Configuration: TOML in, frozen and validated values out.

Owns the config schema and every rule about it. It reads no file itself except through
`load_config_file`, and knows nothing about sockets, TLS or the event loop. Unknown keys are
errors; every problem names the file, the key path and what would fix it.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from proxy.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("config/edge.toml")
PROTOCOLS = ("https", "grpc", "http-redirect")
WATCH_MODES = ("events", "poll", "off")
# "auto": off when cert_dir is a mounted Kubernetes Secret (see proxy/admin/uploads.py), on otherwise.
UPLOAD_MODES = ("auto", "on", "off")
TLS_VERSIONS = ("1.2", "1.3")
LOG_FORMATS = ("text", "json")
ACCESS_FORMATS = ("off", "text", "json")
TLS_POLICIES = ("default", "fips")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)*\.?$"
)

# The default config: everything on loopback, demo upstreams on 8081 (HTTP) and 50051 (gRPC), the
# browser, API and gRPC traffic on one HTTPS port as the platform behind the edge takes it.
EMBEDDED_DEFAULT = """
[server]
workers = 1

[tls]
cert_dir = "certs"
state_dir = "state"
server_name = "localhost"
ip_addresses = ["127.0.0.1"]

[admin]
listen = "127.0.0.1:9900"
token_file = "state/admin.token"

[[listeners]]
name = "web"
protocol = "https"
listen = "127.0.0.1:8443"
upstream = "http://127.0.0.1:8081"
grpc_upstream = "127.0.0.1:50051"

[[listeners]]
name = "redirect"
protocol = "http-redirect"
listen = "127.0.0.1:8080"
redirect_port = 8443
"""


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Limits:
    """Timeouts (seconds) and body limit; `[server]` sets them, a listener may override each."""

    connect_timeout: float = 5.0
    upstream_timeout: float = 60.0
    idle_timeout: float = 75.0
    handshake_timeout: float = 10.0
    header_timeout: float = 10.0
    max_body_bytes: int = 100 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ServerConfig:
    workers: int = 1
    drain_seconds: float = 30.0
    limits: Limits = field(default_factory=Limits)


@dataclass(frozen=True, slots=True)
class TlsConfig:
    cert_dir: Path
    state_dir: Path
    server_name: str | None
    ip_addresses: tuple[str, ...]
    min_version: str = "1.2"
    watch: str = "events"
    poll_delay_ms: int = 500
    policy: str = "default"


@dataclass(frozen=True, slots=True)
class AdminConfig:
    listen: Address
    token_file: Path
    uploads: str = "auto"


@dataclass(frozen=True, slots=True)
class LogConfig:
    """`[log]`: the edge's own lines (always on standard error) and the access log."""

    format: str = "text"  # the edge's own lines: "text" or "json"
    access: str = "off"  # one line per request, gRPC connection, WebSocket, redirect: "off", "text", "json"
    access_file: Path | None = None  # None: standard output; a path is appended to and reopened on SIGUSR1


@dataclass(frozen=True, slots=True)
class HttpUpstream:
    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Route:
    upstream: HttpUpstream
    path_prefix: str = "/"
    host: str | None = None


@dataclass(frozen=True, slots=True)
class GrpcUpstream:
    address: Address
    tls: bool
    ca_file: Path | None = None

    def __str__(self) -> str:
        return f"grpcs://{self.address}" if self.tls else str(self.address)


@dataclass(frozen=True, slots=True)
class _Listener:
    """What every listener has; each protocol's config adds its own keys."""

    name: str
    listen: Address
    limits: Limits


@dataclass(frozen=True, slots=True)
class HttpsListenerConfig(_Listener):
    routes: tuple[Route, ...] = ()
    # With it, the listener offers ALPN h2 after http/1.1: clients that offer only h2 (every gRPC
    # library) are relayed there, everyone else gets HTTP/1.1.
    grpc_upstream: GrpcUpstream | None = None
    max_connection_age: float = 300.0  # of the connections relayed to grpc_upstream
    # With it, ALPN offers h2 first and HTTP/2 connections get the HTTP/2 engine (proxy.h2).
    http2: bool = False
    protocol: Literal["https"] = "https"


@dataclass(frozen=True, slots=True)
class GrpcListenerConfig(_Listener):
    upstream: GrpcUpstream
    max_connection_age: float = 300.0
    protocol: Literal["grpc"] = "grpc"


@dataclass(frozen=True, slots=True)
class RedirectListenerConfig(_Listener):
    redirect_port: int = 443
    protocol: Literal["http-redirect"] = "http-redirect"


ListenerConfig = HttpsListenerConfig | GrpcListenerConfig | RedirectListenerConfig


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig
    tls: TlsConfig
    admin: AdminConfig
    listeners: tuple[ListenerConfig, ...]
    log: LogConfig = field(default_factory=LogConfig)
    source: str = "<embedded default>"


# --- parsing ------------------------------------------------------------------------------


class _Problems:
    """Collects problems while the whole file is checked, so the operator sees all at once, in
    the order their keys stand in the file."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._found: list[tuple[str, str]] = []

    def add(self, key: str, message: str) -> None:
        self._found.append((key, message))

    def in_file_order(self, raw: Mapping[str, Any]) -> list[str]:
        # sorted() is stable: problems of one key keep the order they were found in.
        ordered = sorted(self._found, key=lambda found: _position(raw, found[0]))
        return [f"{self.source}: {key}: {message}" for key, message in ordered]


_KEY_PATH = re.compile(r"^(?P<top>[A-Za-z0-9_-]+)(?:\[(?P<index>\d+)\])?(?: \([^)]*\))?(?:\.(?P<key>[A-Za-z0-9_-]+))?")


def _position(raw: Mapping[str, Any], path: str) -> tuple[int, int, int]:
    """Where the key a problem names stands in the file: (table, array item, key). A key the
    file does not have (a required one left out) sorts after those its table has."""
    match = _KEY_PATH.match(path)
    if match is None:
        return (len(raw), 0, 0)
    top = list(raw).index(match["top"]) if match["top"] in raw else len(raw)
    table = raw.get(match["top"])
    index = int(match["index"]) if match["index"] is not None else 0
    if isinstance(table, list) and match["index"] is not None:
        table = table[index] if index < len(table) else None
    keys = list(table) if isinstance(table, dict) else []
    key = match["key"]
    return (top, index, keys.index(key) if key in keys else (len(keys) if key else -1))


# In declaration order, so problems come in a stable order.
_LIMIT_KEYS = tuple(f.name for f in fields(Limits))


def _default(cls: type, name: str) -> Any:
    """A config class's default for `name`: each default is written once, on its dataclass."""
    return next(f.default for f in fields(cls) if f.name == name)


# Keys that a listener of another protocol takes, or that once existed: a config setting one is
# told what to do instead of only that the key is unknown.
_ONE_PORT_KEYS = {
    key: f"only an https listener takes a {key}: it serves gRPC on the HTTPS port" for key in ("grpc_upstream", "grpc_upstream_ca")
}
_REMOVED_GRPC_KEYS = {
    "mode": "gRPC listeners always relay each HTTP/2 connection to the upstream as bytes (the grpcio mode is gone); delete this key",
    "max_message_bytes": "gRPC listeners relay messages as bytes, so the client's and the upstream's own limits apply; delete this key",
}


def _check_keys(table: Mapping[str, Any], allowed: set[str], path: str, p: _Problems, explained: Mapping[str, str] | None = None) -> None:
    for key in table:
        if key in allowed:
            continue
        if explained and key in explained:
            p.add(f"{path}.{key}", explained[key])
        else:
            near = _nearest(key, allowed)
            hint = f"; did you mean {near!r}?" if near else f"; allowed keys: {', '.join(sorted(allowed))}"
            p.add(f"{path}.{key}" if path else key, f"unknown key{hint}")


def _nearest(key: str, allowed: set[str]) -> str | None:
    import difflib

    match = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.75)
    return match[0] if match else None


def _get(table: Mapping[str, Any], key: str, kind: type | tuple[type, ...], path: str, p: _Problems, default: Any) -> Any:
    if key not in table:
        return default
    value = table[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # TOML booleans are ints to Python; a bool is never a number here.
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if not ok:
        names = " or ".join(_type_name(k) for k in kinds)
        p.add(f"{path}.{key}", f"must be {names}, not {_type_name(type(value))} {value!r}")
        return default
    return value


def _type_name(kind: type) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list", dict: "a table"}.get(
        kind, kind.__name__
    )


def _positive(value: float, key: str, p: _Problems, *, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        p.add(key, f"must be {'zero or more' if allow_zero else 'more than zero'}, not {value}")


def parse_address(text: str) -> Address:
    """`host:port` or `[v6]:port` -> Address. Raises ValueError with the reason."""
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise ValueError("an IPv6 address is written [::1]:8443")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError("write it as host:port, for example 127.0.0.1:8443")
        if ":" in host:
            raise ValueError("an IPv6 address is written in brackets, for example [::1]:8443")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"the port {port_text!r} is not a number from 0 to 65535")
    if not _is_ip(host) and not _HOSTNAME.match(host):
        raise ValueError(f"{host!r} is neither an IP address nor a host name")
    return Address(host, int(port_text))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _address(table: Mapping[str, Any], key: str, path: str, p: _Problems, default: str | None) -> Address | None:
    text = _get(table, key, str, path, p, default)
    if text is None:
        p.add(f"{path}.{key}", 'is required, for example "127.0.0.1:8443"')
        return None
    try:
        return parse_address(text)
    except ValueError as e:
        p.add(f"{path}.{key}", f"{text!r} is not a valid address: {e}")
        return None


def _limits(table: Mapping[str, Any], path: str, base: Limits, p: _Problems) -> Limits:
    values: dict[str, Any] = {}
    for name in _LIMIT_KEYS:
        if name == "max_body_bytes":
            value = _get(table, name, int, path, p, getattr(base, name))
            _positive(value, f"{path}.{name}", p, allow_zero=True)
        else:
            value = float(_get(table, name, (int, float), path, p, getattr(base, name)))
            _positive(value, f"{path}.{name}", p)
        values[name] = value
    return replace(base, **values)


def _server(table: Mapping[str, Any], p: _Problems) -> ServerConfig:
    _check_keys(table, {"workers", "drain_seconds", *_LIMIT_KEYS}, "server", p)
    workers = _get(table, "workers", int, "server", p, _default(ServerConfig, "workers"))
    if not 1 <= workers <= 64:
        p.add("server.workers", f"must be from 1 to 64, not {workers}")
    drain = float(_get(table, "drain_seconds", (int, float), "server", p, _default(ServerConfig, "drain_seconds")))
    _positive(drain, "server.drain_seconds", p, allow_zero=True)
    return ServerConfig(workers=workers, drain_seconds=drain, limits=_limits(table, "server", Limits(), p))


def _tls(table: Mapping[str, Any], base: Path, p: _Problems) -> TlsConfig:
    allowed = {"cert_dir", "state_dir", "server_name", "ip_addresses", "min_version", "watch", "poll_delay_ms", "policy"}
    _check_keys(table, allowed, "tls", p)
    server_name = _get(table, "server_name", str, "tls", p, None)
    if server_name is not None and not _HOSTNAME.match(server_name.removeprefix("*.")):
        p.add("tls.server_name", f'{server_name!r} is not a DNS name, for example "vertex.example.com"')
    ips_raw = _get(table, "ip_addresses", list, "tls", p, [])
    ips: list[str] = []
    for i, ip in enumerate(ips_raw):
        if not isinstance(ip, str) or not _is_ip(ip):
            p.add(f"tls.ip_addresses[{i}]", f'{ip!r} is not an IP address, for example "10.0.0.5"')
        else:
            ips.append(str(ipaddress.ip_address(ip)))
    if server_name is None and not ips:
        p.add("tls", 'set server_name (for example "vertex.example.com") or ip_addresses (for example ["10.0.0.5"])')
    min_version = _get(table, "min_version", str, "tls", p, _default(TlsConfig, "min_version"))
    if min_version not in TLS_VERSIONS:
        p.add("tls.min_version", f'must be "1.2" or "1.3", not {min_version!r}')
    policy = _get(table, "policy", str, "tls", p, _default(TlsConfig, "policy"))
    if policy not in TLS_POLICIES:
        p.add("tls.policy", f'must be "default" or "fips", not {policy!r}')
    watch = _get(table, "watch", str, "tls", p, _default(TlsConfig, "watch"))
    if watch not in WATCH_MODES:
        p.add("tls.watch", f'must be "events", "poll" or "off", not {watch!r}')
    poll_delay = _get(table, "poll_delay_ms", int, "tls", p, _default(TlsConfig, "poll_delay_ms"))
    if not 50 <= poll_delay <= 60_000:
        p.add("tls.poll_delay_ms", f"must be from 50 to 60000, not {poll_delay}")
    return TlsConfig(
        cert_dir=base / _get(table, "cert_dir", str, "tls", p, "certs"),
        state_dir=base / _get(table, "state_dir", str, "tls", p, "state"),
        server_name=server_name.lower().rstrip(".") if server_name else None,
        ip_addresses=tuple(ips),
        min_version=min_version,
        watch=watch,
        poll_delay_ms=poll_delay,
        policy=policy,
    )


def _admin(table: Mapping[str, Any], base: Path, p: _Problems) -> AdminConfig:
    _check_keys(table, {"listen", "token_file", "uploads"}, "admin", p)
    listen = _address(table, "listen", "admin", p, "127.0.0.1:9900") or Address("127.0.0.1", 9900)
    uploads = _get(table, "uploads", str, "admin", p, _default(AdminConfig, "uploads"))
    if uploads not in UPLOAD_MODES:
        p.add("admin.uploads", f'must be "auto", "on" or "off", not {uploads!r}')
    token_file = base / _get(table, "token_file", str, "admin", p, "state/admin.token")
    return AdminConfig(listen=listen, token_file=token_file, uploads=uploads)


def _log(table: Mapping[str, Any], base: Path, p: _Problems) -> LogConfig:
    _check_keys(table, {"format", "access", "access_file"}, "log", p)
    log_format = _get(table, "format", str, "log", p, _default(LogConfig, "format"))
    if log_format not in LOG_FORMATS:
        p.add("log.format", f'must be "text" or "json", not {log_format!r}')
    access = _get(table, "access", str, "log", p, _default(LogConfig, "access"))
    if access not in ACCESS_FORMATS:
        p.add("log.access", f'must be "off", "text" or "json", not {access!r}')
    access_file = _get(table, "access_file", str, "log", p, "")
    return LogConfig(format=log_format, access=access, access_file=base / access_file if access_file else None)


def parse_http_upstream(text: str) -> HttpUpstream:
    """`http://host:port` -> HttpUpstream. Raises ValueError with the reason."""
    scheme, sep, rest = text.partition("://")
    if not sep or scheme != "http":
        raise ValueError('an HTTPS upstream is written "http://host:port", for example "http://127.0.0.1:8081"')
    rest = rest.rstrip("/")
    if "/" in rest:
        raise ValueError("an upstream has no path; routes choose paths with path_prefix")
    if not rest.rpartition(":")[1] or rest.endswith("]"):
        rest += ":80"
    address = parse_address(rest)
    return HttpUpstream(scheme, address.host, address.port)


def _routes(table: Mapping[str, Any], path: str, p: _Problems) -> tuple[Route, ...]:
    routes: list[Route] = []
    raw = _get(table, "routes", list, path, p, [])
    for i, route in enumerate(raw):
        rpath = f"{path}.routes[{i}]"
        if not isinstance(route, dict):
            p.add(rpath, "must be a table ([[listeners.routes]])")
            continue
        _check_keys(route, {"path_prefix", "host", "upstream"}, rpath, p)
        upstream = _http_upstream(route, rpath, p)
        prefix = _get(route, "path_prefix", str, rpath, p, "/")
        if not prefix.startswith("/"):
            p.add(f"{rpath}.path_prefix", f'must start with "/", not {prefix!r}')
        host = _get(route, "host", str, rpath, p, None)
        if host is not None and not _HOSTNAME.match(host) and not _is_ip(host):
            p.add(f"{rpath}.host", f"{host!r} is not a host name")
        if upstream is not None:
            routes.append(Route(upstream=upstream, path_prefix=prefix, host=host.lower() if host else None))
    if "upstream" in table:
        upstream = _http_upstream(table, path, p)
        if upstream is not None:
            routes.append(Route(upstream=upstream))
    return tuple(routes)


def _http_upstream(table: Mapping[str, Any], path: str, p: _Problems) -> HttpUpstream | None:
    text = _get(table, "upstream", str, path, p, None)
    if text is None:
        if "upstream" not in table:
            p.add(f"{path}.upstream", 'is required, for example "http://127.0.0.1:8081"')
        return None
    try:
        return parse_http_upstream(text)
    except ValueError as e:
        p.add(f"{path}.upstream", f"{text!r} is not a valid upstream: {e}")
        return None


def _grpc_upstream(
    table: Mapping[str, Any], path: str, base: Path, p: _Problems, key: str = "upstream", *, required: bool = True
) -> GrpcUpstream | None:
    """`key` (`host:port` or `grpcs://host:port`) and `<key>_ca`: a gRPC listener's `upstream`,
    or an https listener's `grpc_upstream`."""
    ca_key = f"{key}_ca"
    text = _get(table, key, str, path, p, None)
    ca = _get(table, ca_key, str, path, p, None)
    if text is None:
        if required and key not in table:
            p.add(f"{path}.{key}", 'is required, for example "127.0.0.1:50051" or "grpcs://10.0.0.7:443"')
        if ca is not None and key not in table:
            p.add(f"{path}.{ca_key}", f'applies only with a TLS {key} ("grpcs://host:port")')
        return None
    tls = text.startswith("grpcs://")
    try:
        address = parse_address(text.removeprefix("grpcs://").removeprefix("grpc://"))
    except ValueError as e:
        p.add(f"{path}.{key}", f"{text!r} is not a valid gRPC upstream: {e}")
        return None
    if ca is not None and not tls:
        p.add(f"{path}.{ca_key}", f'applies only to a TLS {key} ("grpcs://host:port")')
    return GrpcUpstream(address=address, tls=tls, ca_file=base / ca if ca else None)


_LISTENER_KEYS = {
    "https": {"routes", "upstream", "grpc_upstream", "grpc_upstream_ca", "max_connection_age", "http2", *_LIMIT_KEYS},
    "grpc": {"upstream", "upstream_ca", "max_connection_age", *_LIMIT_KEYS},
    "http-redirect": {"redirect_port"},
}


def _listener(table: Mapping[str, Any], i: int, server: ServerConfig, base: Path, p: _Problems, https_port: int) -> ListenerConfig | None:
    path = f"listeners[{i}]"
    name = _get(table, "name", str, path, p, None)
    if name is None and "name" not in table:
        p.add(f"{path}.name", 'is required, for example "web"')
    if name is not None:
        path = f"listeners[{i}] ({name})"
    protocol = _get(table, "protocol", str, path, p, None)
    if protocol not in PROTOCOLS:
        p.add(f"{path}.protocol", f'must be "https", "grpc" or "http-redirect", not {protocol!r}')
        return None
    explained = {**_ONE_PORT_KEYS, **_REMOVED_GRPC_KEYS} if protocol == "grpc" else _ONE_PORT_KEYS
    _check_keys(table, {"name", "protocol", "listen"} | _LISTENER_KEYS[protocol], path, p, explained)
    listen = _address(table, "listen", path, p, None) or Address("", 0)
    limits = _limits(table, path, server.limits, p)
    name = name or f"listener{i}"
    if protocol == "https":
        routes = _routes(table, path, p)
        if not routes and "routes" not in table and "upstream" not in table:
            p.add(path, 'an https listener needs an upstream ("http://127.0.0.1:8081") or [[listeners.routes]]')
        grpc_upstream = _grpc_upstream(table, path, base, p, "grpc_upstream", required=False)
        if "max_connection_age" in table and "grpc_upstream" not in table:
            p.add(f"{path}.max_connection_age", "applies only with a grpc_upstream (to the gRPC connections on this port)")
        age = _connection_age(table, path, p)
        http2 = bool(_get(table, "http2", bool, path, p, False))
        return HttpsListenerConfig(name, listen, limits, routes=routes, grpc_upstream=grpc_upstream, max_connection_age=age, http2=http2)
    if protocol == "grpc":
        age = _connection_age(table, path, p)
        upstream = _grpc_upstream(table, path, base, p)
        if upstream is None:
            return None
        return GrpcListenerConfig(name, listen, limits, upstream=upstream, max_connection_age=age)
    port = _get(table, "redirect_port", int, path, p, https_port)
    if not 1 <= port <= 65535:
        p.add(f"{path}.redirect_port", f"must be a port from 1 to 65535, not {port}")
    return RedirectListenerConfig(name, listen, limits, redirect_port=port)


def _connection_age(table: Mapping[str, Any], path: str, p: _Problems) -> float:
    age = float(_get(table, "max_connection_age", (int, float), path, p, _default(GrpcListenerConfig, "max_connection_age")))
    _positive(age, f"{path}.max_connection_age", p, allow_zero=True)
    return age


def _first_https_port(raw: list[Any]) -> int:
    for table in raw:
        if isinstance(table, dict) and table.get("protocol") == "https" and isinstance(table.get("listen"), str):
            try:
                return parse_address(table["listen"]).port or 443
            except ValueError:
                break
    return 443


def _check_unique(listeners: list[ListenerConfig], admin: AdminConfig, p: _Problems) -> None:
    names: dict[str, int] = {}
    addresses: dict[tuple[str, int], str] = {(admin.listen.host, admin.listen.port): "admin.listen"}
    for i, listener in enumerate(listeners):
        if listener.name in names:
            p.add(f"listeners[{i}].name", f"{listener.name!r} is already the name of listeners[{names[listener.name]}]")
        names.setdefault(listener.name, i)
        key = (listener.listen.host, listener.listen.port)
        if listener.listen.port == 0 or not listener.listen.host:
            continue
        if key in addresses:
            p.add(f"listeners[{i}] ({listener.name}).listen", f"{listener.listen} is already used by {addresses[key]}")
        addresses.setdefault(key, f"listeners[{i}] ({listener.name})")


def parse_config(data: str, source: str = "<embedded default>", base_dir: Path = Path(".")) -> Config:
    """Parse and validate a TOML config. Relative paths are resolved against `base_dir`.

    Raises ConfigError carrying every problem found; anything else is a bug.
    """
    p = _Problems(source)
    try:
        raw = tomllib.loads(data)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{source}: not valid TOML: {e}"]) from e
    _check_keys(raw, {"server", "tls", "log", "admin", "listeners"}, "", p)
    sections: dict[str, Mapping[str, Any]] = {}
    for name in ("server", "tls", "log", "admin"):
        sections[name] = _get(raw, name, dict, "", p, {}) if name in raw else {}
    server = _server(sections["server"], p)
    tls = _tls(sections["tls"], base_dir, p)
    admin = _admin(sections["admin"], base_dir, p)
    log = _log(sections["log"], base_dir, p)
    raw_listeners = _get(raw, "listeners", list, "", p, [])
    if not raw_listeners:
        p.add("listeners", "at least one [[listeners]] table is needed")
    https_port = _first_https_port(raw_listeners)
    listeners: list[ListenerConfig] = []
    for i, table in enumerate(raw_listeners):
        if not isinstance(table, dict):
            p.add(f"listeners[{i}]", "must be a table ([[listeners]])")
            continue
        listener = _listener(table, i, server, base_dir, p, https_port)
        if listener is not None:
            listeners.append(listener)
    _check_unique(listeners, admin, p)
    problems = p.in_file_order(raw)
    if problems:
        raise ConfigError(problems)
    return Config(server=server, tls=tls, admin=admin, listeners=tuple(listeners), log=log, source=source)


def load_config_file(path: Path, read: Callable[[Path], bytes] = Path.read_bytes) -> Config:
    """Read and parse a config file. Raises ConfigError (also for an unreadable file)."""
    try:
        data = read(path).decode("utf-8")
    except OSError as e:
        raise ConfigError([f"{path}: cannot read the config file: {e.strerror or e}"]) from e
    except UnicodeDecodeError as e:
        raise ConfigError([f"{path}: the config file is not UTF-8 text: {e}"]) from e
    return parse_config(data, source=str(path), base_dir=path.parent.resolve())


def load_default_config(explicit: Path | None, cwd: Path) -> Config:
    """`--config PATH`, else `config/edge.toml` under `cwd` if present, else the embedded default."""
    if explicit is not None:
        return load_config_file(explicit)
    candidate = cwd / DEFAULT_CONFIG_PATH
    if candidate.is_file():
        return load_config_file(candidate)
    return parse_config(EMBEDDED_DEFAULT, base_dir=cwd)
