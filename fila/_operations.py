"""Every request: how to build it and how to read its answer (sans I/O).

Both clients call the builders here and hand the resulting :class:`Op` (or
hot-path batch) to their driver; whatever comes back goes through
:func:`parse_response`. Keeping this in one place means ``Client`` and
``AsyncClient`` cannot drift apart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any
from typing import NamedTuple

from ._accumulator import encode_batches
from ._accumulator import item_size
from ._core import Retry
from ._core import error_from_frame
from ._core import item_retryable
from .errors import DecodeError
from .errors import EncodeError
from .errors import FilaConnectionError
from .errors import FilaError
from .errors import ProtocolError
from .errors import error_for_code
from .protocol import decode_ack_result
from .protocol import decode_enqueue_result
from .protocol import decode_nack_result
from .protocol import encode_ack
from .protocol import encode_enqueue
from .protocol import encode_nack
from .protocol.constants import ErrorCode
from .protocol.constants import Opcode
from .protocol.messages import decode_body
from .protocol.messages import encode_message
from .types import AclEntry
from .types import AclPermission
from .types import ApiKeyInfo
from .types import CreateApiKeyResult
from .types import EnqueueResult
from .types import FairnessKeyStat
from .types import QueueInfo
from .types import StatsResult
from .types import ThrottleKeyStat

__all__ = [
    "AckBatch",
    "EnqueueBatchBase",
    "Group",
    "HotBatch",
    "Op",
    "parse_response",
]

log = logging.getLogger("fila")

_OK = 0


class Op(NamedTuple):
    """A request ready to send: body type, fields, how to read the answer, and what to call it in errors."""

    request: str  # body type name (fila.protocol.messages)
    fields: Mapping[str, Any]
    result_opcode: int
    parse: Callable[[dict[str, Any], str], Any]
    context: str


def encode_op(op: Op, core: Any) -> tuple[int, bytes]:
    """A fresh request id of ``core``'s connection and ``op`` encoded with it."""
    rid: int = core.next_id()
    return rid, encode_message(op.request, rid, op.fields, max_frame_size=core.max_frame_size)


def parse_response(op: Op, opcode: int, payload: bytes) -> Any:
    """The value of a response frame for ``op``; raise its error if it is one."""
    try:
        if opcode == Opcode.ERROR:
            raise error_from_frame(payload, op.context)
        if opcode != op.result_opcode:
            raise ProtocolError(
                ErrorCode.INVALID_FRAME,
                f"{op.context}: expected opcode 0x{op.result_opcode:02x} in answer to {op.request}, got 0x{opcode:02x}",
            )
        body = decode_body(op.result_opcode, payload)
    except ProtocolError as exc:
        _answered_unreadably(exc)
        raise
    return op.parse(body, op.context)


def _check(body: dict[str, Any], context: str) -> None:
    code = body["error_code"]
    if code != _OK:
        raise error_for_code(code, context=context)


# ------------------------------------------------------------------ parsers


def _none(body: dict[str, Any], context: str) -> None:
    _check(body, context)


def _create_queue(body: dict[str, Any], context: str) -> None:
    # On LuaCompilationError the server puts Lua's error text in queue_id.
    code = body["error_code"]
    if code != _OK:
        raise error_for_code(code, body["queue_id"] if code == ErrorCode.LUA_COMPILATION_ERROR else "", context=context)


def _stats(body: dict[str, Any], context: str) -> StatsResult:
    _check(body, context)
    return StatsResult(
        depth=body["depth"],
        in_flight=body["in_flight"],
        active_fairness_keys=body["active_fairness_keys"],
        active_consumers=body["active_consumers"],
        quantum=body["quantum"],
        leader_node_id=body["leader_node_id"],
        replication_count=body["replication_count"],
        per_key_stats=[
            FairnessKeyStat(k["key"], k["pending_count"], k["current_deficit"], k["weight"])
            for k in body["per_key_stats"]
        ],
        per_throttle_stats=[
            ThrottleKeyStat(t["key"], t["tokens"], t["rate_per_second"], t["burst"]) for t in body["per_throttle_stats"]
        ],
    )


