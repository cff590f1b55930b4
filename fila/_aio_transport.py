"""The asyncio driver of :class:`~fila.AsyncClient`: one FIBP connection as an ``asyncio.Protocol``.

``data_received`` feeds the :class:`~fila._core.ConnectionCore`, which
completes the awaiting futures; no task polls a stream. Keepalive runs on
loop timers as :class:`~fila._core.Keepalive` decides. Writes made in one
loop turn go out in one ``transport.write``. Where ``TCP_QUICKACK`` exists it
is re-armed after each read (:mod:`fila._quickack`).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any

from ._core import DISCONNECT_FRAME
from ._core import ConnectionCore
from ._core import Keepalive
from ._core import Settings
from ._core import connect_failure
from ._quickack import quickack
from .errors import ConnectionLostError
from .errors import DecodeError
from .errors import FilaConnectionError
from .errors import FilaError
from .errors import ProtocolError
from .errors import RequestTimeoutError

__all__ = ["AioConnection", "FutureWaiter"]

log = logging.getLogger("fila")


class FutureWaiter:
    """A waiter an ``asyncio.Future`` stands behind."""

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


class AioConnection(asyncio.Protocol):
    """One FIBP connection driven by an event loop."""

    def __init__(
        self,
        settings: Settings,
        loop: asyncio.AbstractEventLoop,
        on_delivery: Callable[[list[Any]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.loop = loop
        self.core = ConnectionCore(settings, on_delivery, loop.time())
        self.transport: asyncio.Transport | None = None
        self._wbuf: list[bytes] = []
        self._flush_pending = False
        self._quickack: Callable[[], None] | None = None
        self.dead = False
        self.closing = False
        self.on_lost: Callable[[AioConnection, BaseException], None] | None = None
        self.after_receive: Callable[[AioConnection], None] | None = None
        self._ka_handle: asyncio.TimerHandle | None = None
        self.reading_paused = False
        self.malformed: DecodeError | None = None
        self._ended: asyncio.Future[None] = loop.create_future()

    # --------------------------------------------------------- lifecycle

    @classmethod
    async def open(
        cls, settings: Settings, on_delivery: Callable[[list[Any]], None] | None = None
    ) -> AioConnection:
        """Connect, set up TLS, handshake; raise :class:`ConnectError` (or the server's error)."""
        loop = asyncio.get_running_loop()
        conn = cls(settings, loop, on_delivery)
        fut: asyncio.Future[Any] = loop.create_future()
        conn.core.register(0, FutureWaiter(fut))
        deadline = loop.time() + settings.connect_timeout
        tls = settings.ssl_context is not None
        try:
            kwargs: dict[str, Any] = {}
            if tls:
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
            conn.transport.write(settings.handshake_frame())
            frame = await asyncio.wait_for(fut, max(deadline - loop.time(), 0.001))
            conn.core.accept_handshake(frame)
        except FilaError as exc:
            conn.abort()
            # A malformed stream, or a HandshakeOk body that does not decode: ConnectError, as in the sync driver.
            malformed = conn.malformed if conn.malformed is not None else exc if isinstance(exc, DecodeError) else None
            if malformed is not None:
                raise connect_failure(settings.address, malformed, tls, settings.connect_timeout) from exc
            if isinstance(exc, FilaConnectionError) and "closed the connection" in str(exc):
                raise connect_failure(settings.address, exc, tls, settings.connect_timeout) from exc
            raise
        except (OSError, ssl.SSLError, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
            conn.abort()
            raise connect_failure(settings.address, exc, tls, settings.connect_timeout) from exc
        except BaseException:
            conn.abort()
            raise
        conn._schedule_keepalive()
        log.debug("connected to %s (node %d)", settings.address, conn.core.node_id)
        return conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self._quickack = quickack(sock)

    def data_received(self, data: bytes) -> None:
        rearm = self._quickack
        if rearm is not None:
            rearm()
        self.core.keepalive.received(self.loop.time())
        try:
            self.core.receive(data)
        except DecodeError as exc:
            self.malformed = exc
            self.die(ProtocolError(exc.code, f"malformed data from {self.settings.address}: {exc}"))
            return
        except Exception as exc:  # pragma: no cover - a bug in a callback
            log.exception("error handling data from %s", self.settings.address)
            self.die(exc)
            return
        hook = self.after_receive
        if hook is not None:
            hook(self)

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.die(exc or ConnectionLostError(f"{self.settings.address} closed the connection"))

    def die(self, cause: BaseException) -> None:
        if not self._ended.done():
            self._ended.set_result(None)
        if self.dead:
            return
        self.dead = True
        if self._ka_handle is not None:
            self._ka_handle.cancel()
        cause = self.core.end(cause, self.closing)
        if self.transport is not None:
            if self.closing:
                self.transport.close()
            else:
                self.transport.abort()
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
            self.transport.write(DISCONNECT_FRAME)
        self.die(ConnectionLostError("closed"))

    async def disconnect(self, linger: float) -> None:
        """Send Disconnect, wait up to ``linger`` seconds for the server to close its end, then close.

        The server unregisters the connection's consumer before it closes, so
        what the client sends afterwards on other connections is ordered after
        the unregister.
        """
        if self.dead:
            return
        self.closing = True
        self.flush()
        if self.transport is not None:
            self.transport.write(DISCONNECT_FRAME)
            try:
                await asyncio.wait_for(asyncio.shield(self._ended), linger)
            except asyncio.TimeoutError:
                pass
        self.die(ConnectionLostError("closed"))

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
        self.transport.write(buf[0] if len(buf) == 1 else b"".join(buf))

    async def request(self, rid: int, data: bytes, timeout: float) -> Any:
        """Send one request and await its answer frame for at most ``timeout`` seconds."""
        waiter = FutureWaiter(self.loop.create_future())
        self.core.register(rid, waiter)
        self.write(data, waiter)
        return await self.answer(rid, waiter, timeout)

    async def answer(self, rid: int, waiter: FutureWaiter, timeout: float) -> Any:
        """The answer frame of request ``rid`` (sent with ``waiter``); raise its failure or a timeout."""
        try:
            return await asyncio.wait_for(waiter.fut, max(timeout, 0.0))
        except asyncio.TimeoutError:
            self.core.forget(rid)
            raise RequestTimeoutError(
                f"no answer from {self.settings.address} within the request timeout",
                may_have_been_applied=waiter.sent,
            ) from None

    # ---------------------------------------------------------- keepalive

    def _schedule_keepalive(self) -> None:
        if self.dead:
            return
        keepalive = self.core.keepalive
        if self.reading_paused:
            keepalive.received(self.loop.time())  # not reading on purpose is not silence
        action, next_check = keepalive.check(self.loop.time())
        if action == Keepalive.DEAD:
            self.die(keepalive.dead_error(self.settings.address))
            return
        if action == Keepalive.PING:
            self.write(self.core.ping_frame())
        if next_check is not None:
            self._ka_handle = self.loop.call_at(next_check, self._schedule_keepalive)

    # --------------------------------------------------------- backpressure

    def pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None and not self.dead:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None and not self.dead:
            self.reading_paused = False
            self.transport.resume_reading()
