"""Broker state: queues, messages, consumers, leases, config and throttles.

Everything here runs on the broker's event loop thread, one call at a time,
so every operation is linearizable like the server's single scheduler
thread (SERVER.md §4). Semantics follow SERVER.md §7–§10.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from time import time_ns as _wall_ns  # not the lease clock tests shift
from typing import Any
from typing import Protocol

from ..protocol.constants import ErrorCode
from ..protocol.pure import encode_delivery
from .drr import Drr
from .hooks import DEFAULT_FAIRNESS_KEY
from .hooks import Hook
from .hooks import LuaCompilationFailed
from .hooks import LuaVM
from .hooks import QueueHooks
from .ids import UuidV7
from .ids import canonical_uuid
from .throttle import THROTTLE_PREFIX
from .throttle import TokenBucket
from .throttle import parse_throttle_value

__all__ = ["CommandFailed", "Consumer", "DeliverySink", "Queue", "Scheduler", "StoredMessage"]

DLQ_SUFFIX = ".dlq"
LIST_CONFIG_CAP = 10_000
MAX_U16_LIST = 0xFFFF
_NO_SPLIT = 0xFFFF_FFFF  # never cut a Delivery into continuations
_U64 = 1 << 64
_NO_WRAP = 1 << 63  # now_ns + a smaller offset stays below 2**64 until the year 2262


class CommandFailed(Exception):
    """A request fails as a whole with an Error frame (``code``, ``message``)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _too_long(key: str) -> bool:
    """A hook's key over 65,535 bytes of UTF-8, more than a wire string or a storage key holds.

    On the server a fairness key that long panics its scheduler while the
    Enqueue is prepared (``0xFF scheduler reply dropped``, then ``scheduler
    unavailable`` for everything); a throttle key that long is stored, and the
    subscription it is delivered to goes quiet. The double fails that Enqueue
    (fairness key) or answers the item StorageError (throttle key), and keeps
    working (README, deliberate differences).
    """
    return len(key) > 0x3FFF and len(key.encode()) > 0xFFFF


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

    def has_room(self, consumer: Consumer) -> bool: ...

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
    """A queue: its config, pending messages (DRR) and leases.

    A deleted queue whose messages are still leased lives on with
    ``exists = False`` (SERVER.md §10.2, §16.2): the server deletes the
    config, the pending messages and the DRR state, but not the leases, so
    those messages can still be acked or nacked, and a nacked or expired one
    is pending again under that name, for the consumers still registered on
    it and for a queue of that name created later.
    """

    __slots__ = (
        "_lease_offset_ns",
        "dlq",
        "drr",
        "exists",
        "hooks",
        "lease_order",
        "leased",
        "name",
        "uncounted",
        "visibility_timeout",
        "visibility_timeout_ms",
    )

    def __init__(self, name: str, visibility_timeout_ms: int, hooks: QueueHooks | None, quantum: int) -> None:
        self.name = name
        self.exists = True
        self.configure(visibility_timeout_ms, hooks)
        self.drr: Drr[StoredMessage] = Drr(quantum)
        self.leased: dict[str, StoredMessage] = {}
        # (expiry, message) in lease order; the timeout is fixed per queue, so this is sorted.
        self.lease_order: deque[tuple[float, StoredMessage]] = deque()
        # Ids of leases taken before the queue was deleted: the server no longer counts them in_flight.
        self.uncounted: set[str] = set()

    def configure(self, visibility_timeout_ms: int, hooks: QueueHooks | None) -> None:
        self.visibility_timeout_ms = visibility_timeout_ms
        self.hooks = hooks
        self.dlq: str | None = None if self.name.endswith(DLQ_SUFFIX) else self.name + DLQ_SUFFIX
        # The server stamps a lease's expiry as now_ns + timeout_ms × 10^6 in wrapping u64
        # arithmetic (SERVER.md §16.2): from about 1.66e13 ms on, the expiry lands in the past.
        offset = visibility_timeout_ms * 1_000_000
        self._lease_offset_ns = offset % _U64
        self.visibility_timeout = visibility_timeout_ms / 1000.0 if offset < _U64 else self._lease_offset_ns / 1e9

    def lease_time(self) -> float:
        """Seconds from now until a lease taken now expires (negative: it already has)."""
        offset = self._lease_offset_ns
        if offset < _NO_WRAP:
            return self.visibility_timeout
        if _wall_ns() + offset >= _U64:
            return (offset - _U64) / 1e9
        return offset / 1e9

    @property
    def in_flight(self) -> int:
        """Leased messages as the server counts them (not those leased before a delete)."""
        return len(self.leased) - len(self.uncounted)

    def end_lease(self, m: StoredMessage) -> None:
        """``m``'s lease is over (acked, nacked or expired)."""
        del self.leased[m.id]
        m.lease_expiry = 0.0
        if self.uncounted:
            self.uncounted.discard(m.id)

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
        self._lua: LuaVM | None = None

    def lua(self) -> LuaVM:
        """The one Lua state every queue's scripts share, as on the server (created on first use)."""
        if self._lua is None:
            self._lua = LuaVM(self.config.get)
        return self._lua

    # ----------------------------------------------------------- queues

    def existing(self, name: str) -> Queue | None:
        """The queue ``name`` if it exists (not what a deleted one left behind)."""
        q = self.queues.get(name)
        return q if q is not None and q.exists else None

    def create_queue(
        self,
        name: str,
        on_enqueue: str | Hook | None = None,
        on_failure: str | Hook | None = None,
        visibility_timeout_ms: int = 0,
    ) -> tuple[int, str]:
        """``(error_code, queue_id_or_error_text)`` as in CreateQueueResult."""
        if self.existing(name) is not None:
            return ErrorCode.QUEUE_ALREADY_EXISTS, name
        hooks = None
        if on_enqueue is not None or on_failure is not None:
            try:
                hooks = QueueHooks(on_enqueue, on_failure, self.lua)
            except LuaCompilationFailed as exc:
                return ErrorCode.LUA_COMPILATION_ERROR, str(exc)
        q = self._open(name, visibility_timeout_ms or self.default_visibility_timeout_ms, hooks)
        if q.dlq is not None and self.existing(q.dlq) is None:
            self._open(q.dlq, self.default_visibility_timeout_ms, None)
        return ErrorCode.OK, name

    def _open(self, name: str, visibility_timeout_ms: int, hooks: QueueHooks | None) -> Queue:
        q = self.queues.get(name)
        if q is None:
            q = self.queues[name] = Queue(name, visibility_timeout_ms, hooks, self.quantum)
        else:  # what a deleted queue of this name left behind becomes this queue's
            q.exists = True
            q.configure(visibility_timeout_ms, hooks)
        return q

    def delete_queue(self, name: str) -> int:
        """Delete ``name`` and its auto DLQ as the server does (SERVER.md §10.2, §16.2)."""
        q = self.existing(name)
        if q is None:
            return ErrorCode.QUEUE_NOT_FOUND
        dlq = q.dlq
        self._retire(q)
        if dlq is not None:
            d = self.existing(dlq)
            if d is not None:
                self._retire(d)
        return ErrorCode.OK

    def _retire(self, q: Queue) -> None:
        """Config, scripts, pending messages and DRR state go; leases stay, no longer counted."""
        q.exists = False
        q.configure(self.default_visibility_timeout_ms, None)
        q.drr = Drr(self.quantum)
        q.uncounted = set(q.leased)
        self._cursor.pop(q.name, None)
        self._forget_if_idle(q)

    def _forget_if_idle(self, q: Queue) -> None:
        if not q.exists and not q.leased and not q.drr.active and not q.drr.size:
            self.queues.pop(q.name, None)

    # ------------------------------------------------------------ enqueue

    def enqueue(self, items: Iterable[tuple[str, dict[str, str], bytes]]) -> list[tuple[int, str]]:
        """Store messages; one ``(code, message_id)`` per item, in order.

        Like the server, every item's hook runs before anything is stored; a
        fairness key too long for the server's storage keys fails the whole
        request (:class:`CommandFailed`), with nothing stored.
        """
        queues = self.queues
        results: list[tuple[int, str]] = []
        append = results.append
        staged: list[tuple[Queue, StoredMessage]] = []
        next_id = self.ids.next
        seq = self._seq
        for queue, headers, payload in items:
            q = queues.get(queue)
            if q is None or not q.exists:
                append((ErrorCode.QUEUE_NOT_FOUND, ""))
                continue
            tkeys: tuple[str, ...]
            if q.hooks is None:
                fkey, weight, tkeys = DEFAULT_FAIRNESS_KEY, 1, ()
            else:
                fkey, weight, tkeys = q.hooks.enqueue_fields(queue, headers, len(payload))
                if _too_long(fkey):
                    raise CommandFailed(ErrorCode.INTERNAL_ERROR, "scheduler reply dropped")
                if any(_too_long(k) for k in tkeys):
                    append((ErrorCode.STORAGE_ERROR, ""))
                    continue
            mid = next_id()
            seq += 1
            staged.append((q, StoredMessage(mid, queue, headers, payload, fkey, weight, tkeys, seq)))
            append((0, mid))
        self._seq = seq
        touched: dict[str, Queue] = {}
        for q, m in staged:
            q.drr.push(m.fairness_key, m, m.weight)
            touched[q.name] = q
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
        """One delivery pass over ``q``: the server's DRR round, step for step (SERVER.md §7.2, §8).

        The round in progress continues (or a new one starts); each turn's key
        is dropped if it has nothing pending, loses its deficit if its head
        message is throttled, or leases that message to the next consumer with
        room. The pass ends when the round is over or no consumer has room.
        """
        consumers = self.consumers.get(q.name)
        drr = q.drr
        if not consumers or not drr.active:
            return
        drr.start_round()
        n = len(consumers)
        cursor = self._cursor.get(q.name, 0)
        now = time.monotonic()
        expiry = now + q.lease_time()
        buckets = self.buckets
        leased = q.leased
        lease_order = q.lease_order
        while True:
            key = drr.next_key()
            if key is None:
                break
            m = drr.peek(key)
            if m is None:
                drr.drop_empty(key)
                continue
            if m.throttle_keys and buckets and not self._tokens_available(m.throttle_keys, now):
                drr.drain(key)
                continue
            consumer = None
            for _ in range(n):
                c = consumers[cursor % n]
                cursor += 1
                if c.sink.has_room(c):
                    consumer = c
                    break
            if consumer is None:
                break
            drr.pop(key)
            drr.consume(key)
            if m.throttle_keys and buckets:
                self._take_tokens(m.throttle_keys)
            m.lease_expiry = expiry
            leased[m.id] = m
            lease_order.append((expiry, m))
            consumer.sink.push_delivery(consumer, m)
        self._cursor[q.name] = cursor % n

    def _tokens_available(self, keys: tuple[str, ...], now: float) -> bool:
        """Every bucketed key (duplicates once) holds a token (SERVER.md §8.4)."""
        buckets = self.buckets
        for k in set(keys):
            b = buckets.get(k)
            if b is not None and b.refill(now) < 1.0:
                return False
        return True

    def _take_tokens(self, keys: tuple[str, ...]) -> None:
        buckets = self.buckets
        for k in set(keys):
            b = buckets.get(k)
            if b is not None and b.tokens >= 1.0:
                b.tokens -= 1.0

    def tick(self) -> None:
        """Reclaim expired leases, then run a pass for every queue with consumers."""
        self.reclaim()
        self.deliver_all()

    def reclaim(self) -> int:
        """Requeue every message whose lease has expired (attempt + 1); how many (SERVER.md §7.6)."""
        now = time.monotonic()
        count = 0
        for q in list(self.queues.values()):
            lo = q.lease_order
            leased = q.leased
            while lo and lo[0][0] <= now:
                expiry, m = lo.popleft()
                if leased.get(m.id) is m and m.lease_expiry == expiry:
                    q.end_lease(m)
                    m.attempt_count += 1
                    q.drr.push(m.fairness_key, m, m.weight)
                    count += 1
        return count

    def deliver_all(self) -> None:
        """The pass of a scheduler loop iteration: every queue with consumers and active fairness keys."""
        queues = self.queues
        for name in list(self.consumers):
            q = queues.get(name)
            if q is not None and q.drr.active:
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
            if q.leased.get(m.id) is m:
                q.end_lease(m)
            touched[q.name] = q
            codes.append(0)
        for q in touched.values():
            q.prune_lease_order()
            self._forget_if_idle(q)
        return codes

    def nack(self, items: list[tuple[str, str, str]]) -> list[int]:
        """Items apply one after another: a repeated id is Ok, then MessageNotFound (SERVER.md §6.7).

        on_failure runs whenever the queue has one, on ``*.dlq`` queues too
        (SERVER.md §9.2, §16.2); the message moves only if the queue has a
        DLQ and it exists. The nacked messages' queues then get a pass.
        """
        queues = self.queues
        codes: list[int] = []
        sources: dict[str, Queue] = {}
        for queue, mid, error in items:
            q = queues.get(queue)
            m = q.find_leased(mid) if q is not None else None
            if q is None or m is None:
                codes.append(ErrorCode.MESSAGE_NOT_FOUND)
                continue
            q.end_lease(m)
            m.attempt_count += 1
            sources[q.name] = q
            target = q
            if q.hooks is not None:
                action = q.hooks.failure_action(m.id, q.name, m.headers, m.attempt_count, error)
                dlq = self.existing(q.dlq) if q.dlq is not None else None
                if action == "dlq" and dlq is not None:
                    target = dlq
                    m.queue = dlq.name
                    m.wire = None
            target.drr.push(m.fairness_key, m, m.weight)
            codes.append(0)
        for q in sources.values():
            q.prune_lease_order()
        for q in sources.values():
            self.deliver(q)
        return codes

    # ------------------------------------------------------------- admin

    def stats(self, name: str) -> dict[str, Any] | None:
        """GetStatsResult fields for ``name``, or None when it does not exist."""
        q = self.existing(name)
        if q is None:
            return None
        drr = q.drr
        in_flight = q.in_flight
        now = time.monotonic()
        pending = drr.pending
        return {
            "error_code": 0,
            "depth": drr.size + in_flight,
            "in_flight": in_flight,
            "active_fairness_keys": len(drr.active),
            "active_consumers": len(self.consumers.get(name, ())),
            "quantum": self.quantum,
            "leader_node_id": 0,
            "replication_count": 0,
            "per_key_stats": [
                {
                    "key": k,
                    "pending_count": len(pending.get(k, ())),
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
        for name in sorted((n for n, q in self.queues.items() if q.exists), key=lambda s: s.encode()):
            q = self.queues[name]
            in_flight = q.in_flight
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
        dlq = self.existing(name)
        if dlq is None:
            return ErrorCode.QUEUE_NOT_FOUND, "queue not found", 0
        if not name.endswith(DLQ_SUFFIX):
            return ErrorCode.NOT_A_DLQ, "not a dead-letter queue", 0
        parent = self.existing(name[: -len(DLQ_SUFFIX)])
        if parent is None:
            return ErrorCode.PARENT_QUEUE_NOT_FOUND, "parent queue not found", 0
        # Storage order: the server's message keys hold the fairness key behind a
        # 16-bit length, so shorter keys come first, then bytes, enqueue time, id.
        msgs = sorted(dlq.drr.items(), key=lambda m: (len(k := m.fairness_key.encode()), k, m.seq, m.id))
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
