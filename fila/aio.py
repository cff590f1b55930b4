"""The asyncio client.

:class:`AsyncClient` has the same operations as :class:`fila.Client`, as
coroutines; ``consume`` returns an async iterator. Each connection is an
``asyncio.Protocol``: ``data_received`` feeds the shared
:class:`~fila._connection.Core`, which completes the awaiting futures — no
task polls a stream. Use it from one event loop (it is not thread-safe).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

from . import _operations as ops
from ._accumulator import AccumulatorMode, AsyncAccumulator
from ._connection import Backoff, ClientBase, Core, NullWaiter, Settings
from .errors import (
    ChannelFullError,
    ClientClosedError,
    ConnectError,
    ConnectionLostError,
    DecodeError,
    FilaConnectionError,
    FilaError,
    NodeNotReadyError,
    NotLeaderError,
    ProtocolError,
    RequestTimeoutError,
    ServerError,
    error_for_code,
)
from .protocol import (
    encode_enqueue,
    encode_message,
)
from .types import Acl, ApiKey, ApiKeyInfo, EnqueueResult, Message, Permission, QueueList, Stats

__all__ = ["AsyncClient", "AsyncConsumer"]

log = logging.getLogger("fila")

_MAX_REDIRECTS = 5
_DISCONNECT = encode_message("Disconnect", 0)


class _Waiter:
    __slots__ = ("fut", "sent")

    def __init__(self, fut: asyncio.Future[Any]) -> None:
        self.fut = fut
        self.sent = False

    def complete(self, frame: Any) -> None:
        if not self.fut.done():
            self.fut.set_result(frame)

    def fail(self, exc: BaseException) -> None:
        if not self.fut.done():
            self.fut.set_exception(exc)


class _Connection(asyncio.Protocol):
    """One FIBP connection as an asyncio protocol."""

    def __init__(
        self,
        settings: Settings,
        loop: asyncio.AbstractEventLoop,
        on_delivery: Callable[[list[Any]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.loop = loop
        self.core = Core(on_delivery)
        self.transport: asyncio.Transport | None = None
        self._wbuf: list[bytes] = []
        self._flush_pending = False
        self.dead = False
        self.closing = False
        self.on_lost: Callable[[_Connection, BaseException], None] | None = None
        self.after_feed: Callable[[_Connection], None] | None = None
        self._seen = False
        self._ka_handle: asyncio.TimerHandle | None = None
        self.reading_paused = False

    # --------------------------------------------------------- lifecycle

    @classmethod
    async def open(cls, settings: Settings, on_delivery: Callable[[list[Any]], None] | None = None) -> _Connection:
        loop = asyncio.get_running_loop()
        conn = cls(settings, loop, on_delivery)
        fut: asyncio.Future[Any] = loop.create_future()
        conn.core.register(0, _Waiter(fut))
        deadline = loop.time() + settings.connect_timeout
        try:
            kwargs: dict[str, Any] = {}
            if settings.ssl_context is not None:
                kwargs = {
                    "ssl": settings.ssl_context,
                    "server_hostname": settings.server_hostname,
                    "ssl_handshake_timeout": settings.connect_timeout,
                }
            await asyncio.wait_for(
                loop.create_connection(lambda: conn, settings.host, settings.port, **kwargs),
                settings.connect_timeout,
            )
            assert conn.transport is not None
            conn.transport.write(settings.handshake())
            frame = await asyncio.wait_for(fut, max(deadline - loop.time(), 0.001))
            conn.core.accept_handshake(frame)
        except FilaError:
            conn.abort()
            raise
        except asyncio.TimeoutError:
            conn.abort()
            raise ConnectError(
                f"timed out connecting to {settings.address} (connect_timeout={settings.connect_timeout}s)"
            ) from None
        except (OSError, asyncio.IncompleteReadError) as exc:
            conn.abort()
            raise ConnectError(f"cannot connect to {settings.address}: {exc}") from exc
        except BaseException:
            conn.abort()
            raise
        conn._arm_keepalive()
        log.debug("connected to %s (node %d)", settings.address, conn.core.node_id)
        return conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._seen = True
        try:
            self.core.feed(data)
        except DecodeError as exc:
            self.die(ProtocolError(f"malformed data from {self.settings.address}: {exc}"))
            return
        except Exception as exc:  # pragma: no cover - a bug in a callback
            log.exception("error handling data from %s", self.settings.address)
            self.die(exc)
            return
        hook = self.after_feed
        if hook is not None:
            hook(self)

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.die(exc or ConnectionLostError(f"{self.settings.address} closed the connection"))

    def die(self, cause: BaseException) -> None:
        if self.dead:
            return
        self.dead = True
        if self._ka_handle is not None:
            self._ka_handle.cancel()
        if self.closing:
            cause = ClientClosedError("the client was closed")
        elif not isinstance(cause, FilaError):
            cause = ConnectionLostError(f"connection to {self.settings.address} lost: {cause}")
        log.debug("connection to %s ended: %s", self.settings.address, cause)
        self.core.fail_all(cause)
        if self.transport is not None:
            self.transport.abort() if not self.closing else self.transport.close()
        cb = self.on_lost
        if cb is not None:
            cb(self, cause)

    def abort(self) -> None:
        self.dead = True
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """Disconnect and close; pending waiters fail with ClientClosedError."""
        if self.dead:
            return
        self.closing = True
        self.flush()
        if self.transport is not None:
            self.transport.write(_DISCONNECT)
        self.die(ClientClosedError("the client was closed"))

    # ------------------------------------------------------------ writing

    def write(self, data: bytes, waiter: Any = None) -> None:
        """Queue ``data``; everything queued in one loop turn goes out in one write."""
        if waiter is not None:
            waiter.sent = True
        self._wbuf.append(data)
        if not self._flush_pending:
            self._flush_pending = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_pending = False
        buf = self._wbuf
        if not buf or self.dead or self.transport is None:
            buf.clear()
            return
        self._wbuf = []
        if len(buf) == 1:
            self.transport.write(buf[0])
        else:
            self.transport.write(b"".join(buf))

    async def request(self, rid: int, data: bytes, timeout: float) -> Any:
        fut: asyncio.Future[Any] = self.loop.create_future()
        waiter = _Waiter(fut)
        self.core.register(rid, waiter)
        self.write(data, waiter)
        try:
            return await asyncio.wait_for(fut, max(timeout, 0.0))
        except asyncio.TimeoutError:
            self.core.pending.pop(rid, None)
            raise RequestTimeoutError(
                f"no answer from {self.settings.address} within the request timeout",
                may_have_been_applied=waiter.sent,
            ) from None

    # ---------------------------------------------------------- keepalive

    def _arm_keepalive(self) -> None:
        interval = self.settings.keepalive_interval
        if interval is not None and not self.dead:
            self._seen = False
            self._ka_handle = self.loop.call_later(interval, self._keepalive)

    def _silent(self) -> bool:
        """True when nothing came since the keepalive timer was armed (else re-arm it, unless dead)."""
        if self.dead:
            return False
        if self._seen or self.reading_paused:
            self._arm_keepalive()
            return False
        return True

    def _keepalive(self) -> None:
        if not self._silent():
            return
        rid = self.core.next_id()
        self.core.register(rid, NullWaiter())
        self.write(b"\x00\x00\x00\x06\x03\x00" + rid.to_bytes(4, "big"))
        self._ka_handle = self.loop.call_later(self.settings.keepalive_timeout, self._keepalive_deadline)

    def _keepalive_deadline(self) -> None:
        if self._silent():
            self.die(
                ConnectionLostError(
                    f"{self.settings.address} did not answer a keepalive Ping within {self.settings.keepalive_timeout}s"
                )
            )

    # --------------------------------------------------------- backpressure

    def pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None and not self.dead:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None and not self.dead:
            self.reading_paused = False
            self.transport.resume_reading()


class AsyncClient(ClientBase):
    """The asyncio twin of :class:`fila.Client` (same arguments, same operations, awaited).

    ``enqueue_nowait`` returns an ``asyncio.Future``; ``consume`` returns an
    :class:`AsyncConsumer` (``async for`` / ``async with``). The constructor
    (keyword arguments and defaults) is :class:`ClientBase`'s, the same as
    :class:`fila.Client`'s.
    """

    _conn: _Connection | None

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
            acc = self._acc = AsyncAccumulator(self._mode, self._send_enqueues, loop.call_later)
        return acc

    # --------------------------------------------------------- lifecycle

    async def __aenter__(self) -> AsyncClient:
        await self.connect()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the connection now (otherwise the first call does)."""
        await self._connection()

    async def close(self, timeout: float | None = None) -> None:
        """Flush queued enqueues, wait for their answers, stop consumers, Disconnect. Idempotent."""
        if self._closed:
            return
        wait = self._wait_or_default(timeout)
        for consumer in list(self._consumers):
            await consumer.close()
        acc = self._acc
        if acc is not None:
            acc.close()
            if not acc.idle:
                assert self._loop is not None
                fut = self._loop.create_future()
                acc.add_idle_waiter(fut)
                try:
                    await asyncio.wait_for(fut, wait)
                except asyncio.TimeoutError:
                    pass
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        for task in list(self._tasks):
            task.cancel()

    async def _connection(self) -> _Connection:
        conn = self._conn
        if conn is not None and not conn.dead:
            return conn
        self._bind()
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            live: _Connection | None = self._live_connection()
            if live is not None:
                return live
            pause = self._reconnect_pause()
            if pause > 0:
                await asyncio.sleep(pause)
            try:
                conn = await _Connection.open(self._settings)
            except FilaConnectionError:
                self._connect_failed()
                raise
            self._connect_succeeded()
            self._conn = conn
            return conn

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------- generic call

    async def _call(self, op: ops.Op, timeout: float | None) -> Any:
        retry = ops.Retry(time.monotonic() + self._wait_or_default(timeout))
        while True:
            conn = await self._connection()
            rid, data = ops.encode_op(op, conn.core)
            frame = await conn.request(rid, data, retry.deadline - time.monotonic())
            try:
                return ops.parse_response(op, frame.opcode, frame.payload)
            except ChannelFullError as exc:
                await asyncio.sleep(retry.pause_or_raise(exc))

    async def _hot_batch(self, kind: ops.HotKind, items: list[Any], timeout: float | None) -> list[Any]:
        """Send ``items`` in as many frames as needed; per item, the decoded result or a ServerError."""
        if not items:
            return []
        deadline = time.monotonic() + self._wait_or_default(timeout)
        batch = ops.HotBatch(kind, items, deadline)
        while True:
            conn = await self._connection()
            sent: list[tuple[int, int, int, _Waiter]] = []
            for rid, data, s, e in batch.frames(conn.core):
                waiter = _Waiter(conn.loop.create_future())
                conn.core.register(rid, waiter)
                conn.write(data, waiter)
                sent.append((rid, s, e, waiter))
            for rid, s, e, waiter in sent:
                try:
                    frame = await asyncio.wait_for(waiter.fut, max(deadline - time.monotonic(), 0.0))
                except asyncio.TimeoutError:
                    conn.core.pending.pop(rid, None)
                    raise RequestTimeoutError(
                        "no answer within the request timeout", may_have_been_applied=waiter.sent
                    ) from None
                batch.answer(frame, s, e)
            delay = batch.retry_delay()
            if delay is None:
                return batch.out
            await asyncio.sleep(delay)

    # ---------------------------------------------------------- producing

    async def enqueue(
        self, queue: str, payload: bytes, headers: Mapping[str, str] | None = None, *, timeout: float | None = None
    ) -> str:
        """Enqueue one message (through the accumulator) and return its id."""
        fut = self.enqueue_nowait(queue, payload, headers)
        wait = self._wait_or_default(timeout)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), wait)
        except asyncio.TimeoutError:
            raise RequestTimeoutError(f"no answer to Enqueue within {wait}s") from None

    def enqueue_nowait(
        self, queue: str, payload: bytes, headers: Mapping[str, str] | None = None
    ) -> asyncio.Future[str]:
        """Submit one message; the future resolves to its id, its error, or a connection/closed error.

        Must be called from the event loop's thread.
        """
        if type(queue) is not str or type(payload) is not bytes or (headers is not None and type(headers) is not dict):
            ops.check_enqueue(queue, payload, headers)
        acc = self._acc or self._bind()
        fut = self._new_future()
        acc.submit((queue, headers, payload), fut, len(payload))
        return fut

    async def enqueue_many(
        self,
        messages: Iterable[tuple[str, bytes] | tuple[str, bytes, Mapping[str, str] | None]],
        *,
        timeout: float | None = None,
    ) -> list[EnqueueResult]:
        """Enqueue a batch; one :class:`EnqueueResult` per message (see :meth:`fila.Client.enqueue_many`)."""
        items = [ops.enqueue_item(m) for m in messages]
        return ops.enqueue_results(await self._hot_batch(ops.ENQUEUE, items, timeout))

    async def flush(self, timeout: float | None = None) -> bool:
        """Send queued enqueues now and wait for their answers; False if the timeout passed first."""
        acc = self._acc
        if acc is None:
            return True
        acc.flush()
        if acc.idle:
            return True
        assert self._loop is not None
        fut = self._loop.create_future()
        acc.add_idle_waiter(fut)
        try:
            await asyncio.wait_for(fut, self._wait_or_default(timeout))
        except asyncio.TimeoutError:
            return False
        return True

    def _send_enqueues(self, items: list[Any], futs: list[Any], size: int) -> None:
        conn = self._conn
        if conn is not None and not conn.dead:
            _AioEnqueueBatch.send(self, conn, items, futs, size, time.monotonic() + self._settings.request_timeout)
        else:
            self._spawn(self._send_after_connect(items, futs, size))

    async def _send_after_connect(self, items: list[Any], futs: list[Any], size: int) -> None:
        try:
            conn = await self._connection()
        except BaseException as exc:
            _fail_futures(futs, exc if isinstance(exc, FilaError) else ConnectError(f"could not send: {exc!r}"))
            assert self._acc is not None
            self._acc.done()
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        _AioEnqueueBatch.send(self, conn, items, futs, size, time.monotonic() + self._settings.request_timeout)

    # ---------------------------------------------------------- consuming

    def consume(self, queue: str, *, buffer_size: int | None = None) -> AsyncConsumer:
        """A subscription on a connection of its own (``async for`` / ``async with``)."""
        return self._add_consumer(AsyncConsumer, queue, buffer_size)

    async def ack(self, queue: str, message_id: str, *, timeout: float | None = None) -> None:
        err = (await self.ack_many([(queue, message_id)], timeout=timeout))[0]
        if err is not None:
            raise err

    async def nack(self, queue: str, message_id: str, error: str = "", *, timeout: float | None = None) -> None:
        err = (await self.nack_many([(queue, message_id, error)], timeout=timeout))[0]
        if err is not None:
            raise err

    async def ack_many(
        self, items: Iterable[Message | tuple[str, str]], *, timeout: float | None = None
    ) -> list[ServerError | None]:
        return ops.ack_errors(await self._hot_batch(ops.ACK, [ops.ack_item(i) for i in items], timeout))

    async def nack_many(
        self, items: Iterable[tuple[Message, str] | tuple[str, str, str]], *, timeout: float | None = None
    ) -> list[ServerError | None]:
        return ops.ack_errors(await self._hot_batch(ops.NACK, [ops.nack_item(i) for i in items], timeout))

    # -------------------------------------------------------------- admin

    async def create_queue(
        self,
        name: str,
        *,
        on_enqueue: str | None = None,
        on_failure: str | None = None,
        visibility_timeout_ms: int = 0,
        timeout: float | None = None,
    ) -> str:
        return await self._call(ops.create_queue(name, on_enqueue, on_failure, visibility_timeout_ms), timeout)  # type: ignore[no-any-return]

    async def delete_queue(self, name: str, *, timeout: float | None = None) -> None:
        await self._call(ops.delete_queue(name), timeout)

    async def get_stats(self, queue: str, *, timeout: float | None = None) -> Stats:
        return await self._call(ops.get_stats(queue), timeout)  # type: ignore[no-any-return]

    async def list_queues(self, *, timeout: float | None = None) -> QueueList:
        return await self._call(ops.list_queues(), timeout)  # type: ignore[no-any-return]

    async def set_config(self, key: str, value: str, *, timeout: float | None = None) -> None:
        await self._call(ops.set_config(key, value), timeout)

    async def get_config(self, key: str, *, timeout: float | None = None) -> str:
        return await self._call(ops.get_config(key), timeout)  # type: ignore[no-any-return]

    async def list_config(self, prefix: str = "", *, timeout: float | None = None) -> dict[str, str]:
        return await self._call(ops.list_config(prefix), timeout)  # type: ignore[no-any-return]

    async def redrive(self, dlq_queue: str, count: int = 0, *, timeout: float | None = None) -> int:
        return await self._call(ops.redrive(dlq_queue, count), timeout)  # type: ignore[no-any-return]

    # --------------------------------------------------------------- auth

    async def create_api_key(
        self, name: str, *, expires_at_ms: int = 0, superadmin: bool = False, timeout: float | None = None
    ) -> ApiKey:
        return await self._call(ops.create_api_key(name, expires_at_ms, superadmin), timeout)  # type: ignore[no-any-return]

    async def revoke_api_key(self, key_id: str, *, timeout: float | None = None) -> None:
        await self._call(ops.revoke_api_key(key_id), timeout)

    async def list_api_keys(self, *, timeout: float | None = None) -> list[ApiKeyInfo]:
        return await self._call(ops.list_api_keys(), timeout)  # type: ignore[no-any-return]

    async def set_acl(
        self, key_id: str, permissions: Iterable[Permission | tuple[str, str]], *, timeout: float | None = None
    ) -> None:
        await self._call(ops.set_acl(key_id, permissions), timeout)

    async def get_acl(self, key_id: str, *, timeout: float | None = None) -> Acl:
        return await self._call(ops.get_acl(key_id), timeout)  # type: ignore[no-any-return]