def _queues(body: dict[str, Any], context: str) -> list[QueueInfo]:
    _check(body, context)
    return [
        QueueInfo(q["name"], q["depth"], q["in_flight"], q["active_consumers"], q["leader_node_id"])
        for q in body["queues"]
    ]


def _value(body: dict[str, Any], context: str) -> str:
    _check(body, context)
    return str(body["value"])


def _entries(body: dict[str, Any], context: str) -> dict[str, str]:
    _check(body, context)
    return {e["key"]: e["value"] for e in body["entries"]}


def _redriven(body: dict[str, Any], context: str) -> int:
    _check(body, context)
    return int(body["redriven"])


def _api_key(body: dict[str, Any], context: str) -> CreateApiKeyResult:
    _check(body, context)
    return CreateApiKeyResult(body["key_id"], body["key"], body["is_superadmin"])


def _api_keys(body: dict[str, Any], context: str) -> list[ApiKeyInfo]:
    _check(body, context)
    return [
        ApiKeyInfo(k["key_id"], k["name"], k["created_at_ms"], k["expires_at_ms"], k["is_superadmin"])
        for k in body["keys"]
    ]


def _acl(body: dict[str, Any], context: str) -> AclEntry:
    _check(body, context)
    return AclEntry(
        body["key_id"],
        body["is_superadmin"],
        [AclPermission(p["kind"], p["pattern"]) for p in body["permissions"]],
    )


# ----------------------------------------------------------------- builders


def _str(value: Any, what: str) -> str:
    if type(value) is not str:
        raise TypeError(f"{what} must be str, got {type(value).__name__}")
    return value


