"""Every non-hot-path request: how to build it and how to read its answer.

Both clients call the builders here and send the resulting :class:`Op`;
whatever comes back goes through :func:`parse_response`. Keeping this in one
place means ``Client`` and ``AsyncClient`` cannot drift apart.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from ._accumulator import encode_batches, item_size
from .errors import ChannelFullError, EncodeError, FilaError, ProtocolError, ServerError, error_for_code
from .protocol import (
    Opcode,
    decode_ack_result,
    decode_body,
    decode_enqueue_result,
    decode_nack_result,
    encode_ack,
    encode_enqueue,
    encode_message,
    encode_nack,
)
from .types import (
    Acl,
    ApiKey,
    ApiKeyInfo,
    EnqueueResult,
    FairnessKeyStats,
    Permission,
    QueueInfo,
    QueueList,
    Stats,
    ThrottleStats,
)

__all__ = [
    "AckBatch",
    "Backoff",
    "EnqueueBatchBase",
    "Group",
    "HotBatch",
    "Op",
    "Retry",
    "error_from_frame",
    "parse_response",
]

log = logging.getLogger("fila")

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


def encode_op(op: Op, core: Any) -> tuple[int, bytes]:
    """A fresh request id of ``core``'s connection and ``op`` encoded with it."""
    rid: int = core.next_id()
    return rid, encode_message(op.request, rid, op.fields, max_frame_size=core.max_frame_size)


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


def ack_errors(outcomes: Iterable[Any]) -> list[ServerError | None]:
    """Per-item results of ack_many / nack_many: None, or the item's error."""
    return [out if isinstance(out, BaseException) else (None if out == 0 else error_for_code(out)) for out in outcomes]  # type: ignore[misc]


def enqueue_results(outcomes: Iterable[Any]) -> list[EnqueueResult]:
    """Per-message results of enqueue_many from ``(code, id_or_text)`` items or exceptions."""
    result: list[EnqueueResult] = []
    append = result.append
    for out in outcomes:
        if type(out) is tuple:
            code, mid = out
            append(EnqueueResult(mid) if code == 0 else EnqueueResult(None, error_for_code(code, mid)))
        else:
            append(EnqueueResult(None, out))
    return result


def check_consume_ok(frame: Any) -> None:
    """Raise unless ``frame`` is the ConsumeOk answering a Consume."""
    if frame.opcode == Opcode.ERROR:
        raise error_from_frame(frame.payload)
    if frame.opcode != Opcode.CONSUME_OK:
        raise ProtocolError(f"expected ConsumeOk, got opcode 0x{frame.opcode:02x}")


# ------------------------------------------------------------ retries, batches


class Backoff:
    """Exponential backoff with jitter: each delay is drawn from [d/2, d], d doubling up to ``maximum``."""

    __slots__ = ("_current", "initial", "maximum")

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = maximum
        self._current = initial

    @property
    def current(self) -> float:
        """The upper bound of the next delay."""
        return self._current

    def next(self) -> float:
        d = self._current
        self._current = min(d * 2, self.maximum)
        return random.uniform(d / 2, d)

    def reset(self) -> None:
        self._current = self.initial


class Retry:
    """ChannelFull retries of one request (safe: the server refused all of it), until ``deadline``."""

    __slots__ = ("_backoff", "deadline")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self._backoff: Backoff | None = None

    def delay(self, retry_after_ms: int | None = None) -> float | None:
        """The pause before the next attempt (at least ``retry_after_ms``), or None when past the deadline."""
        backoff = self._backoff = self._backoff or Backoff(0.01, 1.0)
        delay = backoff.next()
        if retry_after_ms:
            delay = max(delay, retry_after_ms / 1000.0)
        return None if time.monotonic() + delay >= self.deadline else delay

    def pause_or_raise(self, exc: ChannelFullError) -> float:
        """The pause before retrying a request ``exc`` refused; raises ``exc`` when that passes the deadline."""
        delay = self.delay()
        if delay is None:
            raise exc
        return delay


