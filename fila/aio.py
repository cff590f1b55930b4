"""The asyncio client: :class:`fila.Client`'s operations as coroutines.

Same constructor, same methods and parameters, same docstrings (checked at
import by :func:`fila._surface.twin_of`); it connects on ``async with`` or
the first call. Use it from one event loop (it is not thread-safe). The
protocol decisions are :mod:`fila._core`'s; this module only drives the loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Generator
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from . import _operations as ops
from ._accumulator import AsyncAccumulator
from ._aio_transport import AioConnection
from ._aio_transport import FutureWaiter
from ._core import Decision
from ._core import DeliveryBuffer
from ._core import Retry
from ._core import Settings
from ._core import Subscription
from ._surface import ClientBase
from ._surface import ConsumerBase
from ._surface import twin_of
from .client import Client
from .client import Consumer
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

__all__ = ["AsyncClient", "AsyncConsumer"]

log = logging.getLogger("fila")


@twin_of(Client)
class AsyncClient(ClientBase):
    """The asyncio twin of :class:`fila.Client`: same parameters and operations, awaited.

    It connects on ``async with`` or on the first call (no I/O in the
    constructor). ``enqueue_nowait`` returns an ``asyncio.Future``;
    ``await client.consume(q)`` returns an :class:`AsyncConsumer`
    (``async for``), and ``async with client.consume(q) as consumer`` closes
    it on exit.
    """

    _conn: AioConnection | None

    def _setup(self) -> None:
        self._acc: AsyncAccumulator | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._new_future: Callable[[], asyncio.Future[Any]] = _unbound
        self._connect_lock: asyncio.Lock | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._consumers: weakref.WeakSet[AsyncConsumer] = weakref.WeakSet()

    def _bind(self) -> AsyncAccumulator:
        acc = self._acc
        if acc is None:
            loop = self._loop = asyncio.get_running_loop()
            if type(loop).create_future is asyncio.BaseEventLoop.create_future:
                # What BaseEventLoop.create_future does, minus a Python frame per message.
                self._new_future = functools.partial(asyncio.Future, loop=loop)
            else:  # a loop with futures of its own (e.g. uvloop)
                self._new_future = loop.create_future
            acc = self._acc = AsyncAccumulator(self._mode, self._send_enqueues, loop.call_later, self._batch_cap)
        return acc

    # --------------------------------------------------------- lifecycle

    async def __aenter__(self) -> AsyncClient:
        await self._connection()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def node_id(self) -> int:
        conn = self._conn
        return conn.core.node_id if conn is not None else 0

    async def close(self, *, timeout: float | None = None) -> None:
        if self._closed:
            return
        wait = self._wait_or_default(timeout)
        for consumer in list(self._consumers):
            await consumer.close()
        acc = self._acc
        if acc is not None:
            acc.close()
            await self._idle(acc, wait)
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        for task in list(self._tasks):
            task.cancel()

    def _call_later(self, delay: float, fn: Callable[[], None]) -> None:
        loop = self._loop or asyncio.get_running_loop()
        loop.call_later(delay, fn)

    def _check_open(self) -> None:
        # As fila-python 0.3.0's did, a closed AsyncClient reconnects on its next call.
        if self._closed:
            self._closed = False
            self._acc = None
            self._conn = None

    async def _idle(self, acc: AsyncAccumulator, wait: float) -> bool:
        """Wait up to ``wait`` seconds until ``acc`` has nothing queued or in flight."""
        if acc.idle:
            return True
        assert self._loop is not None
        fut = self._loop.create_future()
        acc.add_idle_waiter(fut)
        try:
            await asyncio.wait_for(fut, wait)
        except asyncio.TimeoutError:
            return False
        return True

    async def _connection(self) -> AioConnection:
        conn = self._conn
        if conn is not None and not conn.dead:
            return conn
        self._bind()
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            live: AioConnection | None = self._live_connection()
            if live is not None:
                return live
            pause = self._reconnect_pause()
            if pause > 0:
                await asyncio.sleep(pause)
            while True:
                try:
                    conn = await AioConnection.open(self._settings)
                    break
                except FilaConnectionError:
                    if not self._connect_failed():
                        raise
            self._connect_succeeded(conn)
            self._conn = conn
            return conn

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------- generic call

    async def _request(self, op: ops.Op, timeout: float | None) -> Any:
        retry = Retry(self._deadline(timeout))
        while True:
            conn = await self._connection()
            rid, data = ops.encode_op(op, conn.core)
            frame = await conn.request(rid, data, retry.deadline - time.monotonic())
            try:
                return ops.parse_response(op, frame.opcode, frame.payload)
            except FilaError as exc:
                action, arg = retry.after(exc, time.monotonic())
            if action == "redirect":
                self._follow_leader(arg)
            else:
                await asyncio.sleep(arg)

    async def _hot_batch(self, kind: ops.HotKind, items: list[Any], timeout: float | None) -> list[Any]:
        if not items:
            return []
        batch = ops.HotBatch(kind, items, self._deadline(timeout))
        while True:
            conn = await self._connection()
            sent: list[tuple[int, list[int], FutureWaiter]] = []
            for rid, data, part in batch.frames(conn.core):
                waiter = FutureWaiter(conn.loop.create_future())
                conn.core.register(rid, waiter)
                conn.write(data, waiter)
                sent.append((rid, part, waiter))
            for rid, part, waiter in sent:
                batch.answer(await conn.answer(rid, waiter, batch.deadline - time.monotonic()), part)
            delay = batch.retry_delay()
            if delay is None:
                return batch.out
            if batch.leader_addr is not None:
                self._follow_leader(batch.leader_addr)
            await asyncio.sleep(delay)

    # ---------------------------------------------------------- producing

    async def enqueue(
        self, queue: str, headers: dict[str, str] | None, payload: bytes, *, timeout: float | None = None
    ) -> str:
        fut = self.enqueue_nowait(queue, headers, payload)
        wait = self._wait_or_default(timeout)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), wait)
        except asyncio.TimeoutError:
            raise RequestTimeoutError(f"enqueue to {queue!r}: no answer within {wait}s") from None

    def enqueue_nowait(self, queue: str, headers: dict[str, str] | None, payload: bytes) -> asyncio.Future[str]:
        if type(queue) is not str or type(payload) is not bytes or (headers is not None and type(headers) is not dict):
            ops.check_enqueue(queue, headers, payload)
        self._check_open()
        acc = self._acc or self._bind()
        fut = self._new_future()
        acc.submit((queue, headers, payload), fut, len(payload))
        return fut

    async def enqueue_many(
        self, messages: Iterable[tuple[str, dict[str, str] | None, bytes]], *, timeout: float | None = None
    ) -> list[EnqueueResult]:
        items = ops.enqueue_items(messages)
        return ops.enqueue_results(items, await self._hot_batch(ops.ENQUEUE, items, timeout))

    async def flush(self, timeout: float | None = None) -> bool:
        acc = self._acc
        if acc is None:
            return True
        acc.flush()
        return await self._idle(acc, self._wait_or_default(timeout))

    def _send_enqueues(self, items: list[Any], futs: list[Any], size: int) -> None:
        conn = self._conn
        if conn is not None and not conn.dead:
            _AioEnqueueBatch.send(self, conn, items, futs, size, self._deadline(None))
        else:
            self._spawn(self._send_after_connect(items, futs, size))

    async def _send_after_connect(self, items: list[Any], futs: list[Any], size: int) -> None:
        try:
            conn = await self._connection()
        except BaseException as exc:
            _fail_futures(futs, ops.as_fila_error(exc, "enqueue could not be sent"))
            assert self._acc is not None
            self._acc.done()
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        _AioEnqueueBatch.send(self, conn, items, futs, size, self._deadline(None))

    # ---------------------------------------------------------- consuming

    def consume(self, queue: str, *, buffer_size: int | None = None) -> _ConsumeCall:
        self._check_open()
        consumer = AsyncConsumer(self, queue, buffer_size or self._settings.consumer_buffer)
        self._consumers.add(consumer)
        return _ConsumeCall(consumer)

    async def ack(self, queue: str, msg_id: str, *, timeout: float | None = None) -> None:
        err = (await self.ack_many([(queue, msg_id)], timeout=timeout))[0]
        if err is not None:
            raise err

    async def nack(self, queue: str, msg_id: str, error: str, *, timeout: float | None = None) -> None:
        err = (await self.nack_many([(queue, msg_id, error)], timeout=timeout))[0]
        if err is not None:
            raise err

    async def ack_many(
        self, items: Iterable[ConsumeMessage | tuple[str, str]], *, timeout: float | None = None
    ) -> list[FilaError | None]:
        batch = [ops.ack_item(i) for i in items]
        return ops.ack_errors(ops.ACK, batch, await self._hot_batch(ops.ACK, batch, timeout))

    async def nack_many(
        self, items: Iterable[tuple[ConsumeMessage, str] | tuple[str, str, str]], *, timeout: float | None = None
    ) -> list[FilaError | None]:
        batch = [ops.nack_item(i) for i in items]
        return ops.ack_errors(ops.NACK, batch, await self._hot_batch(ops.NACK, batch, timeout))

    # -------------------------------------------------------------- admin

    async def create_queue(
        self, name: str, *, on_enqueue: str | None = None, on_failure: str | None = None,
        visibility_timeout_ms: int = 0, timeout: float | None = None,
    ) -> None:
        await self._request(ops.create_queue(name, on_enqueue, on_failure, visibility_timeout_ms), timeout)

    async def delete_queue(self, name: str, *, timeout: float | None = None) -> None:
        await self._request(ops.delete_queue(name), timeout)

    async def get_stats(self, queue: str, *, timeout: float | None = None) -> StatsResult:
        result: StatsResult = await self._request(ops.get_stats(queue), timeout)
        return result

    async def list_queues(self, *, timeout: float | None = None) -> list[QueueInfo]:
        result: list[QueueInfo] = await self._request(ops.list_queues(), timeout)
        return result

    async def set_config(self, key: str, value: str, *, timeout: float | None = None) -> None:
        await self._request(ops.set_config(key, value), timeout)

    async def get_config(self, key: str, *, timeout: float | None = None) -> str:
        result: str = await self._request(ops.get_config(key), timeout)
        return result

    async def list_config(self, prefix: str = "", *, timeout: float | None = None) -> dict[str, str]:
        result: dict[str, str] = await self._request(ops.list_config(prefix), timeout)
        return result

    async def redrive(self, dlq_queue: str, count: int = 0, *, timeout: float | None = None) -> int:
        result: int = await self._request(ops.redrive(dlq_queue, count), timeout)
        return result

    # --------------------------------------------------------------- auth

    async def create_api_key(
        self, name: str, *, expires_at_ms: int = 0, superadmin: bool = False, timeout: float | None = None
    ) -> CreateApiKeyResult:
        result: CreateApiKeyResult = await self._request(ops.create_api_key(name, expires_at_ms, superadmin), timeout)
        return result

    async def revoke_api_key(self, key_id: str, *, timeout: float | None = None) -> None:
        await self._request(ops.revoke_api_key(key_id), timeout)

    async def list_api_keys(self, *, timeout: float | None = None) -> list[ApiKeyInfo]:
        result: list[ApiKeyInfo] = await self._request(ops.list_api_keys(), timeout)
        return result

    async def set_acl(
        self, key_id: str, permissions: Iterable[AclPermission | tuple[str, str]], *, timeout: float | None = None
    ) -> None:
        await self._request(ops.set_acl(key_id, permissions), timeout)

    async def get_acl(self, key_id: str, *, timeout: float | None = None) -> AclEntry:
        result: AclEntry = await self._request(ops.get_acl(key_id), timeout)
        return result


def _unbound() -> asyncio.Future[Any]:  # pragma: no cover - replaced on first use
    raise RuntimeError("AsyncClient used outside a running event loop")


def _fail_futures(futs: list[Any], exc: BaseException) -> None:
    for fut in futs:
        if fut is not None and not fut.done():
            fut.set_exception(exc)


class _AioEnqueueBatch(ops.EnqueueBatchBase):
    """Waiter of one Enqueue frame sent for the accumulator: resolves its asyncio futures."""

    __slots__ = ()
    client: AsyncClient

    @staticmethod
    def send(
        client: AsyncClient, conn: AioConnection, items: list[Any], futs: list[Any], size: int, deadline: float
    ) -> None:
        acc = client._acc
        assert acc is not None
        frames = ops.enqueue_frames(conn.core, items, futs, size, lambda fut, exc: _fail_futures([fut], exc))
        if not frames:
            acc.done()
            return
        group = ops.Group(len(frames), acc.done)
        for rid, data, part, part_futs in frames:
            _AioEnqueueBatch(client, part, part_futs, group, deadline)._write(conn, rid, data)

    def _resolve(self, results: list[tuple[int, str]]) -> None:
        # Once per message: kept lean (a future done already was cancelled by its owner).
        for i, (fut, (code, mid)) in enumerate(zip(self.futs, results, strict=True)):
            if code:
                if not fut.done():
                    fut.set_exception(ops.item_error(ops.ENQUEUE, self.items[i], code, mid))
            elif not fut.done():
                fut.set_result(mid)

    def _fail_futures(self, exc: BaseException) -> None:
        _fail_futures(self.futs, exc)

    def _follow(self, leader_addr: str) -> None:
        self.client._follow_leader(leader_addr)

    def fail(self, exc: BaseException) -> None:
        _fail_futures(self.futs, exc)
        self.group.one_done()

    def _resend_later(self, delay: float) -> bool:
        client = self.client
        if client._closed or client._loop is None:
            return False
        client._loop.call_later(delay, lambda: client._spawn(self._resend()))
        return True

    async def _resend(self) -> None:
        try:
            conn = await self.client._connection()
            rid, data = self.reencode(conn.core)
        except BaseException as exc:
            self.fail(ops.as_fila_error(exc, "enqueue could not be resent"))
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        self._write(conn, rid, data)


# ------------------------------------------------------------------- consumer


class _ConsumeCall:
    """What ``AsyncClient.consume`` returns: await it for the subscribed consumer, or ``async with`` it."""

    __slots__ = ("_consumer",)

    def __init__(self, consumer: AsyncConsumer) -> None:
        self._consumer = consumer

    def __await__(self) -> Generator[Any, None, AsyncConsumer]:
        return self._consumer.start().__await__()

    async def __aenter__(self) -> AsyncConsumer:
        return await self._consumer.start()

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._consumer.close()


@twin_of(Consumer, own=("aclose", "start"))
class AsyncConsumer(ConsumerBase):
    """The messages of one subscription (``async for msg in consumer``); an async context manager.

    Subscribed by ``await client.consume(q)`` (or ``async with``).
    Leaving the ``async with`` block, :meth:`close` / :meth:`aclose`, or
    garbage collection cancels the subscription. ``ack`` / ``nack`` are
    batched; a lost connection is resubscribed with backoff.
    """

    _state: _AioConsumerState
    _buf: deque[ConsumeMessage]

    def __init__(self, client: AsyncClient, queue: str, buffer_size: int) -> None:
        super().__init__(queue)
        self._state = _AioConsumerState(client, queue, buffer_size)
        self._buf = self._state.buffer.messages

    async def start(self) -> AsyncConsumer:
        """Subscribe now (raises e.g. ForbiddenError); ``await client.consume(q)`` calls it."""
        await self._state.start()
        return self

    def __aiter__(self) -> AsyncIterator[ConsumeMessage]:
        return self

    async def __anext__(self) -> ConsumeMessage:
        buf = self._buf
        if buf and not self._state.buffer.paused:  # once per message: the common case inline
            return buf.popleft()
        msg = await self.get()
        if msg is None:
            raise StopAsyncIteration
        return msg

    async def get(self, timeout: float | None = None) -> ConsumeMessage | None:
        state = self._state
        if not state.started:
            await state.start()
        return state.take() if self._buf else await state.wait(timeout)

    def ack(self, message: ConsumeMessage) -> None:
        self._state.accumulator(ops.ACK).submit((message.queue, message.id), None, 0)

    def nack(self, message: ConsumeMessage, error: str = "") -> None:
        self._state.accumulator(ops.NACK).submit((message.queue, message.id, error), None, 0)

    async def flush(self, timeout: float | None = None) -> bool:
        return await self._state.flush(timeout)

    async def close(self) -> None:
        await self._state.close()

    async def aclose(self) -> None:
        """The same as :meth:`close` (what fila-python 0.3.0's async generator offered)."""
        await self._state.close()

    async def __aenter__(self) -> AsyncConsumer:
        await self._state.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __del__(self) -> None:
        state = getattr(self, "_state", None)
        if state is not None and not state.closed:
            state.close_soon()


class _AioConsumerState:
    def __init__(self, client: AsyncClient, queue: str, capacity: int) -> None:
        self.client_ref = weakref.ref(client)
        self.settings: Settings = client._settings
        self.queue = queue
        self.sub = Subscription(client._nodes, queue, time.monotonic(), client._emit)
        self.delivered = 0
        self.moved_to = 0
        self.watch: asyncio.Task[Any] | None = None
        self.buffer: DeliveryBuffer[ConsumeMessage] = DeliveryBuffer(capacity)
        self.waiter: asyncio.Future[None] | None = None
        self.flushing = 0
        self.paused_conn: AioConnection | None = None
        self.closed = False
        self.started = False
        self.error: BaseException | None = None
        self.conn: AioConnection | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[Any] | None = None
        self.acks: AsyncAccumulator | None = None
        self.nacks: AsyncAccumulator | None = None
        self._start_lock: asyncio.Lock | None = None

    def accumulator(self, kind: ops.HotKind) -> AsyncAccumulator:
        acc = self.acks if kind is ops.ACK else self.nacks
        if acc is None:
            raise ClientClosedError("the consumer is not subscribed (await client.consume(queue) first)")
        return acc

    async def start(self) -> None:
        if self.started:
            return
        if self.closed:
            raise ClientClosedError("the consumer is closed")
        loop = self.loop = asyncio.get_running_loop()
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self.started:
                return
            self.acks = AsyncAccumulator(
                AccumulatorMode.AUTO, self._sender(ops.ACK), loop.call_later, MAX_BATCH_MESSAGES
            )
            self.nacks = AsyncAccumulator(
                AccumulatorMode.AUTO, self._sender(ops.NACK), loop.call_later, MAX_BATCH_MESSAGES
            )
            conn = await self._subscribe(Decision("subscribe", 0.0, self.sub.target))
            if conn is None:
                raise self.error or ClientClosedError("the consumer was closed while subscribing")
            self.conn = conn
            self.started = True
            if self.settings.leader_check_interval is not None:
                self.watch = loop.create_task(self._watch_leader(self.settings.leader_check_interval))

    async def _subscribe(self, decision: Decision) -> AioConnection | None:
        """Carry out decisions until subscribed (the connection) or given up / closed (None)."""
        while True:
            if decision.action == "fail":
                self.error = decision.error
                self._wake()
                return None
            if decision.delay:
                await asyncio.sleep(decision.delay)
            if self.closed:
                return None
            if decision.action == "locate":
                decision = self.sub.located(await self._leader_id(), time.monotonic())
                continue
            assert decision.settings is not None
            try:
                conn = await self._subscribe_at(decision.settings)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                decision = self.sub.refused(exc, time.monotonic())
                continue
            if self.sub.subscribed(conn.core.node_id, time.monotonic()):
                return conn
            conn.close()  # the consumer was closed meanwhile
            return None

    async def _subscribe_at(self, settings: Settings) -> AioConnection:
        conn = await AioConnection.open(settings, self._on_delivery)
        conn.after_receive = self._after_receive
        # Learn the node id even if the Consume is refused: locating a leader relies on it.
        self.sub.nodes.learned(settings.address, conn.core.node_id)
        try:
            rid, frame = conn.core.consume_frame(self.queue)
            answer = await conn.request(rid, frame, settings.request_timeout)
            ops.check_consume_ok(answer, self.queue)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise ops.as_fila_error(exc, f"subscribing to {self.queue!r} at {settings.address} failed") from exc
        conn.on_lost = self._on_lost
        return conn

    def _on_lost(self, conn: AioConnection, cause: BaseException) -> None:
        if self.closed or conn is not self.conn:
            return
        self.buffer.paused = False
        self.paused_conn = None
        assert self.loop is not None
        self.task = self.loop.create_task(self._resubscribe(cause))

    async def _resubscribe(self, cause: BaseException) -> None:
        moved_to, self.moved_to = self.moved_to, 0
        self.conn = await self._subscribe(self.sub.lost(cause, time.monotonic(), moved_to))

    async def _leader_id(self) -> int:
        """The queue's leader node id by GetStats on the client's connection (0: unknown)."""
        client = self.client_ref()
        try:
            return 0 if client is None else (await client.get_stats(self.queue)).leader_node_id
        except FilaError as exc:
            log.debug("locating the leader of %r failed: %s", self.queue, exc)
            return 0

    async def _watch_leader(self, interval: float) -> None:
        """While idle on a cluster node, check every ``interval`` seconds that the node still leads the queue."""
        while not self.closed:
            await asyncio.sleep(interval)
            conn, client = self.conn, self.client_ref()
            if not self.sub.check_due(conn.core.node_id if conn else 0, self.delivered):
                continue
            if conn is None or conn.dead or client is None or self.buffer.messages:
                continue
            try:
                stats = await client.get_stats(self.queue)
            except FilaError as exc:
                log.debug("checking the leader of %r failed: %s", self.queue, exc)
                continue
            ready = stats.depth - stats.in_flight
            if self.sub.leader_moved(conn.core.node_id, stats.leader_node_id, ready, client.node_id):
                self.moved_to = stats.leader_node_id
                conn.die(ConnectionLostError(
                    f"node {conn.core.node_id} no longer leads {self.queue!r} (node {stats.leader_node_id} does)"
                ))

    def _on_delivery(self, messages: list[ConsumeMessage]) -> None:
        self.buffer.push(messages)
        self.delivered += 1
        self._wake()

    def _after_receive(self, conn: AioConnection) -> None:
        # Stop reading while the buffer is full, unless someone awaits answers here (flush/close).
        buffer = self.buffer
        if len(buffer.messages) >= buffer.capacity and not buffer.paused and not self.flushing:
            buffer.paused = True
            self.paused_conn = conn
            conn.pause_reading()

    def resume(self) -> None:
        self.buffer.paused = False
        conn, self.paused_conn = self.paused_conn, None
        if conn is not None:
            conn.resume_reading()

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def wait(self, timeout: float | None) -> ConsumeMessage | None:
        msgs = self.buffer.messages
        assert self.loop is not None
        deadline = None if timeout is None else self.loop.time() + timeout
        while not msgs:
            if self.error is not None:
                raise self.error
            if self.closed:
                return None
            w = self.waiter = self.loop.create_future()
            try:
                if deadline is None:
                    await w
                else:
                    left = deadline - self.loop.time()
                    if left <= 0:
                        return None
                    try:
                        await asyncio.wait_for(w, left)
                    except asyncio.TimeoutError:
                        return None
            finally:
                self.waiter = None
        return self.take()

    def take(self) -> ConsumeMessage:
        """The first buffered message (there is one); resumes reading once the buffer is half empty."""
        msg = self.buffer.messages.popleft()
        if self.buffer.should_resume():
            self.resume()
        return msg

    def _sender(self, kind: ops.HotKind) -> Callable[[list[Any], list[Any], int], None]:
        def send(items: list[Any], futs: list[Any], size: int) -> None:
            acc = self.accumulator(kind)
            conn = self.conn
            if conn is not None and not conn.dead:
                ops.send_acks(conn, items, kind, acc.done)
                return
            # A lease is not tied to the connection that received it: use the client's.
            client = self.client_ref()
            if client is None or client._closed:
                ops.AckBatch(items, kind, ops.Group(1, acc.done)).fail(ClientClosedError("the client is closed"))
                return
            client._spawn(self._send_via(client, items, kind, acc))

        return send

    async def _send_via(self, client: AsyncClient, items: list[Any], kind: ops.HotKind, acc: AsyncAccumulator) -> None:
        try:
            conn = await client._connection()
        except BaseException as exc:
            ops.AckBatch(items, kind, ops.Group(1, acc.done)).fail(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        ops.send_acks(conn, items, kind, acc.done)

    async def flush(self, timeout: float | None) -> bool:
        if not self.started:
            return True
        client = self.client_ref()
        wait = self.settings.request_timeout if timeout is None else timeout
        ok = True
        self.flushing += 1
        if self.buffer.paused:
            self.resume()
        try:
            for acc in (self.acks, self.nacks):
                assert acc is not None
                acc.flush()
                if client is not None:
                    ok = await client._idle(acc, wait) and ok
        finally:
            self.flushing -= 1
        return ok

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.sub.close()
        self._wake()
        conn = self.conn
        if conn is not None and not conn.dead:
            conn.write(conn.core.cancel_frame())
            await self.flush(min(self.settings.request_timeout, 10.0))
        for task in (self.task, self.watch):
            if task is not None and not task.done():
                task.cancel()
        conn = self.conn
        if conn is not None:
            # Wait (briefly) for the server's close: it unregisters this consumer first, so a
            # message enqueued after close() returns is never leased to it.
            await conn.disconnect(2.0)
        self.buffer.messages.clear()

    def close_soon(self) -> None:
        """Best-effort synchronous close (garbage collection): CancelConsume, Disconnect, close."""
        if self.closed:
            return
        self.closed = True
        conn = self.conn
        loop = self.loop
        if conn is None or conn.dead or loop is None or loop.is_closed():
            return

        def finish() -> None:
            for task in (self.task, self.watch):
                if task is not None and not task.done():
                    task.cancel()
            conn.write(conn.core.cancel_frame())
            conn.close()

        try:
            loop.call_soon_threadsafe(finish)
        except RuntimeError:  # pragma: no cover - loop closed meanwhile
            pass
