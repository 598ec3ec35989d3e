"""The admin HTTP server (README: "Admin API and page"): the token-checked JSON API, the page, `/healthz`
and `/metrics`, on `admin.listen`.

A lifecycle object like the listeners (`start()`, `port`, `stop()`). Certificates go in and out
only through the CertificateService; of the rest of the edge it knows only the `health` callable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from proxy import metrics, tlspolicy
from proxy.admin.page import Page, load_page
from proxy.admin.token import bearer_matches, load_or_create_token
from proxy.admin.uploads import upload_policy, uploads_off_message
from proxy.admin.views import certificate_view, material_from_json, problems_view
from proxy.certstore.service import CertificateService
from proxy.certstore.store import Snapshot
from proxy.config import AdminConfig
from proxy.errors import ListenerError, MaterialError

log = logging.getLogger("proxy.admin")

MAX_BODY_BYTES = 1024 * 1024  # README, "Admin API and page": bodies over 1 MiB get 413
SHUTDOWN_GRACE = 1.0  # seconds a request may still run once stop()'s own drain is over
UNAUTHORIZED = {"error": "unauthorized"}  # the same for a missing and a wrong token: no hint


class AdminServer:
    """Serves the admin API. `start()` returns once it listens; `port` is the bound port."""

    def __init__(
        self,
        config: AdminConfig,
        service: CertificateService,
        *,
        health: Callable[[], bool],
        draining: Callable[[], bool] | None = None,
        degraded: Callable[[], bool] | None = None,
    ) -> None:
        """`health`: every listener serves and the watcher watches. `draining`: the edge is
        stopping; without it, unhealthy after healthy is taken to mean draining. `degraded`:
        part of the edge that served has failed (a worker process died)."""
        self.config = config
        self.service = service
        self._health = health
        self._draining = draining
        self._degraded = degraded
        self._token = ""
        self._page: Page | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._was_healthy = False
        self._stopping = False

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the admin server is not listening; call start() first")
        return self._port

    async def start(self) -> None:
        """Read or create the token, then listen. Raises ListenerError (an OSError) when the token
        file cannot be used or the address cannot be bound."""
        path = self.config.token_file
        try:
            self._token = await asyncio.to_thread(load_or_create_token, path)
            self._page = await asyncio.to_thread(load_page)
        except OSError as e:
            raise ListenerError(f"admin: cannot use the token file {path}: {e.strerror or e}") from e
        # No aiohttp access log: health probes would flood it. `_observe` logs the API calls.
        runner = web.AppRunner(self._application(), access_log=None, shutdown_timeout=SHUTDOWN_GRACE)
        await runner.setup()
        listen = self.config.listen
        try:
            await web.TCPSite(runner, listen.host, listen.port).start()
        except OSError as e:
            await runner.cleanup()
            raise ListenerError(f"admin: cannot listen on {listen}: {e.strerror or e}") from e
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        log.info("admin API and page on http://%s:%d/ (token in %s)", listen.host, self._port, path)
        uploads = await asyncio.to_thread(upload_policy, self.config.uploads, self.service.tls.cert_dir)
        if not uploads.allowed:
            log.info("certificate uploads are off: %s", uploads.reason)

    async def stop(self, drain_seconds: float) -> None:
        """Stop accepting, give running requests up to `drain_seconds`, then close."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._stopping = True
        for site in list(runner.sites):
            await site.stop()
        if not self._idle.is_set():
            try:
                await asyncio.wait_for(self._idle.wait(), timeout=drain_seconds)
            except TimeoutError:
                log.info("admin: %d request(s) still running after %.0f s; closing", self._in_flight, drain_seconds)
        await runner.cleanup()

    def _application(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._observe, self._limit_body, self._authorize])
        app.router.add_get("/", self._page_handler)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/api/v1/certificate", self._get_certificate)
        app.router.add_post("/api/v1/certificate", self._post_certificate)
        app.router.add_post("/api/v1/reload", self._post_reload)
        app.router.add_get("/api/v1/tls", self._get_tls)
        return app

    # --- middlewares: outermost first -------------------------------------------------------

    @web.middleware
    async def _observe(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Count in-flight requests for the drain, answer every error as JSON, log API calls."""
        self._in_flight += 1
        self._idle.clear()
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            response = _error_response(e)
        except Exception:
            log.exception("admin: %s %s failed", request.method, request.path)
            response = web.json_response({"error": "internal error; the edge's log has the details"}, status=500)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()
        if request.path.startswith("/api/"):
            level = logging.WARNING if response.status == 401 else logging.INFO
            log.log(level, "admin: %s %s from %s: %d", request.method, request.path, request.remote, response.status)
        return response

    @web.middleware
    async def _limit_body(self, request: web.Request, handler: Any) -> web.StreamResponse:
        # A declared oversize body is refused before anything reads it; a chunked one is cut off
        # by `client_max_size` while it is read, and `_observe` turns that into this same 413.
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY_BYTES, actual_size=request.content_length)
        response: web.StreamResponse = await handler(request)
        return response

    @web.middleware
    async def _authorize(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/api/") and not bearer_matches(request.headers.get("Authorization"), self._token):
            return web.json_response(UNAUTHORIZED, status=401, headers={"WWW-Authenticate": "Bearer"})
        response: web.StreamResponse = await handler(request)
        return response

    # --- handlers ----------------------------------------------------------------------------

    async def _page_handler(self, request: web.Request) -> web.Response:
        assert self._page is not None  # loaded by start() before the site listens
        return web.Response(body=self._page.body, content_type="text/html", charset="utf-8", headers=self._page.headers)

    async def _healthz(self, request: web.Request) -> web.Response:
        healthy = not self._stopping and self._health()
        if healthy:
            self._was_healthy = True
            return web.json_response({"status": "ok"}, headers={"Cache-Control": "no-store"})
        # Without `draining`: the edge only turns unhealthy after it was healthy when it drains.
        draining = self._draining() if self._draining is not None else self._was_healthy
        if self._stopping or draining:
            status = "draining"
        elif self._degraded is not None and self._degraded():
            status = "degraded"
        else:
            status = "starting"
        return web.json_response({"status": status}, status=503, headers={"Cache-Control": "no-store"})

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _get_tls(self, request: web.Request) -> web.Response:
        tls = self.service.tls
        return web.json_response(await asyncio.to_thread(tlspolicy.describe, tls.policy, tls.min_version))

    async def _get_certificate(self, request: web.Request) -> web.Response:
        return self._certificate_response(self.service.store.current.snapshot)

    async def _post_certificate(self, request: web.Request) -> web.Response:
        # Decided per request, not once at start: the kubelet may fill an empty directory later,
        # and the check is two system calls.
        uploads = await asyncio.to_thread(upload_policy, self.config.uploads, self.service.tls.cert_dir)
        if not uploads.allowed:
            message = uploads_off_message(uploads, self.service.tls.cert_dir)
            return web.json_response({"error": message}, status=405, headers={"Allow": "GET, HEAD"})
        try:
            material = material_from_json(await request.read())
        except ValueError as e:
            return web.json_response({"error": str(e)}, status=400)
        try:
            offer = await self.service.upload(material, client=request.remote)
        except MaterialError as e:
            return web.json_response(problems_view("the certificate was not accepted; nothing changed", e.problems), status=422)
        except OSError as e:
            log.error("admin: could not write the uploaded certificate into %s: %s", self.service.tls.cert_dir, e)
            message = f"could not write the certificate into {self.service.tls.cert_dir}: {e.strerror or e}; nothing changed"
            return web.json_response({"error": message}, status=500)
        return self._certificate_response(offer.snapshot)

    async def _post_reload(self, request: web.Request) -> web.Response:
        try:
            offer = await self.service.reload("reload", client=request.remote)
        except MaterialError as e:
            serving = self.service.store.current.snapshot.version
            error = f"the material in {self.service.tls.cert_dir} was not accepted; still serving version {serving}"
            return web.json_response(problems_view(error, e.problems), status=422)
        except OSError as e:
            log.error("admin: could not read %s: %s", self.service.tls.cert_dir, e)
            message = f"could not read {self.service.tls.cert_dir}: {e.strerror or e}; nothing changed"
            return web.json_response({"error": message}, status=500)
        return self._certificate_response(offer.snapshot)

    def _certificate_response(self, snapshot: Snapshot) -> web.Response:
        view = certificate_view(snapshot, self.service.store.last_error)
        return web.json_response(view, headers={"Cache-Control": "no-store"})


_MESSAGES = {
    404: "no such path",
    405: "method not allowed",
    413: f"the request body is larger than {MAX_BODY_BYTES // 1024 // 1024} MiB",
}


def _error_response(error: web.HTTPException) -> web.Response:
    """aiohttp's own errors (404, 405, 413, ...) as `{"error": ...}`, keeping headers such as `Allow`."""
    message = _MESSAGES.get(error.status, error.reason.lower())
    headers = {name: value for name, value in error.headers.items() if name.lower() in ("allow", "www-authenticate")}
    return web.json_response({"error": message}, status=error.status, headers=headers)
