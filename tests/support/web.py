"""HTTP on both sides of the edge: real aiohttp upstreams (one that records what reaches it, one
that restarts on its port), bare TCP upstreams for what aiohttp will not send or never answers,
and a small raw HTTP/1.1 client for the cases a polite client library will not send.

Everything listens on 127.0.0.1. Nothing here knows what a test asserts."""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import WSMsgType, web

from tests.support.pki import SERVER_IP

CHUNK = 64 * 1024


@dataclass
class Upstream:
    """An aiohttp upstream on 127.0.0.1 that records what reaches it."""

    name: str = "main"
    seen: list[str] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    runner: web.AppRunner | None = None
    port: int = 0

    async def start(self) -> None:
        app = web.Application(client_max_size=0)
        app.middlewares.append(self._record)
        app.router.add_route("*", "/echo-headers{tail:.*}", self.echo_headers)
        app.router.add_get("/bytes/{n}", self.send_bytes)
        app.router.add_post("/upload", self.upload)
        app.router.add_post("/echo", self.echo)
        app.router.add_get("/hold", self.hold)
        app.router.add_get("/sleep/{seconds}", self.sleep)
        app.router.add_get("/ws", self.websocket)
        app.router.add_get("/hop", self.hop)
        app.router.add_get("/cookie", self.cookie)
        app.router.add_get("/status/{code}", self.status)
        app.router.add_route("*", "/{tail:.*}", self.echo_headers)
        self.runner = web.AppRunner(app, handle_signals=False, handler_cancellation=True)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.seen.append(request.path_qs)
        response: web.StreamResponse = await handler(request)
        return response

    async def echo_headers(self, request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {
                "upstream": self.name,
                "method": request.method,
                "path": request.path_qs,
                "version": f"{request.version.major}.{request.version.minor}",
                "headers": [[k.decode(), v.decode()] for k, v in request.raw_headers],
                "body": body.decode("latin-1"),
            }
        )

    async def send_bytes(self, request: web.Request) -> web.StreamResponse:
        size = int(request.match_info["n"])
        response = web.StreamResponse()
        if request.query.get("framing") != "chunked":
            response.content_length = size
        await response.prepare(request)
        block = b"x" * CHUNK
        while size > 0:
            await response.write(block[: min(size, CHUNK)])
            size -= CHUNK
        await response.write_eof()
        return response

    async def upload(self, request: web.Request) -> web.Response:
        digest, total = hashlib.sha256(), 0
        async for piece in request.content.iter_any():
            digest.update(piece)
            total += len(piece)
        framing = "chunked" if request.headers.get("Transfer-Encoding") else "length"
        return web.json_response({"received": total, "sha256": digest.hexdigest(), "framing": framing})

    async def echo(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()  # small bodies only; the response goes out chunked
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i in range(0, len(body), 7):
            await response.write(body[i : i + 7])
        await response.write_eof()
        return response

    async def hold(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"first\n")
        await self.release.wait()
        await response.write(b"last\n")
        await response.write_eof()
        return response

    async def sleep(self, request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.match_info["seconds"]))
        return web.Response(text="late")

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await ws.send_str("echo: " + message.data)
            elif message.type == WSMsgType.BINARY:
                await ws.send_bytes(message.data)
        return ws

    async def hop(self, request: web.Request) -> web.Response:
        headers = {"Connection": "X-Upstream-Secret", "X-Upstream-Secret": "1", "Keep-Alive": "timeout=5", "X-Kept": "yes"}
        return web.Response(text="hop", headers=headers)

    async def cookie(self, request: web.Request) -> web.Response:
        headers = {"Location": "/elsewhere?a=1", "Set-Cookie": "session=abc; Path=/; HttpOnly"}
        return web.Response(status=302, headers=headers)

    async def status(self, request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]))


@asynccontextmanager
async def upstream(name: str = "main") -> AsyncIterator[Upstream]:
    server = Upstream(name)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class RawUpstream:
    """A bare TCP upstream for what aiohttp will not send: close-delimited bodies, 1xx, resets.
    `serve(reader, writer)` handles one connection; `connections` counts them."""

    def __init__(self, serve: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]) -> None:
        self._serve = serve
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Self:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        if self.server is not None:
            self.server.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def read_request_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


# --- a raw HTTP/1.1 client ---------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name.lower()]
        return ", ".join(values) if values else None

    def json(self) -> Any:
        return json.loads(self.body)


async def tls_connect(
    port: int, context: ssl.SSLContext, server_hostname: str = SERVER_IP
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(SERVER_IP, port, ssl=context, server_hostname=server_hostname, limit=1 << 20)


@asynccontextmanager
async def tls_connection(
    port: int, context: ssl.SSLContext, server_hostname: str = SERVER_IP
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """`tls_connect`, closed on the way out."""
    reader, writer = await tls_connect(port, context, server_hostname)
    try:
        yield reader, writer
    finally:
        writer.close()


async def read_response(reader: asyncio.StreamReader, *, head_request: bool = False) -> Response:
    """The next response on the stream; interim (1xx) responses are returned like any other."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = [(k.strip().lower(), v.strip()) for k, v in (line.split(":", 1) for line in lines[1:] if line)]
    names = {k: v.lower() for k, v in headers}
    if head_request or status < 200 or status in (204, 304):
        return Response(status, headers, b"")
    if "chunked" in names.get("transfer-encoding", ""):
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return Response(status, headers, bytes(body))
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    if "content-length" in names:
        return Response(status, headers, await reader.readexactly(int(names["content-length"])))
    return Response(status, headers, await reader.read())


async def exchange_raw(port: int, context: ssl.SSLContext, data: bytes, *, head_request: bool = False) -> Response:
    """Send raw bytes on a fresh connection and read one response."""
    reader, writer = await tls_connect(port, context)
    try:
        writer.write(data)
        return await asyncio.wait_for(read_response(reader, head_request=head_request), 10)
    finally:
        writer.close()


async def closed_by_peer(reader: asyncio.StreamReader, timeout: float = 5.0) -> bool:
    """True when the other side closes the connection (EOF or reset) within `timeout`."""
    try:
        await asyncio.wait_for(reader.read(), timeout)
    except TimeoutError:
        return False
    except (ConnectionError, ssl.SSLError):
        pass
    return True


class RestartableUpstream:
    """An aiohttp upstream that can be stopped and started again on the same port, as a service
    restarting behind the edge. It answers every path with the path."""

    def __init__(self) -> None:
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, SERVER_IP, self.port).start()
        self.port = runner.addresses[0][1]
        self._runner = runner

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _answer(self, request: web.Request) -> web.Response:
        return web.Response(text=request.path)


class SilentUpstream(RawUpstream):
    """Accepts connections and reads whatever arrives, and never answers. Counts connections and
    notices when the edge gives up on one."""

    def __init__(self) -> None:
        super().__init__(self._hold)
        self.closed_by_edge = 0

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.read(65536):
                pass
        finally:
            self.closed_by_edge += 1
