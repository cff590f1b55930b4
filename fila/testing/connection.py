"""One client connection: handshake, framing, request order, deliveries.

Requests are handled one at a time in arrival order and each response is
written before the next request is looked at (SERVER.md §4). Deliveries are
written only when no read request is waiting, so a ConsumeOk precedes its
first Delivery and an EnqueueResult precedes deliveries of what it stored.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from struct import Struct
from typing import TYPE_CHECKING, Any

from ..errors import DecodeError
from ..protocol.constants import MAX_FRAME_SIZE, PROTOCOL_VERSION, ErrorCode, Opcode
from ..protocol.messages import decode_body, encode_message
from ..protocol.pure import Frame, FrameReader
from . import faults as _faults
from .scheduler import Consumer, StoredMessage

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
        self._wbuf: list[bytes] = []
        self._out: deque[tuple[int, StoredMessage, int]] = deque()
        self._flush_scheduled = False
        self._write_paused = False
        self._reading_paused = False

    # ------------------------------------------------------------ asyncio

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.broker.connections.add(self)
        self.apply_reading()

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
            self._refill()

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
        self._flush()
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
        try:
            self.broker.handlers.dispatch(self, frame)
        except Exception as exc:  # a broker bug must not kill the connection or the broker
            log.exception("fila.testing: request 0x%02x failed", frame.opcode)
            self.send_error(frame.request_id, ErrorCode.INTERNAL_ERROR, f"internal error: {exc}")

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
        """Queue one frame for writing (written at the end of the current batch)."""
        if self.closed:
            return
        if self.faults.write_armed:
            action = self.faults.on_write(opcode)
            if action == _faults.WRITE_CUT:
                self._wbuf.append(data[: max(1, len(data) // 2)])
                self._write_out()
                self.close()
                return
            self._wbuf.append(data)
            if action == _faults.WRITE_CLOSE_AFTER:
                self._write_out()
                self.close()
            return
        self._wbuf.append(data)

    def send_error(self, request_id: int, code: int, message: str, metadata: dict[str, str] | None = None) -> None:
        self.send(error_frame(request_id, code, message, metadata), Opcode.ERROR)

    def has_room(self) -> bool:
        return not self.closed and len(self._out) < self.broker.delivery_buffer

    def push_delivery(self, consumer: Consumer, message: StoredMessage) -> None:
        self._out.append((consumer.request_id, message, message.attempt_count))
        if not self._processing and not self._flush_scheduled and not self._held:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Write queued responses, then queued deliveries (unless the client is not reading)."""
        self._flush_scheduled = False
        if self.closed:
            return
        out = self._out
        if out and not self._write_paused:
            batch = self.broker.delivery_batch_size
            send = self.send
            if batch == 1:
                while out and not self.closed:
                    rid, m, attempts = out.popleft()
                    body = m.wire_prefix()
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
            else:
                while out and not self.closed:
                    rid = out[0][0]
                    parts: list[bytes] = []
                    size = 4
                    while out and out[0][0] == rid and len(parts) < 2 * batch:
                        _, m, attempts = out.popleft()
                        body = m.wire_prefix()
                        parts.append(body)
                        parts.append(_pack_tail(attempts, 0, 0))
                        size += len(body) + 20
                    head = _pack_header(6 + size, Opcode.DELIVERY, 0, rid) + _u32(len(parts) // 2)
                    send(head + b"".join(parts), Opcode.DELIVERY)
            self._write_out()
            self._refill()
            return
        self._write_out()

    def _refill(self) -> None:
        """Room was freed: let the subscription's queue deliver more."""
        sub = self.subscription
        if sub is not None and sub.active and not self.closed:
            sched = self.broker.scheduler
            q = sched.queues.get(sub.queue)
            if q is not None and q.drr.size:
                sched.deliver(q)

    def _write_out(self) -> None:
        wbuf = self._wbuf
        if wbuf and self.transport is not None:
            data = wbuf[0] if len(wbuf) == 1 else b"".join(wbuf)
            wbuf.clear()
            self.transport.write(data)

    # ------------------------------------------------------------- closing

    def unsubscribe(self) -> None:
        sub = self.subscription
        if sub is not None:
            self.subscription = None
            self.broker.scheduler.unregister(sub)

    def close(self) -> None:
        """Flush what was written so far, then close (no frame is sent)."""
        if self.closed:
            return
        self._write_out()
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
        self._wbuf.clear()
        self.unsubscribe()
        self.broker.connections.discard(self)

    def describe(self) -> dict[str, Any]:
        t = self.transport
        return {"peer": t.get_extra_info("peername") if t else None, "identity": self.identity}
