"""Every non-hot-path request: how to build it and how to read its answer.

Both clients call the builders here and send the resulting :class:`Op`;
whatever comes back goes through :func:`parse_response`. Keeping this in one
place means ``Client`` and ``AsyncClient`` cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from .errors import ProtocolError, ServerError, error_for_code
from .protocol import Opcode, decode_body
from .types import (
    Acl,
    ApiKey,
    ApiKeyInfo,
    FairnessKeyStats,
    Permission,
    QueueInfo,
    QueueList,
    Stats,
    ThrottleStats,
)

__all__ = ["Op", "error_from_frame", "parse_response"]

_OK = 0


class Op(NamedTuple):
    """A request ready to send: body type, fields, and how to read the answer."""

    request: str  # body type name (fila.protocol.messages)
    fields: Mapping[str, Any]
    result_opcode: int
    parse: Callable[[dict[str, Any]], Any]


def error_from_frame(payload: bytes) -> ServerError:
    """The typed exception carried by an Error frame (0xFE)."""
    body = decode_body("ErrorFrame", payload)
    return error_for_code(body["error_code"], body["message"], body["metadata"])


def parse_response(op: Op, opcode: int, payload: bytes) -> Any:
    """The value of a response frame for ``op``; raise its error if it is one."""
    if opcode == Opcode.ERROR:
        raise error_from_frame(payload)
    if opcode != op.result_opcode:
        raise ProtocolError(f"expected opcode 0x{op.result_opcode:02x} in answer to {op.request}, got 0x{opcode:02x}")
    return op.parse(decode_body(op.result_opcode, payload))


def _check(body: dict[str, Any], message: str = "") -> None:
    code = body["error_code"]
    if code != _OK:
        raise error_for_code(code, message)


# ------------------------------------------------------------------ parsers


def _none(body: dict[str, Any]) -> None:
    _check(body)


def _create_queue(body: dict[str, Any]) -> str:
    # On LuaCompilationError the server puts the error text in queue_id.
    code = body["error_code"]
    if code != _OK:
        raise error_for_code(code, body["queue_id"] if code == 0x04 else "")
    return str(body["queue_id"])


def _stats(body: dict[str, Any]) -> Stats:
    _check(body)
    return Stats(
        depth=body["depth"],
        in_flight=body["in_flight"],
        active_fairness_keys=body["active_fairness_keys"],
        active_consumers=body["active_consumers"],
        quantum=body["quantum"],
        leader_node_id=body["leader_node_id"],
        replication_count=body["replication_count"],
        per_key=tuple(
            FairnessKeyStats(k["key"], k["pending_count"], k["current_deficit"], k["weight"])
            for k in body["per_key_stats"]
        ),
        per_throttle=tuple(
            ThrottleStats(t["key"], t["tokens"], t["rate_per_second"], t["burst"]) for t in body["per_throttle_stats"]
        ),
    )


def _queues(body: dict[str, Any]) -> QueueList:
    _check(body)
    return QueueList(
        queues=tuple(
            QueueInfo(q["name"], q["depth"], q["in_flight"], q["active_consumers"], q["leader_node_id"])
            for q in body["queues"]
        ),
        cluster_node_count=body["cluster_node_count"],
    )


def _value(body: dict[str, Any]) -> str:
    _check(body)
    return str(body["value"])


def _entries(body: dict[str, Any]) -> dict[str, str]:
    _check(body)
    return {e["key"]: e["value"] for e in body["entries"]}


def _redriven(body: dict[str, Any]) -> int:
    _check(body)
    return int(body["redriven"])


def _api_key(body: dict[str, Any]) -> ApiKey:
    _check(body)
    return ApiKey(body["key_id"], body["key"], body["is_superadmin"])


def _api_keys(body: dict[str, Any]) -> list[ApiKeyInfo]:
    _check(body)
    return [
        ApiKeyInfo(k["key_id"], k["name"], k["created_at_ms"], k["expires_at_ms"], k["is_superadmin"])
        for k in body["keys"]
    ]


def _acl(body: dict[str, Any]) -> Acl:
    _check(body)
    return Acl(
        body["key_id"],
        body["is_superadmin"],
        tuple(Permission(p["kind"], p["pattern"]) for p in body["permissions"]),
    )


# ----------------------------------------------------------------- builders


def create_queue(name: str, on_enqueue: str | None, on_failure: str | None, visibility_timeout_ms: int) -> Op:
    fields = {
        "name": name,
        "on_enqueue_script": on_enqueue,
        "on_failure_script": on_failure,
        "visibility_timeout_ms": visibility_timeout_ms,
    }
    return Op("CreateQueueRequest", fields, Opcode.CREATE_QUEUE_RESULT, _create_queue)


def delete_queue(name: str) -> Op:
    return Op("DeleteQueueRequest", {"queue": name}, Opcode.DELETE_QUEUE_RESULT, _none)


def get_stats(queue: str) -> Op:
    return Op("GetStatsRequest", {"queue": queue}, Opcode.GET_STATS_RESULT, _stats)


def list_queues() -> Op:
    return Op("ListQueuesRequest", {}, Opcode.LIST_QUEUES_RESULT, _queues)


def set_config(key: str, value: str) -> Op:
    return Op("SetConfigRequest", {"key": key, "value": value}, Opcode.SET_CONFIG_RESULT, _none)


def get_config(key: str) -> Op:
    return Op("GetConfigRequest", {"key": key}, Opcode.GET_CONFIG_RESULT, _value)


def list_config(prefix: str) -> Op:
    return Op("ListConfigRequest", {"prefix": prefix}, Opcode.LIST_CONFIG_RESULT, _entries)


def redrive(dlq_queue: str, count: int) -> Op:
    fields = {"dlq_queue": dlq_queue, "count": count}
    return Op("RedriveRequest", fields, Opcode.REDRIVE_RESULT, _redriven)


def create_api_key(name: str, expires_at_ms: int, superadmin: bool) -> Op:
    fields = {"name": name, "expires_at_ms": expires_at_ms, "is_superadmin": superadmin}
    return Op("CreateApiKeyRequest", fields, Opcode.CREATE_API_KEY_RESULT, _api_key)


def revoke_api_key(key_id: str) -> Op:
    return Op("RevokeApiKeyRequest", {"key_id": key_id}, Opcode.REVOKE_API_KEY_RESULT, _none)


def list_api_keys() -> Op:
    return Op("ListApiKeysRequest", {}, Opcode.LIST_API_KEYS_RESULT, _api_keys)


def set_acl(key_id: str, permissions: Iterable[Permission | tuple[str, str]]) -> Op:
    perms = []
    for p in permissions:
        if isinstance(p, str) or len(p) != 2:
            raise TypeError(f"a permission is a Permission(kind, pattern) or a (kind, pattern) pair, got {p!r}")
        perms.append({"kind": p[0], "pattern": p[1]})
    fields = {"key_id": key_id, "permissions": perms}
    return Op("SetAclRequest", fields, Opcode.SET_ACL_RESULT, _none)


def get_acl(key_id: str) -> Op:
    return Op("GetAclRequest", {"key_id": key_id}, Opcode.GET_ACL_RESULT, _acl)


# ------------------------------------------------------------------ hot path


def hot_result(
    opcode: int, payload: bytes, expected: int, decode: Callable[[bytes], list[Any]], count: int
) -> list[Any]:
    """Decode an Enqueue/Ack/Nack answer of ``count`` items; raise the Error frame's error if it is one."""
    if opcode == Opcode.ERROR:
        raise error_from_frame(payload)
    if opcode != expected:
        raise ProtocolError(f"expected opcode 0x{expected:02x}, got 0x{opcode:02x}")
    items = decode(payload)
    if len(items) != count:
        raise ProtocolError(f"the server answered {len(items)} items for a request of {count}")
    return items


