"""Helpers of the compatibility suite: bounded waits, a hang guard, a request spy and a scripted FIBP peer.

Nothing here sleeps for correctness: waits poll a condition until a deadline.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections.abc import Callable
from collections.abc import Coroutine
from typing import Any

from fila.protocol.constants import MAX_FRAME_SIZE
from fila.protocol.constants import Opcode
from fila.protocol.messages import encode_message

ASYNC_TEST_TIMEOUT = 30.0


def run(coro: Coroutine[Any, Any, Any], timeout: float = ASYNC_TEST_TIMEOUT) -> Any:
    """Run an async test body on a fresh loop, failing (not hanging) after ``timeout`` seconds."""

    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def within(seconds: float, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in a daemon thread; its result or exception, or AssertionError if it hangs."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{getattr(fn, '__name__', fn)!s} did not return within {seconds}s (it hangs)"
    if "error" in box:
        raise box["error"]
    return box.get("value")


def wait_until(pred: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``pred`` until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


async def await_until(pred: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> None:
    """:func:`wait_until` for coroutines: ``pred`` may return an awaitable."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


# --------------------------------------------------------------- request spy


class RequestSpy:
    """Records every request a :class:`fila.testing.Broker` dispatches.

    Each entry is ``(opcode, request_id, subscription_request_id)``: the last
    is the request id of the connection's active Consume at the time (None
    without one), which is what the server cancels by.
    """

    def __init__(self, broker: Any) -> None:
        self.entries: list[tuple[int, int, int | None]] = []
        handlers = broker.handlers
        original = handlers.dispatch

        def dispatch(conn: Any, frame: Any) -> None:
            sub = getattr(conn, "subscription", None)
            self.entries.append((frame.opcode, frame.request_id, None if sub is None else sub.request_id))
            original(conn, frame)

        handlers.dispatch = dispatch

    def count(self, opcode: int) -> int:
        return sum(1 for e in self.entries if e[0] == opcode)

    def of(self, opcode: int) -> list[tuple[int, int, int | None]]:
        return [e for e in self.entries if e[0] == opcode]


# ------------------------------------------------------------ scripted peer


def raw_frame(opcode: int, request_id: int, body: bytes = b"", flags: int = 0) -> bytes:
    """One frame exactly as given (no validation: for malformed answers)."""
    return struct.pack(">IBBI", 6 + len(body), opcode, flags, request_id) + body


def handshake_ok(node_id: int = 0) -> bytes:
    return encode_message(
        Opcode.HANDSHAKE_OK, 0, {"negotiated_version": 1, "node_id": node_id, "max_frame_size": MAX_FRAME_SIZE}
    )


def error_frame(request_id: int, code: int, message: str, metadata: dict[str, str] | None = None) -> bytes:
    fields = {"error_code": code, "message": message, "metadata": metadata or {}}
    return encode_message(Opcode.ERROR, request_id, fields)


Responder = Callable[[int, int, bytes], "bytes | None"]


class FakeServer:
    """A scripted FIBP peer on 127.0.0.1 (a thread per connection).

    It answers the handshake with ``handshake`` (default HandshakeOk), then
    calls ``respond(opcode, request_id, payload)`` for every further frame and
    writes what it returns (nothing for None). ``requests`` records
    ``(opcode, request_id)``.
    """

    def __init__(self, respond: Responder, handshake: Callable[[], bytes] = handshake_ok) -> None:
        self.respond = respond
        self.handshake = handshake
        self.requests: list[tuple[int, int]] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        greeted = False
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
                while len(buf) >= 4:
                    (length,) = struct.unpack(">I", buf[:4])
                    if len(buf) < 4 + length:
                        break
                    opcode, _flags, rid = struct.unpack(">BBI", buf[4:10])
                    payload = buf[10 : 4 + length]
                    buf = buf[4 + length :]
                    if not greeted:
                        greeted = True
                        conn.sendall(self.handshake())
                        continue
                    self.requests.append((opcode, rid))
                    if opcode == Opcode.DISCONNECT:
                        return
                    out = self.respond(opcode, rid, payload)
                    if out:
                        conn.sendall(out)
        except OSError:
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def close(self) -> None:
        self._closed = True
        try:
            self._listener.close()
        except OSError:
            pass
        for c in self._conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                c.close()
            except OSError:
                pass
