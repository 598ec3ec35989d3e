"""What an HTTP/2 request head means to the edge: gRPC or not, and for everything else the same
`Request` and route the HTTP/1.1 engine would make of it (RFC 9113 8.3, 8.2.3).

Pure: h2's decoded header list in, a value or `Refused` out. h2 has already refused what RFC 9113
calls malformed at the framing level (CR, LF, NUL, uppercase names, connection-specific headers,
`transfer-encoding`, `te` other than `trailers`, pseudo-headers out of place); this module adds
what only a proxy cares about. It knows nothing of streams, sockets or the event loop.
"""

from __future__ import annotations

from proxy.http1.request import Refused, Request, RouteTarget, routing_key, split_target
from proxy.http1.routing import Router
from proxy.http1.wire import IDEMPOTENT, Headers, scan_request, upstream_request_head

GRPC_CONTENT_TYPE = b"application/grpc"


def is_grpc(headers: Headers) -> bool:
    """gRPC by its content-type: `application/grpc` or `application/grpc+<codec>`."""
    for name, value in headers:
        if name == b"content-type":
            return value == GRPC_CONTENT_TYPE or value.startswith(b"application/grpc+")
    return False


def interpret_h2(
    headers: Headers, router: Router[RouteTarget], *, end_stream: bool, client_ip: bytes, max_body_bytes: int
) -> tuple[Request, RouteTarget | None]:
    """The HTTP/1.1 request for an HTTP/2 request head, and its route (None: 404).

    `:authority` becomes Host; cookie crumbs are joined with "; " (RFC 9113 8.2.3); a body
    without content-length goes upstream chunked. Raises Refused(400) for a request that is
    malformed for a proxy (no authority, two that differ, a bad content-length), 405 for
    CONNECT, 413 for a declared body over `max_body_bytes`; anything else is a bug.
    """
    method = path = authority = host = None
    regular: Headers = []
    cookies: list[bytes] = []
    lengths = 0
    for name, value in headers:
        if name[:1] == b":":
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
            elif name == b":protocol":
                raise Refused(400)  # extended CONNECT (RFC 8441) is not offered
        elif name == b"cookie":
            cookies.append(value)
        elif name == b"host":
            if host is not None:
                raise Refused(400)
            host = value
        else:
            if name == b"content-length":
                lengths += 1
                if lengths > 1 or not value.isdigit():
                    raise Refused(400)
            regular.append((name, value))
    if method is None or method == b"CONNECT":
        raise Refused(405 if method else 400)
    if authority is None:
        authority = host
    elif host is not None and host != authority:
        raise Refused(400)  # RFC 9113 8.3.1: the two must name the same thing
    if not authority or path is None:
        raise Refused(400)
    if cookies:
        regular.append((b"cookie", b"; ".join(cookies)))
    regular.append((b"host", authority))
    target, route_path, _, _ = split_target(method, path, authority)
    if not path.startswith(b"/") and path != b"*":
        raise Refused(400)  # HTTP/2 carries origin form only (RFC 9113 8.3.1)
    facts = scan_request(regular)
    if max_body_bytes and facts.content_length is not None and facts.content_length > max_body_bytes:
        raise Refused(413)
    route = router.match(routing_key(authority), route_path)
    has_body = not end_stream
    chunked = has_body and facts.content_length is None
    head = b""
    if route is not None:
        head = upstream_request_head(
            method, target, regular, facts, client_ip=client_ip, host=authority, add_host=False, chunked=chunked, upgrade=False
        )
    return Request(head, False, True, chunked, has_body, False, method in IDEMPOTENT, method == b"HEAD"), route
