"""The blocking-socket side of :class:`~fila.Client`: one FIBP connection.

A :class:`SyncConnection` owns a socket (TLS through a memory BIO, so that
the reader thread and writing threads never use one ``SSLSocket`` at once),
a :class:`~fila._connection.Core`, a combining writer (whoever gets the
write lock sends everything queued, so frames from several threads go out in
one ``send``) and a reader loop run by a thread of the owner's choosing.
"""

from __future__ import annotations

import _thread
import logging
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from ._connection import Core, NullWaiter, Settings
from .errors import (
    ClientClosedError,
    ConnectError,
    ConnectionLostError,
    FilaConnectionError,
    FilaError,
    RequestTimeoutError,
)
from .protocol import encode_message

__all__ = ["BlockingWaiter", "NullWaiter", "SyncConnection"]

log = logging.getLogger("fila")

_RECV_SIZE = 256 * 1024
_PING = encode_message("Ping", 0)[:6]  # length + opcode; request id appended per ping
_DISCONNECT = encode_message("Disconnect", 0)


class BlockingWaiter:
    """A waiter a thread blocks on (a lock released by the reader)."""

    __slots__ = ("_lock", "error", "frame", "sent")

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self._lock.acquire()
        self.frame: Any = None
        self.error: BaseException | None = None
        self.sent = False

    def complete(self, frame: Any) -> None:
        self.frame = frame
        self._release()

    def fail(self, exc: BaseException) -> None:
        if self.frame is None and self.error is None:
            self.error = exc
        self._release()

    def _release(self) -> None:
        try:
            self._lock.release()
        except RuntimeError:  # already released (completed twice)
            pass

    def wait(self, timeout: float | None) -> bool:
        if timeout is None:
            return self._lock.acquire()
        return self._lock.acquire(True, max(timeout, 0.0))


class _PlainIO:
    __slots__ = ("sock",)

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, n: int) -> bytes:
        return self.sock.recv(n)

    def buffered(self) -> bool:
        return False


class _TlsIO:
    """TLS over a plain socket through memory BIOs; reads and writes may run in different threads."""

    __slots__ = ("_in", "_lock", "_obj", "_out", "sock")

    def __init__(self, sock: socket.socket, ctx: ssl.SSLContext, hostname: str | None) -> None:
        self.sock = sock
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = ctx.wrap_bio(self._in, self._out, server_side=False, server_hostname=hostname)
        self._lock = threading.Lock()

    def handshake(self) -> None:
        while True:
            try:
                self._obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            self._flush_out()
            data = self.sock.recv(_RECV_SIZE)
            if not data:
                raise ConnectionResetError("the server closed the connection during the TLS handshake")
            self._in.write(data)
        self._flush_out()

    def _flush_out(self) -> None:
        data = self._out.read()
        if data:
            self.sock.sendall(data)

    def sendall(self, data: bytes) -> None:
        # The caller holds the connection's write lock, so records go out in order.
        with self._lock:
            self._obj.write(data)
            out = self._out.read()
        self.sock.sendall(out)

    def recv(self, n: int) -> bytes:
        while True:
            with self._lock:
                try:
                    return self._obj.read(n)
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLZeroReturnError:
                    return b""
            data = self.sock.recv(_RECV_SIZE)
            if not data:
                return b""
            with self._lock:
                self._in.write(data)

    def buffered(self) -> bool:
        return self._obj.pending() > 0 or self._in.pending > 0


