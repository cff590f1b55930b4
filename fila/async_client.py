"""``fila.async_client``: where fila-python 0.3.0 kept :class:`AsyncClient` (kept importable)."""

from .aio import AsyncClient, AsyncConsumer

__all__ = ["AsyncClient", "AsyncConsumer"]
