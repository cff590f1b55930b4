"""Broker state: queues, messages, consumers, leases, config and throttles.

Everything here runs on the broker's event loop thread, one call at a time,
so every operation is linearizable like the server's single scheduler
thread (SERVER.md §4). Semantics follow SERVER.md §7–§10.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from typing import Any, Protocol

from ..protocol.constants import ErrorCode
from ..protocol.pure import encode_delivery
from .drr import Drr
from .hooks import DEFAULT_FAIRNESS_KEY, Hook, LuaCompilationFailed, QueueHooks
from .ids import UuidV7, canonical_uuid
from .throttle import THROTTLE_PREFIX, TokenBucket, parse_throttle_value

__all__ = ["Consumer", "DeliverySink", "Queue", "Scheduler", "StoredMessage"]

DLQ_SUFFIX = ".dlq"
LIST_CONFIG_CAP = 10_000
MAX_U16_LIST = 0xFFFF
_NO_SPLIT = 0xFFFF_FFFF  # never cut a Delivery into continuations


class StoredMessage:
    """A message held by the broker (pending, or leased when ``lease_expiry`` > 0)."""

    __slots__ = (
        "attempt_count",
        "fairness_key",
        "headers",
        "id",
        "lease_expiry",
        "payload",
        "queue",
        "seq",
        "throttle_keys",
        "weight",
        "wire",
    )

    enqueued_at = 0  # the server always sends 0 (SERVER.md §7.9)
    leased_at = 0

    def __init__(
        self,
        id: str,
        queue: str,
        headers: dict[str, str],
        payload: bytes,
        fairness_key: str,
        weight: int,
        throttle_keys: tuple[str, ...],
        seq: int,
    ) -> None:
        self.id = id
        self.queue = queue
        self.headers = headers
        self.payload = payload
        self.fairness_key = fairness_key
        self.weight = weight
        self.throttle_keys = throttle_keys
        self.attempt_count = 0
        self.seq = seq
        self.lease_expiry = 0.0
        self.wire: bytes | None = None

    def wire_prefix(self) -> bytes:
        """The Delivery fields from ``message_id`` to ``throttle_keys``, encoded once."""
        wire = self.wire
        if wire is None:
            # header (10) + count (4) ... attempt_count, enqueued_at, leased_at (20)
            wire = self.wire = encode_delivery(0, (self,), _NO_SPLIT)[14:-20]
        return wire


class DeliverySink(Protocol):
    """What a connection offers the scheduler for pushing deliveries."""

    def has_room(self) -> bool: ...

    def push_delivery(self, consumer: Consumer, message: StoredMessage) -> None: ...


class Consumer:
    """One subscription: a connection's Consume on a queue name."""

    __slots__ = ("active", "consumer_id", "queue", "request_id", "sink")

    def __init__(self, consumer_id: str, queue: str, sink: DeliverySink, request_id: int) -> None:
        self.consumer_id = consumer_id
        self.queue = queue
        self.sink = sink
        self.request_id = request_id
        self.active = True


class Queue:
    """A queue: its config, pending messages (DRR) and leases."""

    __slots__ = ("dlq", "drr", "hooks", "lease_order", "leased", "name", "visibility_timeout")

    def __init__(self, name: str, visibility_timeout_ms: int, hooks: QueueHooks | None, quantum: int) -> None:
        self.name = name
        self.visibility_timeout = visibility_timeout_ms / 1000.0
        self.hooks = hooks
        self.dlq: str | None = None if name.endswith(DLQ_SUFFIX) else name + DLQ_SUFFIX
        self.drr: Drr[StoredMessage] = Drr(quantum)
        self.leased: dict[str, StoredMessage] = {}
        # (expiry, message) in lease order; the timeout is fixed per queue, so this is sorted.
        self.lease_order: deque[tuple[float, StoredMessage]] = deque()

    def find_leased(self, message_id: str) -> StoredMessage | None:
        m = self.leased.get(message_id)
        if m is None:
            canon = canonical_uuid(message_id)
            if canon is not None and canon != message_id:
                m = self.leased.get(canon)
        return m

    def prune_lease_order(self) -> None:
        lo = self.lease_order
        leased = self.leased
        while lo and leased.get(lo[0][1].id) is not lo[0][1]:
            lo.popleft()


