"""One client connection: handshake, framing, request order, deliveries.

Requests are handled one at a time in arrival order and each response is
written before the next request is looked at (SERVER.md §4). Deliveries are
written only when no read request is waiting, so a ConsumeOk precedes its
first Delivery and an EnqueueResult precedes deliveries of what it stored.

On the wire it writes as the server does: every frame is its own write (the
server flushes after each frame, §2.1); Nagle stays on (the server never sets
TCP_NODELAY, §16.1); and a frame the kernel cannot take whole stops the
connection, reads and writes alike, until the socket drains, as the server's
blocking write does. Deliveries wait in a ready buffer per subscription (64,
where the scheduler takes the lease) and an outbound buffer per connection
(256) before they are written (§7.11).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from collections import deque
from struct import Struct
from typing import TYPE_CHECKING
from typing import Any

from ..errors import DecodeError
from ..protocol.constants import MAX_FRAME_SIZE
from ..protocol.constants import PROTOCOL_VERSION
from ..protocol.constants import ErrorCode
from ..protocol.constants import Opcode
from ..protocol.messages import decode_body
from ..protocol.messages import encode_message
from ..protocol.pure import Frame
from ..protocol.pure import FrameReader
from . import faults as _faults
from .faults import SCHEDULER_OPCODES
from .scheduler import Consumer
from .scheduler import StoredMessage

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["Connection"]

log = logging.getLogger("fila")

_HEADER = Struct(">IBBI")
_pack_header = _HEADER.pack
_TAIL = Struct(">IQQ")  # attempt_count, enqueued_at (0), leased_at (0)
_pack_tail = _TAIL.pack
_COUNT_ONE = b"\x00\x00\x00\x01"
_u32 = Struct(">I").pack

# Requests that reach the server's scheduler as a command (each one makes the
# scheduler run a delivery pass and postpones its idle-time lease scan).
_COMMANDS = SCHEDULER_OPCODES | {Opcode.CONSUME}
# Error answers given before a request reaches the scheduler.
_REFUSALS = frozenset(
    {
        ErrorCode.INVALID_FRAME,
        ErrorCode.FORBIDDEN,
        ErrorCode.UNAUTHORIZED,
        ErrorCode.NOT_LEADER,
        ErrorCode.CHANNEL_FULL,
        ErrorCode.INTERNAL_ERROR,
    }
)

_TLS_BUFFER = 64 * 1024

# A delivery waiting to be written: (Consume request_id, encoded fields
# message_id..throttle_keys, attempt_count), taken when the lease is.
_Queued = tuple[int, bytes, int]


class _Ready(deque[_Queued]):
    """A subscription's ready buffer. ``started`` once the server's per-subscription
    task would run (it is spawned after ConsumeOk is written); from then on the
    task also holds one delivery while the outbound buffer is full."""

    __slots__ = ("started",)

    def __init__(self, started: bool) -> None:
        super().__init__()
        self.started = started


def error_frame(request_id: int, code: int, message: str, metadata: dict[str, str] | None = None) -> bytes:
    """Wire bytes of an Error frame."""
    return encode_message(
        Opcode.ERROR, request_id, {"error_code": int(code), "message": message, "metadata": metadata or {}}
    )


class Connection(asyncio.Protocol):
    """The server side of one FIBP connection."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.faults = broker.faults
        self.transport: asyncio.Transport | None = None
        self.identity: str | None = None
        self.subscription: Consumer | None = None
        self.closed = False
        self._handshake_buf: bytearray | None = bytearray()
        self._reader = FrameReader()
        self._inbox: deque[Frame] = deque()
        self._processing = False
        self._held = False  # a delayed request is being waited on
        self._refused = False  # the request being handled was refused before the scheduler
        self._out: deque[_Queued] = deque()  # the outbound delivery channel (delivery_buffer)
        self._ready: dict[Consumer, _Ready] = {}  # a ready buffer per subscription (ready_buffer)
        self._flush_scheduled = False
        self._write_paused = False
        self._reading_paused = False

    # ------------------------------------------------------------ asyncio

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.broker.connections.add(self)
        self._tune_socket(transport)
        self.apply_reading()

    def _tune_socket(self, transport: asyncio.Transport) -> None:
        """Nagle as configured, and no user-space write buffering (see the module doc)."""
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # asyncio turns TCP_NODELAY on for every TCP transport; the server never does.
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0 if self.broker.nagle else 1)
            except OSError as exc:  # pragma: no cover - not a TCP socket after all
                log.debug("fila.testing: cannot set TCP_NODELAY: %s", exc)
        ssl_protocol = getattr(transport, "_ssl_protocol", None)
        if ssl_protocol is None:
            # Pause as soon as the kernel refuses part of a write.
            transport.set_write_buffer_limits(high=0)
        else:
            # TLS: the TCP transport below holds records back as soon as the
            # kernel refuses part of a write; above it, up to 64 KiB of records
            # may wait, as in the server's TLS library (rustls' default limit).
            raw = getattr(ssl_protocol, "_transport", None)
            if raw is not None:
                raw.set_write_buffer_limits(high=0)
            transport.set_write_buffer_limits(high=_TLS_BUFFER)

    @property
    def nodelay(self) -> bool | None:
        """Whether TCP_NODELAY is set on the accepted socket (None if there is none)."""
        t = self.transport
        sock = t.get_extra_info("socket") if t is not None else None
        if sock is None or sock.fileno() < 0:
            return None
        return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    def connection_lost(self, exc: Exception | None) -> None:
        self._teardown()

    def pause_writing(self) -> None:
        # The client is not reading: stop reading its requests too, as the
        # server's single per-connection loop would block on the write.
        self._write_paused = True
        self.apply_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self.apply_reading()
        if not self.closed:
            self._flush()

    def apply_reading(self) -> None:
        """Pause or resume reading after a fault or backpressure change."""
        t = self.transport
        if t is None or self.closed:
            return
        want_paused = self.faults.reading_paused or self._write_paused
        if want_paused and not self._reading_paused:
            t.pause_reading()
            self._reading_paused = True
        elif not want_paused and self._reading_paused:
            t.resume_reading()
            self._reading_paused = False

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self._handshake_buf is not None:
            self._handshake_buf += data
            if not self._handshake():
                return
            data = bytes(self._handshake_buf)
            self._handshake_buf = None
            if not data:
                return
        try:
            frames = self._reader.feed(data)
        except DecodeError as exc:
            log.debug("fila.testing: closing connection on a bad frame: %s", exc)
            self.abort()
            return
        if frames:
            self._inbox.extend(frames)
            self._process()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    # ---------------------------------------------------------- handshake

    def _handshake(self) -> bool:
        """Handle the first frame; True once HandshakeOk is sent."""
        buf = self._handshake_buf
        assert buf is not None
        if len(buf) < 4:
            return False
        length = int.from_bytes(buf[:4], "big")
        if length > MAX_FRAME_SIZE:
            self.abort()
            return False
        if len(buf) < 4 + length:
            return False
        if length < 6:
            self.abort()
            return False
        opcode = buf[4]
        request_id = int.from_bytes(buf[6:10], "big")
        payload = bytes(buf[10 : 4 + length])
        del buf[: 4 + length]
        if opcode != Opcode.HANDSHAKE:
            self._refuse(error_frame(request_id, ErrorCode.INVALID_FRAME, "expected Handshake frame"))
            return False
        try:
            hs = decode_body(Opcode.HANDSHAKE, payload)
        except DecodeError:
            self.abort()
            return False
        if hs["protocol_version"] != PROTOCOL_VERSION:
            self._refuse(
                error_frame(
                    0,
                    ErrorCode.UNSUPPORTED_VERSION,
                    "only protocol version 1 is supported",
                    {"max_version": "1"},
                )
            )
            return False
        identity, refusal = self.broker.auth.authenticate(hs["api_key"])
        if refusal is not None:
            self._refuse(error_frame(0, ErrorCode.UNAUTHORIZED, refusal))
            return False
        self.identity = identity
        self.send(
            encode_message(
                Opcode.HANDSHAKE_OK,
                0,
                {"negotiated_version": 1, "node_id": self.broker.node_id, "max_frame_size": MAX_FRAME_SIZE},
            ),
            Opcode.HANDSHAKE_OK,
        )
        return not self.closed

    def _refuse(self, frame: bytes) -> None:
        self.send(frame, Opcode.ERROR)
        self.close()

    # --------------------------------------------------------- processing

    def _process(self) -> None:
        if self._held or self.closed or self._processing:
            return
        self._processing = True
        inbox = self._inbox
        try:
            while inbox and not self.closed:
                frame = inbox.popleft()
                if self.faults.request_armed:
                    seconds = self.faults.take_delay(frame.opcode)
                    if seconds > 0:
                        self._held = True
                        self.faults.hold(seconds, functools.partial(self._release, frame))
                        break
                self._dispatch(frame)
        finally:
            self._processing = False
        if not self.closed:
            self._flush()

    def _dispatch(self, frame: Frame) -> None:
        self._refused = False
        before = self.subscription
        try:
            self.broker.handlers.dispatch(self, frame)
        except Exception as exc:  # a broker bug must not kill the connection or the broker
            log.exception("fila.testing: request 0x%02x failed", frame.opcode)
            self.send_error(frame.request_id, ErrorCode.INTERNAL_ERROR, f"internal error: {exc}")
        if frame.opcode in _COMMANDS and not self._refused:
            self.broker.command()  # schedules the scheduler's next pass
        sub = self.subscription
        if sub is not None and sub is not before:
            # The server spawns the subscription's task after writing ConsumeOk,
            # so the scheduler's passes so far could fill only the ready buffer.
            asyncio.get_running_loop().call_soon(self._start, sub)

    def _release(self, frame: Frame) -> None:
        """A delayed request's time is up: handle it, then whatever queued up behind it."""
        self._held = False
        if self.closed:
            return
        self._processing = True
        try:
            self._dispatch(frame)
        finally:
            self._processing = False
        self._process()
        if not self.closed:
            self._flush()

    # ------------------------------------------------------------- output

    def send(self, data: bytes, opcode: int) -> None:
        """Write one frame now, as a write of its own (the server flushes after each frame)."""
        t = self.transport
        if self.closed or t is None or t.is_closing():  # (closing: a write already failed)
            return
        if self.faults.write_armed:
            action = self.faults.on_write(opcode)
            if action == _faults.WRITE_CUT:
                t.write(data[: max(1, len(data) // 2)])
                self.close()
                return
            t.write(data)
            if action == _faults.WRITE_CLOSE_AFTER:
                self.close()
            return
        t.write(data)

    def send_error(self, request_id: int, code: int, message: str, metadata: dict[str, str] | None = None) -> None:
        if code in _REFUSALS:
            self._refused = True
        self.send(error_frame(request_id, code, message, metadata), Opcode.ERROR)

    def has_room(self, consumer: Consumer) -> bool:
        """Whether the scheduler may lease another message to ``consumer`` (SERVER.md §7.11).

        Its ready buffer holds ``ready_buffer`` messages, plus the one the
        server's per-subscription task holds while the outbound buffer is full.
        """
        if self.closed:
            return False
        ready = self._ready.get(consumer)
        return ready is None or len(ready) < self.broker.ready_buffer + ready.started

    def push_delivery(self, consumer: Consumer, message: StoredMessage) -> None:
        """The scheduler leased ``message`` to ``consumer``: queue its Delivery."""
        ready = self._ready.get(consumer)
        if ready is None:
            ready = self._ready[consumer] = _Ready(False)  # ``_start`` has not run yet
        ready.append((consumer.request_id, message.wire_prefix(), message.attempt_count))
        if ready.started and len(self._out) < self.broker.delivery_buffer:
            self._move()
        if not (self._processing or self._flush_scheduled or self._held or self._write_paused):
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _start(self, consumer: Consumer) -> None:
        """The subscription's task starts moving its ready buffer to the outbound one."""
        if self.closed:
            return
        ready = self._ready.get(consumer)
        if ready is None:
            if consumer.active:
                self._ready[consumer] = _Ready(True)
            return
        ready.started = True
        self._move()
        self._flush()

    def _move(self) -> None:
        """Move ready deliveries into the outbound buffer while it has room.

        The server's per-subscription tasks do this as soon as there is room;
        the scheduler only learns of the freed ready slots on its next pass.
        Several subscriptions (an old one still draining after a second
        Consume) take turns.
        """
        ready = self._ready
        if not ready:
            return
        out = self._out
        room = self.broker.delivery_buffer - len(out)
        if room <= 0:
            return
        if len(ready) == 1:
            consumer, dq = next(iter(ready.items()))
            if not dq.started:
                return
            while dq and room:
                out.append(dq.popleft())
                room -= 1
            if not dq and not consumer.active:
                del ready[consumer]
            return
        queues = [dq for dq in ready.values() if dq.started]
        while room:
            moved = False
            for dq in queues:
                if dq and room:
                    out.append(dq.popleft())
                    room -= 1
                    moved = True
            if not moved:
                break
        for consumer in [c for c, dq in ready.items() if not dq and not c.active]:
            del ready[consumer]

    def _flush(self) -> None:
        """Write queued deliveries, one frame per write, while the socket takes them whole."""
        self._flush_scheduled = False
        out = self._out
        t = self.transport
        if self.closed or self._held or t is None or (not out and not self._ready):
            return  # (while a request is being handled, the server's loop writes no delivery)
        send = self.send
        batch = self.broker.delivery_batch_size
        while not self._write_paused and not self.closed and not t.is_closing():
            if not out:
                self._move()
                if not out:
                    break
            rid, body, attempts = out.popleft()
            if batch == 1:
                send(
                    b"".join(
                        (
                            _pack_header(30 + len(body), Opcode.DELIVERY, 0, rid),
                            _COUNT_ONE,
                            body,
                            _pack_tail(attempts, 0, 0),
                        )
                    ),
                    Opcode.DELIVERY,
                )
                continue
            parts = [body, _pack_tail(attempts, 0, 0)]
            size = 4 + len(body) + 20
            while len(parts) < 2 * batch:
                if not out:
                    self._move()
                if not out or out[0][0] != rid:
                    break
                _, body, attempts = out.popleft()
                parts.append(body)
                parts.append(_pack_tail(attempts, 0, 0))
                size += len(body) + 20
            head = _pack_header(6 + size, Opcode.DELIVERY, 0, rid) + _u32(len(parts) // 2)
            send(head + b"".join(parts), Opcode.DELIVERY)
        if not self.closed:
            self._move()

    # ------------------------------------------------------------- closing

    def unsubscribe(self) -> None:
        """Unregister the subscription; what its ready buffer holds is still written."""
        sub = self.subscription
        if sub is not None:
            self.subscription = None
            self.broker.scheduler.unregister(sub)
            if not self._ready.get(sub, True):
                del self._ready[sub]
            self.broker.command()

    def close(self) -> None:
        """Flush what was written so far, then close (no frame is sent)."""
        if self.closed:
            return
        self._teardown()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Close at once, discarding unsent bytes."""
        if self.closed:
            return
        self._teardown()
        if self.transport is not None:
            self.transport.abort()

    def _teardown(self) -> None:
        # Unlike the server (SERVER.md §13.6) every close unregisters the consumer.
        self.closed = True
        self._inbox.clear()
        self._out.clear()
        self.unsubscribe()
        self._ready.clear()
        self.broker.connections.discard(self)

    def describe(self) -> dict[str, Any]:
        t = self.transport
        return {
            "peer": t.get_extra_info("peername") if t else None,
            "identity": self.identity,
            "nodelay": self.nodelay,
        }