def ack_item(item: Any) -> tuple[str, str]:
    """``(queue, message_id)`` from a pair or a delivered ``Message``."""
    if type(item) is tuple and len(item) == 2:
        return item
    if hasattr(item, "queue") and hasattr(item, "id"):
        return (item.queue, item.id)
    if isinstance(item, (list, tuple)) and len(item) == 2:
        return (item[0], item[1])
    raise TypeError(f"an ack item is a Message or a (queue, message_id) pair, got {item!r}")


def nack_item(item: Any) -> tuple[str, str, str]:
    """``(queue, message_id, error)`` from a triple or a ``(Message, error)`` pair."""
    if type(item) is tuple and len(item) == 3:
        return item
    if isinstance(item, (list, tuple)):
        if len(item) == 2 and hasattr(item[0], "queue"):
            return (item[0].queue, item[0].id, item[1])
        if len(item) == 3:
            return (item[0], item[1], item[2])
    raise TypeError(f"a nack item is (queue, message_id, error) or (Message, error), got {item!r}")


def enqueue_item(message: Any) -> tuple[str, Any, Any]:
    """Codec order ``(queue, headers, payload)`` from the user's ``(queue, payload[, headers])``."""
    if not isinstance(message, (tuple, list)) or not 2 <= len(message) <= 3:
        raise TypeError(f"a message is (queue, payload) or (queue, payload, headers), got {message!r}")
    return (message[0], message[2] if len(message) == 3 else None, message[1])


def check_enqueue(queue: Any, payload: Any, headers: Any) -> None:
    """Fail early (before batching) on arguments the encoder would refuse."""
    if type(queue) is not str:
        raise TypeError(f"queue must be str, got {type(queue).__name__}")
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise TypeError(f"payload must be bytes-like (bytes, bytearray or memoryview), got {type(payload).__name__}")
    if headers is not None and not isinstance(headers, Mapping):
        raise TypeError(f"headers must be a dict of str to str or None, got {type(headers).__name__}")


def ack_size(item: tuple[str, ...]) -> int:
    return 3 * sum(len(s) for s in item) + 8
