"""``fila.async_client``: where fila-python 0.3.0 kept :class:`AsyncClient` (kept importable)."""

from .aio import AsyncClient
from .aio import AsyncConsumer

__all__ = ["AsyncClient", "AsyncConsumer"]