def _unbound() -> asyncio.Future[Any]:  # pragma: no cover - replaced by AsyncClient._bind
    raise RuntimeError("the client is not bound to an event loop yet")


def _fail_futures(futs: list[Any], exc: BaseException) -> None:
    for fut in futs:
        if not fut.done():
            fut.set_exception(exc)


class _AioEnqueueBatch(ops.EnqueueBatchBase):
    """Waiter of one Enqueue frame from the accumulator: resolves its asyncio futures."""

    __slots__ = ()
    client: AsyncClient

    @staticmethod
    def send(
        client: AsyncClient, conn: _Connection, items: list[Any], futs: list[Any], size: int, deadline: float
    ) -> None:
        acc = client._acc
        assert acc is not None
        items, futs, frames = ops.enqueue_frames(conn.core, items, futs, size, _reject)
        if not frames:
            acc.done()
            return
        group = ops.Group(len(frames), acc.done)
        for rid, data, part, part_futs in ops.split_frames(frames, items, futs):
            batch = _AioEnqueueBatch(client, part, part_futs, group, deadline)
            batch._write(conn, rid, data)

    def _resolve(self, results: list[tuple[int, str]]) -> None:
        # Once per message: kept lean (a future done already was cancelled by its owner).
        for fut, (code, mid) in zip(self.futs, results, strict=True):
            if code:
                if not fut.done():
                    fut.set_exception(error_for_code(code, mid))
            else:
                try:
                    fut.set_result(mid)
                except asyncio.InvalidStateError:
                    pass

    def _fail_futures(self, exc: BaseException) -> None:
        _fail_futures(self.futs, exc)

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
            rid = conn.core.next_id()
            data = encode_enqueue(rid, self.items, conn.core.max_frame_size)
        except BaseException as exc:
            self.fail(exc if isinstance(exc, FilaError) else ConnectError(f"could not send: {exc!r}"))
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        self._write(conn, rid, data)


