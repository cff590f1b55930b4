"""The asyncio client.

:class:`AsyncClient` has the same operations as :class:`fila.Client`, as
coroutines; ``consume`` returns an async iterator. Each connection is an
``asyncio.Protocol``: ``data_received`` feeds the shared
:class:`~fila._connection.Core`, which completes the awaiting futures — no
task polls a stream. Use it from one event loop (it is not thread-safe).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

from . import _operations as ops
from ._accumulator import AccumulatorMode, AsyncAccumulator, Linger, check_mode, encode_batches, item_size
from ._connection import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_CONSUMER_BUFFER,
    DEFAULT_KEEPALIVE_INTERVAL,
    DEFAULT_KEEPALIVE_TIMEOUT,
    DEFAULT_RECONNECT_INITIAL,
    DEFAULT_RECONNECT_MAX,
    DEFAULT_REQUEST_TIMEOUT,
    Backoff,
    Core,
    Settings,
    parse_address,
)
from ._tls import PemInput, make_ssl_context
from .errors import (
    ChannelFullError,
    ClientClosedError,
    ConnectError,
    ConnectionLostError,
    DecodeError,
    EncodeError,
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
    Opcode,
    decode_ack_result,
    decode_enqueue_result,
    decode_nack_result,
    encode_ack,
    encode_enqueue,
    encode_message,
    encode_nack,
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


class _NullWaiter:
    __slots__ = ("sent",)

    def __init__(self) -> None:
        self.sent = False

    def complete(self, frame: Any) -> None:
        pass

    def fail(self, exc: BaseException) -> None:
        pass


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

    def _keepalive(self) -> None:
        if self.dead:
            return
        if self._seen or self.reading_paused:
            self._arm_keepalive()
            return
        rid = self.core.next_id()
        self.core.register(rid, _NullWaiter())
        self.write(b"\x00\x00\x00\x06\x03\x00" + rid.to_bytes(4, "big"))
        self._ka_handle = self.loop.call_later(self.settings.keepalive_timeout, self._keepalive_deadline)

    def _keepalive_deadline(self) -> None:
        if self.dead:
            return
        if self._seen or self.reading_paused:
            self._arm_keepalive()
            return
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


def _timeout(timeout: float | None, default: float) -> float:
    return default if timeout is None else timeout


class AsyncClient:
    """The asyncio twin of :class:`fila.Client` (same arguments, same operations, awaited).

    ``enqueue_nowait`` returns an ``asyncio.Future``; ``consume`` returns an
    :class:`AsyncConsumer` (``async for`` / ``async with``).
    """

    def __init__(
        self,
        addr: str = "localhost:5555",
        *,
        api_key: str | None = None,
        tls: bool = False,
        ca_cert: PemInput | None = None,
        client_cert: PemInput | None = None,
        client_key: PemInput | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        accumulator: AccumulatorMode | Linger = AccumulatorMode.AUTO,
        keepalive_interval: float | None = DEFAULT_KEEPALIVE_INTERVAL,
        keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT,
        consumer_buffer: int = DEFAULT_CONSUMER_BUFFER,
        reconnect_initial_delay: float = DEFAULT_RECONNECT_INITIAL,
        reconnect_max_delay: float = DEFAULT_RECONNECT_MAX,
    ) -> None:
        host, port = parse_address(addr)
        self._settings = Settings(
            host,
            port,
            api_key=api_key,
            ssl_context=make_ssl_context(tls, ca_cert, client_cert, client_key),
            connect_timeout=connect_timeout,
            request_timeout=request_timeout,
            keepalive_interval=keepalive_interval,
            keepalive_timeout=keepalive_timeout,
            consumer_buffer=consumer_buffer,
            reconnect_initial=reconnect_initial_delay,
            reconnect_max=reconnect_max_delay,
        )
        self._mode = check_mode(accumulator)
        self._acc: AsyncAccumulator | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: _Connection | None = None
        self._connect_lock: asyncio.Lock | None = None
        self._backoff = Backoff(self._settings.reconnect_initial, self._settings.reconnect_max)
        self._next_attempt = 0.0
        self._closed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._consumers: weakref.WeakSet[AsyncConsumer] = weakref.WeakSet()

    def __repr__(self) -> str:
        state = (
            "closed" if self._closed else ("connected" if self._conn is not None and not self._conn.dead else "idle")
        )
        return f"<fila.AsyncClient {self._settings.address} tls={self._settings.ssl_context is not None} {state}>"

    def _bind(self) -> AsyncAccumulator:
        acc = self._acc
        if acc is None:
            loop = self._loop = asyncio.get_running_loop()
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

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self, timeout: float | None = None) -> None:
        """Flush queued enqueues, wait for their answers, stop consumers, Disconnect. Idempotent."""
        if self._closed:
            return
        wait = _timeout(timeout, self._settings.request_timeout)
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
            if self._closed:
                raise ClientClosedError("the client is closed")
            conn = self._conn
            if conn is not None and not conn.dead:
                return conn
            wait = self._next_attempt - time.monotonic()
            if wait > 0:
                await asyncio.sleep(min(wait, self._settings.connect_timeout))
            try:
                conn = await _Connection.open(self._settings)
            except FilaConnectionError:
                self._next_attempt = time.monotonic() + self._backoff.next()
                raise
            self._backoff.reset()
            self._next_attempt = 0.0
            self._conn = conn
            return conn

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------- generic call

    async def _call(self, op: ops.Op, timeout: float | None) -> Any:
        wait = _timeout(timeout, self._settings.request_timeout)
        deadline = time.monotonic() + wait
        backoff: Backoff | None = None
        while True:
            conn = await self._connection()
            rid = conn.core.next_id()
            data = encode_message(op.request, rid, op.fields, max_frame_size=conn.core.max_frame_size)
            frame = await conn.request(rid, data, deadline - time.monotonic())
            try:
                return ops.parse_response(op, frame.opcode, frame.payload)
            except ChannelFullError:
                backoff = backoff or Backoff(0.01, 1.0)
                delay = backoff.next()
                if time.monotonic() + delay >= deadline:
                    raise
                await asyncio.sleep(delay)

    async def _hot_batch(
        self,
        items: list[Any],
        encode: Callable[..., bytes],
        decode: Callable[[bytes], list[Any]],
        result_op: int,
        size_of: Callable[[Any], int],
        timeout: float | None,
    ) -> list[Any]:
        deadline = time.monotonic() + _timeout(timeout, self._settings.request_timeout)
        out: list[Any] = [None] * len(items)
        todo = [(0, len(items))]
        backoff: Backoff | None = None
        while todo:
            conn = await self._connection()
            sent: list[tuple[int, int, int, _Waiter]] = []
            for start, end in todo:
                chunk = items[start:end] if (start, end) != (0, len(items)) else items
                for rid, data, s, e in encode_batches(
                    encode, chunk, conn.core.max_frame_size, conn.core.next_id, -1, size_of
                ):
                    waiter = _Waiter(conn.loop.create_future())
                    conn.core.register(rid, waiter)
                    conn.write(data, waiter)
                    sent.append((rid, start + s, start + e, waiter))
            todo = []
            for rid, s, e, waiter in sent:
                try:
                    frame = await asyncio.wait_for(waiter.fut, max(deadline - time.monotonic(), 0.0))
                except asyncio.TimeoutError:
                    conn.core.pending.pop(rid, None)
                    raise RequestTimeoutError(
                        "no answer within the request timeout", may_have_been_applied=waiter.sent
                    ) from None
                try:
                    results = ops.hot_result(frame.opcode, frame.payload, result_op, decode, e - s)
                except ChannelFullError as exc:
                    backoff = backoff or Backoff(0.01, 1.0)
                    if time.monotonic() + backoff._current >= deadline:
                        out[s:e] = [exc] * (e - s)
                    else:
                        todo.append((s, e))
                    continue
                except ServerError as exc:
                    out[s:e] = [exc] * (e - s)
                    continue
                out[s:e] = results
            if todo:
                assert backoff is not None
                await asyncio.sleep(backoff.next())
        return out

    # ---------------------------------------------------------- producing

    async def enqueue(
        self, queue: str, payload: bytes, headers: Mapping[str, str] | None = None, *, timeout: float | None = None
    ) -> str:
        """Enqueue one message (through the accumulator) and return its id."""
        fut = self.enqueue_nowait(queue, payload, headers)
        wait = _timeout(timeout, self._settings.request_timeout)
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
        assert self._loop is not None
        fut: asyncio.Future[str] = self._loop.create_future()
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
        if not items:
            return []
        outcomes = await self._hot_batch(
            items, encode_enqueue, decode_enqueue_result, Opcode.ENQUEUE_RESULT, item_size, timeout
        )
        result: list[EnqueueResult] = []
        append = result.append
        for out in outcomes:
            if type(out) is tuple:
                code, mid = out
                append(EnqueueResult(mid) if code == 0 else EnqueueResult(None, error_for_code(code, mid)))
            else:
                append(EnqueueResult(None, out))
        return result

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
            await asyncio.wait_for(fut, _timeout(timeout, self._settings.request_timeout))
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
            err = exc if isinstance(exc, FilaError) else ConnectError(f"could not send: {exc!r}")
            for f in futs:
                if not f.done():
                    f.set_exception(err)
            assert self._acc is not None
            self._acc.done()
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        _AioEnqueueBatch.send(self, conn, items, futs, size, time.monotonic() + self._settings.request_timeout)

    # ---------------------------------------------------------- consuming

    def consume(self, queue: str, *, buffer_size: int | None = None) -> AsyncConsumer:
        """A subscription on a connection of its own (``async for`` / ``async with``)."""
        if self._closed:
            raise ClientClosedError("the client is closed")
        consumer = AsyncConsumer(self, queue, buffer_size or self._settings.consumer_buffer)
        self._consumers.add(consumer)
        return consumer

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
        pairs = [ops.ack_item(i) for i in items]
        if not pairs:
            return []
        out = await self._hot_batch(pairs, encode_ack, decode_ack_result, Opcode.ACK_RESULT, ops.ack_size, timeout)
        return [_code_error(c) for c in out]

    async def nack_many(
        self, items: Iterable[tuple[Message, str] | tuple[str, str, str]], *, timeout: float | None = None
    ) -> list[ServerError | None]:
        triples = [ops.nack_item(i) for i in items]
        if not triples:
            return []
        out = await self._hot_batch(triples, encode_nack, decode_nack_result, Opcode.NACK_RESULT, ops.ack_size, timeout)
        return [_code_error(c) for c in out]

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


def _code_error(out: Any) -> ServerError | None:
    if isinstance(out, BaseException):
        return out  # type: ignore[return-value]
    return None if out == 0 else error_for_code(out)


class _AioEnqueueBatch:
    """Waiter of one Enqueue frame from the accumulator: resolves its asyncio futures."""

    __slots__ = ("backoff", "client", "deadline", "futs", "group", "items", "sent")

    def __init__(
        self, client: AsyncClient, items: list[Any], futs: list[Any], group: list[int], deadline: float
    ) -> None:
        self.client = client
        self.items = items
        self.futs = futs
        self.group = group
        self.deadline = deadline
        self.backoff: Backoff | None = None
        self.sent = False

    @staticmethod
    def send(
        client: AsyncClient, conn: _Connection, items: list[Any], futs: list[Any], size: int, deadline: float
    ) -> None:
        core = conn.core
        try:
            frames = encode_batches(encode_enqueue, items, core.max_frame_size, core.next_id, size)
        except EncodeError:
            good: list[Any] = []
            good_futs: list[Any] = []
            for item, fut in zip(items, futs, strict=True):
                try:
                    encode_enqueue(1, [item], core.max_frame_size)
                except (EncodeError, TypeError, ValueError) as exc:
                    if not fut.done():
                        fut.set_exception(exc)
                else:
                    good.append(item)
                    good_futs.append(fut)
            items, futs = good, good_futs
            frames = encode_batches(encode_enqueue, items, core.max_frame_size, core.next_id, -1) if items else []
        if not frames:
            assert client._acc is not None
            client._acc.done()
            return
        group = [len(frames)]
        whole = len(items)
        for rid, data, s, e in frames:
            if s == 0 and e == whole:
                batch = _AioEnqueueBatch(client, items, futs, group, deadline)
            else:
                batch = _AioEnqueueBatch(client, items[s:e], futs[s:e], group, deadline)
            core.register(rid, batch)
            conn.write(data, batch)

    def _finish(self) -> None:
        self.group[0] -= 1
        if self.group[0] == 0:
            acc = self.client._acc
            assert acc is not None
            acc.done()

    def complete(self, frame: Any) -> None:
        try:
            results = ops.hot_result(
                frame.opcode, frame.payload, Opcode.ENQUEUE_RESULT, decode_enqueue_result, len(self.futs)
            )
        except ChannelFullError as exc:
            if self._retry(exc):
                return
            self._fail_all(exc)
        except (ServerError, ProtocolError) as exc:
            self._fail_all(exc)
        else:
            for fut, (code, mid) in zip(self.futs, results, strict=True):
                if fut.done():
                    continue
                if code:
                    fut.set_exception(error_for_code(code, mid))
                else:
                    fut.set_result(mid)
        self._finish()

    def _fail_all(self, exc: BaseException) -> None:
        for fut in self.futs:
            if not fut.done():
                fut.set_exception(exc)

    def fail(self, exc: BaseException) -> None:
        self._fail_all(exc)
        self._finish()

    def _retry(self, exc: ChannelFullError) -> bool:
        self.backoff = self.backoff or Backoff(0.01, 1.0)
        delay = self.backoff.next()
        if exc.retry_after_ms:
            delay = max(delay, exc.retry_after_ms / 1000.0)
        if time.monotonic() + delay >= self.deadline or self.client._closed or self.client._loop is None:
            return False
        self.client._loop.call_later(delay, lambda: self.client._spawn(self._resend()))
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
        self.sent = False
        conn.core.register(rid, self)
        conn.write(data, self)


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
        state = self._state
        if not state.started:
            await state.start()
        buf = self._buf
        if buf:
            msg = buf.popleft()
            if state.paused and len(buf) <= state.low:
                state.resume()
            return msg  # type: ignore[no-any-return]
        msg = await state.wait(None)
        if msg is None:
            raise StopAsyncIteration
        return msg

    async def get(self, timeout: float | None = None) -> Message | None:
        """The next message, or None after ``timeout`` seconds (or once closed)."""
        state = self._state
        if not state.started:
            await state.start()
        buf = self._buf
        if buf:
            msg = buf.popleft()
            if state.paused and len(buf) <= state.low:
                state.resume()
            return msg  # type: ignore[no-any-return]
        return await state.wait(timeout)

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
                self._sender(encode_ack, decode_ack_result, Opcode.ACK_RESULT, "ack"),
                loop.call_later,
            )
            self.nacks = AsyncAccumulator(
                AccumulatorMode.AUTO,
                self._sender(encode_nack, decode_nack_result, Opcode.NACK_RESULT, "nack"),
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
                if frame.opcode == Opcode.ERROR:
                    raise ops.error_from_frame(frame.payload)
                if frame.opcode != Opcode.CONSUME_OK:
                    raise ProtocolError(f"expected ConsumeOk, got opcode 0x{frame.opcode:02x}")
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
        msg = buf.popleft()
        if self.paused and len(buf) <= self.low:
            self.resume()
        return msg  # type: ignore[no-any-return]

    def _sender(
        self, encode: Callable[..., bytes], decode: Callable[[bytes], list[int]], result_op: int, what: str
    ) -> Callable[[list[Any], list[Any], int], None]:
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
            core = conn.core
            frames = encode_batches(encode, items, core.max_frame_size, core.next_id, -1, ops.ack_size)
            group = [len(frames)]
            for rid, data, s, e in frames:
                core.register(rid, _AioAckBatch(items[s:e], decode, result_op, what, group, acc))
                conn.write(data)

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


class _AioAckBatch:
    __slots__ = ("acc", "decode", "group", "items", "result_op", "sent", "what")

    def __init__(
        self,
        items: list[Any],
        decode: Callable[[bytes], list[int]],
        result_op: int,
        what: str,
        group: list[int],
        acc: AsyncAccumulator,
    ) -> None:
        self.items = items
        self.decode = decode
        self.result_op = result_op
        self.what = what
        self.group = group
        self.acc = acc
        self.sent = True

    def _finish(self) -> None:
        self.group[0] -= 1
        if self.group[0] == 0:
            self.acc.done()

    def complete(self, frame: Any) -> None:
        try:
            codes = ops.hot_result(frame.opcode, frame.payload, self.result_op, self.decode, len(self.items))
        except FilaError as exc:
            log.warning("%s of %d messages failed: %s", self.what, len(self.items), exc)
        else:
            for item, code in zip(self.items, codes, strict=True):
                if code:
                    log.warning("%s of message %s on %r failed: %s", self.what, item[1], item[0], error_for_code(code))
        self._finish()

    def fail(self, exc: BaseException) -> None:
        log.warning("%s of %d messages not confirmed: %s", self.what, len(self.items), exc)
        self._finish()
