"""The synchronous, thread-safe client.

One :class:`Client` keeps one multiplexed connection for requests (any number
of threads may use it at once) and opens one more connection per
:meth:`Client.consume`. A reader thread per connection completes the waiting
threads; nothing polls. The protocol decisions are :mod:`fila._core`'s; this
module only drives sockets and threads.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from types import TracebackType
from typing import Any

from . import _operations as ops
from ._accumulator import SyncAccumulator
from ._core import Decision
from ._core import DeliveryBuffer
from ._core import Retry
from ._core import Settings
from ._core import Subscription
from ._futures import FutureFactory
from ._surface import ClientBase
from ._surface import ConsumerBase
from ._sync_transport import BlockingWaiter
from ._sync_transport import SyncConnection
from ._sync_transport import Timers
from .errors import ClientClosedError
from .errors import ConnectionLostError
from .errors import FilaConnectionError
from .errors import FilaError
from .errors import RequestTimeoutError
from .types import MAX_BATCH_MESSAGES
from .types import AccumulatorMode
from .types import AclEntry
from .types import AclPermission
from .types import ApiKeyInfo
from .types import ConsumeMessage
from .types import CreateApiKeyResult
from .types import EnqueueResult
from .types import QueueInfo
from .types import StatsResult

__all__ = ["Client", "Consumer"]

log = logging.getLogger("fila")


class Client(ClientBase):
    """A thread-safe client for a Fila server.

    The constructor connects and handshakes (raising
    :class:`~fila.errors.ConnectError` when the server cannot be reached); a
    connection lost later is reopened, with backoff, by the next call. Use
    it as a context manager, or call :meth:`close`. See :class:`ClientBase`
    for the parameters.
    """

    _conn: SyncConnection | None

    def _setup(self) -> None:
        self._futures = FutureFactory()
        self._new_future = self._futures.new
        self._timers = Timers()
        self._acc = SyncAccumulator(self._mode, self._send_enqueues, self._timers.call_later, self._batch_cap)
        self._submit = self._acc.submit
        self._connect_lock = threading.Lock()
        self._consumers: weakref.WeakSet[Consumer] = weakref.WeakSet()
        try:
            self._connection()
        except BaseException:
            self._closed = True
            self._timers.close()
            raise

    def _call_later(self, delay: float, fn: Callable[[], None]) -> None:
        self._timers.call_later(delay, fn)

    # ----------------------------------------------------------- lifecycle

    def __enter__(self) -> Client:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    @property
    def node_id(self) -> int:
        """The node id the server reported in its handshake (0 for a single node)."""
        return self._connection().core.node_id

    def close(self, *, timeout: float | None = None) -> None:
        """Send what the accumulator holds and wait for its answers, close consumers, then disconnect.

        Waits at most ``timeout`` seconds (default: the request timeout);
        whatever is still unanswered then fails with
        :class:`~fila.errors.ClientClosedError`. Closing twice is harmless.
        Afterwards a ``Client`` raises ``ClientClosedError``; an ``AsyncClient``
        reconnects on its next call, as fila-python 0.3.0's did.
        """
        if self._closed:
            return
        wait = self._wait_or_default(timeout)
        for consumer in list(self._consumers):
            consumer.close()
        self._acc.close(wait)
        self._closed = True
        self._timers.close()
        with self._connect_lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _connection(self) -> SyncConnection:
        conn = self._conn
        if conn is not None and not conn.dead:
            return conn
        with self._connect_lock:
            live: SyncConnection | None = self._live_connection()
            if live is not None:
                return live
            pause = self._reconnect_pause()
            if pause > 0:
                time.sleep(pause)
            while True:
                conn = SyncConnection(self._settings)
                try:
                    conn.open()
                    break
                except FilaConnectionError:
                    if not self._connect_failed():
                        raise
            self._connect_succeeded(conn)
            conn.start("fila-reader")
            self._conn = conn
            return conn

    # -------------------------------------------------------- generic call

    def _request(self, op: ops.Op, timeout: float | None) -> Any:
        retry = Retry(self._deadline(timeout))
        while True:
            conn = self._connection()
            rid, data = ops.encode_op(op, conn.core)
            frame = conn.request(rid, data, retry.deadline)
            try:
                return ops.parse_response(op, frame.opcode, frame.payload)
            except FilaError as exc:
                action, arg = retry.after(exc, time.monotonic())
            if action == "redirect":
                with self._connect_lock:
                    self._follow_leader(arg)
            else:
                time.sleep(arg)

    def _hot_batch(self, kind: ops.HotKind, items: list[Any], timeout: float | None) -> list[Any]:
        """Send ``items`` in as many frames as needed; per item, the decoded result or a FilaError."""
        if not items:
            return []
        batch = ops.HotBatch(kind, items, self._deadline(timeout))
        while True:
            conn = self._connection()
            sent: list[tuple[int, list[int], BlockingWaiter]] = []
            for rid, data, part in batch.frames(conn.core):
                waiter = BlockingWaiter()
                conn.core.register(rid, waiter)
                conn.write(data, waiter)
                sent.append((rid, part, waiter))
            for rid, part, waiter in sent:
                batch.answer(conn.wait_answer(rid, waiter, batch.deadline), part)
            delay = batch.retry_delay()
            if delay is None:
                return batch.out
            if batch.leader_addr is not None:
                with self._connect_lock:
                    self._follow_leader(batch.leader_addr)
            time.sleep(delay)

    # ----------------------------------------------------------- producing

    def enqueue(
        self, queue: str, headers: dict[str, str] | None, payload: bytes, *, timeout: float | None = None
    ) -> str:
        """Enqueue one message and return the id the broker gave it.

        ``headers`` may be None. Goes through the accumulator (unless it is
        DISABLED), so concurrent calls share frames. A refusal of this message
        raises its error (e.g. :class:`~fila.errors.QueueNotFoundError`).
        """
        fut = self.enqueue_nowait(queue, headers, payload)
        wait = self._wait_or_default(timeout)
        try:
            return fut.result(wait)
        except FutureTimeoutError:
            if fut.done():
                return fut.result(0)
            raise RequestTimeoutError(f"enqueue to {queue!r}: no answer within {wait}s") from None

    def enqueue_nowait(self, queue: str, headers: dict[str, str] | None, payload: bytes) -> Future[str]:
        """Submit one message without waiting; the returned future resolves to its id or its error.

        Every future resolves: with the id, the message's own error, or a
        connection / closed error; :meth:`flush` and :meth:`close` wait for
        them. Argument errors raise here, at once.
        """
        if type(queue) is not str or type(payload) is not bytes or (headers is not None and type(headers) is not dict):
            ops.check_enqueue(queue, headers, payload)
        fut = self._new_future()
        self._submit((queue, headers, payload), fut, len(payload))
        return fut

    def enqueue_many(
        self, messages: Iterable[tuple[str, dict[str, str] | None, bytes]], *, timeout: float | None = None
    ) -> list[EnqueueResult]:
        """Enqueue ``(queue, headers, payload)`` tuples in as few frames as fit; one result per message, in order.

        A message refused on its own carries its error in its
        :class:`~fila.EnqueueResult` and never fails the others. A request the
        server refuses as a whole (e.g. :class:`~fila.ForbiddenError`) and
        transport failures raise.
        """
        items = ops.enqueue_items(messages)
        return ops.enqueue_results(items, self._hot_batch(ops.ENQUEUE, items, timeout))

    def flush(self, timeout: float | None = None) -> bool:
        """Send what the accumulator holds now and wait for every answer; False if ``timeout`` passed first."""
        return self._acc.drain(self._wait_or_default(timeout))

    def _send_enqueues(self, items: list[Any], futs: list[Any], size: int) -> None:
        """Accumulator callback: put a batch on the wire (never raises)."""
        acc_done = self._acc.done
        try:
            conn = self._connection()
        except BaseException as exc:
            self._futures.fail(futs, ops.as_fila_error(exc, "enqueue could not be sent"))
            acc_done()
            return
        _EnqueueBatch.send(self, conn, items, futs, size, ops.Group(1, acc_done), self._deadline(None))

    # ----------------------------------------------------------- consuming

    def consume(self, queue: str, *, buffer_size: int | None = None) -> Consumer:
        """Subscribe to ``queue`` (on a connection of its own) and return the stream of its messages.

        Subscribed when this returns (a refusal such as
        :class:`~fila.errors.ForbiddenError` raises here). Iterate the
        :class:`Consumer` (``for msg in ...`` / ``next(...)``) or call its
        ``get(timeout)``; ``ack``/``nack`` through it are batched. Leaving it
        (``with`` block, ``close()``, garbage collection) cancels the
        subscription. A lost connection is resubscribed with backoff.
        """
        self._check_open()
        consumer = Consumer(self, queue, buffer_size or self._settings.consumer_buffer)
        self._consumers.add(consumer)
        return consumer

    def ack(self, queue: str, msg_id: str, *, timeout: float | None = None) -> None:
        """Acknowledge one delivered message: it is deleted (raises e.g. MessageNotFoundError)."""
        err = self.ack_many([(queue, msg_id)], timeout=timeout)[0]
        if err is not None:
            raise err

    def nack(self, queue: str, msg_id: str, error: str, *, timeout: float | None = None) -> None:
        """Reject one delivered message with the failure text ``error``.

        The server counts an attempt and runs the queue's ``on_failure`` hook:
        it dead-letters the message if the hook returns ``{action = "dlq"}``;
        otherwise (and without a hook) the message is retried, with no limit.
        """
        err = self.nack_many([(queue, msg_id, error)], timeout=timeout)[0]
        if err is not None:
            raise err

    def ack_many(
        self, items: Iterable[ConsumeMessage | tuple[str, str]], *, timeout: float | None = None
    ) -> list[FilaError | None]:
        """Ack several messages (``ConsumeMessage`` or ``(queue, msg_id)``); per item None or its error."""
        batch = [ops.ack_item(i) for i in items]
        return ops.ack_errors(ops.ACK, batch, self._hot_batch(ops.ACK, batch, timeout))

    def nack_many(
        self, items: Iterable[tuple[ConsumeMessage, str] | tuple[str, str, str]], *, timeout: float | None = None
    ) -> list[FilaError | None]:
        """Nack several messages (``(queue, msg_id, error)`` or ``(ConsumeMessage, error)``); per item None or error."""
        batch = [ops.nack_item(i) for i in items]
        return ops.ack_errors(ops.NACK, batch, self._hot_batch(ops.NACK, batch, timeout))

    # --------------------------------------------------------------- admin

    def create_queue(
        self, name: str, *, on_enqueue: str | None = None, on_failure: str | None = None,
        visibility_timeout_ms: int = 0, timeout: float | None = None,
    ) -> None:
        """Create a queue, and its dead-letter queue ``<name>.dlq``.

        ``on_enqueue`` / ``on_failure`` are Lua scripts (hooks);
        ``visibility_timeout_ms`` is how long a delivered message stays leased
        (0: the server's default, 30 s).
        """
        self._request(ops.create_queue(name, on_enqueue, on_failure, visibility_timeout_ms), timeout)

    def delete_queue(self, name: str, *, timeout: float | None = None) -> None:
        """Delete a queue (and its ``.dlq``) with its messages."""
        self._request(ops.delete_queue(name), timeout)

    def get_stats(self, queue: str, *, timeout: float | None = None) -> StatsResult:
        """Depth, in-flight count, consumers, fairness and throttle state of one queue."""
        result: StatsResult = self._request(ops.get_stats(queue), timeout)
        return result

    def list_queues(self, *, timeout: float | None = None) -> list[QueueInfo]:
        """Every queue (DLQs included), sorted by name."""
        result: list[QueueInfo] = self._request(ops.list_queues(), timeout)
        return result

    def set_config(self, key: str, value: str, *, timeout: float | None = None) -> None:
        """Set a runtime config key (``throttle.<key>`` = ``"rate,burst"`` creates a throttle); "" deletes it."""
        self._request(ops.set_config(key, value), timeout)

    def get_config(self, key: str, *, timeout: float | None = None) -> str:
        """The value of a runtime config key ("" when unset)."""
        result: str = self._request(ops.get_config(key), timeout)
        return result

    def list_config(self, prefix: str = "", *, timeout: float | None = None) -> dict[str, str]:
        """Every runtime config key starting with ``prefix``, with its value."""
        result: dict[str, str] = self._request(ops.list_config(prefix), timeout)
        return result

    def redrive(self, dlq_queue: str, count: int = 0, *, timeout: float | None = None) -> int:
        """Move up to ``count`` messages (0: all) from a dead-letter queue back to its parent; returns how many."""
        result: int = self._request(ops.redrive(dlq_queue, count), timeout)
        return result

    # ---------------------------------------------------------------- auth

    def create_api_key(
        self, name: str, *, expires_at_ms: int = 0, superadmin: bool = False, timeout: float | None = None
    ) -> CreateApiKeyResult:
        """Create an API key; its token (``raw_key``) is returned only this once. ``expires_at_ms`` 0: never."""
        result: CreateApiKeyResult = self._request(ops.create_api_key(name, expires_at_ms, superadmin), timeout)
        return result

    def revoke_api_key(self, key_id: str, *, timeout: float | None = None) -> None:
        """Revoke an API key: its open connections get Forbidden from their next request on."""
        self._request(ops.revoke_api_key(key_id), timeout)

    def list_api_keys(self, *, timeout: float | None = None) -> list[ApiKeyInfo]:
        """Every stored API key (never the token)."""
        result: list[ApiKeyInfo] = self._request(ops.list_api_keys(), timeout)
        return result

    def set_acl(
        self, key_id: str, permissions: Iterable[AclPermission | tuple[str, str]], *, timeout: float | None = None
    ) -> None:
        """Replace a key's permissions with ``(kind, pattern)`` pairs or :class:`~fila.AclPermission` items."""
        self._request(ops.set_acl(key_id, permissions), timeout)

    def get_acl(self, key_id: str, *, timeout: float | None = None) -> AclEntry:
        """A key's superadmin flag and permissions."""
        result: AclEntry = self._request(ops.get_acl(key_id), timeout)
        return result


class _EnqueueBatch(ops.EnqueueBatchBase):
    """Waiter of one Enqueue frame sent for the accumulator: resolves its futures."""

    __slots__ = ()
    client: Client

    @staticmethod
    def send(
        client: Client,
        conn: SyncConnection,
        items: list[Any],
        futs: list[Any],
        size: int,
        group: ops.Group,
        deadline: float,
    ) -> None:
        """Encode ``items`` into frames (the group counts one member per frame) and write them."""
        fail = client._futures.fail
        frames = ops.enqueue_frames(conn.core, items, futs, size, lambda fut, exc: fail([fut], exc))
        if not frames:
            group.one_done()
            return
        if len(frames) > 1:
            group.add(len(frames) - 1)
        for rid, data, part, part_futs in frames:
            _EnqueueBatch(client, part, part_futs, group, deadline)._write(conn, rid, data)

    def _resolve(self, results: list[tuple[int, str]]) -> None:
        items = self.items
        self.client._futures.settle(
            self.futs, results, lambda i, code, text: ops.item_error(ops.ENQUEUE, items[i], code, text)
        )

    def _fail_futures(self, exc: BaseException) -> None:
        self.client._futures.fail(self.futs, exc)

    def _follow(self, leader_addr: str) -> None:
        with self.client._connect_lock:
            self.client._follow_leader(leader_addr)

    def fail(self, exc: BaseException) -> None:
        self.client._futures.fail(self.futs, exc)
        # Not from here: this may be a dying reader thread, and what the
        # accumulator sends next may need a new connection.
        self.client._timers.call_later(0.0, self.group.one_done)

    def _resend_later(self, delay: float) -> bool:
        if self.client._closed:
            return False
        self.client._timers.call_later(delay, self._resend)
        return True

    def _resend(self) -> None:
        try:
            conn = self.client._connection()
            rid, data = self.reencode(conn.core)
        except BaseException as exc:
            self.fail(ops.as_fila_error(exc, "enqueue could not be resent"))
            return
        self._write(conn, rid, data)


# --------------------------------------------------------------------- consumer


class _Closed(Exception):
    pass


class Consumer(ConsumerBase):
    """The messages of one subscription, on a connection of its own.

    Iterate it (``for msg in consumer`` or ``next(consumer)``) or call
    :meth:`get`. It is a context manager; leaving it, :meth:`close`, or
    dropping the last reference cancels the subscription. Deliveries wait in
    a bounded buffer; when it is full the connection stops being read, so the
    server holds back (TCP backpressure). A dropped connection is reopened
    and the subscription renewed with backoff (messages that were leased come
    back after their visibility timeout). :meth:`ack` / :meth:`nack` are
    batched.
    """

    _state: _ConsumerState
    _buf: deque[ConsumeMessage]

    def __init__(self, client: Client, queue: str, buffer_size: int) -> None:
        super().__init__(queue)
        state = _ConsumerState(client, queue, buffer_size)
        self._state = state
        self._buffer = state.buffer
        self._buf = state.buffer.messages
        self._ack = state.acks.submit
        self._nack = state.nacks.submit
        state.start()
        self._finalizer = weakref.finalize(self, state.close)

    def __iter__(self) -> Iterator[ConsumeMessage]:
        return self

    def __next__(self) -> ConsumeMessage:
        try:
            msg = self._buf.popleft()
        except IndexError:
            try:
                waited = self._state.wait(None)
            except _Closed:
                raise StopIteration from None
            assert waited is not None  # no timeout: a message, an error or closed
            return waited
        if self._buffer.paused:
            self._state.maybe_resume()
        return msg

    def get(self, timeout: float | None = None) -> ConsumeMessage | None:
        """The next message, or None if none came within ``timeout`` seconds (or the consumer is closed)."""
        try:
            msg = self._buf.popleft()
        except IndexError:
            try:
                return self._state.wait(timeout)
            except _Closed:
                return None
        if self._buffer.paused:
            self._state.maybe_resume()
        return msg

    def ack(self, message: ConsumeMessage) -> None:
        """Acknowledge ``message``, batched with other acks; a failure is logged (the message then comes back)."""
        self._ack((message.queue, message.id), None, 0)

    def nack(self, message: ConsumeMessage, error: str = "") -> None:
        """Reject ``message`` with the failure text ``error`` (batched, like :meth:`ack`); see ``Client.nack``."""
        self._nack((message.queue, message.id, error), None, 0)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every ack/nack given so far has been answered; False on timeout."""
        return self._state.flush(timeout)

    def close(self) -> None:
        """Cancel the subscription, flush acks, close the connection. Idempotent."""
        self._finalizer()

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class _ConsumerState:
    """Everything of a consumer the reader thread touches (never the Consumer itself, so GC works)."""

    def __init__(self, client: Client, queue: str, capacity: int) -> None:
        self.client_ref = weakref.ref(client)
        self.settings: Settings = client._settings
        self.timers = client._timers
        self.queue = queue
        self.sub = Subscription(client._nodes, queue, time.monotonic(), client._emit)
        self.delivered = 0
        self.moved_to = 0
        self.buffer: DeliveryBuffer[ConsumeMessage] = DeliveryBuffer(capacity)
        self.cond = threading.Condition(threading.Lock())
        self.waiting = 0
        self.flushing = 0
        self.closed = False
        self.error: BaseException | None = None
        self.conn: SyncConnection | None = None
        self.thread: threading.Thread | None = None
        self.closed_event = threading.Event()
        self.acks = SyncAccumulator(
            AccumulatorMode.AUTO, self._sender(ops.ACK), self.timers.call_later, MAX_BATCH_MESSAGES
        )
        self.nacks = SyncAccumulator(
            AccumulatorMode.AUTO, self._sender(ops.NACK), self.timers.call_later, MAX_BATCH_MESSAGES
        )

    # ---------------------------------------------------------- subscribe

    def start(self) -> None:
        """Subscribe (raising what the subscription's state machine gives up with), then start reading."""
        conn = self._subscribe(Decision("subscribe", 0.0, self.sub.target))
        if conn is None:
            raise self.error or ClientClosedError("the consumer was closed while subscribing")
        self.conn = conn
        self.thread = threading.Thread(target=self._run, name=f"fila-consumer-{self.queue}", daemon=True)
        self.thread.start()
        self._schedule_leader_check()

    def _subscribe(self, decision: Decision) -> SyncConnection | None:
        """Carry out decisions until subscribed (the connection) or given up / closed (None)."""
        while True:
            if decision.action == "fail":
                with self.cond:
                    self.error = decision.error
                    self.cond.notify_all()
                return None
            if decision.delay and self.closed_event.wait(decision.delay):
                return None
            if self.closed:
                return None
            if decision.action == "locate":
                decision = self.sub.located(self._leader_id(), time.monotonic())
                continue
            assert decision.settings is not None
            try:
                conn = self._subscribe_at(decision.settings)
            except Exception as exc:
                decision = self.sub.refused(exc, time.monotonic())
            else:
                if self.sub.subscribed(conn.core.node_id, time.monotonic()):
                    return conn
                conn.close()  # the consumer was closed meanwhile
                return None

    def _subscribe_at(self, settings: Settings) -> SyncConnection:
        conn = SyncConnection(settings, self._on_delivery)
        conn.open()
        # Learn the node id even if the Consume is refused: locating a leader relies on it.
        self.sub.nodes.learned(settings.address, conn.core.node_id)
        try:
            rid, frame = conn.core.consume_frame(self.queue)
            waiter = BlockingWaiter()
            conn.core.register(rid, waiter)
            conn.write(frame, waiter)
            conn.pump(waiter, time.monotonic() + settings.request_timeout)
            ops.check_consume_ok(waiter.frame, self.queue)
        except BaseException as exc:
            conn.close()
            raise ops.as_fila_error(exc, f"subscribing to {self.queue!r} at {settings.address} failed") from exc
        conn.gate = self._gate
        return conn

    def _run(self) -> None:
        conn = self.conn
        while conn is not None:
            conn.run_reader()
            if self.closed:
                return
            cause = conn.core.dead or ConnectionLostError("the connection ended")
            moved_to, self.moved_to = self.moved_to, 0
            self.conn = conn = self._subscribe(self.sub.lost(cause, time.monotonic(), moved_to))

    # ------------------------------------------------------- the leader

    def _leader_id(self) -> int:
        """The queue's leader node id by GetStats on the client's connection (0: unknown)."""
        client = self.client_ref()
        try:
            return 0 if client is None else client.get_stats(self.queue).leader_node_id
        except FilaError as exc:
            log.debug("locating the leader of %r failed: %s", self.queue, exc)
            return 0

    def _schedule_leader_check(self) -> None:
        interval = self.settings.leader_check_interval
        if interval is not None and not self.closed:
            self.timers.call_later(interval, self._leader_check_due)

    def _leader_check_due(self) -> None:
        conn = self.conn
        due = conn is not None and self.sub.check_due(conn.core.node_id, self.delivered)
        if conn is None or conn.dead or not due or self.buffer.messages:
            self._schedule_leader_check()
            return
        # GetStats blocks: not on the timers thread.
        threading.Thread(target=self._check_leader, args=(conn,), name="fila-leader-check", daemon=True).start()

    def _check_leader(self, conn: SyncConnection) -> None:
        client = self.client_ref()
        try:
            if client is not None:
                stats = client.get_stats(self.queue)
                answered = client._conn.core.node_id if client._conn is not None else 0
                ready = stats.depth - stats.in_flight
                if self.sub.leader_moved(conn.core.node_id, stats.leader_node_id, ready, answered):
                    self.moved_to = stats.leader_node_id
                    conn.die(ConnectionLostError(
                        f"node {conn.core.node_id} no longer leads {self.queue!r} (node {stats.leader_node_id} does)"
                    ))
        except FilaError as exc:
            log.debug("checking the leader of %r failed: %s", self.queue, exc)
        finally:
            self._schedule_leader_check()

    # ------------------------------------------------------- reader side

    def _on_delivery(self, messages: list[ConsumeMessage]) -> None:
        self.buffer.push(messages)
        self.delivered += 1
        if self.waiting:
            with self.cond:
                self.cond.notify()

    def _gate(self) -> None:
        # Stop reading while the buffer is full, unless a thread waits for answers on
        # this connection (flush/close): fire-and-forget acks are answered after resuming.
        buffer = self.buffer
        if len(buffer.messages) < buffer.capacity or self.closed or self.flushing:
            return
        conn = self.conn
        if conn is None:
            return
        with self.cond:
            buffer.paused = True
            try:
                while len(buffer.messages) > buffer.low and not self.flushing and not self.closed and not conn.dead:
                    self.cond.wait()
            finally:
                buffer.paused = False

    def maybe_resume(self) -> None:
        if self.buffer.should_resume():
            with self.cond:
                self.cond.notify_all()

    # ----------------------------------------------------- consumer side

    def wait(self, timeout: float | None) -> ConsumeMessage | None:
        msgs = self.buffer.messages
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            self.waiting += 1
            try:
                while not msgs:
                    if self.error is not None:
                        raise self.error
                    if self.closed:
                        raise _Closed
                    if deadline is None:
                        self.cond.wait()
                    else:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            return None
                        self.cond.wait(left)
                msg = msgs.popleft()
            finally:
                self.waiting -= 1
            if self.buffer.should_resume():
                self.cond.notify_all()
        return msg

    def _sender(self, kind: ops.HotKind) -> Any:
        def send(items: list[Any], futs: list[Any], size: int) -> None:
            acc = self.acks if kind is ops.ACK else self.nacks
            conn = self.conn
            if conn is None or conn.dead:
                # A lease is not tied to the connection that received it: use the client's.
                client = self.client_ref()
                try:
                    if client is None:
                        raise ClientClosedError("the client is gone")
                    conn = client._connection()
                except BaseException as exc:
                    ops.AckBatch(items, kind, ops.Group(1, acc.done)).fail(exc)
                    return
            ops.send_acks(conn, items, kind, acc.done)

        return send

    def flush(self, timeout: float | None) -> bool:
        wait = self.settings.request_timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        with self.cond:
            self.flushing += 1
            self.cond.notify_all()
        try:
            ok = self.acks.drain(wait)
            return self.nacks.drain(max(deadline - time.monotonic(), 0.0)) and ok
        finally:
            with self.cond:
                self.flushing -= 1

    def close(self) -> None:
        if self.closed:
            return
        self.sub.close()
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.closed_event.set()
        conn = self.conn
        in_reader = self.thread is threading.current_thread()
        if conn is not None and not conn.dead:
            try:
                conn.write(conn.core.cancel_frame())
            except Exception:  # pragma: no cover
                pass
        wait = 0.0 if in_reader else min(self.settings.request_timeout, 10.0)
        deadline = time.monotonic() + wait
        self.acks.close(wait)
        self.nacks.close(max(deadline - time.monotonic(), 0.0))
        conn = self.conn
        if conn is not None:
            # Wait (briefly) for the server's close: it unregisters this consumer first, so a
            # message enqueued after close() returns is never leased to it.
            conn.close(linger=0.0 if in_reader else min(max(deadline - time.monotonic(), 0.1), 2.0))
        self.buffer.messages.clear()
        t = self.thread
        if t is not None and not in_reader:
            t.join(5.0)
