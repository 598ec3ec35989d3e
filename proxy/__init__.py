"""edge-proxy: an asyncio TLS edge with validated, atomic certificate swaps."""

__version__ = "0.1.0"
