"""The floor of the stack: a bare TLS byte relay on uvloop, for `FLOOR=1 bench/https.sh`.

Terminates TLS exactly as the edge does (uvloop's transport, Python's ssl, the same certificate,
versions, ciphers and ALPN), opens one plain connection to the upstream per client and copies
bytes both ways. No HTTP parsing, routing, header rewriting, pooling, timeouts, metrics or flow
control: nothing any proxy could leave out. What it costs per request is what asyncio + uvloop +
Python's ssl cost before the first feature; the edge's figure minus this one is the price of
its HTTP features. It is a measuring stick, not a proxy: it trusts both sides completely.

Usage: python bench/https_floor.py --port P --upstream-port U --cert tls.crt --key tls.key
"""

from __future__ import annotations

import argparse
import asyncio
import ssl

import uvloop


class UpstreamSide(asyncio.Protocol):
    def __init__(self, client: ClientSide) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.client.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.transport.close()


class ClientSide(asyncio.Protocol):
    transport: asyncio.Transport

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.upstream: asyncio.Transport | None = None
        self.early: list[bytes] = []
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.task = asyncio.get_running_loop().create_task(self.connect())

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            upstream, _ = await loop.create_connection(lambda: UpstreamSide(self), "127.0.0.1", self.upstream_port)
        except OSError:
            self.transport.close()
            return
        self.upstream = upstream
        upstream.writelines(self.early)
        self.early.clear()

    def data_received(self, data: bytes) -> None:
        if self.upstream is None:
            self.early.append(data)
        else:
            self.upstream.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None:
            self.upstream.close()
        elif self.task is not None:
            self.task.cancel()


async def main(port: int, upstream_port: int, cert: str, key: str) -> None:
    # The policy of proxy.tlsmaterial's contexts: TLS 1.2 and 1.3, AEAD suites, ALPN http/1.1.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
    context.set_alpn_protocols(["http/1.1"])
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.load_cert_chain(cert, key)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: ClientSide(upstream_port), "127.0.0.1", port, ssl=context, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()
    uvloop.run(main(args.port, args.upstream_port, args.cert, args.key))