class Scheduler:
    """All broker state and the operations on it."""

    def __init__(self, *, quantum: int = 1000, visibility_timeout_ms: int = 30_000) -> None:
        self.quantum = quantum
        self.default_visibility_timeout_ms = visibility_timeout_ms
        self.queues: dict[str, Queue] = {}
        self.consumers: dict[str, list[Consumer]] = {}
        self._cursor: dict[str, int] = {}
        self.config: dict[str, str] = {}
        self.buckets: dict[str, TokenBucket] = {}
        self.ids = UuidV7()
        self._seq = 0

    # ----------------------------------------------------------- queues

    def create_queue(
        self,
        name: str,
        on_enqueue: str | Hook | None = None,
        on_failure: str | Hook | None = None,
        visibility_timeout_ms: int = 0,
    ) -> tuple[int, str]:
        """``(error_code, queue_id_or_error_text)`` as in CreateQueueResult."""
        if name in self.queues:
            return ErrorCode.QUEUE_ALREADY_EXISTS, name
        hooks = None
        if on_enqueue is not None or on_failure is not None:
            try:
                hooks = QueueHooks(on_enqueue, on_failure, self.config.get)
            except LuaCompilationFailed as exc:
                return ErrorCode.LUA_COMPILATION_ERROR, str(exc)
        q = Queue(name, visibility_timeout_ms or self.default_visibility_timeout_ms, hooks, self.quantum)
        self.queues[name] = q
        if q.dlq is not None and q.dlq not in self.queues:
            self.queues[q.dlq] = Queue(q.dlq, self.default_visibility_timeout_ms, None, self.quantum)
        return ErrorCode.OK, name

    def delete_queue(self, name: str) -> int:
        q = self.queues.pop(name, None)
        if q is None:
            return ErrorCode.QUEUE_NOT_FOUND
        if q.dlq is not None:
            self.queues.pop(q.dlq, None)
        return ErrorCode.OK

    # ------------------------------------------------------------ enqueue

    def enqueue(self, items: Iterable[tuple[str, dict[str, str], bytes]]) -> list[tuple[int, str]]:
        """Store messages; one ``(code, message_id)`` per item, in order."""
        queues = self.queues
        results: list[tuple[int, str]] = []
        append = results.append
        touched: dict[str, Queue] = {}
        next_id = self.ids.next
        seq = self._seq
        for queue, headers, payload in items:
            q = queues.get(queue)
            if q is None:
                append((ErrorCode.QUEUE_NOT_FOUND, ""))
                continue
            tkeys: tuple[str, ...]
            if q.hooks is None:
                fkey, weight, tkeys = DEFAULT_FAIRNESS_KEY, 1, ()
            else:
                fkey, weight, tkeys = q.hooks.enqueue_fields(queue, headers, len(payload))
            mid = next_id()
            seq += 1
            q.drr.push(fkey, StoredMessage(mid, queue, headers, payload, fkey, weight, tkeys, seq), weight)
            touched[queue] = q
            append((0, mid))
        self._seq = seq
        for q in touched.values():
            self.deliver(q)
        return results

    # ----------------------------------------------------------- consumers

    def register(self, sink: DeliverySink, request_id: int, queue: str) -> Consumer:
        consumer = Consumer(self.ids.next(), queue, sink, request_id)
        self.consumers.setdefault(queue, []).append(consumer)
        q = self.queues.get(queue)
        if q is not None:
            self.deliver(q)
        return consumer

    def unregister(self, consumer: Consumer) -> None:
        if not consumer.active:
            return
        consumer.active = False
        lst = self.consumers.get(consumer.queue)
        if lst is not None:
            try:
                lst.remove(consumer)
            except ValueError:
                pass
            if not lst:
                del self.consumers[consumer.queue]
                self._cursor.pop(consumer.queue, None)

    def drop_consumers(self, queue: str | None = None) -> int:
        """Unregister every consumer (of ``queue``) without telling anyone."""
        victims = [c for name, lst in self.consumers.items() if queue is None or name == queue for c in lst]
        for c in victims:
            self.unregister(c)
        return len(victims)

    # ------------------------------------------------------------ delivery

    def deliver(self, q: Queue) -> None:
        """One delivery pass: lease pending messages to consumers with room."""
        consumers = self.consumers.get(q.name)
        drr = q.drr
        if not consumers or not drr.size:
            return
        n = len(consumers)
        cursor = self._cursor.get(q.name, 0)
        now = time.monotonic()
        expiry = now + q.visibility_timeout
        buckets = self.buckets
        leased = q.leased
        lease_order = q.lease_order
        throttled = 0
        while drr.size:
            consumer = None
            for _ in range(n):
                c = consumers[cursor % n]
                cursor += 1
                if c.sink.has_room():
                    consumer = c
                    break
            if consumer is None:
                break
            key = drr.current()
            if key is None:
                break
            m = drr.peek(key)
            if m.throttle_keys and buckets and not self._take_tokens(m.throttle_keys, now):
                cursor -= 1
                drr.skip(key)
                throttled += 1
                if throttled > len(drr.pending):
                    break
                continue
            throttled = 0
            drr.take(key)
            m.lease_expiry = expiry
            leased[m.id] = m
            lease_order.append((expiry, m))
            consumer.sink.push_delivery(consumer, m)
        self._cursor[q.name] = cursor % n

    def _take_tokens(self, keys: tuple[str, ...], now: float) -> bool:
        buckets = [b for k in set(keys) if (b := self.buckets.get(k)) is not None]
        if any(b.refill(now) < 1.0 for b in buckets):
            return False
        for b in buckets:
            b.tokens -= 1.0
        return True

    def tick(self) -> None:
        """Reclaim expired leases, then run a pass for every queue with consumers."""
        now = time.monotonic()
        for q in list(self.queues.values()):
            lo = q.lease_order
            leased = q.leased
            while lo and lo[0][0] <= now:
                expiry, m = lo.popleft()
                if leased.get(m.id) is m and m.lease_expiry == expiry:
                    del leased[m.id]
                    m.lease_expiry = 0.0
                    m.attempt_count += 1
                    q.drr.push(m.fairness_key, m, m.weight)
            if q.drr.size and q.name in self.consumers:
                self.deliver(q)

    # ------------------------------------------------------------ ack/nack

    def ack(self, items: list[tuple[str, str]]) -> list[int]:
        """Every item is looked up before any lease is removed, so an id
        repeated in one batch is Ok each time (SERVER.md §6.6)."""
        queues = self.queues
        found: list[tuple[Queue | None, StoredMessage | None]] = []
        for queue, mid in items:
            q = queues.get(queue)
            found.append((q, q.find_leased(mid) if q is not None else None))
        codes: list[int] = []
        touched: dict[str, Queue] = {}
        for q, m in found:
            if q is None or m is None:
                codes.append(ErrorCode.MESSAGE_NOT_FOUND)
                continue
            q.leased.pop(m.id, None)
            m.lease_expiry = 0.0
            touched[q.name] = q
            codes.append(0)
        for q in touched.values():
            q.prune_lease_order()
        return codes

    def nack(self, items: list[tuple[str, str, str]]) -> list[int]:
        """Items apply one after another: a repeated id is Ok, then MessageNotFound (SERVER.md §6.7)."""
        queues = self.queues
        codes: list[int] = []
        sources: dict[str, Queue] = {}
        targets: dict[str, Queue] = {}
        for queue, mid, error in items:
            q = queues.get(queue)
            m = q.find_leased(mid) if q is not None else None
            if q is None or m is None:
                codes.append(ErrorCode.MESSAGE_NOT_FOUND)
                continue
            del q.leased[m.id]
            m.lease_expiry = 0.0
            m.attempt_count += 1
            sources[q.name] = q
            target = q
            if q.hooks is not None and q.dlq is not None:
                action = q.hooks.failure_action(m.id, q.name, m.headers, m.attempt_count, error)
                dlq = queues.get(q.dlq)
                if action == "dlq" and dlq is not None:
                    target = dlq
                    m.queue = dlq.name
                    m.wire = None
            target.drr.push(m.fairness_key, m, m.weight)
            targets[target.name] = target
            codes.append(0)
        for q in sources.values():
            q.prune_lease_order()
        for t in targets.values():
            self.deliver(t)
        return codes

    # ------------------------------------------------------------- admin

    def stats(self, name: str) -> dict[str, Any] | None:
        """GetStatsResult fields for ``name``, or None when it does not exist."""
        q = self.queues.get(name)
        if q is None:
            return None
        drr = q.drr
        in_flight = len(q.leased)
        now = time.monotonic()
        return {
            "error_code": 0,
            "depth": drr.size + in_flight,
            "in_flight": in_flight,
            "active_fairness_keys": len(drr.pending),
            "active_consumers": len(self.consumers.get(name, ())),
            "quantum": self.quantum,
            "leader_node_id": 0,
            "replication_count": 0,
            "per_key_stats": [
                {
                    "key": k,
                    "pending_count": len(drr.pending[k]),
                    "current_deficit": drr.deficit[k],
                    "weight": drr.weight[k],
                }
                for k in drr.keys()
            ][:MAX_U16_LIST],
            "per_throttle_stats": [
                {"key": k, "tokens": b.refill(now), "rate_per_second": b.rate, "burst": b.burst}
                for k, b in self.buckets.items()
            ][:MAX_U16_LIST],
        }

    def list_queues(self) -> list[dict[str, Any]]:
        out = []
        for name in sorted(self.queues, key=lambda s: s.encode()):
            q = self.queues[name]
            in_flight = len(q.leased)
            out.append(
                {
                    "name": name,
                    "depth": q.drr.size + in_flight,
                    "in_flight": in_flight,
                    "active_consumers": len(self.consumers.get(name, ())),
                    "leader_node_id": 0,
                }
            )
        return out[:MAX_U16_LIST]

    def set_config(self, key: str, value: str) -> int:
        if key.startswith(THROTTLE_PREFIX):
            name = key[len(THROTTLE_PREFIX) :]
            if value == "":
                self.config.pop(key, None)
                if name:
                    self.buckets.pop(name, None)
                return ErrorCode.OK
            if not name:
                return ErrorCode.INVALID_CONFIG_VALUE
            parsed = parse_throttle_value(value)
            if parsed is None:
                return ErrorCode.INVALID_CONFIG_VALUE
            self.config[key] = value
            bucket = self.buckets.get(name)
            if bucket is None:
                self.buckets[name] = TokenBucket(*parsed)
            else:
                bucket.update(*parsed)
            return ErrorCode.OK
        if value == "":
            self.config.pop(key, None)
        else:
            self.config[key] = value
        return ErrorCode.OK

    def list_config(self, prefix: str) -> list[dict[str, str]]:
        keys = sorted((k for k in self.config if k.startswith(prefix)), key=lambda s: s.encode())
        return [{"key": k, "value": self.config[k]} for k in keys[:LIST_CONFIG_CAP]]

    def redrive(self, name: str, count: int) -> tuple[int, str, int]:
        """``(error_code, error_message, moved)``; a non-zero code is an Error frame."""
        dlq = self.queues.get(name)
        if dlq is None:
            return ErrorCode.QUEUE_NOT_FOUND, "queue not found", 0
        if not name.endswith(DLQ_SUFFIX):
            return ErrorCode.NOT_A_DLQ, "not a dead-letter queue", 0
        parent = self.queues.get(name[: -len(DLQ_SUFFIX)])
        if parent is None:
            return ErrorCode.PARENT_QUEUE_NOT_FOUND, "parent queue not found", 0
        msgs = sorted(dlq.drr.items(), key=lambda m: (m.fairness_key.encode(), m.seq, m.id))
        if count:
            msgs = msgs[:count]
        for m in msgs:
            dlq.drr.remove(m.fairness_key, m)
            m.attempt_count = 0
            m.queue = parent.name
            m.wire = None
            parent.drr.push(m.fairness_key, m, m.weight)
        if msgs:
            self.deliver(parent)
        return ErrorCode.OK, "", len(msgs)
