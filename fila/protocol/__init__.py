"""FIBP, the Fila wire protocol: constants, the codec and framing.

The hot path (``encode_enqueue``, ``encode_ack``, ``encode_nack``,
``decode_delivery``, ``decode_enqueue_result``, ``decode_ack_result``,
``decode_nack_result``, ``FrameReader``, ``Frame``, ``Reader``, ``Message``)
comes from the compiled twin ``fila._speedups`` when it is importable and
``FILA_NO_EXTENSIONS`` is not set, else from :mod:`fila.protocol.pure`.
``IMPLEMENTATION`` says which (``"cython"`` or ``"python"``). Every other
body is coded by :mod:`fila.protocol.messages`.
"""

from __future__ import annotations

from . import pure
from ._select import IMPLEMENTATION, twin
from .constants import (
    DEFAULT_MAX_PENDING_STREAMS,
    DEFAULT_MAX_REASSEMBLED_SIZE,
    DEFAULT_PORT,
    FLAG_CONTINUATION,
    FRAME_OVERHEAD,
    HEADER_SIZE,
    MAX_DECODED_COUNT,
    MAX_FRAME_SIZE,
    PROTOCOL_VERSION,
    ErrorCode,
    Opcode,
    normalize_error_code,
)
from .messages import BODY_TYPE_BY_OPCODE, BODY_TYPES, decode_body, encode_body, encode_message

encode_enqueue = twin.encode_enqueue
encode_ack = twin.encode_ack
encode_nack = twin.encode_nack
decode_delivery = twin.decode_delivery
decode_enqueue_result = twin.decode_enqueue_result
decode_ack_result = twin.decode_ack_result
decode_nack_result = twin.decode_nack_result
FrameReader = twin.FrameReader
Frame = twin.Frame
Reader = twin.Reader
Message = twin.Message

# Pure-only: the complete codec around the hot path (server side included).
Writer = pure.Writer
encode_frame = pure.encode_frame
decode_enqueue = pure.decode_enqueue
decode_ack = pure.decode_ack
decode_nack = pure.decode_nack
encode_delivery = pure.encode_delivery
encode_enqueue_result = pure.encode_enqueue_result
encode_ack_result = pure.encode_ack_result
encode_nack_result = pure.encode_nack_result

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
