"""Fault injection: make the broker misbehave on purpose, so clients' error
paths can be tested. Reach it as ``broker.faults``; every method may be
called from any thread (or from the broker's own loop) and takes effect
before it returns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING
from typing import Any
from typing import TypeVar

from ..protocol.constants import ErrorCode
from ..protocol.constants import Opcode

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["SCHEDULER_OPCODES", "Faults"]

T = TypeVar("T")

SCHEDULER_OPCODES = frozenset(
    {
        Opcode.ENQUEUE,
        Opcode.ACK,
        Opcode.NACK,
        Opcode.CREATE_QUEUE,
        Opcode.DELETE_QUEUE,
        Opcode.GET_STATS,
        Opcode.LIST_QUEUES,
        Opcode.SET_CONFIG,
        Opcode.GET_CONFIG,
        Opcode.LIST_CONFIG,
        Opcode.REDRIVE,
    }
)
"""Requests that go through the server's scheduler channel and so can fail
with ChannelFull / InternalError on a real server (SERVER.md §5.2)."""

_DEFAULT_MESSAGES: dict[int, str] = {
    ErrorCode.CHANNEL_FULL: "scheduler overloaded",
    ErrorCode.INTERNAL_ERROR: "scheduler unavailable",
    ErrorCode.NOT_LEADER: "not the leader for this queue",
}

WRITE_OK = 0
WRITE_CUT = 1  # write half of this frame, then close
WRITE_CLOSE_AFTER = 2  # write this frame, then close


class Faults:
    """The fault knobs of one :class:`~fila.testing.Broker`."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._fail: list[list[Any]] = []  # [remaining, code, opcode | None, message, metadata | None]
        self.injected = 0  # failures sent by fail_next so far
        self._delay: list[Any] | None = None  # [seconds, opcode | None, remaining | None]
        self._held: dict[object, tuple[asyncio.TimerHandle, Callable[[], None]]] = {}
        self._close_after: int | None = None
        self._cut_opcode: int | bool | None = False  # False = not armed; None = any opcode
        self.reading_paused = False
        self.leader_redirect: tuple[str | None, str | None] | None = None  # (leader_addr, queue)
        self.request_armed = False
        self.write_armed = False

    def _call(self, fn: Callable[[], T]) -> T:
        return self._broker.call(fn)

    def _rearm(self) -> None:
        self.request_armed = bool(self._fail or self._delay)
        self.write_armed = self._close_after is not None or self._cut_opcode is not False

    # ----------------------------------------------------------- requests

    def fail_next(
        self,
        n: int = 1,
        code: int = ErrorCode.CHANNEL_FULL,
        opcode: int | None = None,
        message: str | None = None,
        *,
        metadata: dict[str, str] | None = None,
        retry_after_ms: int | None = None,
    ) -> None:
        """Fail the next ``n`` requests with an Error frame of ``code``.

        ``fail_next(n, code=ErrorCode.CHANNEL_FULL, opcode=None, message=None,
        *, metadata=None, retry_after_ms=None)``.
        Without ``opcode`` only the requests a real server can fail that way
        count (Enqueue, Ack, Nack and the admin queue/config/stats/redrive
        ops, :data:`SCHEDULER_OPCODES`); with ``opcode`` any request of that
        opcode does (Consume too, which gets an Error frame). The message
        defaults to the server's (``scheduler overloaded`` for ChannelFull,
        ``scheduler unavailable`` for InternalError); metadata is empty unless
        ``metadata`` is given. ``retry_after_ms`` adds the ``retry_after_ms``
        key a ChannelFull may carry (PROTOCOL.md; today's server sends none,
        SERVER.md §13.9), so a client's honouring of the hint can be tested.
        The request is not executed. Several calls queue up in order.
        :attr:`injected` counts the failures sent so far.
        """
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        text = message if message is not None else _DEFAULT_MESSAGES.get(code, "injected failure")
        meta = {str(k): str(v) for k, v in (metadata or {}).items()}
        if retry_after_ms is not None:
            if isinstance(retry_after_ms, bool) or not isinstance(retry_after_ms, int) or retry_after_ms < 0:
                raise ValueError(f"retry_after_ms must be an int >= 0, got {retry_after_ms!r}")
            meta["retry_after_ms"] = str(retry_after_ms)
        entry = [n, int(code), None if opcode is None else int(opcode), text, meta or None]

        def arm() -> None:
            self._fail.append(entry)
            self._rearm()

        self._call(arm)

    def delay(self, seconds: float, opcode: int | None = None, count: int | None = None) -> None:
        """Hold matching requests ``seconds`` before handling them.

        ``delay(seconds, opcode=None, count=None)``: applies to every request
        (or those of ``opcode``) until :meth:`clear_delay`, or to the next
        ``count`` of them. Responses stay in request order, so later requests
        on the same connection wait too; other connections are unaffected.
        """
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")

        def arm() -> None:
            self._delay = [float(seconds), None if opcode is None else int(opcode), count]
            self._rearm()

        self._call(arm)

    def clear_delay(self) -> None:
        """Stop delaying requests and release the ones held now (``clear_delay()``).

        A test can therefore hold a request with a long delay, check that
        nothing arrives, and release it when it chooses, with no race
        against the clock.
        """

        def disarm() -> None:
            self._delay = None
            self._rearm()
            self._release_held()

        self._call(disarm)

    @property
    def held(self) -> int:
        """How many requests a delay is holding right now."""
        return self._call(lambda: len(self._held))

    def hold(self, seconds: float, release: Callable[[], None]) -> None:
        """Called on the loop: run ``release`` after ``seconds`` or at :meth:`clear_delay`."""
        key = object()

        def fire() -> None:
            if self._held.pop(key, None) is not None:
                release()

        self._held[key] = (asyncio.get_running_loop().call_later(seconds, fire), release)

    def _release_held(self) -> None:
        held = list(self._held.values())
        self._held.clear()
        for handle, release in held:
            handle.cancel()
            release()

    def take_failure(self, opcode: int) -> tuple[int, str, dict[str, str] | None] | None:
        """Called per request on the loop: the injected ``(code, message, metadata)`` or None."""
        for entry in self._fail:
            op = entry[2]
            if (op is None and opcode in SCHEDULER_OPCODES) or op == opcode:
                entry[0] -= 1
                if entry[0] <= 0:
                    self._fail.remove(entry)
                    self._rearm()
                self.injected += 1
                return entry[1], entry[3], entry[4]
        return None

    def take_delay(self, opcode: int) -> float:
        """Called per request on the loop: seconds to hold it (0 for none)."""
        d = self._delay
        if d is None or opcode in (Opcode.HANDSHAKE,) or (d[1] is not None and d[1] != opcode):
            return 0.0
        if d[2] is not None:
            d[2] -= 1
            if d[2] <= 0:
                self._delay = None
                self._rearm()
        return float(d[0])

    # -------------------------------------------------------- connections

    def close_all(self) -> int:
        """Close every open connection abruptly now, with no frame; returns how many.

        ``close_all()``. Subscriptions on them are dropped and their leased
        messages stay leased until the visibility timeout.
        """
        return self._call(self._broker.abort_connections)

    def close_after_frames(self, n: int) -> None:
        """Close a connection abruptly right after the broker writes ``n`` more frames.

        ``close_after_frames(n)``: counts every frame the broker writes from
        now on (responses, deliveries, HandshakeOk, on any connection); the
        connection that writes the ``n``-th is closed once it is sent. One-shot.
        """
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")

        def arm() -> None:
            self._close_after = n
            self._rearm()

        self._call(arm)

    def close_mid_frame(self, opcode: int | None = None) -> None:
        """Write only the first half of the next frame (of ``opcode``), then close.

        ``close_mid_frame(opcode=None)``: the client sees a truncated frame and
        then EOF. One-shot.
        """

        def arm() -> None:
            self._cut_opcode = None if opcode is None else int(opcode)
            self._rearm()

        self._call(arm)

    def on_write(self, opcode: int) -> int:
        """Called on the loop before a frame is written: WRITE_OK / WRITE_CUT / WRITE_CLOSE_AFTER."""
        cut = self._cut_opcode
        if cut is not False and (cut is None or cut == opcode):
            self._cut_opcode = False
            self._rearm()
            return WRITE_CUT
        if self._close_after is not None:
            self._close_after -= 1
            if self._close_after <= 0:
                self._close_after = None
                self._rearm()
                return WRITE_CLOSE_AFTER
        return WRITE_OK

    def pause_reading(self) -> None:
        """Stop reading from every connection, open now or opened later (``pause_reading()``).

        Requests pile up in the socket buffers, so a client's writes
        eventually block: use it to exercise backpressure. Deliveries and
        already-read requests are still answered.
        """

        def arm() -> None:
            self.reading_paused = True
            self._broker.apply_reading()

        self._call(arm)

    def resume_reading(self) -> None:
        """Undo :meth:`pause_reading` (``resume_reading()``)."""

        def disarm() -> None:
            self.reading_paused = False
            self._broker.apply_reading()

        self._call(disarm)

    # ------------------------------------------------------------ cluster

    def not_leader(self, leader_addr: Any = None, queue: str | None = None) -> None:
        """Answer Consume with NotLeader (0x0C) ``not the leader for this queue``.

        ``not_leader(leader_addr=None, queue=None)``: ``leader_addr`` is a
        ``"host:port"`` string or another :class:`~fila.testing.Broker` (its
        address is used) and goes in the ``leader_addr`` metadata; without it
        the metadata is empty. ``queue`` limits it to Consume on that queue.
        Stays until :meth:`clear_not_leader`.
        """
        addr = leader_addr if leader_addr is None or isinstance(leader_addr, str) else leader_addr.address

        def arm() -> None:
            self.leader_redirect = (addr, queue)

        self._call(arm)

    def clear_not_leader(self) -> None:
        """Consume works again (``clear_not_leader()``)."""

        def disarm() -> None:
            self.leader_redirect = None

        self._call(disarm)

    def redirect_for(self, queue: str) -> tuple[bool, str | None]:
        """Called on Consume: ``(refuse, leader_addr)``."""
        r = self.leader_redirect
        if r is None or (r[1] is not None and r[1] != queue):
            return False, None
        return True, r[0]

    def drop_subscriptions(self, queue: str | None = None) -> int:
        """Silently drop every subscription (on ``queue``), as on leadership loss.

        ``drop_subscriptions(queue=None)``: no frame is sent; the client's
        stream just goes quiet and must Consume again. Returns how many
        were dropped. Messages already leased stay leased until they expire.
        """
        return self._call(lambda: self._broker.scheduler.drop_consumers(queue))

    # -------------------------------------------------------------- reset

    def reset(self) -> None:
        """Disarm every fault (``reset()``)."""

        def disarm() -> None:
            self._fail.clear()
            self._delay = None
            self._release_held()
            self._close_after = None
            self._cut_opcode = False
            self.leader_redirect = None
            self.reading_paused = False
            self._broker.apply_reading()
            self._rearm()

        self._call(disarm)
