"""The http-redirect listener: plain HTTP in, `308 Permanent Redirect` to the HTTPS port out.

Owns only its lifecycle; the answers are the redirect engine's (`proxy.http1.redirect`).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

from proxy.config import RedirectListenerConfig
from proxy.connections import Shared
from proxy.http1.redirect import RedirectConnection
from proxy.listeners.base import BaseListener


class RedirectListener(BaseListener):
    """Plain HTTP in, `308 Permanent Redirect` to `https://<host>:<redirect_port><target>` out."""

    config: RedirectListenerConfig

    def describe(self) -> str:
        return f"redirecting HTTP to HTTPS port {self.config.redirect_port}"

    async def _prepare(self, shared: Shared) -> tuple[Callable[[], asyncio.Protocol], ssl.SSLContext | None]:
        redirect_port = self.config.redirect_port
        return lambda: RedirectConnection(shared, redirect_port), None
