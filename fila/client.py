"""The synchronous, thread-safe client.

One :class:`Client` keeps one multiplexed connection for requests (any number
of threads may use it at once) and opens one more connection per
:meth:`Client.consume`. A background reader thread per connection completes
the waiting threads; nothing polls.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from types import TracebackType
from typing import Any

from . import _operations as ops
from ._accumulator import AccumulatorMode, SyncAccumulator
from ._connection import Backoff, ClientBase
from ._futures import FutureFactory
from ._sync_io import BlockingWaiter, SyncConnection
from .errors import (
    ChannelFullError,
    ClientClosedError,
    ConnectError,
    FilaConnectionError,
    FilaError,
    NodeNotReadyError,
    NotLeaderError,
    ProtocolError,
    RequestTimeoutError,
    ServerError,
)
from .protocol import (
    encode_enqueue,
    encode_message,
)
from .types import Acl, ApiKey, ApiKeyInfo, EnqueueResult, Message, Permission, QueueList, Stats

__all__ = ["Client", "Consumer"]

log = logging.getLogger("fila")

_MAX_REDIRECTS = 5
_RETRYABLE_CONSUME = (NotLeaderError, NodeNotReadyError, ChannelFullError)


class _Timers:
    """One lazily started daemon thread running delayed callbacks."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cond = threading.Condition(threading.Lock())
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), fn))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fila-timers", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        heap = self._heap
        while True:
            with self._cond:
                while True:
                    if heap:
                        left = heap[0][0] - time.monotonic()
                        if left <= 0 or self._closed:
                            fn = heapq.heappop(heap)[2]
                            break
                        self._cond.wait(left)
                    elif self._closed:
                        self._thread = None
                        return
                    else:
                        self._cond.wait()
            try:
                fn()
            except Exception:  # pragma: no cover
                log.exception("error in a fila timer callback")

    def close(self) -> None:
        """Run what is scheduled now, then stop."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(10.0)


def _deadline(timeout: float | None, default: float) -> float:
    return time.monotonic() + (default if timeout is None else timeout)


class Client(ClientBase):
    """A thread-safe client for a Fila server.

    ``addr`` is ``host:port``, ``[v6]:port`` or a bare host (port 5555). The
    connection opens on first use (or :meth:`connect`) and reopens, with
    backoff, on the call after it was lost. Use it as a context manager, or
    call :meth:`close`.

    TLS: ``tls=True`` verifies the server against the system trust store;
    ``ca_cert`` (PEM bytes) replaces that store; ``client_cert`` plus
    ``client_key`` (PEM bytes) add a client certificate (mTLS). ``api_key``
    is sent in the handshake and never shown in a repr or a log line.

    ``accumulator`` sets how enqueues are batched: :attr:`AccumulatorMode.AUTO`,
    :class:`Linger` or :attr:`AccumulatorMode.DISABLED`.

    The constructor (keyword arguments and defaults) is :class:`ClientBase`'s,
    the same for :class:`~fila.AsyncClient`.
    """

    _conn: SyncConnection | None

    def _setup(self) -> None:
        self._futures = FutureFactory()
        self._new_future = self._futures.new
        self._timers = _Timers()
        self._acc = SyncAccumulator(self._mode, self._send_enqueues, self._timers.call_later)
        self._submit = self._acc.submit
        self._connect_lock = threading.Lock()
        self._consumers: weakref.WeakSet[Consumer] = weakref.WeakSet()

    # ----------------------------------------------------------- lifecycle

    def __enter__(self) -> Client:
        self.connect()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def connect(self) -> None:
        """Open the connection now (otherwise the first call does)."""
        self._connection()

    @property
    def node_id(self) -> int:
        """The node id the server reported in its handshake (0 for a single node)."""
        return self._connection().core.node_id

    def close(self, timeout: float | None = None) -> None:
        """Flush queued enqueues and wait for their answers, stop consumers, send Disconnect, close.

        Waits at most ``timeout`` (default: the request timeout) for pending
        answers; whatever is still pending then fails with
        :class:`~fila.errors.ClientClosedError`. Closing twice is harmless.
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
        return self._reconnect()

    def _reconnect(self) -> SyncConnection:
        with self._connect_lock:
            live: SyncConnection | None = self._live_connection()
            if live is not None:
                return live
            pause = self._reconnect_pause()
            if pause > 0:
                time.sleep(pause)
            conn = SyncConnection(self._settings)
            try:
                conn.open()
            except FilaConnectionError:
                self._connect_failed()
                raise
            self._connect_succeeded()
            conn.start("fila-reader")
            self._conn = conn
            return conn

    # -------------------------------------------------------- generic call

    def _call(self, op: ops.Op, timeout: float | None) -> Any:
        retry = ops.Retry(_deadline(timeout, self._settings.request_timeout))
        while True:
            conn = self._connection()
            rid, data = ops.encode_op(op, conn.core)
            frame = conn.request(rid, data, retry.deadline)
            try:
                return ops.parse_response(op, frame.opcode, frame.payload)
            except ChannelFullError as exc:
                time.sleep(retry.pause_or_raise(exc))

    def _hot_batch(self, kind: ops.HotKind, items: list[Any], timeout: float | None) -> list[Any]:
        """Send ``items`` in as many frames as needed; per item, the decoded result or a ServerError."""
        if not items:
            return []
        batch = ops.HotBatch(kind, items, _deadline(timeout, self._settings.request_timeout))
        while True:
            conn = self._connection()
            sent: list[tuple[int, int, int, BlockingWaiter]] = []
            for rid, data, s, e in batch.frames(conn.core):
                waiter = BlockingWaiter()
                conn.core.register(rid, waiter)
                conn.write(data, waiter)
                sent.append((rid, s, e, waiter))
            for rid, s, e, waiter in sent:
                batch.answer(conn.wait_answer(rid, waiter, batch.deadline), s, e)
            delay = batch.retry_delay()
            if delay is None:
                return batch.out
            time.sleep(delay)

    # ----------------------------------------------------------- producing

    def enqueue(
        self, queue: str, payload: bytes, headers: Mapping[str, str] | None = None, *, timeout: float | None = None
    ) -> str:
        """Enqueue one message and return its id (raises the per-message error, if any).

        Goes through the accumulator, so concurrent calls share frames.
        """
        fut = self.enqueue_nowait(queue, payload, headers)
        wait = self._wait_or_default(timeout)
        try:
            return fut.result(wait)
        except FutureTimeoutError:
            if fut.done():
                return fut.result(0)
            raise RequestTimeoutError(f"no answer to Enqueue within {wait}s") from None

    def enqueue_nowait(self, queue: str, payload: bytes, headers: Mapping[str, str] | None = None) -> Future[str]:
        """Submit one message without waiting; the future resolves to its id or its error.

        Every future resolves: with the id, the message's own error, or a
        connection / closed error. :meth:`close` waits for them.
        """
        if type(queue) is not str or type(payload) is not bytes or (headers is not None and type(headers) is not dict):
            ops.check_enqueue(queue, payload, headers)
        fut = self._new_future()
        self._submit((queue, headers, payload), fut, len(payload))
        return fut

    def enqueue_many(
        self,
        messages: Iterable[tuple[str, bytes] | tuple[str, bytes, Mapping[str, str] | None]],
        *,
        timeout: float | None = None,
    ) -> list[EnqueueResult]:
        """Enqueue a batch: ``(queue, payload)`` or ``(queue, payload, headers)`` each.

        Returns one :class:`EnqueueResult` per message, in order; a message
        that fails carries its error and never fails the others. Frames are
        cut to the server's frame size. Transport failures raise.
        """
        items = [ops.enqueue_item(m) for m in messages]
        return ops.enqueue_results(self._hot_batch(ops.ENQUEUE, items, timeout))

    def flush(self, timeout: float | None = None) -> bool:
        """Send queued enqueues now and wait for their answers; False if ``timeout`` passed first."""
        return self._acc.drain(self._wait_or_default(timeout))

    def _send_enqueues(self, items: list[Any], futs: list[Any], size: int) -> None:
        """Accumulator callback: put a batch on the wire (never raises)."""
        acc_done = self._acc.done
        try:
            conn = self._connection()
        except BaseException as exc:
            self._futures.fail(futs, _as_fila_error(exc))
            acc_done()
            return
        _EnqueueBatch.send(
            self, conn, items, futs, size, ops.Group(1, acc_done), _deadline(None, self._settings.request_timeout)
        )

    # ----------------------------------------------------------- consuming

    def consume(self, queue: str, *, buffer_size: int | None = None) -> Consumer:
        """Subscribe to ``queue`` on a connection of its own; iterate the result for messages.

        The returned :class:`Consumer` is an iterator and a context manager;
        leaving it (``with`` block, ``break`` plus garbage collection,
        :meth:`Consumer.close`) cancels the subscription. Raises here if the
        subscription is refused (e.g. :class:`~fila.errors.ForbiddenError`).
        """
        return self._add_consumer(Consumer, queue, buffer_size)

    def ack(self, queue: str, message_id: str, *, timeout: float | None = None) -> None:
        """Acknowledge one delivered message (raises e.g. MessageNotFoundError)."""
        err = self.ack_many([(queue, message_id)], timeout=timeout)[0]
        if err is not None:
            raise err

    def nack(self, queue: str, message_id: str, error: str = "", *, timeout: float | None = None) -> None:
        """Negatively acknowledge one message: it is retried (or dead-lettered) by the server."""
        err = self.nack_many([(queue, message_id, error)], timeout=timeout)[0]
        if err is not None:
            raise err

    def ack_many(
        self, items: Iterable[Message | tuple[str, str]], *, timeout: float | None = None
    ) -> list[ServerError | None]:
        """Ack several messages (``Message`` or ``(queue, message_id)``); per item None or its error."""
        return ops.ack_errors(self._hot_batch(ops.ACK, [ops.ack_item(i) for i in items], timeout))

    def nack_many(
        self, items: Iterable[tuple[Message, str] | tuple[str, str, str]], *, timeout: float | None = None
    ) -> list[ServerError | None]:
        """Nack several messages (``(queue, message_id, error)`` or ``(Message, error)``)."""
        return ops.ack_errors(self._hot_batch(ops.NACK, [ops.nack_item(i) for i in items], timeout))

    # --------------------------------------------------------------- admin

    def create_queue(
        self,
        name: str,
        *,
        on_enqueue: str | None = None,
        on_failure: str | None = None,
        visibility_timeout_ms: int = 0,
        timeout: float | None = None,
    ) -> str:
        """Create a queue (and its ``<name>.dlq``); returns the queue id. Lua hooks are optional."""
        return self._call(ops.create_queue(name, on_enqueue, on_failure, visibility_timeout_ms), timeout)  # type: ignore[no-any-return]

    def delete_queue(self, name: str, *, timeout: float | None = None) -> None:
        self._call(ops.delete_queue(name), timeout)

    def get_stats(self, queue: str, *, timeout: float | None = None) -> Stats:
        """Depth, in-flight count, consumers, DRR and throttle state of one queue."""
        return self._call(ops.get_stats(queue), timeout)  # type: ignore[no-any-return]

    def list_queues(self, *, timeout: float | None = None) -> QueueList:
        return self._call(ops.list_queues(), timeout)  # type: ignore[no-any-return]

    def set_config(self, key: str, value: str, *, timeout: float | None = None) -> None:
        self._call(ops.set_config(key, value), timeout)

    def get_config(self, key: str, *, timeout: float | None = None) -> str:
        """The value of a runtime config key ("" when unset)."""
        return self._call(ops.get_config(key), timeout)  # type: ignore[no-any-return]

    def list_config(self, prefix: str = "", *, timeout: float | None = None) -> dict[str, str]:
        return self._call(ops.list_config(prefix), timeout)  # type: ignore[no-any-return]

    def redrive(self, dlq_queue: str, count: int = 0, *, timeout: float | None = None) -> int:
        """Move up to ``count`` (0 = all) messages from a DLQ back to its parent; returns how many moved."""
        return self._call(ops.redrive(dlq_queue, count), timeout)  # type: ignore[no-any-return]

    # ---------------------------------------------------------------- auth

    def create_api_key(
        self, name: str, *, expires_at_ms: int = 0, superadmin: bool = False, timeout: float | None = None
    ) -> ApiKey:
        """Create an API key; the plaintext token (``.key``) is returned only this once."""
        return self._call(ops.create_api_key(name, expires_at_ms, superadmin), timeout)  # type: ignore[no-any-return]

    def revoke_api_key(self, key_id: str, *, timeout: float | None = None) -> None:
        self._call(ops.revoke_api_key(key_id), timeout)

    def list_api_keys(self, *, timeout: float | None = None) -> list[ApiKeyInfo]:
        return self._call(ops.list_api_keys(), timeout)  # type: ignore[no-any-return]

    def set_acl(
        self, key_id: str, permissions: Iterable[Permission | tuple[str, str]], *, timeout: float | None = None
    ) -> None:
        """Replace a key's permissions (``Permission(kind, pattern)`` or pairs)."""
        self._call(ops.set_acl(key_id, permissions), timeout)

    def get_acl(self, key_id: str, *, timeout: float | None = None) -> Acl:
        return self._call(ops.get_acl(key_id), timeout)  # type: ignore[no-any-return]