def _u64(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF_FFFF_FFFF_FFFF:
        raise ValueError(f"{what} must be an int in 0..2**64-1, got {value!r}")
    return value


def create_queue(name: str, on_enqueue: str | None, on_failure: str | None, visibility_timeout_ms: int) -> Op:
    fields = {
        "name": _str(name, "queue name"),
        "on_enqueue_script": None if on_enqueue is None else _str(on_enqueue, "on_enqueue"),
        "on_failure_script": None if on_failure is None else _str(on_failure, "on_failure"),
        "visibility_timeout_ms": _u64(visibility_timeout_ms, "visibility_timeout_ms"),
    }
    return Op("CreateQueueRequest", fields, Opcode.CREATE_QUEUE_RESULT, _create_queue, f"create_queue {name!r}")


def delete_queue(name: str) -> Op:
    fields = {"queue": _str(name, "queue name")}
    return Op("DeleteQueueRequest", fields, Opcode.DELETE_QUEUE_RESULT, _none, f"delete_queue {name!r}")


def get_stats(queue: str) -> Op:
    fields = {"queue": _str(queue, "queue name")}
    return Op("GetStatsRequest", fields, Opcode.GET_STATS_RESULT, _stats, f"get_stats {queue!r}")


def list_queues() -> Op:
    return Op("ListQueuesRequest", {}, Opcode.LIST_QUEUES_RESULT, _queues, "list_queues")


def set_config(key: str, value: str) -> Op:
    fields = {"key": _str(key, "config key"), "value": _str(value, "config value")}
    return Op("SetConfigRequest", fields, Opcode.SET_CONFIG_RESULT, _none, f"set_config {key!r} = {value!r}")


def get_config(key: str) -> Op:
    fields = {"key": _str(key, "config key")}
    return Op("GetConfigRequest", fields, Opcode.GET_CONFIG_RESULT, _value, f"get_config {key!r}")


def list_config(prefix: str) -> Op:
    fields = {"prefix": _str(prefix, "prefix")}
    return Op("ListConfigRequest", fields, Opcode.LIST_CONFIG_RESULT, _entries, f"list_config {prefix!r}")


def redrive(dlq_queue: str, count: int) -> Op:
    fields = {"dlq_queue": _str(dlq_queue, "dlq_queue"), "count": _u64(count, "count")}
    return Op("RedriveRequest", fields, Opcode.REDRIVE_RESULT, _redriven, f"redrive {dlq_queue!r}")


def create_api_key(name: str, expires_at_ms: int, superadmin: bool) -> Op:
    fields = {
        "name": _str(name, "name"),
        "expires_at_ms": _u64(expires_at_ms, "expires_at_ms"),
        "is_superadmin": bool(superadmin),
    }
    return Op("CreateApiKeyRequest", fields, Opcode.CREATE_API_KEY_RESULT, _api_key, f"create_api_key {name!r}")


def revoke_api_key(key_id: str) -> Op:
    fields = {"key_id": _str(key_id, "key_id")}
    return Op("RevokeApiKeyRequest", fields, Opcode.REVOKE_API_KEY_RESULT, _none, f"revoke_api_key {key_id!r}")


def list_api_keys() -> Op:
    return Op("ListApiKeysRequest", {}, Opcode.LIST_API_KEYS_RESULT, _api_keys, "list_api_keys")


def set_acl(key_id: str, permissions: Iterable[AclPermission | tuple[str, str]]) -> Op:
    perms = []
    for p in permissions:
        if isinstance(p, AclPermission):
            perms.append({"kind": p.kind, "pattern": p.pattern})
        elif isinstance(p, (tuple, list)) and len(p) == 2 and all(type(x) is str for x in p):
            perms.append({"kind": p[0], "pattern": p[1]})
        else:
            raise TypeError(f"a permission is AclPermission(kind, pattern) or a (kind, pattern) pair of str, got {p!r}")
    fields = {"key_id": _str(key_id, "key_id"), "permissions": perms}
    return Op("SetAclRequest", fields, Opcode.SET_ACL_RESULT, _none, f"set_acl {key_id!r}")


def get_acl(key_id: str) -> Op:
    fields = {"key_id": _str(key_id, "key_id")}
    return Op("GetAclRequest", fields, Opcode.GET_ACL_RESULT, _acl, f"get_acl {key_id!r}")


# ------------------------------------------------------------------ hot path


class HotKind(NamedTuple):
    """How one hot-path request type is encoded, answered, sized and named."""

    encode: Callable[..., bytes]
    decode: Callable[[bytes], list[Any]]
    result_op: int
    size_of: Callable[[Any], int]
    what: str  # "enqueue", "ack", "nack"


def hot_result(kind: HotKind, frame: Any, count: int) -> list[Any]:
    """Decode an Enqueue/Ack/Nack answer of ``count`` items; raise the Error frame's error if it is one."""
    opcode = frame.opcode
    try:
        if opcode == Opcode.ERROR:
            raise error_from_frame(frame.payload, kind.what)
        if opcode != kind.result_op:
            raise ProtocolError(
                ErrorCode.INVALID_FRAME, f"{kind.what}: expected opcode 0x{kind.result_op:02x}, got 0x{opcode:02x}"
            )
        items = kind.decode(frame.payload)
        if len(items) != count:
            raise ProtocolError(
                ErrorCode.INVALID_FRAME,
                f"{kind.what}: the server answered {len(items)} items for a request of {count}",
            )
    except ProtocolError as exc:
        _answered_unreadably(exc)
        raise
    return items


def _answered_unreadably(exc: ProtocolError) -> None:
    """The server answered, but not readably: it acted on the request, nobody knows how."""
    if type(exc) is ProtocolError or isinstance(exc, DecodeError):
        exc.may_have_been_applied = True


def ack_item(item: Any) -> tuple[str, str]:
    """``(queue, message_id)`` from a pair or a delivered message."""
    if type(item) is tuple and len(item) == 2 and type(item[0]) is str and type(item[1]) is str:
        return item
    if hasattr(item, "queue") and hasattr(item, "id"):
        return (item.queue, item.id)
    if isinstance(item, (list, tuple)) and len(item) == 2:
        return (_str(item[0], "queue"), _str(item[1], "message id"))
    raise TypeError(f"an ack item is a ConsumeMessage or a (queue, message_id) pair, got {item!r}")


def nack_item(item: Any) -> tuple[str, str, str]:
    """``(queue, message_id, error)`` from a triple or a ``(message, error)`` pair."""
    if isinstance(item, (list, tuple)):
        if len(item) == 2 and hasattr(item[0], "queue"):
            return (item[0].queue, item[0].id, _str(item[1], "nack error"))
        if len(item) == 3:
            return (_str(item[0], "queue"), _str(item[1], "message id"), _str(item[2], "nack error"))
    raise TypeError(f"a nack item is (queue, message_id, error) or (ConsumeMessage, error), got {item!r}")


def check_enqueue(queue: Any, headers: Any, payload: Any) -> None:
    """Fail early (before batching) on arguments the encoder would refuse."""
    if type(queue) is not str:
        raise TypeError(f"queue must be str, got {type(queue).__name__}")
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise TypeError(
            f"payload must be bytes-like (bytes, bytearray or memoryview), got {type(payload).__name__}"
            + (" — the argument order is enqueue(queue, headers, payload)" if isinstance(payload, Mapping) else "")
        )
    if headers is not None and not isinstance(headers, Mapping):
        raise TypeError(f"headers must be a dict of str to str or None, got {type(headers).__name__}")


def enqueue_items(messages: Iterable[Any]) -> list[tuple[str, Any, Any]]:
    """The checked ``(queue, headers, payload)`` tuples of ``enqueue_many`` (one pass, the common case inline)."""
    items = list(messages)
    for m in items:
        if not (
            type(m) is tuple
            and len(m) == 3
            and type(m[0]) is str
            and type(m[2]) is bytes
            and (m[1] is None or type(m[1]) is dict)
        ):
            return [enqueue_item(m) for m in items]
    return items


def enqueue_item(message: Any) -> tuple[str, Any, Any]:
    """A checked ``(queue, headers, payload)`` of ``enqueue_many``."""
    if type(message) is tuple and len(message) == 3:  # once per message: the common case first
        queue, headers, payload = message
        if type(queue) is str and type(payload) is bytes and (headers is None or type(headers) is dict):
            return message
    if not isinstance(message, (tuple, list)) or len(message) != 3:
        raise TypeError(f"a message of enqueue_many is a (queue, headers, payload) tuple, got {message!r}")
    queue, headers, payload = message
    if type(queue) is not str or type(payload) is not bytes or (headers is not None and type(headers) is not dict):
        check_enqueue(queue, headers, payload)
    return (queue, headers, payload)


def ack_size(item: tuple[str, ...]) -> int:
    return 3 * sum(len(s) for s in item) + 8


def item_error(kind: HotKind, item: Any, code: int, text: str = "") -> FilaError:
    """The error of one failed item (``item`` is the codec tuple: queue first)."""
    if kind.what == "enqueue":
        context = f"enqueue to {item[0]!r}"
    else:
        context = f"{kind.what} of {item[1]} on {item[0]!r}"
    return error_for_code(code, text, context=context)


def ack_errors(kind: HotKind, items: list[Any], outcomes: list[Any]) -> list[FilaError | None]:
    """Per-item results of ack_many / nack_many: None, or the item's error."""
    result: list[FilaError | None] = []
    for item, out in zip(items, outcomes, strict=True):
        if isinstance(out, FilaError):
            result.append(out)
        elif out == _OK:
            result.append(None)
        else:
            result.append(item_error(kind, item, out))
    return result


def enqueue_results(items: list[Any], outcomes: list[Any]) -> list[EnqueueResult]:
    """Per-message results of enqueue_many from ``(code, id_or_text)`` items or exceptions.

    A request refused as a whole (an Error frame such as Forbidden) raises,
    as in 0.3.0 — unless it was one frame of several and others were stored:
    then every message keeps its own result, so no stored id is hidden.
    """
    if outcomes and all(type(out) is not tuple for out in outcomes):
        raise outcomes[0]
    result: list[EnqueueResult] = []
    append = result.append
    new = object.__new__
    cls = EnqueueResult
    for item, out in zip(items, outcomes, strict=True):
        if type(out) is not tuple:
            append(cls.failed(out))
        elif out[0] == _OK:
            # Once per message: built without the frozen dataclass's __init__ (a third of its cost).
            r = new(cls)
            fields = r.__dict__
            fields["message_id"] = out[1]
            fields["error"] = None
            append(r)
        else:
            append(cls.failed(item_error(ENQUEUE, item, out[0], out[1])))
    return result


def check_consume_ok(frame: Any, queue: str) -> None:
    """Raise unless ``frame`` is the ConsumeOk answering a Consume."""
    if frame.opcode == Opcode.ERROR:
        raise error_from_frame(frame.payload, f"consume {queue!r}")
    if frame.opcode != Opcode.CONSUME_OK:
        raise ProtocolError(
            ErrorCode.INVALID_FRAME, f"consume {queue!r}: expected ConsumeOk, got opcode 0x{frame.opcode:02x}"
        )


# ------------------------------------------------------------------ batches


class HotBatch:
    """The bookkeeping of one ``enqueue_many`` / ``ack_many`` / ``nack_many`` call.

    The driver loops: :meth:`frames` for its connection, send them, feed
    each answer to :meth:`answer`, then sleep :meth:`retry_delay` and loop
    while it is not None. What applied nothing is sent again: a whole frame
    the server refused (ChannelFull), and single items it refused as
    retryable (a cluster's NotLeader, a failed forward). ``out`` holds per
    item the decoded result or a FilaError.
    """

    __slots__ = ("_delay", "_items", "_kind", "_retry", "_todo", "leader_addr", "out")

    def __init__(self, kind: HotKind, items: list[Any], deadline: float) -> None:
        self._kind = kind
        self._items = items
        self._retry = Retry(deadline)
        self.out: list[Any] = [None] * len(items)
        self._todo: list[int] = list(range(len(items)))
        self._delay: float | None = None
        #: A NotLeader hint to follow before sending the rest again (once per call).
        self.leader_addr: str | None = None

    @property
    def deadline(self) -> float:
        return self._retry.deadline

    def frames(self, core: Any) -> list[tuple[int, bytes, list[int]]]:
        """What is left to send, as frames of ``core``'s connection: ``(request_id, data, item indexes)``."""
        todo = self._todo
        items = self._items
        kind = self._kind
        chunk = items if len(todo) == len(items) else [items[i] for i in todo]
        # A size hint instead of a per-item size pass: the payload bytes (enqueue) or nothing (acks
        # are small); a frame that still comes out too large is halved by encode_batches.
        hint = sum([len(item[2]) for item in chunk]) if kind is ENQUEUE else 0
        frames = encode_batches(
            kind.encode, chunk, core.max_frame_size, core.next_id, hint, kind.size_of, core.max_items
        )
        self._todo = []
        self._delay = None
        self.leader_addr = None
        return [(rid, data, todo[s:e]) for rid, data, s, e in frames]

    def answer(self, frame: Any, part: list[int]) -> None:
        """Take the answer to the frame of the items ``part``."""
        try:
            results = hot_result(self._kind, frame, len(part))
        except FilaError as exc:
            if not self._again(part, exc):
                for i in part:
                    self.out[i] = exc
            return
        # Once per item: only failed items are looked at twice (enqueue items are (code, id)).
        if self._kind is ENQUEUE:
            failed = [k for k, r in enumerate(results) if r[0]]
        else:
            failed = [k for k, code in enumerate(results) if code]
        again = [k for k in failed if _item_again(results[k])]
        if again and self._again([part[k] for k in again], None):
            keep = set(again)
            for k, i in enumerate(part):
                if k not in keep:
                    self.out[i] = results[k]
        elif part[-1] - part[0] + 1 == len(part):  # contiguous (a first send): one slice
            self.out[part[0] : part[-1] + 1] = results
        else:
            for i, r in zip(part, results, strict=True):
                self.out[i] = r

    def _again(self, part: list[int], exc: FilaError | None) -> bool:
        delay: float | None
        if exc is None:
            delay = self._retry.delay(None, time.monotonic())
        else:
            try:
                action, arg = self._retry.after(exc, time.monotonic())
            except FilaError:
                return False
            if action == "redirect":
                self.leader_addr, delay = arg, 0.0
            else:
                delay = arg
        if delay is None:
            return False
        self._todo.extend(part)
        self._delay = delay if self._delay is None else max(self._delay, delay)
        return True

    def retry_delay(self) -> float | None:
        """None when every item has its outcome; else the pause before sending the rest again."""
        if not self._todo:
            return None
        self._todo.sort()
        return self._delay


def _item_again(result: Any) -> bool:
    """An Enqueue ``(code, text)`` or Ack/Nack ``code`` item that applied nothing and may be sent again."""
    if type(result) is tuple:
        code: int = result[0]
        return code != _OK and item_retryable(code, result[1])
    return bool(result == ErrorCode.NOT_LEADER)


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
) -> list[tuple[int, bytes, list[Any], list[Any]]]:
    """Encode an accumulator batch for ``core``'s connection: ``(request_id, data, items, futures)`` per frame.

    A message the encoder refuses gets its error through ``reject(fut, exc)``
    and is left out; the others go.
    """
    try:
        frames = encode_batches(
            encode_enqueue, items, core.max_frame_size, core.next_id, size, item_size, core.max_items
        )
    except EncodeError:
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
        items, futs = good, good_futs
        frames = (
            encode_batches(encode_enqueue, items, core.max_frame_size, core.next_id, -1, item_size, core.max_items)
            if items
            else []
        )
    whole = len(items)
    return [
        (rid, data, items, futs) if s == 0 and e == whole else (rid, data, items[s:e], futs[s:e])
        for rid, data, s, e in frames
    ]