class HotKind(NamedTuple):
    """How one hot-path request type is encoded, answered and sized."""

    encode: Callable[..., bytes]
    decode: Callable[[bytes], list[Any]]
    result_op: int
    size_of: Callable[[Any], int]


class HotBatch:
    """The bookkeeping of one ``enqueue_many`` / ``ack_many`` / ``nack_many`` call.

    The client loops: :meth:`frames` for its connection, send them, feed
    each answer to :meth:`answer`, then sleep :meth:`retry_delay` and loop
    while it is not None (ChannelFull parts are sent again). ``out`` holds
    per item the decoded result or a ServerError.
    """

    __slots__ = ("_backoff", "_items", "_kind", "_todo", "deadline", "out")

    def __init__(self, kind: HotKind, items: list[Any], deadline: float) -> None:
        self._kind = kind
        self._items = items
        self.deadline = deadline
        self.out: list[Any] = [None] * len(items)
        self._todo = [(0, len(items))]
        self._backoff: Backoff | None = None

    def frames(self, core: Any) -> list[tuple[int, bytes, int, int]]:
        """What is left to send, as frames of ``core``'s connection: ``(request_id, data, start, end)``."""
        items = self._items
        kind = self._kind
        out = []
        for start, end in self._todo:
            chunk = items if (start, end) == (0, len(items)) else items[start:end]
            for rid, data, s, e in encode_batches(
                kind.encode, chunk, core.max_frame_size, core.next_id, -1, kind.size_of
            ):
                out.append((rid, data, start + s, start + e))
        self._todo = []
        return out

    def answer(self, frame: Any, start: int, end: int) -> None:
        """Take the answer to the frame of items ``start:end``."""
        try:
            results = hot_result(frame.opcode, frame.payload, self._kind.result_op, self._kind.decode, end - start)
        except ChannelFullError as exc:
            backoff = self._backoff = self._backoff or Backoff(0.01, 1.0)
            if time.monotonic() + backoff.current >= self.deadline:
                self.out[start:end] = [exc] * (end - start)
            else:
                self._todo.append((start, end))
            return
        except ServerError as exc:
            self.out[start:end] = [exc] * (end - start)
            return
        self.out[start:end] = results

    def retry_delay(self) -> float | None:
        """None when every item has its outcome; else the pause before sending the refused parts again."""
        if not self._todo:
            return None
        assert self._backoff is not None
        return self._backoff.next()


class Group:
    """Calls ``on_done`` once after ``n`` frames of one send have finished (any thread)."""

    __slots__ = ("_left", "_lock", "_on_done")

    def __init__(self, n: int, on_done: Callable[[], None]) -> None:
        self._left = n
        self._on_done = on_done
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self._left += n

    def one_done(self) -> None:
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last:
            self._on_done()


def enqueue_frames(
    core: Any, items: list[Any], futs: list[Any], size: int, reject: Callable[[Any, BaseException], None]
) -> tuple[list[Any], list[Any], list[tuple[int, bytes, int, int]]]:
    """Encode an accumulator batch for ``core``'s connection: ``(items, futs, frames)``.

    A message the encoder refuses gets its error through ``reject(fut, exc)``
    and is left out; the others go.
    """
    try:
        return items, futs, encode_batches(encode_enqueue, items, core.max_frame_size, core.next_id, size)
    except EncodeError:
        pass
    good: list[Any] = []
    good_futs: list[Any] = []
    for item, fut in zip(items, futs, strict=True):
        try:
            encode_enqueue(1, [item], core.max_frame_size)
        except (EncodeError, TypeError, ValueError) as exc:
            reject(fut, exc)
        else:
            good.append(item)
            good_futs.append(fut)
    frames = encode_batches(encode_enqueue, good, core.max_frame_size, core.next_id, -1) if good else []
    return good, good_futs, frames