# --------------------------------------------------------------------- helpers


def _as_fila_error(exc: BaseException) -> BaseException:
    if isinstance(exc, FilaError):
        return exc
    err = ConnectError(f"could not send: {exc}")
    err.__cause__ = exc
    return err


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
        """Encode ``items`` into frames (one group member becomes one per frame) and write them."""
        core = conn.core
        fail = client._futures.fail
        items, futs, frames = ops.enqueue_frames(core, items, futs, size, lambda fut, exc: fail([fut], exc))
        if not frames:
            group.one_done()
            return
        if len(frames) > 1:
            group.add(len(frames) - 1)
        for rid, data, part, part_futs in ops.split_frames(frames, items, futs):
            batch = _EnqueueBatch(client, part, part_futs, group, deadline)
            batch._write(conn, rid, data)

    def _resolve(self, results: list[tuple[int, str]]) -> None:
        self.client._futures.settle(self.futs, results)

    def _fail_futures(self, exc: BaseException) -> None:
        self.client._futures.fail(self.futs, exc)

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
            rid = conn.core.next_id()
            data = encode_enqueue(rid, self.items, conn.core.max_frame_size)
        except BaseException as exc:
            self.fail(_as_fila_error(exc))
            return
        self._write(conn, rid, data)


# --------------------------------------------------------------------- consumer


