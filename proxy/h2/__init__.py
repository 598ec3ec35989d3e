"""The HTTP/2 engine of `https` listeners with `http2 = true`: python-hyper h2 on the client side,
HTTP/1.1 towards the routes' upstreams through the HTTP/1.1 engine's pool and rules."""
