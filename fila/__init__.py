"""fila: the Python client for the Fila message broker (FIBP over TCP).

:class:`Client` is the thread-safe synchronous client and
:class:`AsyncClient` its asyncio twin; both speak every FIBP operation. The
API is fila-python 0.3.0's (the official SDK's), with this package's engine
under it and its extras beside it.

Names are loaded on first use, so ``import fila.errors`` loads neither the
codec nor the clients.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING
from typing import Any

__version__ = "0.3.0"

if TYPE_CHECKING:
    from .aio import AsyncClient
    from .aio import AsyncConsumer
    from .client import Client
    from .client import Consumer
    from .errors import AclNotFoundError
    from .errors import ApiKeyNotFoundError
    from .errors import ChannelFullError
    from .errors import EnqueueError
    from .errors import ErrorCode
    from .errors import FilaError
    from .errors import ForbiddenError
    from .errors import InvalidArgumentError
    from .errors import LuaError
    from .errors import MessageNotFoundError
    from .errors import NotLeaderError
    from .errors import PermissionDeniedError
    from .errors import ProtocolError
    from .errors import QueueAlreadyExistsError
    from .errors import QueueNotFoundError
    from .errors import ResourceExhaustedError
    from .errors import RPCError
    from .errors import UnauthorizedError
    from .errors import UnavailableError
    from .types import AccumulatorMode
    from .types import AclEntry
    from .types import AclPermission
    from .types import ApiKeyInfo
    from .types import ClientEvent
    from .types import ConsumeMessage
    from .types import CreateApiKeyResult
    from .types import EnqueueResult
    from .types import FairnessKeyStat
    from .types import Linger
    from .types import QueueInfo
    from .types import StatsResult
    from .types import ThrottleKeyStat

    CODEC_IMPLEMENTATION: str

# name -> module that defines it
_LAZY: dict[str, str] = {
    "Client": "client",
    "Consumer": "client",
    "AsyncClient": "aio",
    "AsyncConsumer": "aio",
    **dict.fromkeys(
        (
            "AccumulatorMode",
            "AclEntry",
            "AclPermission",
            "ApiKeyInfo",
            "ClientEvent",
            "ConsumeMessage",
            "CreateApiKeyResult",
            "EnqueueResult",
            "FairnessKeyStat",
            "Linger",
            "QueueInfo",
            "StatsResult",
            "ThrottleKeyStat",
        ),
        "types",
    ),
    **dict.fromkeys(
        (
            "AclNotFoundError",
            "ApiKeyNotFoundError",
            "ChannelFullError",
            "EnqueueError",
            "ErrorCode",
            "FilaError",
            "ForbiddenError",
            "InvalidArgumentError",
            "LuaError",
            "MessageNotFoundError",
            "NotLeaderError",
            "PermissionDeniedError",
            "ProtocolError",
            "QueueAlreadyExistsError",
            "QueueNotFoundError",
            "RPCError",
            "ResourceExhaustedError",
            "UnauthorizedError",
            "UnavailableError",
        ),
        "errors",
    ),
}

__all__ = [
    "CODEC_IMPLEMENTATION",
    "AccumulatorMode",
    "AclEntry",
    "AclNotFoundError",
    "AclPermission",
    "ApiKeyInfo",
    "ApiKeyNotFoundError",
    "AsyncClient",
    "AsyncConsumer",
    "ChannelFullError",
    "Client",
    "ClientEvent",
    "ConsumeMessage",
    "Consumer",
    "CreateApiKeyResult",
    "EnqueueError",
    "EnqueueResult",
    "ErrorCode",
    "FairnessKeyStat",
    "FilaError",
    "ForbiddenError",
    "InvalidArgumentError",
    "Linger",
    "LuaError",
    "MessageNotFoundError",
    "NotLeaderError",
    "PermissionDeniedError",
    "ProtocolError",
    "QueueAlreadyExistsError",
    "QueueInfo",
    "QueueNotFoundError",
    "RPCError",
    "ResourceExhaustedError",
    "StatsResult",
    "ThrottleKeyStat",
    "UnauthorizedError",
    "UnavailableError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name == "CODEC_IMPLEMENTATION":
        value: Any = importlib.import_module(".protocol", __name__).IMPLEMENTATION
    elif name in _LAZY:
        value = getattr(importlib.import_module("." + _LAZY[name], __name__), name)
    else:
        raise AttributeError(f"module 'fila' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
