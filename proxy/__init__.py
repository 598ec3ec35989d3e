"""edge-proxy: an asyncio TLS edge with validated, atomic certificate swaps."""

from proxy.extensions import NO_EXTENSIONS, prefer_sources

__version__ = "0.1.0"

if NO_EXTENSIONS:
    prefer_sources()
