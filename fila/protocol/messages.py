"""Every FIBP body, both directions, described once and coded generically.

Each body type has a layout: a list of ``(field, type)`` pairs in wire order,
named as in the server's codec (and in ``vectors/fibp_vectors.json``).
:func:`encode_body` / :func:`decode_body` turn a dict of those fields into a
payload and back; :func:`encode_message` adds the frame. Values:

============================  ===============================================
``u8 u16 u32 u64 i64``        ``int``
``f64``                       ``float``
``bool``                      ``bool`` (any non-zero byte reads as True)
``error_code``                ``int`` (unknown bytes read as 0xFF)
``string``                    ``str``
``optional<string>``          ``str`` or ``None``
``bytes``                     ``bytes``
``map<string,string>``        ``dict[str, str]`` (wire order = dict order)
``string[]``                  ``list[str]``
``array`` (u16 or u32 count)  ``list`` of dicts of the item fields
============================  ===============================================

This table is the one statement of every body layout. The hot-path functions
of the codec twins (``encode_enqueue``, ``decode_delivery`` …) are the only
hand-written copies of a layout: ``tests/test_differential.py`` holds each to
its entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from typing import Any
from typing import NamedTuple

from .. import errors as _errors  # a module: fila.errors imports fila.protocol
from . import _failures as fail
from .constants import MAX_FRAME_SIZE
from .constants import MAX_U16
from .constants import MAX_U32
from .constants import Opcode
from .pure import Reader
from .pure import Writer


class Field(NamedTuple):
    name: str
    type: str  # a primitive name, or "array"
    count_type: str | None = None  # "u16" or "u32" for arrays
    items: tuple[Field, ...] = ()


def _f(name: str, type_: str) -> Field:
    return Field(name, type_)


def _array(name: str, count: str, *items: Field) -> Field:
    return Field(name, "array", count, tuple(items))


class BodyType(NamedTuple):
    name: str  # the server codec's type name
    opcode: Opcode
    label: str  # the opcode's name, used in error messages
    fields: tuple[Field, ...]


_S = "string"
_OS = "optional<string>"
_MAP = "map<string,string>"
_EC = "error_code"

_TYPES: list[BodyType] = [
    BodyType("Handshake", Opcode.HANDSHAKE, "Handshake", (_f("protocol_version", "u16"), _f("api_key", _OS))),
    BodyType(
        "HandshakeOk",
        Opcode.HANDSHAKE_OK,
        "HandshakeOk",
        (_f("negotiated_version", "u16"), _f("node_id", "u64"), _f("max_frame_size", "u32")),
    ),
    BodyType("Ping", Opcode.PING, "Ping", ()),
    BodyType("Pong", Opcode.PONG, "Pong", ()),
    BodyType("Disconnect", Opcode.DISCONNECT, "Disconnect", ()),
    BodyType("CancelConsume", Opcode.CANCEL_CONSUME, "CancelConsume", ()),
    BodyType(
        "EnqueueRequest",
        Opcode.ENQUEUE,
        "Enqueue",
        (_array("messages", "u32", _f("queue", _S), _f("headers", _MAP), _f("payload", "bytes")),),
    ),
    BodyType(
        "EnqueueResponse",
        Opcode.ENQUEUE_RESULT,
        "EnqueueResult",
        (_array("results", "u32", _f("error_code", _EC), _f("message_id", _S)),),
    ),
    BodyType("ConsumeRequest", Opcode.CONSUME, "Consume", (_f("queue", _S),)),
    BodyType("ConsumeOkResponse", Opcode.CONSUME_OK, "ConsumeOk", (_f("consumer_id", _S),)),
    BodyType(
        "DeliveryBatch",
        Opcode.DELIVERY,
        "Delivery",
        (
            _array(
                "messages",
                "u32",
                _f("message_id", _S),
                _f("queue", _S),
                _f("headers", _MAP),
                _f("payload", "bytes"),
                _f("fairness_key", _S),
                _f("weight", "u32"),
                _f("throttle_keys", "string[]"),
                _f("attempt_count", "u32"),
                _f("enqueued_at", "u64"),
                _f("leased_at", "u64"),
            ),
        ),
    ),
    BodyType("AckRequest", Opcode.ACK, "Ack", (_array("items", "u32", _f("queue", _S), _f("message_id", _S)),)),
    BodyType("AckResponse", Opcode.ACK_RESULT, "AckResult", (_array("results", "u32", _f("error_code", _EC)),)),
    BodyType(
        "NackRequest",
        Opcode.NACK,
        "Nack",
        (_array("items", "u32", _f("queue", _S), _f("message_id", _S), _f("error", _S)),),
    ),
    BodyType("NackResponse", Opcode.NACK_RESULT, "NackResult", (_array("results", "u32", _f("error_code", _EC)),)),
    BodyType(
        "ErrorFrame",
        Opcode.ERROR,
        "Error",
        (_f("error_code", _EC), _f("message", _S), _f("metadata", _MAP)),
    ),
    BodyType(
        "CreateQueueRequest",
        Opcode.CREATE_QUEUE,
        "CreateQueue",
        (
            _f("name", _S),
            _f("on_enqueue_script", _OS),
            _f("on_failure_script", _OS),
            _f("visibility_timeout_ms", "u64"),
        ),
    ),
    BodyType(
        "CreateQueueResponse",
        Opcode.CREATE_QUEUE_RESULT,
        "CreateQueueResult",
        (_f("error_code", _EC), _f("queue_id", _S)),
    ),
    BodyType("DeleteQueueRequest", Opcode.DELETE_QUEUE, "DeleteQueue", (_f("queue", _S),)),
    BodyType("DeleteQueueResponse", Opcode.DELETE_QUEUE_RESULT, "DeleteQueueResult", (_f("error_code", _EC),)),
    BodyType("GetStatsRequest", Opcode.GET_STATS, "GetStats", (_f("queue", _S),)),
    BodyType(
        "GetStatsResponse",
        Opcode.GET_STATS_RESULT,
        "GetStatsResult",
        (
            _f("error_code", _EC),
            _f("depth", "u64"),
            _f("in_flight", "u64"),
            _f("active_fairness_keys", "u64"),
            _f("active_consumers", "u32"),
            _f("quantum", "u32"),
            _f("leader_node_id", "u64"),
            _f("replication_count", "u32"),
            _array(
                "per_key_stats",
                "u16",
                _f("key", _S),
                _f("pending_count", "u64"),
                _f("current_deficit", "i64"),
                _f("weight", "u32"),
            ),
            _array(
                "per_throttle_stats",
                "u16",
                _f("key", _S),
                _f("tokens", "f64"),
                _f("rate_per_second", "f64"),
                _f("burst", "f64"),
            ),
        ),
    ),
    BodyType("ListQueuesRequest", Opcode.LIST_QUEUES, "ListQueues", ()),
    BodyType(
        "ListQueuesResponse",
        Opcode.LIST_QUEUES_RESULT,
        "ListQueuesResult",
        (
            _f("error_code", _EC),
            _f("cluster_node_count", "u32"),
            _array(
                "queues",
                "u16",
                _f("name", _S),
                _f("depth", "u64"),
                _f("in_flight", "u64"),
                _f("active_consumers", "u32"),
                _f("leader_node_id", "u64"),
            ),
        ),
    ),
    BodyType("SetConfigRequest", Opcode.SET_CONFIG, "SetConfig", (_f("key", _S), _f("value", _S))),
    BodyType("SetConfigResponse", Opcode.SET_CONFIG_RESULT, "SetConfigResult", (_f("error_code", _EC),)),
    BodyType("GetConfigRequest", Opcode.GET_CONFIG, "GetConfig", (_f("key", _S),)),
    BodyType(
        "GetConfigResponse",
        Opcode.GET_CONFIG_RESULT,
        "GetConfigResult",
        (_f("error_code", _EC), _f("value", _S)),
    ),
    BodyType("ListConfigRequest", Opcode.LIST_CONFIG, "ListConfig", (_f("prefix", _S),)),
    BodyType(
        "ListConfigResponse",
        Opcode.LIST_CONFIG_RESULT,
        "ListConfigResult",
        (_f("error_code", _EC), _array("entries", "u16", _f("key", _S), _f("value", _S))),
    ),
    BodyType("RedriveRequest", Opcode.REDRIVE, "Redrive", (_f("dlq_queue", _S), _f("count", "u64"))),
    BodyType(
        "RedriveResponse",
        Opcode.REDRIVE_RESULT,
        "RedriveResult",
        (_f("error_code", _EC), _f("redriven", "u64")),
    ),
    BodyType(
        "CreateApiKeyRequest",
        Opcode.CREATE_API_KEY,
        "CreateApiKey",
        (_f("name", _S), _f("expires_at_ms", "u64"), _f("is_superadmin", "bool")),
    ),
    BodyType(
        "CreateApiKeyResponse",
        Opcode.CREATE_API_KEY_RESULT,
        "CreateApiKeyResult",
        (_f("error_code", _EC), _f("key_id", _S), _f("key", _S), _f("is_superadmin", "bool")),
    ),
    BodyType("RevokeApiKeyRequest", Opcode.REVOKE_API_KEY, "RevokeApiKey", (_f("key_id", _S),)),
    BodyType("RevokeApiKeyResponse", Opcode.REVOKE_API_KEY_RESULT, "RevokeApiKeyResult", (_f("error_code", _EC),)),
    BodyType("ListApiKeysRequest", Opcode.LIST_API_KEYS, "ListApiKeys", ()),
    BodyType(
        "ListApiKeysResponse",
        Opcode.LIST_API_KEYS_RESULT,
        "ListApiKeysResult",
        (
            _f("error_code", _EC),
            _array(
                "keys",
                "u16",
                _f("key_id", _S),
                _f("name", _S),
                _f("created_at_ms", "u64"),
                _f("expires_at_ms", "u64"),
                _f("is_superadmin", "bool"),
            ),
        ),
    ),
    BodyType(
        "SetAclRequest",
        Opcode.SET_ACL,
        "SetAcl",
        (_f("key_id", _S), _array("permissions", "u16", _f("kind", _S), _f("pattern", _S))),
    ),
    BodyType("SetAclResponse", Opcode.SET_ACL_RESULT, "SetAclResult", (_f("error_code", _EC),)),
    BodyType("GetAclRequest", Opcode.GET_ACL, "GetAcl", (_f("key_id", _S),)),
    BodyType(
        "GetAclResponse",
        Opcode.GET_ACL_RESULT,
        "GetAclResult",
        (
            _f("error_code", _EC),
            _f("key_id", _S),
            _f("is_superadmin", "bool"),
            _array("permissions", "u16", _f("kind", _S), _f("pattern", _S)),
        ),
    ),
]

BODY_TYPES: dict[str, BodyType] = {t.name: t for t in _TYPES}
"""Body types by the server codec's type name."""