class _StopConsuming(Exception):
    pass


class Consumer:
    """Messages of one subscription, on a connection of its own.

    Iterate it (``for msg in consumer``) or call :meth:`get`. It is a context
    manager; leaving it, :meth:`close`, or dropping the last reference sends
    CancelConsume. Deliveries wait in a bounded buffer; when it is full the
    connection stops being read, so the server holds back (TCP backpressure).
    A dropped connection is re-established and the subscription renewed with
    backoff (messages that were leased come back after their visibility
    timeout). :meth:`ack` / :meth:`nack` are batched over this connection.
    """

    def __init__(self, client: Client, queue: str, buffer_size: int) -> None:
        if type(queue) is not str:
            raise TypeError(f"queue must be str, got {type(queue).__name__}")
        self.queue = queue
        state = _ConsumerState(client, queue, buffer_size)
        self._state = state
        self._buf = state.buf
        state.start()
        self._finalizer = weakref.finalize(self, state.close)

    def __repr__(self) -> str:
        return f"<fila.Consumer queue={self.queue!r} {'closed' if self._state.closed else 'open'}>"

    def __iter__(self) -> Iterator[Message]:
        return self

    def __next__(self) -> Message:
        try:
            msg = self._buf.popleft()
        except IndexError:
            try:
                return self._state.wait(None)  # type: ignore[return-value]
            except _StopConsuming:
                raise StopIteration from None
        state = self._state
        if state.paused and len(self._buf) <= state.low:
            state.wake()
        return msg  # type: ignore[no-any-return]

    def get(self, timeout: float | None = None) -> Message | None:
        """The next message, or None if none came within ``timeout`` seconds (or the consumer closed)."""
        try:
            msg = self._buf.popleft()
        except IndexError:
            try:
                return self._state.wait(timeout)
            except _StopConsuming:
                return None
        state = self._state
        if state.paused and len(self._buf) <= state.low:
            state.wake()
        return msg  # type: ignore[no-any-return]

    def ack(self, message: Message) -> None:
        """Acknowledge ``message``, batched with other acks; failures are logged (the message then comes back)."""
        self._state.acks.submit((message.queue, message.id), None, 0)

    def nack(self, message: Message, error: str = "") -> None:
        """Negatively acknowledge ``message`` (batched, like :meth:`ack`)."""
        self._state.nacks.submit((message.queue, message.id, error), None, 0)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every ack/nack given so far has been answered; False on timeout."""
        return self._state.flush(timeout)

    @property
    def buffered(self) -> int:
        """Messages received and not yet taken."""
        return len(self._buf)

    @property
    def closed(self) -> bool:
        return self._state.closed

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
        self.origin = client._settings
        self.settings = client._settings
        self.timers = client._timers
        self.queue = queue
        self.capacity = capacity
        self.low = capacity // 2
        self.buf: deque[Any] = deque()
        self.cond = threading.Condition(threading.Lock())
        self.waiting = 0
        self.flushing = 0
        self.paused = False
        self.closed = False
        self.error: BaseException | None = None
        self.conn: SyncConnection | None = None
        self.consume_rid = 0
        self.thread: threading.Thread | None = None
        self.closed_event = threading.Event()
        self.backoff = Backoff(self.settings.reconnect_initial, self.settings.reconnect_max)
        self.acks = SyncAccumulator(
            AccumulatorMode.AUTO,
            self._sender(ops.ACK, "ack"),
            self.timers.call_later,
        )
        self.nacks = SyncAccumulator(
            AccumulatorMode.AUTO,
            self._sender(ops.NACK, "nack"),
            self.timers.call_later,
        )

    # ---------------------------------------------------------- subscribe

    def start(self) -> None:
        deadline = time.monotonic() + self.settings.request_timeout
        backoff = Backoff(self.settings.reconnect_initial, self.settings.reconnect_max)
        while True:
            try:
                self.conn = self._subscribe(time.monotonic() + self.settings.request_timeout)
                break
            except (NotLeaderError, NodeNotReadyError, ChannelFullError):
                delay = backoff.next()
                if time.monotonic() + delay >= deadline:
                    raise
                time.sleep(delay)
        self.thread = threading.Thread(target=self._run, name=f"fila-consumer-{self.queue}", daemon=True)
        self.thread.start()

    def _subscribe(self, deadline: float) -> SyncConnection:
        """Connect and subscribe (following NotLeader redirects); return the live connection."""
        settings = self.settings
        for _ in range(_MAX_REDIRECTS + 1):
            conn = SyncConnection(settings, self._on_delivery)
            try:
                conn.open()
            except FilaConnectionError:
                if settings is not self.origin:  # the redirect target is gone: start over at the origin
                    self.settings = self.origin
                raise
            rid = conn.core.next_id()
            conn.core.consume_id = rid
            waiter = BlockingWaiter()
            conn.core.register(rid, waiter)
            try:
                conn.write(encode_message("ConsumeRequest", rid, {"queue": self.queue}), waiter)
                conn.pump(waiter, deadline)
                ops.check_consume_ok(waiter.frame)
            except NotLeaderError as exc:
                conn.close()
                if exc.leader_addr:
                    log.info("consume %r: redirected to leader %s", self.queue, exc.leader_addr)
                    settings = self.settings = self.origin.redirected(exc.leader_addr)
                    continue
                raise
            except FilaError:
                conn.close()
                raise
            except OSError as exc:
                conn.close()
                raise ConnectError(f"subscribing to {self.queue!r} at {settings.address} failed: {exc}") from exc
            self.consume_rid = rid
            conn.gate = self._gate
            log.debug("subscribed to %r at %s", self.queue, settings.address)
            return conn
        raise NotLeaderError(f"too many leader redirects subscribing to {self.queue!r}")

    def _run(self) -> None:
        conn = self.conn
        while True:
            assert conn is not None
            conn.run_reader()
            if self.closed:
                return
            log.info("consumer of %r lost its connection; resubscribing", self.queue)
            conn = None
            while conn is None:
                if self.closed_event.wait(self.backoff.next()):
                    return
                try:
                    conn = self._subscribe(time.monotonic() + self.settings.request_timeout)
                except (FilaConnectionError, ProtocolError, *_RETRYABLE_CONSUME) as exc:
                    log.debug("resubscribing to %r failed: %s", self.queue, exc)
                except ServerError as exc:
                    log.error("consumer of %r stopped: %s", self.queue, exc)
                    with self.cond:
                        self.error = exc
                        self.cond.notify_all()
                    return
            self.backoff.reset()
            if self.closed:
                conn.close()
                return
            self.conn = conn

    # ------------------------------------------------------- reader side

    def _on_delivery(self, messages: list[Any]) -> None:
        self.buf.extend(messages)
        if self.waiting:
            with self.cond:
                self.cond.notify()

    def _gate(self) -> None:
        # Stop reading while the buffer is full, unless a thread waits for answers on
        # this connection (flush/close): fire-and-forget acks are answered after resuming.
        buf = self.buf
        if len(buf) < self.capacity or self.closed or self.flushing:
            return
        conn = self.conn
        if conn is None:
            return
        with self.cond:
            self.paused = True
            try:
                while len(buf) > self.low and not self.flushing and not self.closed and not conn.dead:
                    self.cond.wait()
            finally:
                self.paused = False

    def wake(self) -> None:
        with self.cond:
            self.cond.notify_all()

    # ----------------------------------------------------- consumer side

    def wait(self, timeout: float | None) -> Message | None:
        buf = self.buf
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            self.waiting += 1
            try:
                while not buf:
                    if self.closed:
                        raise _StopConsuming
                    if self.error is not None:
                        raise self.error
                    if deadline is None:
                        self.cond.wait()
                    else:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            return None
                        self.cond.wait(left)
                msg = buf.popleft()
            finally:
                self.waiting -= 1
            if self.paused and len(buf) <= self.low:
                self.cond.notify_all()
        return msg  # type: ignore[no-any-return]

    def _sender(self, kind: ops.HotKind, what: str) -> Callable[[list[Any], list[Any], int], None]:
        def send(items: list[Any], futs: list[Any], size: int) -> None:
            acc = self.acks if what == "ack" else self.nacks
            conn = self.conn
            if conn is None or conn.dead:
                client = self.client_ref()
                try:
                    if client is None:
                        raise ClientClosedError("the client is gone")
                    conn = client._connection()
                except BaseException as exc:
                    log.warning("%d %ss could not be sent: %s", len(items), what, exc)
                    acc.done()
                    return
            ops.send_acks(conn, items, kind, what, acc.done)

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
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.closed_event.set()
        conn = self.conn
        in_reader = self.thread is threading.current_thread()
        if conn is not None and not conn.dead:
            try:
                conn.write(b"\x00\x00\x00\x06\x15\x00" + self.consume_rid.to_bytes(4, "big"))
            except Exception:  # pragma: no cover
                pass
        wait = 0.0 if in_reader else min(self.settings.request_timeout, 10.0)
        deadline = time.monotonic() + wait
        self.acks.close(wait)
        self.nacks.close(max(deadline - time.monotonic(), 0.0))
        conn = self.conn
        if conn is not None:
            conn.close()
        self.buf.clear()
        t = self.thread
        if t is not None and not in_reader:
            t.join(5.0)