def _reject(fut: Any, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


# ------------------------------------------------------------------- consumer


class AsyncConsumer:
    """Messages of one subscription (``async for msg in consumer``); an async context manager.

    Subscribes on ``async with`` or the first ``__anext__``. Leaving the
    ``async with`` block, :meth:`close`, or garbage collection cancels the
    subscription. :meth:`ack` / :meth:`nack` are batched over this connection.
    """

    def __init__(self, client: AsyncClient, queue: str, buffer_size: int) -> None:
        if type(queue) is not str:
            raise TypeError(f"queue must be str, got {type(queue).__name__}")
        self.queue = queue
        self._state = _AioConsumerState(client, queue, buffer_size)
        self._buf = self._state.buf

    def __repr__(self) -> str:
        return f"<fila.AsyncConsumer queue={self.queue!r} {'closed' if self._state.closed else 'open'}>"

    async def start(self) -> AsyncConsumer:
        """Subscribe now (raises e.g. ForbiddenError); called by ``async with`` and the first iteration."""
        await self._state.start()
        return self

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        buf = self._buf
        if buf and not self._state.paused:  # once per message: the common case inline
            return buf.popleft()  # type: ignore[no-any-return]
        msg = await self.get()
        if msg is None:
            raise StopAsyncIteration
        return msg

    async def get(self, timeout: float | None = None) -> Message | None:
        """The next message, or None after ``timeout`` seconds (or once closed)."""
        state = self._state
        if not state.started:
            await state.start()
        return state.take() if self._buf else await state.wait(timeout)

    def ack(self, message: Message) -> None:
        """Acknowledge ``message`` (batched; failures are logged, the message then comes back)."""
        self._state.acks.submit((message.queue, message.id), None, 0)

    def nack(self, message: Message, error: str = "") -> None:
        self._state.nacks.submit((message.queue, message.id, error), None, 0)

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every ack/nack given so far has been answered."""
        return await self._state.flush(timeout)

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def closed(self) -> bool:
        return self._state.closed

    async def close(self) -> None:
        """Cancel the subscription, flush acks, close the connection. Idempotent."""
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
        self.origin = client._settings
        self.settings = client._settings
        self.queue = queue
        self.capacity = capacity
        self.low = capacity // 2
        self.buf: deque[Any] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.flushing = 0
        self.paused = False
        self.paused_conn: _Connection | None = None
        self.closed = False
        self.started = False
        self.error: BaseException | None = None
        self.conn: _Connection | None = None
        self.consume_rid = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.backoff = Backoff(self.settings.reconnect_initial, self.settings.reconnect_max)
        self.task: asyncio.Task[Any] | None = None
        self.acks: AsyncAccumulator = None  # type: ignore[assignment]
        self.nacks: AsyncAccumulator = None  # type: ignore[assignment]
        self._start_lock: asyncio.Lock | None = None

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
                AccumulatorMode.AUTO,
                self._sender(ops.ACK, "ack"),
                loop.call_later,
            )
            self.nacks = AsyncAccumulator(
                AccumulatorMode.AUTO,
                self._sender(ops.NACK, "nack"),
                loop.call_later,
            )
            deadline = time.monotonic() + self.settings.request_timeout
            backoff = Backoff(self.settings.reconnect_initial, self.settings.reconnect_max)
            while True:
                try:
                    self.conn = await self._subscribe(time.monotonic() + self.settings.request_timeout)
                    break
                except (NotLeaderError, NodeNotReadyError, ChannelFullError):
                    delay = backoff.next()
                    if time.monotonic() + delay >= deadline:
                        raise
                    await asyncio.sleep(delay)
            self.started = True

    async def _subscribe(self, deadline: float) -> _Connection:
        settings = self.settings
        for _ in range(_MAX_REDIRECTS + 1):
            try:
                conn = await _Connection.open(settings, self._on_delivery)
            except FilaConnectionError:
                if settings is not self.origin:
                    self.settings = self.origin
                raise
            rid = conn.core.next_id()
            conn.core.consume_id = rid
            conn.after_feed = self._after_feed
            try:
                frame = await conn.request(
                    rid, encode_message("ConsumeRequest", rid, {"queue": self.queue}), deadline - time.monotonic()
                )
                ops.check_consume_ok(frame)
            except NotLeaderError as exc:
                conn.close()
                if exc.leader_addr:
                    log.info("consume %r: redirected to leader %s", self.queue, exc.leader_addr)
                    settings = self.settings = self.origin.redirected(exc.leader_addr)
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            self.consume_rid = rid
            conn.on_lost = self._on_lost
            log.debug("subscribed to %r at %s", self.queue, settings.address)
            return conn
        raise NotLeaderError(f"too many leader redirects subscribing to {self.queue!r}")

    def _on_lost(self, conn: _Connection, cause: BaseException) -> None:
        if self.closed or conn is not self.conn:
            return
        log.info("consumer of %r lost its connection (%s); resubscribing", self.queue, cause)
        self.paused = False
        assert self.loop is not None
        self.task = self.loop.create_task(self._resubscribe())

    async def _resubscribe(self) -> None:
        while not self.closed:
            await asyncio.sleep(self.backoff.next())
            if self.closed:
                return
            try:
                conn = await self._subscribe(time.monotonic() + self.settings.request_timeout)
            except (FilaConnectionError, ProtocolError, NotLeaderError, NodeNotReadyError, ChannelFullError) as exc:
                log.debug("resubscribing to %r failed: %s", self.queue, exc)
                continue
            except ServerError as exc:
                log.error("consumer of %r stopped: %s", self.queue, exc)
                self.error = exc
                self._wake()
                return
            if self.closed:
                conn.close()
                return
            self.backoff.reset()
            self.conn = conn
            return

    def _on_delivery(self, messages: list[Any]) -> None:
        self.buf.extend(messages)
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _after_feed(self, conn: _Connection) -> None:
        # Stop reading while the buffer is full, unless someone awaits answers here (flush/close).
        if len(self.buf) >= self.capacity and not self.paused and not self.flushing:
            self.paused = True
            self.paused_conn = conn
            conn.pause_reading()

    def resume(self) -> None:
        self.paused = False
        conn, self.paused_conn = self.paused_conn, None
        if conn is not None:
            conn.resume_reading()

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def wait(self, timeout: float | None) -> Message | None:
        buf = self.buf
        assert self.loop is not None
        deadline = None if timeout is None else self.loop.time() + timeout
        while not buf:
            if self.closed:
                return None
            if self.error is not None:
                raise self.error
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

    def take(self) -> Message:
        """The first buffered message (there is one); resumes reading once the buffer is half empty."""
        buf = self.buf
        msg = buf.popleft()
        if self.paused and len(buf) <= self.low:
            self.resume()
        return msg  # type: ignore[no-any-return]

    def _sender(self, kind: ops.HotKind, what: str) -> Callable[[list[Any], list[Any], int], None]:
        def send(items: list[Any], futs: list[Any], size: int) -> None:
            acc = self.acks if what == "ack" else self.nacks
            conn = self.conn
            if conn is None or conn.dead:
                client = self.client_ref()
                conn = client._conn if client is not None else None
                if conn is None or conn.dead:
                    log.warning("%d %ss could not be sent: no connection", len(items), what)
                    acc.done()
                    return
            ops.send_acks(conn, items, kind, what, acc.done)

        return send

    async def flush(self, timeout: float | None) -> bool:
        if not self.started:
            return True
        assert self.loop is not None
        wait = self.settings.request_timeout if timeout is None else timeout
        ok = True
        self.flushing += 1
        if self.paused:
            self.resume()
        try:
            for acc in (self.acks, self.nacks):
                acc.flush()
                if not acc.idle:
                    fut = self.loop.create_future()
                    acc.add_idle_waiter(fut)
                    try:
                        await asyncio.wait_for(fut, wait)
                    except asyncio.TimeoutError:
                        ok = False
        finally:
            self.flushing -= 1
        return ok

    def _cancel_frame(self) -> bytes:
        return b"\x00\x00\x00\x06\x15\x00" + self.consume_rid.to_bytes(4, "big")

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._wake()
        conn = self.conn
        if conn is not None and not conn.dead:
            conn.write(self._cancel_frame())
            await self.flush(min(self.settings.request_timeout, 10.0))
        if self.task is not None and not self.task.done():
            self.task.cancel()
        conn = self.conn
        if conn is not None:
            conn.close()
        self.buf.clear()

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
            if self.task is not None and not self.task.done():
                self.task.cancel()
            conn.write(self._cancel_frame())
            conn.close()

        try:
            loop.call_soon_threadsafe(finish)
        except RuntimeError:  # pragma: no cover - loop closed meanwhile
            pass
