"""What a parsed request head means to the edge: whether it is acceptable (version, method, Host,
target, declared length), which route serves it, and the head that goes upstream.

Pure: values in, a `Request` and its route out, or `Refused` naming the status to answer. It
knows nothing of sockets, parser state or the event loop.
"""

from __future__ import annotations

from typing import NoReturn, Protocol, TypeVar

from httptools import HttpParserError, parse_url

from proxy.config import HttpUpstream
from proxy.errors import ProxyError
from proxy.http1.routing import Router
from proxy.http1.wire import IDEMPOTENT, MAX_HEAD_BYTES, Headers, host_key, scan_request, upstream_request_head, valid_authority

# The access log's `reason` for an answer the edge made itself, by status; failures towards the
# upstream say their own kind (upstream_unreachable, upstream_timeout, ...).
LOCAL_REASONS = {
    400: "bad_request",
    404: "no_route",
    405: "method_not_allowed",
    408: "header_timeout",
    413: "body_too_large",
    414: "uri_too_long",
    431: "headers_too_large",
    505: "http_version_not_supported",
}


class Refused(ProxyError, ValueError):
    """The request cannot be served as sent: answer `status`, then close the connection."""

    def __init__(self, status: int) -> None:
        super().__init__(f"request refused with status {status}")
        self.status = status


class HeadLimit:
    """What both HTTP/1.1 servers (proxy and redirect) do the same while httptools reads a head:
    collect and bound the request target, and refuse from inside a parser callback."""

    __slots__ = ("_head_size", "_refusal", "_url")

    def __init__(self) -> None:
        self._url = b""
        self._head_size = 0
        self._refusal = 0  # the status a callback refused the request with

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        if self._head_size > MAX_HEAD_BYTES:
            self._refuse(414)

    def _refuse(self, status: int) -> NoReturn:
        """Stop the parser (it reports any exception a callback raises as
        HttpParserCallbackError) and remember the status to answer."""
        self._refusal = status
        raise Refused(status)


class HasUpstream(Protocol):
    @property
    def upstream(self) -> HttpUpstream: ...


RouteTarget = TypeVar("RouteTarget", bound=HasUpstream)


class Request:
    """A client request as an exchange needs it: the head to send upstream, and its framing.

    Built once per request on the hot path, so its fields are positional: a keyword call costs
    about as much again as setting them."""

    __slots__ = ("chunked", "has_body", "head", "host", "http10", "idempotent", "is_head", "keep_alive", "upgrade")

    def __init__(
        self,
        head: bytes,
        http10: bool = False,
        keep_alive: bool = False,
        chunked: bool = False,
        has_body: bool = False,
        upgrade: bool = False,
        idempotent: bool = False,
        is_head: bool = False,
        host: bytes = b"",
        /,
    ) -> None:
        self.head = head
        self.http10 = http10
        self.keep_alive = keep_alive
        self.chunked = chunked
        self.has_body = has_body
        self.upgrade = upgrade
        self.idempotent = idempotent
        self.is_head = is_head
        self.host = host  # the Host header, or the authority of an absolute-form target


# Host values already found valid, with their routing keys: most connections repeat one Host,
# so the check and the lowercasing run once per value, not once per request.
_ROUTING_KEYS: dict[bytes, bytes] = {}
_MAX_KEYS = 4096


def routing_key(authority: bytes) -> bytes:
    """Raises Refused(400) for a Host value the edge must not route on or repeat."""
    key = _ROUTING_KEYS.get(authority)
    if key is None:
        if not valid_authority(authority):
            raise Refused(400)
        if len(_ROUTING_KEYS) >= _MAX_KEYS:
            _ROUTING_KEYS.clear()
        key = _ROUTING_KEYS[authority] = host_key(authority)
    return key


def split_target(method: bytes, url: bytes, host: bytes | None) -> tuple[bytes, bytes, bytes, bool]:
    """(target to forward, path to route on, authority, whether Host must be rewritten).

    Raises Refused(400) for a target that is neither origin form, absolute form, nor `*` with OPTIONS.
    """
    if url.startswith(b"/"):
        return url, url.partition(b"?")[0], host or b"", False
    if url == b"*" and method == b"OPTIONS":
        return url, b"/", host or b"", False
    if url[:8].lower().startswith((b"http://", b"https://")):
        # Absolute form: its authority replaces the Host header (RFC 9112 3.2.2).
        try:
            parsed = parse_url(url)
        except HttpParserError:
            raise Refused(400) from None
        authority = parsed.host + (b":%d" % parsed.port if parsed.port else b"")
        path = parsed.path or b"/"
        return path + (b"?" + parsed.query if parsed.query else b""), path, authority, True
    raise Refused(400)


def interpret(
    method: bytes,
    version: str,
    url: bytes,
    headers: Headers,
    router: Router[RouteTarget],
    keep_alive: bool,
    upgrade: bool,
    client_ip: bytes,
    max_body_bytes: int,
) -> tuple[Request, RouteTarget | None]:
    """The request and its route (None: no route, answer 404). Raises Refused; anything else is a bug."""
    if version != "1.1" and version != "1.0":
        raise Refused(505)
    if method == b"CONNECT":
        raise Refused(405)  # an edge, not a forward proxy
    facts = scan_request(headers)
    http10 = version == "1.0"
    if facts.host_count > 1 or (facts.host_count == 0 and not http10):
        raise Refused(400)  # RFC 9112 3.2: exactly one Host
    target, path, authority, add_host = split_target(method, url, facts.host)
    host = authority
    if max_body_bytes and facts.content_length is not None and facts.content_length > max_body_bytes:
        raise Refused(413)
    route = router.match(routing_key(authority) if authority else b"", path)
    chunked = facts.chunked
    head = b""
    if route is not None:
        if not authority:  # an HTTP/1.0 request without Host: name the upstream itself
            upstream = route.upstream
            authority, add_host = f"{upstream.host}:{upstream.port}".encode(), True
        head = upstream_request_head(
            method,
            target,
            headers,
            facts,
            client_ip=client_ip,
            host=authority,
            add_host=add_host,
            chunked=chunked,
            upgrade=upgrade,
        )
    has_body = chunked or bool(facts.content_length)
    request = Request(head, http10, keep_alive, chunked, has_body, upgrade, method in IDEMPOTENT, method == b"HEAD", host)
    return request, route
