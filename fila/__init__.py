"""fila: the Python client for the Fila message broker (FIBP over TCP).

``Client`` is the thread-safe synchronous client, ``AsyncClient`` its asyncio
twin; both speak every FIBP operation over multiplexed connections.
"""

from __future__ import annotations

from . import errors
from ._accumulator import AccumulatorMode, Linger
from .aio import AsyncClient, AsyncConsumer
from .client import Client, Consumer
from .errors import FilaError
from .protocol import IMPLEMENTATION as CODEC_IMPLEMENTATION
from .types import (
    Acl,
    ApiKey,
    ApiKeyInfo,
    EnqueueResult,
    FairnessKeyStats,
    Message,
    Permission,
    QueueInfo,
    QueueList,
    Stats,
    ThrottleStats,
)

__version__ = "0.1.0"

__all__ = [
    "CODEC_IMPLEMENTATION",
    "AccumulatorMode",
    "Acl",
    "ApiKey",
    "ApiKeyInfo",
    "AsyncClient",
    "AsyncConsumer",
    "Client",
    "Consumer",
    "EnqueueResult",
    "FairnessKeyStats",
    "FilaError",
    "Linger",
    "Message",
    "Permission",
    "QueueInfo",
    "QueueList",
    "Stats",
    "ThrottleStats",
    "__version__",
    "errors",
]