class EnqueueBatchBase:
    """Waiter of one Enqueue frame sent for an accumulator.

    The subclass says how its futures are resolved (:meth:`_resolve`,
    :meth:`_fail_futures`) and how a ChannelFull answer is sent again later
    (:meth:`_resend_later`); ``group`` hears when the frame is finished.
    """

    __slots__ = ("client", "futs", "group", "items", "retry", "sent")

    def __init__(self, client: Any, items: list[Any], futs: list[Any], group: Group, deadline: float) -> None:
        self.client = client
        self.items = items
        self.futs = futs
        self.group = group
        self.retry = Retry(deadline)
        self.sent = False

    def complete(self, frame: Any) -> None:
        try:
            results = hot_result(
                frame.opcode, frame.payload, Opcode.ENQUEUE_RESULT, decode_enqueue_result, len(self.futs)
            )
        except ChannelFullError as exc:
            delay = self.retry.delay(exc.retry_after_ms)
            if delay is not None and self._resend_later(delay):
                return
            self._fail_futures(exc)
        except (ServerError, ProtocolError) as exc:
            self._fail_futures(exc)
        else:
            self._resolve(results)
        self._finish()

    def _resolve(self, results: list[tuple[int, str]]) -> None:
        raise NotImplementedError

    def _fail_futures(self, exc: BaseException) -> None:
        raise NotImplementedError

    def _resend_later(self, delay: float) -> bool:
        raise NotImplementedError

    def _finish(self) -> None:
        self.group.one_done()

    def _write(self, conn: Any, rid: int, data: bytes) -> None:
        """(Re)send this frame as request ``rid`` on ``conn``."""
        self.sent = False
        conn.core.register(rid, self)
        conn.write(data, self)


class AckBatch:
    """Waiter of one Ack/Nack frame a consumer sent: failures are logged (the message comes back later)."""

    __slots__ = ("group", "items", "kind", "sent", "what")

    def __init__(self, items: list[Any], kind: HotKind, what: str, group: Group) -> None:
        self.items = items
        self.kind = kind
        self.what = what
        self.group = group
        self.sent = False

    def complete(self, frame: Any) -> None:
        try:
            codes = hot_result(frame.opcode, frame.payload, self.kind.result_op, self.kind.decode, len(self.items))
        except FilaError as exc:
            log.warning("%s of %d messages failed: %s", self.what, len(self.items), exc)
        else:
            for item, code in zip(self.items, codes, strict=True):
                if code:
                    log.warning("%s of message %s on %r failed: %s", self.what, item[1], item[0], error_for_code(code))
        self.group.one_done()

    def fail(self, exc: BaseException) -> None:
        log.warning("%s of %d messages not confirmed: %s", self.what, len(self.items), exc)
        self.group.one_done()


def send_acks(conn: Any, items: list[Any], kind: HotKind, what: str, on_done: Callable[[], None]) -> None:
    """Write an ack/nack accumulator batch on ``conn``; ``on_done`` once every frame is answered or failed."""
    core = conn.core
    frames = encode_batches(kind.encode, items, core.max_frame_size, core.next_id, -1, kind.size_of)
    group = Group(len(frames), on_done)
    for rid, data, s, e in frames:
        waiter = AckBatch(items[s:e], kind, what, group)
        core.register(rid, waiter)
        conn.write(data, waiter)


def split_frames(
    frames: list[tuple[int, bytes, int, int]], items: list[Any], futs: list[Any]
) -> list[tuple[int, bytes, list[Any], list[Any]]]:
    """``(request_id, data, items, futures)`` per frame of :func:`enqueue_frames` (no copy for a single frame)."""
    whole = len(items)
    return [
        (rid, data, items, futs) if s == 0 and e == whole else (rid, data, items[s:e], futs[s:e])
        for rid, data, s, e in frames
    ]


ENQUEUE = HotKind(encode_enqueue, decode_enqueue_result, Opcode.ENQUEUE_RESULT, item_size)
ACK = HotKind(encode_ack, decode_ack_result, Opcode.ACK_RESULT, ack_size)
NACK = HotKind(encode_nack, decode_nack_result, Opcode.NACK_RESULT, ack_size)
