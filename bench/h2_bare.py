"""The floor for HTTP/2 on this stack: python-hyper h2 on uvloop behind Python's ssl, answering
every GET with 100 B itself (no upstream, no routing, no limits). bench/h2_run.py measures the
edge's HTTP/2 engine against it. Listens on 127.0.0.1 only.

Usage: h2_bare.py PORT CERT KEY
"""

from __future__ import annotations

import asyncio
import ssl
import sys

import uvloop
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import RequestReceived

BODY = b"a" * 100
HEADERS = [(b":status", b"200"), (b"content-type", b"application/octet-stream"), (b"content-length", b"100")]
CONFIG = H2Configuration(client_side=False, header_encoding=None, validate_outbound_headers=False, normalize_outbound_headers=False)


class Bare(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.h2 = H2Connection(CONFIG)
        self.h2.initiate_connection()
        self.transport.write(self.h2.data_to_send())

    def data_received(self, data: bytes) -> None:
        h2 = self.h2
        for event in h2.receive_data(data):
            if isinstance(event, RequestReceived):
                h2.send_headers(event.stream_id, HEADERS)
                h2.send_data(event.stream_id, BODY, end_stream=True)
        out = h2.data_to_send()
        if out:
            self.transport.write(out)


async def serve(port: int, cert: str, key: str) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["h2"])
    server = await asyncio.get_running_loop().create_server(Bare, "127.0.0.1", port, ssl=context, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
