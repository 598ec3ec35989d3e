"""The gRPC listener: TLS termination on grpcio's asyncio server, raw-bytes pass-through upstream."""

from proxy.grpcedge.listener import GrpcListener

__all__ = ["GrpcListener"]
