"""The HTTP/2 byte relay: a client's TLS connection (ALPN h2) joined to an upstream connection of
its own, reading only frame headers, so every gRPC semantic holds by construction."""
