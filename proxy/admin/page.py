"""The admin page (`GET /`): one self-contained HTML file, served with headers that lock it down.

Owns loading `page.html` and its Content-Security-Policy. The page holds no secret; it asks the
operator for the token and talks to the JSON API like any other client.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from importlib import resources

_INLINE = re.compile(rb"<(script|style)>(.*?)</\1>", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Page:
    body: bytes
    headers: dict[str, str]


def load_page() -> Page:
    """Read `page.html` from the package and build its headers. Raises OSError if it is missing
    (a broken install)."""
    body = resources.files("proxy.admin").joinpath("page.html").read_bytes()
    return Page(body=body, headers=security_headers(body))


def security_headers(body: bytes) -> dict[str, str]:
    """Allow exactly the page's own inline script and style (by hash) and requests to this
    origin: an injected tag, were one ever rendered, could neither run nor send the token away."""
    sources: dict[bytes, list[str]] = {b"script": [], b"style": []}
    for match in _INLINE.finditer(body):
        digest = base64.b64encode(hashlib.sha256(match.group(2)).digest()).decode()
        sources[match.group(1)].append(f"'sha256-{digest}'")
    policy = "; ".join(
        [
            "default-src 'none'",
            "script-src " + (" ".join(sources[b"script"]) or "'none'"),
            "style-src " + (" ".join(sources[b"style"]) or "'none'"),
            "connect-src 'self'",
            "img-src 'self' data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }
