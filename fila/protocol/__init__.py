"""FIBP, the Fila wire protocol: constants, the codec and framing.

The hot path (``encode_enqueue``, ``encode_ack``, ``encode_nack``,
``decode_delivery``, ``decode_enqueue_result``, ``decode_ack_result``,
``decode_nack_result``, ``FrameReader``, ``Frame``, ``ConsumeMessage``)
comes from the compiled twin ``fila._speedups`` when it is importable and
``FILA_NO_EXTENSIONS`` is not set, else from :mod:`fila.protocol.pure`.
``IMPLEMENTATION`` says which (``"cython"`` or ``"python"``). Every body
layout is in :mod:`fila.protocol.messages`, which codes any body.

Importing this package (or :mod:`fila.protocol.constants`) loads only the
constants: the codec is imported on first use of one of its names.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING
from typing import Any

from .constants import DEFAULT_MAX_PENDING_STREAMS
from .constants import DEFAULT_MAX_REASSEMBLED_SIZE
from .constants import DEFAULT_PORT
from .constants import FLAG_CONTINUATION
from .constants import FRAME_OVERHEAD
from .constants import HEADER_SIZE
from .constants import MAX_DECODED_COUNT
from .constants import MAX_FRAME_SIZE
from .constants import PROTOCOL_VERSION
from .constants import ErrorCode
from .constants import Opcode
from .constants import normalize_error_code

if TYPE_CHECKING:  # what mypy sees; at run time __getattr__ loads these
    from . import pure
    from ._select import IMPLEMENTATION
    from .messages import BODY_TYPE_BY_OPCODE
    from .messages import BODY_TYPES
    from .messages import decode_body
    from .messages import encode_body
    from .messages import encode_message
    from .pure import ConsumeMessage
    from .pure import Frame
    from .pure import FrameReader
    from .pure import Message
    from .pure import Reader
    from .pure import Writer
    from .pure import decode_ack
    from .pure import decode_ack_result
    from .pure import decode_delivery
    from .pure import decode_enqueue
    from .pure import decode_enqueue_result
    from .pure import decode_nack
    from .pure import decode_nack_result
    from .pure import encode_ack
    from .pure import encode_ack_result
    from .pure import encode_delivery
    from .pure import encode_enqueue
    from .pure import encode_enqueue_result
    from .pure import encode_frame
    from .pure import encode_nack
    from .pure import encode_nack_result

# name -> where it comes from: the active twin, the pure twin, or the generic codec
_TWIN = (
    "ConsumeMessage",
    "Frame",
    "FrameReader",
    "Message",
    "decode_ack_result",
    "decode_delivery",
    "decode_enqueue_result",
    "decode_nack_result",
    "encode_ack",
    "encode_enqueue",
    "encode_nack",
)
_PURE = (
    "Reader",
    "Writer",
    "decode_ack",
    "decode_enqueue",
    "decode_nack",
    "encode_ack_result",
    "encode_delivery",
    "encode_enqueue_result",
    "encode_frame",
    "encode_nack_result",
)
_MESSAGES = ("BODY_TYPES", "BODY_TYPE_BY_OPCODE", "decode_body", "encode_body", "encode_message")


def __getattr__(name: str) -> Any:
    """Load a codec name on first use (PEP 562) and keep it in the module."""
    if name in _TWIN or name == "IMPLEMENTATION":
        select = import_module("._select", __name__)
        value = select.IMPLEMENTATION if name == "IMPLEMENTATION" else getattr(select.twin, name)
    elif name in _PURE or name == "pure":
        module = import_module(".pure", __name__)
        value = module if name == "pure" else getattr(module, name)
    elif name in _MESSAGES:
        value = getattr(import_module(".messages", __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "BODY_TYPES",
    "BODY_TYPE_BY_OPCODE",
    "DEFAULT_MAX_PENDING_STREAMS",
    "DEFAULT_MAX_REASSEMBLED_SIZE",
    "DEFAULT_PORT",
    "FLAG_CONTINUATION",
    "FRAME_OVERHEAD",
    "HEADER_SIZE",
    "IMPLEMENTATION",
    "MAX_DECODED_COUNT",
    "MAX_FRAME_SIZE",
    "PROTOCOL_VERSION",
    "ConsumeMessage",
    "ErrorCode",
    "Frame",
    "FrameReader",
    "Message",
    "Opcode",
    "Reader",
    "Writer",
    "decode_ack",
    "decode_ack_result",
    "decode_body",
    "decode_delivery",
    "decode_enqueue",
    "decode_enqueue_result",
    "decode_nack",
    "decode_nack_result",
    "encode_ack",
    "encode_ack_result",
    "encode_body",
    "encode_delivery",
    "encode_enqueue",
    "encode_enqueue_result",
    "encode_frame",
    "encode_message",
    "encode_nack",
    "encode_nack_result",
    "normalize_error_code",
    "pure",
]
