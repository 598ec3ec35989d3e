"""The HTTP/1.1 engine: request parsing (httptools), routing, upstream connection pools, the
exchange that relays one request and its response, and the plain-HTTP redirect.

It reads certificates never: the TLS layer below already chose one. The listeners that accept its
connections are in `proxy.listeners`.
"""
