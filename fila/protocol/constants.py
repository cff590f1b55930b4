"""FIBP v1 constants: opcodes, error codes, flags and limits (see PROTOCOL.md).

The one source of these values: the compiled twin gets them from
``fila/_speedups/_constants.pxd``, which ``scripts/gen-pxd`` generates from
this file (a test fails when it is stale). Standard library only, so that it
can be loaded by path and imported without the codec.
"""

from __future__ import annotations

from enum import IntEnum

PROTOCOL_VERSION = 1
DEFAULT_PORT = 5555

LENGTH_PREFIX_SIZE = 4
HEADER_SIZE = 6  # opcode + flags + request_id, counted in the length prefix
FRAME_OVERHEAD = LENGTH_PREFIX_SIZE + HEADER_SIZE
MAX_FRAME_SIZE = 16 * 1024 * 1024  # largest allowed value of the length prefix
FLAG_CONTINUATION = 0x01

MAX_DECODED_COUNT = 1_000_000  # u32 element counts above this are refused
DEFAULT_MAX_PENDING_STREAMS = 64
DEFAULT_MAX_REASSEMBLED_SIZE = 256 * MAX_FRAME_SIZE  # 4 GiB, the server's cap

MAX_U16 = 0xFFFF
MAX_U32 = 0xFFFF_FFFF
MAX_U64 = 0xFFFF_FFFF_FFFF_FFFF


class Opcode(IntEnum):
    """Every FIBP v1 opcode a client or server may put on the wire."""

    HANDSHAKE = 0x01
    HANDSHAKE_OK = 0x02
    PING = 0x03
    PONG = 0x04
    DISCONNECT = 0x05
    ENQUEUE = 0x10
    ENQUEUE_RESULT = 0x11
    CONSUME = 0x12
    CONSUME_OK = 0x13
    DELIVERY = 0x14
    CANCEL_CONSUME = 0x15
    ACK = 0x16
    ACK_RESULT = 0x17
    NACK = 0x18
    NACK_RESULT = 0x19
    ERROR = 0xFE
    CREATE_QUEUE = 0xFD
    CREATE_QUEUE_RESULT = 0xFC
    DELETE_QUEUE = 0xFB
    DELETE_QUEUE_RESULT = 0xFA
    GET_STATS = 0xF9
    GET_STATS_RESULT = 0xF8
    LIST_QUEUES = 0xF7
    LIST_QUEUES_RESULT = 0xF6
    SET_CONFIG = 0xF5
    SET_CONFIG_RESULT = 0xF4
    GET_CONFIG = 0xF3
    GET_CONFIG_RESULT = 0xF2
    LIST_CONFIG = 0xF1
    LIST_CONFIG_RESULT = 0xF0
    REDRIVE = 0xEF
    REDRIVE_RESULT = 0xEE
    CREATE_API_KEY = 0xED
    CREATE_API_KEY_RESULT = 0xEC
    REVOKE_API_KEY = 0xEB
    REVOKE_API_KEY_RESULT = 0xEA
    LIST_API_KEYS = 0xE9
    LIST_API_KEYS_RESULT = 0xE8
    SET_ACL = 0xE7
    SET_ACL_RESULT = 0xE6
    GET_ACL = 0xE5
    GET_ACL_RESULT = 0xE4


class ErrorCode(IntEnum):
    """The u8 error codes of Error frames and per-item results."""

    OK = 0x00
    QUEUE_NOT_FOUND = 0x01
    MESSAGE_NOT_FOUND = 0x02
    QUEUE_ALREADY_EXISTS = 0x03
    LUA_COMPILATION_ERROR = 0x04
    STORAGE_ERROR = 0x05
    NOT_A_DLQ = 0x06
    PARENT_QUEUE_NOT_FOUND = 0x07
    INVALID_CONFIG_VALUE = 0x08
    CHANNEL_FULL = 0x09
    UNAUTHORIZED = 0x0A
    FORBIDDEN = 0x0B
    NOT_LEADER = 0x0C
    UNSUPPORTED_VERSION = 0x0D
    INVALID_FRAME = 0x0E
    API_KEY_NOT_FOUND = 0x0F
    NODE_NOT_READY = 0x10
    INTERNAL_ERROR = 0xFF


_KNOWN_CODES = frozenset(int(c) for c in ErrorCode)
_INTERNAL_ERROR = int(ErrorCode.INTERNAL_ERROR)


def normalize_error_code(code: int) -> int:
    """Map a wire byte to a known code: unknown bytes read as InternalError (0xFF).

    The server reads unknown bytes the same way. This is the only statement of
    the rule: :data:`ERROR_CODE_BY_BYTE` and both codec twins are built from it.
    """
    return code if code in _KNOWN_CODES else _INTERNAL_ERROR


ERROR_CODE_BY_BYTE: bytes = bytes(normalize_error_code(b) for b in range(256))
""":func:`normalize_error_code` as a 256-byte table (index it, or ``bytes.translate``)."""
