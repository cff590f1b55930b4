"""The threads-and-sockets driver of :class:`~fila.Client`: one FIBP connection.

A :class:`SyncConnection` owns a socket (TLS through a memory BIO, so that
the reader thread and writing threads never use one ``SSLSocket`` at once),
a :class:`~fila._core.ConnectionCore` that makes every protocol decision, a
combining writer (whoever gets the write lock sends everything queued, so
frames from several threads go out in one ``send``) and a reader loop run by
a thread of the owner's choosing. :class:`Timers` runs delayed callbacks.

The reader re-arms ``TCP_QUICKACK`` after every read (:mod:`fila._quickack`).
"""

from __future__ import annotations

import _thread
import heapq
import itertools
import logging
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from ._core import DISCONNECT_FRAME
from ._core import ConnectionCore
from ._core import Keepalive
from ._core import Settings
from ._core import connect_failure
from ._quickack import quickack
from .errors import ConnectError
from .errors import ConnectionLostError
from .errors import DecodeError
from .errors import FilaError
from .errors import ProtocolError
from .errors import RequestTimeoutError

__all__ = ["BlockingWaiter", "SyncConnection", "Timers"]

log = logging.getLogger("fila")

# Below glibc's mmap threshold (128 KiB): a larger buffer is mmapped and unmapped on every recv.
_RECV_SIZE = 64 * 1024


class Timers:
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
        self.core = ConnectionCore(settings, on_delivery)
        self._sock: socket.socket | None = None
        self._io: Any = None
        self._wlock = _thread.allocate_lock()
        self._wqueue: list[tuple[bytes, Any]] = []
        self._dead_lock = _thread.allocate_lock()
        self._ended_event = threading.Event()
        self.dead = False
        self._ended = False
        self.closing = False
        self._rearm: Callable[[], None] | None = None
        self.gate: Callable[[], None] | None = None  # backpressure hook, run after each read
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
        tls = s.ssl_context is not None
        self._sock = sock
        self._rearm = quickack(sock)
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
            self._io.sendall(s.handshake_frame())
            self.pump(waiter, deadline)
            self.core.accept_handshake(waiter.frame)
            sock.settimeout(None)
        except (DecodeError, OSError, ssl.SSLError) as exc:
            self._abort()
            raise connect_failure(s.address, exc, tls, s.connect_timeout) from exc
        except FilaError:
            self._abort()
            raise
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
            if self._rearm is not None:
                self._rearm()
            self.core.receive(data)
        # No read timeout may outlive the wait: the reader thread blocks on this socket next,
        # and a connection idle longer than the timeout is healthy.
        self._sock.settimeout(None)
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
                    # Marked before sending: the reader may see the answer (or the connection end)
                    # before sendall returns, and from here on the server may act on the request.
                    for _, w in batch:
                        if w is not None:
                            w.sent = True
                    if len(batch) == 1:
                        self._io.sendall(batch[0][0])
                    else:
                        self._io.sendall(b"".join([b[0] for b in batch]))
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
        core = self.core
        receive = core.receive
        recv = io.recv
        keepalive = core.keepalive
        rearm = self._rearm
        poll = _Poller(sock) if keepalive.interval is not None else None
        now = time.monotonic
        try:
            while True:
                if poll is not None:
                    self._await_data(io, poll, keepalive)
                data = recv(_RECV_SIZE)
                if not data:
                    raise ConnectionLostError(f"{self.settings.address} closed the connection")
                if rearm is not None:
                    rearm()
                if poll is not None:
                    keepalive.received(now())
                receive(data)
                gate = self.gate
                if gate is not None:
                    gate()
                    if poll is not None:
                        keepalive.received(now())  # not reading on purpose is not silence
        except DecodeError as exc:
            self.die(ProtocolError(exc.code, f"malformed data from {self.settings.address}: {exc}"))
        except BaseException as exc:
            self.die(exc)

    def _await_data(self, io: Any, poll: _Poller, keepalive: Keepalive) -> None:
        """Block until the socket is readable, sending keepalive Pings as the core decides."""
        while not io.buffered():
            action, next_check = keepalive.check(time.monotonic())
            if action == Keepalive.DEAD:
                raise keepalive.dead_error(self.settings.address)
            if action == Keepalive.PING:
                self.write(self.core.ping_frame())
            wait = max((next_check or time.monotonic()) - time.monotonic(), 0.0)
            if poll.wait(wait):
                return

    # ---------------------------------------------------------------- ending

    def die(self, cause: BaseException) -> None:
        """Declare the connection dead: fail every waiter (the core logs why), close the socket."""
        with self._dead_lock:
            if self._ended:
                return
            self._ended = True
            self.dead = True
        cause = self.core.end(cause, self.closing)
        self._shutdown()
        self._ended_event.set()

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

    def close(self, send_disconnect: bool = True, linger: float = 0.0) -> None:
        """Send Disconnect (best effort), close, fail what is pending with ClientClosedError.

        With ``linger``, wait up to that long for the server to close its end
        first (its reader must be running): the server unregisters the
        connection's consumer before it closes, so what the client sends
        afterwards on other connections is ordered after the unregister.
        """
        if self.dead:
            return
        self.closing = True
        if send_disconnect:
            try:
                self.write(DISCONNECT_FRAME)
            except Exception:  # pragma: no cover
                pass
            if linger > 0:
                self._ended_event.wait(linger)
        self.die(ConnectionLostError("closed"))
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