class EnqueueBatchBase:
    """Waiter of one Enqueue frame sent for an accumulator.

    The driver's subclass says how its futures are resolved (:meth:`_resolve`,
    :meth:`_fail_futures`) and how a refused frame is sent again later
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
            results = hot_result(ENQUEUE, frame, len(self.futs))
        except FilaError as exc:
            try:
                action, delay = self.retry.after(exc, time.monotonic())
            except FilaError:
                delay = None
            else:
                if action == "redirect":
                    self._follow(delay)
                    delay = 0.0
            if delay is not None and self._resend_later(delay):
                return
            self._fail_futures(exc)
        else:
            if not self._retry_items(results):
                self._resolve(results)
        self.group.one_done()

    def _retry_items(self, results: list[tuple[int, str]]) -> bool:
        """Resolve what is final and send the retryable rest again later (a cluster's NotLeader)."""
        again = [i for i, r in enumerate(results) if r[0] != _OK and item_retryable(r[0], r[1])]
        if not again:
            return False
        delay = self.retry.delay(None, time.monotonic())
        if delay is None:
            return False
        keep = set(again)
        done = [i for i in range(len(results)) if i not in keep]
        items, futs = self.items, self.futs
        self.items, self.futs = [items[i] for i in done], [futs[i] for i in done]
        self._resolve([results[i] for i in done])
        retry = type(self)(self.client, [items[i] for i in again], [futs[i] for i in again], self.group, 0.0)
        retry.retry = self.retry
        self.group.add(1)
        if not retry._resend_later(delay):
            retry._fail_futures(item_error(ENQUEUE, items[again[0]], results[again[0]][0], results[again[0]][1]))
            self.group.one_done()
        return True

    def _resolve(self, results: list[tuple[int, str]]) -> None:
        raise NotImplementedError

    def _follow(self, leader_addr: str) -> None:
        """A NotLeader hint: the client's later requests (this frame's resend included) go there."""
        raise NotImplementedError

    def _fail_futures(self, exc: BaseException) -> None:
        raise NotImplementedError

    def _resend_later(self, delay: float) -> bool:
        raise NotImplementedError

    def reencode(self, core: Any) -> tuple[int, bytes]:
        """This frame's items as a new request on ``core``'s connection."""
        rid = core.next_id()
        return rid, encode_enqueue(rid, self.items, core.max_frame_size)

    def _write(self, conn: Any, rid: int, data: bytes) -> None:
        """(Re)send this frame as request ``rid`` on ``conn``."""
        self.sent = False
        conn.core.register(rid, self)
        conn.write(data, self)


class AckBatch:
    """Waiter of one Ack/Nack frame a consumer sent: failures are logged (the message comes back later)."""

    __slots__ = ("cluster", "group", "items", "kind", "sent")

    def __init__(self, items: list[Any], kind: HotKind, group: Group, cluster: bool = False) -> None:
        self.items = items
        self.kind = kind
        self.group = group
        self.sent = False
        # A cluster leader answers MessageNotFound to acks that do take effect (README: known server issues).
        self.cluster = cluster

    def complete(self, frame: Any) -> None:
        try:
            codes = hot_result(self.kind, frame, len(self.items))
        except FilaError as exc:
            log.warning("%s of %d messages failed: %s", self.kind.what, len(self.items), exc)
        else:
            for item, code in zip(self.items, codes, strict=True):
                if code:
                    quiet = self.cluster and code == ErrorCode.MESSAGE_NOT_FOUND
                    log.log(logging.DEBUG if quiet else logging.WARNING, "%s", item_error(self.kind, item, code))
        self.group.one_done()

    def fail(self, exc: BaseException) -> None:
        log.warning("%s of %d messages not confirmed: %s", self.kind.what, len(self.items), exc)
        self.group.one_done()


def send_acks(conn: Any, items: list[Any], kind: HotKind, on_done: Callable[[], None]) -> None:
    """Write a consumer's ack/nack batch on ``conn``; ``on_done`` once every frame is answered or failed."""
    core = conn.core
    # Acks are small: no per-item size pass (an encoded frame that still came out too large is halved).
    frames = encode_batches(kind.encode, items, core.max_frame_size, core.next_id, 0, kind.size_of, core.max_items)
    group = Group(len(frames), on_done)
    for rid, data, s, e in frames:
        waiter = AckBatch(items[s:e], kind, group, bool(core.node_id))
        core.register(rid, waiter)
        conn.write(data, waiter)


def as_fila_error(exc: BaseException, what: str) -> FilaError:
    """``exc`` if it is a FilaError, else a connection error that says ``what`` failed."""
    if isinstance(exc, FilaError):
        return exc
    err = FilaConnectionError(f"{what}: {exc!r}")
    err.__cause__ = exc
    return err


ENQUEUE = HotKind(encode_enqueue, decode_enqueue_result, Opcode.ENQUEUE_RESULT, item_size, "enqueue")
ACK = HotKind(encode_ack, decode_ack_result, Opcode.ACK_RESULT, ack_size, "ack")
NACK = HotKind(encode_nack, decode_nack_result, Opcode.NACK_RESULT, ack_size, "nack")
