"""The HTTP/1.1 side of the edge: the HTTPS reverse-proxy listener and the plain-HTTP redirect listener.

Owns request parsing (httptools), upstream connection pools and the byte relay between them. It
reads certificates only through the `current_context` callable it is given; it never imports the
certificate store or the app that wires listeners together.
"""

from proxy.http.listener import HttpsListener
from proxy.http.redirect import RedirectListener

__all__ = ["HttpsListener", "RedirectListener"]
