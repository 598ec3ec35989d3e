"""The edge's own Python cost per HTTPS request, without TLS, sockets or a load generator.

Drives the real client and upstream protocol objects (`proxy.http1`) with in-memory transports:
each iteration feeds one request as the TLS layer would hand it over and one upstream response
as the kernel would, exactly as wrk and nginx produce them in `bench/https.sh`. What is left is
parsing, routing, head rewriting, framing, pooling, timers and metrics: the part of the
per-request cost that this code owns. On a machine shared with other work it is a far steadier
figure than a load test, so it is the one to compare changes with.

Usage: python bench/https_micro.py [--requests N] [--rounds R] [--access off|json|text] [--scenario 100b|64k|new]
(`--access`: with the access log on, its lines written to /dev/null by its writer thread.)
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop

from proxy.accesslog import AccessLog
from proxy.config import HttpUpstream, Limits, Route
from proxy.connections import Shared, Tally
from proxy.http1.client import ClientConnection
from proxy.http1.routing import Router
from proxy.http1.upstream import UpstreamConnection, UpstreamPool
from proxy.logwriter import LineWriter
from proxy.metrics import for_listener

REQUEST = b"GET /%s HTTP/1.1\r\nHost: 127.0.0.1:18443\r\n\r\n"
CLOSE_REQUEST = b"GET /100b HTTP/1.1\r\nHost: 127.0.0.1:18443\r\nConnection: close\r\n\r\n"
RESPONSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 28 Nov 2026 19:45:18 GMT\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\nLast-Modified: Sat, 28 Nov 2026 19:42:47 GMT\r\n"
    b'Connection: keep-alive\r\nETag: "6b0b2eb7-64"\r\nAccept-Ranges: bytes\r\n\r\n'
)
# Measured in bench/https.sh: nginx's 64 KiB answer (head and body) reaches the edge in one read.
READ_SIZE = 256 * 1024  # uvloop's read buffer


class MemoryTransport:
    """Enough of asyncio.Transport for the protocols: counts what is written, never blocks."""

    def __init__(self) -> None:
        self.written = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def writelines(self, pieces: list[bytes]) -> None:
        for piece in pieces:
            self.written += len(piece)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 50000) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def response(size: int) -> list[bytes]:
    whole = RESPONSE_HEAD % size + b"x" * size
    return [whole[i : i + READ_SIZE] for i in range(0, len(whole), READ_SIZE)]


class Rig:
    """One listener's shared state, router and pool, with one pooled upstream connection."""

    def __init__(self, access: AccessLog | None = None) -> None:
        self.shared = Shared("micro", Limits(), Tally(for_listener("micro")), access.for_listener("micro") if access else None)
        self.pool = UpstreamPool(HttpUpstream("http", "127.0.0.1", 18081), 5.0)
        self.router = Router((Route(HttpUpstream("http", "127.0.0.1", 18081)),), lambda _: self.pool)
        self.upstream = UpstreamConnection(self.pool)
        self.upstream.connection_made(MemoryTransport())  # type: ignore[arg-type]
        self.pool.put(self.upstream)

    def client(self) -> ClientConnection:
        client = ClientConnection(self.shared, self.router)
        client.connection_made(MemoryTransport())  # type: ignore[arg-type]
        return client


def keep_alive(rig: Rig, size: int) -> Callable[[int], None]:
    client, upstream = rig.client(), rig.upstream
    request, reads = REQUEST % (b"100b" if size == 100 else b"64k"), response(size)

    def run(n: int) -> None:
        for _ in range(n):
            client.data_received(request)
            for data in reads:
                upstream.data_received(data)

    return run


def new_connection(rig: Rig) -> Callable[[int], None]:
    upstream, reads = rig.upstream, response(100)

    def run(n: int) -> None:
        for _ in range(n):
            client = rig.client()
            client.data_received(CLOSE_REQUEST)
            for data in reads:
                upstream.data_received(data)
            client.connection_lost(None)

    return run


def measure(run: Callable[[int], None], requests: int, rounds: int) -> float:
    """Microseconds per request: the best of `rounds`, each of `requests` requests."""
    run(min(requests, 2000))  # warm caches, the pool and the metrics tallies
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        start = time.process_time()
        run(requests)
        best = min(best, (time.process_time() - start) / requests * 1e6)
    return best


# Short names for --scenario.
SCENARIOS = {"100b": "keep-alive 100 B", "64k": "keep-alive 64 KiB", "new": "new connection per request"}


async def main(requests: int, rounds: int, access_format: str, only: str | None = None) -> None:
    access = None if access_format == "off" else AccessLog(access_format, LineWriter(Path(os.devnull)))
    if access is not None:
        access.start()
    rig = Rig(access)
    scenarios = {
        "keep-alive 100 B": keep_alive(rig, 100),
        "keep-alive 64 KiB": keep_alive(rig, 64 * 1024),
        "new connection per request": new_connection(rig),
    }
    print("| scenario | edge Python us/request |")
    print("| --- | ---: |")
    for name, run in scenarios.items():
        if only is None or name == SCENARIOS[only]:
            print(f"| {name} | {measure(run, requests, rounds):.2f} |", flush=True)
    rig.shared.tally.flush()
    if access is not None:
        access.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--access", choices=["off", "json", "text"], default="off")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), help="run only this one (default: all three)")
    args = parser.parse_args()
    uvloop.run(main(args.requests, args.rounds, args.access, args.scenario))