BODY_TYPE_BY_OPCODE: dict[int, BodyType] = {int(t.opcode): t for t in _TYPES}
"""Body types by opcode (one type per opcode)."""

_READERS: dict[str, Callable[[Reader, str], Any]] = {
    "u8": Reader.read_u8,
    "u16": Reader.read_u16,
    "u32": Reader.read_u32,
    "u64": Reader.read_u64,
    "i64": Reader.read_i64,
    "f64": Reader.read_f64,
    "bool": Reader.read_bool,
    "error_code": Reader.read_error_code,
    "string": Reader.read_string,
    "optional<string>": Reader.read_optional_string,
    "bytes": Reader.read_bytes,
    "map<string,string>": Reader.read_string_map,
    "string[]": Reader.read_string_list,
}

_WRITERS: dict[str, Callable[[Writer, Any, str], Writer]] = {
    "u8": Writer.write_u8,
    "u16": Writer.write_u16,
    "u32": Writer.write_u32,
    "u64": Writer.write_u64,
    "i64": Writer.write_i64,
    "f64": Writer.write_f64,
    "bool": Writer.write_bool,
    "error_code": Writer.write_u8,
    "string": Writer.write_string,
    "optional<string>": Writer.write_optional_string,
    "bytes": Writer.write_bytes,
    "map<string,string>": Writer.write_string_map,
    "string[]": Writer.write_string_list,
}


