"""Benchmark upstream: a grpcio asyncio server whose every method echoes the request bytes.

A generic handler with no serializers, so it costs what grpcio itself costs and no more. Plaintext
h2c on 127.0.0.1. Usage: grpc_upstream.py PORT
"""

from __future__ import annotations

import asyncio
import signal
import sys

import grpc


class Echo(grpc.GenericRpcHandler):  # type: ignore[misc]
    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        return _ECHO


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


_ECHO = grpc.unary_unary_rpc_method_handler(_echo)


async def serve(port: int) -> None:
    server = grpc.aio.server(handlers=(Echo(),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(0)


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
