"""Raw-socket FIBP helpers for the broker tests (no client library involved)."""

from __future__ import annotations

import itertools
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

import pytest

from fila.protocol.constants import ErrorCode
from fila.protocol.constants import Opcode
from fila.protocol.messages import BODY_TYPE_BY_OPCODE
from fila.protocol.messages import decode_body
from fila.protocol.messages import encode_message
from fila.protocol.pure import Frame
from fila.protocol.pure import FrameReader
from fila.testing import Broker
from fila.testing import scheduler as _scheduler
from fila.testing.pytest_plugin import fila_broker  # noqa: F401
from fila.testing.pytest_plugin import fila_broker_factory  # noqa: F401
from fila.testing.pytest_plugin import fila_test_pki  # noqa: F401

TIMEOUT = 5.0


class Closed(AssertionError):
    """The broker closed the connection."""


class Wire:
    """A raw FIBP connection: send frames, read frames, with timeouts."""

    def __init__(
        self,
        broker: Broker,
        *,
        handshake: bool = True,
        api_key: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        raw = socket.create_connection((broker.host, broker.port), timeout=TIMEOUT)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock: socket.socket = ssl_context.wrap_socket(raw, server_hostname="localhost") if ssl_context else raw
        self.sock.settimeout(TIMEOUT)
        self.reader = FrameReader(reassemble=False)
        self.frames: deque[Frame] = deque()
        self.deliveries: deque[dict[str, Any]] = deque()
        self.rids = itertools.count(1)
        self.handshake_ok: dict[str, Any] | None = None
        if handshake:
            f = self.handshake(api_key)
            assert f.opcode == Opcode.HANDSHAKE_OK, self.describe(f)
            self.handshake_ok = decode_body(f.opcode, f.payload)

    # ---------------------------------------------------------- raw I/O

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_msg(self, type_name: str | int, rid: int, fields: dict[str, Any] | None = None) -> None:
        self.send(encode_message(type_name, rid, fields))

    def recv_frame(self, timeout: float = TIMEOUT) -> Frame:
        """The next frame (Delivery frames included)."""
        deadline = time.monotonic() + timeout
        while not self.frames:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("timed out waiting for a frame")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                raise AssertionError("timed out waiting for a frame") from None
            except (ConnectionResetError, ssl.SSLError) as exc:
                raise Closed(f"connection reset: {exc}") from None
            if not data:
                raise Closed("connection closed by the broker")
            self.frames.extend(self.reader.feed(data))
        return self.frames.popleft()

    def assert_closed(self, timeout: float = TIMEOUT) -> list[Frame]:
        """Read until EOF; return frames seen before it."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            if time.monotonic() > deadline:
                raise AssertionError(f"connection still open; frames seen: {seen}")
            try:
                seen.append(self.recv_frame(max(0.01, deadline - time.monotonic())))
            except Closed:
                return seen

    def assert_silent(self, wait: float = 0.3) -> None:
        """No frame arrives within ``wait`` seconds."""
        try:
            f = self.recv_frame(wait)
        except AssertionError as exc:
            if isinstance(exc, Closed):
                raise
            return
        raise AssertionError(f"unexpected frame {self.describe(f)}")

    @staticmethod
    def describe(f: Frame) -> str:
        try:
            return f"{Opcode(f.opcode).name} rid={f.request_id} {decode_body(f.opcode, f.payload)}"
        except Exception:
            return repr(f)

    # -------------------------------------------------------- protocol

    def handshake(self, api_key: str | None = None, version: int = 1) -> Frame:
        self.send_msg("Handshake", 0, {"protocol_version": version, "api_key": api_key})
        return self.recv_frame()

    def response(self, rid: int, timeout: float = TIMEOUT) -> Frame:
        """The next non-Delivery frame, which must answer ``rid``; deliveries are kept."""
        while True:
            f = self.recv_frame(timeout)
            if f.opcode == Opcode.DELIVERY:
                self._keep(f)
                continue
            assert f.request_id == rid, f"expected a reply to {rid}, got {self.describe(f)}"
            return f

    def _keep(self, f: Frame) -> None:
        for m in decode_body(f.opcode, f.payload)["messages"]:
            m["rid"] = f.request_id
            self.deliveries.append(m)

    def call(self, type_name: str | int, fields: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        """Send a request; return ``(response opcode, decoded body)``."""
        rid = next(self.rids)
        self.send_msg(type_name, rid, fields)
        f = self.response(rid)
        return f.opcode, decode_body(f.opcode, f.payload) if f.opcode in BODY_TYPE_BY_OPCODE else {}

    def ok(self, type_name: str | int, fields: dict[str, Any] | None = None) -> dict[str, Any]:
        """``call`` that must not return an Error frame."""
        opcode, body = self.call(type_name, fields)
        assert opcode != Opcode.ERROR, f"{type_name} failed: {body}"
        return body

    def error(self, type_name: str | int, fields: dict[str, Any] | None = None) -> dict[str, Any]:
        """``call`` that must return an Error frame; its body."""
        opcode, body = self.call(type_name, fields)
        assert opcode == Opcode.ERROR, f"expected an Error frame, got {body}"
        return body

    # ------------------------------------------------------ shorthands

    def create_queue(
        self,
        name: str,
        on_enqueue: str | None = None,
        on_failure: str | None = None,
        visibility_timeout_ms: int = 0,
    ) -> dict[str, Any]:
        return self.ok(
            "CreateQueueRequest",
            {
                "name": name,
                "on_enqueue_script": on_enqueue,
                "on_failure_script": on_failure,
                "visibility_timeout_ms": visibility_timeout_ms,
            },
        )

    def enqueue_many(
        self, items: list[tuple[str, bytes]], headers: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        body = self.ok(
            "EnqueueRequest",
            {"messages": [{"queue": q, "headers": headers or {}, "payload": p} for q, p in items]},
        )
        return body["results"]  # type: ignore[no-any-return]

    def enqueue(self, queue: str, payload: bytes = b"x", headers: dict[str, str] | None = None) -> str:
        (result,) = self.enqueue_many([(queue, payload)], headers)
        assert result["error_code"] == 0, result
        return result["message_id"]  # type: ignore[no-any-return]

    def consume(self, queue: str) -> int:
        rid = next(self.rids)
        self.send_msg("ConsumeRequest", rid, {"queue": queue})
        f = self.response(rid)
        assert f.opcode == Opcode.CONSUME_OK, self.describe(f)
        return rid

    def delivery(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next delivered message (``rid`` = its Consume's request id)."""
        deadline = time.monotonic() + timeout
        while not self.deliveries:
            f = self.recv_frame(max(0.01, deadline - time.monotonic()))
            assert f.opcode == Opcode.DELIVERY, f"expected a Delivery, got {self.describe(f)}"
            self._keep(f)
        return self.deliveries.popleft()

    def no_delivery(self, wait: float = 0.3) -> None:
        assert not self.deliveries, self.deliveries
        self.assert_silent(wait)

    def ack(self, queue: str, *ids: str) -> list[int]:
        body = self.ok("AckRequest", {"items": [{"queue": queue, "message_id": i} for i in ids]})
        return [r["error_code"] for r in body["results"]]

    def nack(self, queue: str, *ids: str, error: str = "boom") -> list[int]:
        body = self.ok("NackRequest", {"items": [{"queue": queue, "message_id": i, "error": error} for i in ids]})
        return [r["error_code"] for r in body["results"]]

    def stats(self, queue: str) -> dict[str, Any]:
        return self.ok("GetStatsRequest", {"queue": queue})

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


@pytest.fixture
def broker(fila_broker_factory: Callable[..., Broker]) -> Broker:  # noqa: F811
    """A broker with a short lease tick, so timing tests stay quick."""
    return fila_broker_factory(lease_check_interval=0.02)


@pytest.fixture
def connect(broker: Broker) -> Iterator[Callable[..., Wire]]:
    """Open raw connections to ``broker`` (closed after the test)."""
    wires: list[Wire] = []

    def make(target: Broker | None = None, **kwargs: Any) -> Wire:
        w = Wire(target or broker, **kwargs)
        wires.append(w)
        return w

    yield make
    for w in wires:
        w.close()


@pytest.fixture
def wire(connect: Callable[..., Wire]) -> Wire:
    """One handshaken connection to ``broker``."""
    return connect()


class Clock:
    """The scheduler's monotonic clock, shifted on demand: leases expire without waiting."""

    def __init__(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Control the lease clock of every broker in the test (``clock.advance(s)``)."""
    c = Clock()
    monkeypatch.setattr(_scheduler, "time", c)
    return c


def wait_until(predicate: Callable[[], bool], timeout: float = TIMEOUT, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


__all__ = ["Clock", "Closed", "ErrorCode", "Opcode", "Wire", "wait_until"]