def _body_type(type_name: str | int) -> BodyType:
    table: Mapping[Any, BodyType] = BODY_TYPE_BY_OPCODE if isinstance(type_name, int) else BODY_TYPES
    try:
        return table[type_name]
    except KeyError:
        raise _errors.EncodeError(f"no FIBP body type {type_name!r}") from None


def _read_fields(r: Reader, label: str, fields: tuple[Field, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields:
        if f.type == "array":
            what = f"{label}.{f.name} count"
            count = r.read_count(what) if f.count_type == "u32" else r.read_u16(what)
            out[f.name] = [_read_fields(r, label, f.items) for _ in range(count)]
        else:
            out[f.name] = _READERS[f.type](r, f"{label}.{f.name}")
    return out


def _write_fields(w: Writer, label: str, fields: tuple[Field, ...], values: Mapping[str, Any]) -> None:
    if not isinstance(values, Mapping):
        raise fail.not_mapping(label, values)
    for f in fields:
        if f.name not in values:
            raise _errors.EncodeError(f"{label}.{f.name} is missing (a {f.type} field)")
        value = values[f.name]
        if f.type == "array":
            what = f"{label}.{f.name}"
            if not isinstance(value, (list, tuple)):
                raise fail.not_sequence(what, value)
            w.write_count(len(value), what + " count", MAX_U32 if f.count_type == "u32" else MAX_U16)
            for item in value:
                _write_fields(w, label, f.items, item)
        else:
            _WRITERS[f.type](w, value, f"{label}.{f.name}")


def decode_body(type_name: str | int, payload: bytes | bytearray | memoryview) -> dict[str, Any]:
    """Decode a payload of the body type named (or of the opcode given).

    Bytes after the last known field are ignored. Raises
    :class:`~fila.errors.DecodeError` on malformed input.
    """
    t = _body_type(type_name)
    return _read_fields(Reader(payload), t.label, t.fields)


def encode_body(type_name: str | int, fields: Mapping[str, Any]) -> bytes:
    """The payload of a body type from a dict of its fields."""
    t = _body_type(type_name)
    w = Writer()
    _write_fields(w, t.label, t.fields, fields)
    return w.payload()


def encode_message(
    type_name: str | int,
    request_id: int,
    fields: Mapping[str, Any] | None = None,
    *,
    max_frame_size: int = MAX_FRAME_SIZE,
) -> bytes:
    """Wire bytes (one frame or continuation frames) of a body type."""
    t = _body_type(type_name)
    w = Writer()
    _write_fields(w, t.label, t.fields, fields or {})
    return w.frame(t.opcode, request_id, max_frame_size)