class SyncConnection:
    """One FIBP connection driven by blocking sockets and one reader thread."""

    def __init__(self, settings: Settings, on_delivery: Callable[[list[Any]], None] | None = None) -> None:
        self.settings = settings
        self.core = Core(on_delivery)
        self._sock: socket.socket | None = None
        self._io: Any = None
        self._wlock = _thread.allocate_lock()
        self._wqueue: list[tuple[bytes, Any]] = []
        self._dead_lock = _thread.allocate_lock()
        self.dead = False
        self._ended = False
        self.closing = False
        self.gate: Callable[[], None] | None = None  # backpressure hook, run after each read
        self.on_lost: Callable[[SyncConnection, BaseException], None] | None = None
        self.thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    def open(self) -> None:
        """Connect, set up TLS, handshake; raise :class:`ConnectError` (or the server's error)."""
        s = self.settings
        deadline = time.monotonic() + s.connect_timeout
        try:
            sock = socket.create_connection((s.host, s.port), timeout=s.connect_timeout)
        except OSError as exc:
            raise ConnectError(f"cannot connect to {s.address}: {exc}") from exc
        self._sock = sock
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if s.ssl_context is not None:
                io = _TlsIO(sock, s.ssl_context, s.server_hostname)
                io.handshake()
                self._io = io
            else:
                self._io = _PlainIO(sock)
            waiter = BlockingWaiter()
            self.core.register(0, waiter)
            self._io.sendall(s.handshake())
            self.pump(waiter, deadline)
            self.core.accept_handshake(waiter.frame)
            sock.settimeout(None)
        except FilaError:
            self._abort()
            raise
        except (OSError, ssl.SSLError) as exc:
            self._abort()
            if isinstance(exc, socket.timeout):
                raise ConnectError(
                    f"timed out connecting to {s.address} (connect_timeout={s.connect_timeout}s)"
                ) from exc
            raise ConnectError(f"cannot connect to {s.address}: {exc}") from exc
        except BaseException:
            self._abort()
            raise
        log.debug("connected to %s (node %d)", s.address, self.core.node_id)

    def pump(self, waiter: BlockingWaiter, deadline: float) -> None:
        """Read inline (no reader thread yet) until ``waiter`` is answered."""
        assert self._sock is not None
        while waiter.frame is None and waiter.error is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("timed out waiting for the server")
            self._sock.settimeout(left)
            data = self._io.recv(_RECV_SIZE)
            if not data:
                raise ConnectionResetError("the server closed the connection")
            self.core.feed(data)
        if waiter.error is not None:
            raise waiter.error

    def start(self, name: str) -> None:
        """Run the reader loop in a daemon thread."""
        self.thread = threading.Thread(target=self.run_reader, name=name, daemon=True)
        self.thread.start()

    def _abort(self) -> None:
        self.dead = True
        sock = self._sock
        if sock is not None:
            try:
                sock.close()
            except OSError:  # pragma: no cover
                pass

    @property
    def alive(self) -> bool:
        return not self.dead

    # --------------------------------------------------------------- writing

    def write(self, data: bytes, waiter: Any = None) -> None:
        """Queue ``data`` and send it (with whatever else is queued) unless another thread is sending."""
        q = self._wqueue
        q.append((data, waiter))
        lock = self._wlock
        while lock.acquire(False):
            try:
                while q:
                    batch = q[:]
                    del q[: len(batch)]
                    if len(batch) == 1:
                        self._io.sendall(batch[0][0])
                    else:
                        self._io.sendall(b"".join([b[0] for b in batch]))
                    for _, w in batch:
                        if w is not None:
                            w.sent = True
            except (OSError, ssl.SSLError, ValueError) as exc:
                del q[:]
                lock.release()
                self.die(exc)
                return
            lock.release()
            if not q:
                return

    def request(self, rid: int, data: bytes, deadline: float) -> Any:
        """Send one request and wait for its answer frame until ``deadline`` (monotonic)."""
        waiter = BlockingWaiter()
        self.core.register(rid, waiter)
        self.write(data, waiter)
        return self.wait_answer(rid, waiter, deadline)

    def wait_answer(self, rid: int, waiter: BlockingWaiter, deadline: float) -> Any:
        """The answer frame of request ``rid`` (sent with ``waiter``); raise its failure or a timeout."""
        if not waiter.wait(deadline - time.monotonic()):
            self.core.pending.pop(rid, None)
            if waiter.frame is None and waiter.error is None:
                raise RequestTimeoutError(
                    f"no answer from {self.settings.address} within the request timeout",
                    may_have_been_applied=waiter.sent,
                )
        if waiter.error is not None:
            raise waiter.error
        return waiter.frame

    # --------------------------------------------------------------- reading

    def run_reader(self) -> None:
        """Read and dispatch until the connection dies (then fail every waiter)."""
        io = self._io
        sock = self._sock
        assert io is not None and sock is not None
        feed = self.core.feed
        recv = io.recv
        interval = self.settings.keepalive_interval or 0.0
        ka_timeout = self.settings.keepalive_timeout
        poll = _Poller(sock) if self.settings.keepalive_interval is not None else None
        try:
            while True:
                if poll is not None and not io.buffered() and not poll.wait(interval):
                    self._ping()
                    if not io.buffered() and not poll.wait(ka_timeout):
                        raise ConnectionLostError(
                            f"{self.settings.address} did not answer a keepalive Ping within {ka_timeout}s"
                        )
                data = recv(_RECV_SIZE)
                if not data:
                    raise ConnectionLostError(f"{self.settings.address} closed the connection")
                feed(data)
                gate = self.gate
                if gate is not None:
                    gate()
        except BaseException as exc:
            self.die(exc)

    def _ping(self) -> None:
        rid = self.core.next_id()
        self.core.register(rid, NullWaiter())
        self.write(_PING + rid.to_bytes(4, "big"))

    # ---------------------------------------------------------------- ending

    def die(self, cause: BaseException) -> None:
        """Declare the connection dead: fail every waiter, close the socket, tell the owner."""
        with self._dead_lock:
            if self._ended:
                return
            self._ended = True
            self.dead = True
        if self.closing:
            cause = ClientClosedError("the client was closed")
        elif not isinstance(cause, (FilaError, ConnectionLostError)):
            cause = ConnectionLostError(f"connection to {self.settings.address} lost: {cause}")
        if isinstance(cause, FilaConnectionError) or self.closing:
            log.debug("connection to %s ended: %s", self.settings.address, cause)
        else:
            log.warning("connection to %s closed: %s", self.settings.address, cause)
        self.core.fail_all(cause)
        self._shutdown()
        cb = self.on_lost
        if cb is not None:
            try:
                cb(self, cause)
            except Exception:  # pragma: no cover
                log.exception("error in connection-lost handler")

    def _shutdown(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            sock.close()
        except OSError:  # pragma: no cover
            pass

    def close(self, send_disconnect: bool = True) -> None:
        """Send Disconnect (best effort), close, fail what is pending with ClientClosedError."""
        if self.dead:
            return
        self.closing = True
        if send_disconnect:
            try:
                self.write(_DISCONNECT)
            except Exception:  # pragma: no cover
                pass
        self.die(ClientClosedError("the client was closed"))
        t = self.thread
        if t is not None and t is not threading.current_thread():
            t.join(5.0)


class _Poller:
    """Waits for readability with a timeout (poll where available, else select)."""

    __slots__ = ("_fd", "_poll")

    def __init__(self, sock: socket.socket) -> None:
        self._fd = sock.fileno()
        if hasattr(select, "poll"):
            self._poll: Any = select.poll()
            self._poll.register(self._fd, select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP)
        else:  # pragma: no cover - Windows
            self._poll = None

    def wait(self, timeout: float) -> bool:
        if self._poll is not None:
            return bool(self._poll.poll(timeout * 1000.0))
        r, _, _ = select.select([self._fd], [], [], timeout)  # pragma: no cover
        return bool(r)  # pragma: no cover
