"""The gRPC relay: TLS termination (ALPN h2) with each HTTP/2 connection passed to the upstream as
bytes, so every gRPC semantic holds by construction."""

from proxy.grpcedge.relay.listener import RelayListener

__all__ = ["RelayListener"]
