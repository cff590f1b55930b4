"""The protocol core both clients drive: every decision, no I/O.

Nothing here opens a socket, starts a thread or touches an event loop; the
two drivers (:mod:`fila._sync_transport` for :class:`~fila.Client`,
:mod:`fila._aio_transport` for :class:`~fila.AsyncClient`) move bytes, run
timers and resolve futures, and ask this module what to do:

* :class:`Settings` — where and how to connect (address, TLS, API key, timeouts);
* :class:`ConnectionCore` — one connection's state: the handshake, request
  ids and their waiters, every control frame, routing of Deliveries;
* :class:`Keepalive` — given the time, whether to send a Ping or declare the
  connection dead;
* :class:`Subscription` — subscribe → follow a leader redirect → resubscribe
  with backoff → give up, taking time as input and returning decisions;
* :class:`Backoff` and :class:`Retry` — the one retry policy (ChannelFull and
  other refusals that applied nothing), honouring ``retry_after_ms``;
* :class:`DeliveryBuffer` — a consumer's bounded buffer and when to stop and
  resume reading (TCP backpressure).
"""

from __future__ import annotations

import itertools
import logging
import random
import ssl
import time
from collections import deque
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any
from typing import Generic
from typing import NamedTuple
from typing import Protocol
from typing import TypeVar

from .errors import ChannelFullError
from .errors import ClientClosedError
from .errors import ConnectError
from .errors import ConnectionLostError
from .errors import DecodeError
from .errors import FilaConnectionError
from .errors import FilaError
from .errors import InternalServerError
from .errors import NodeNotReadyError
from .errors import NotLeaderError
from .errors import ProtocolError
from .errors import QueueNotFoundError
from .errors import UnsupportedVersionError
from .errors import error_for_code
from .protocol.constants import MAX_FRAME_SIZE
from .protocol.constants import PROTOCOL_VERSION
from .protocol.constants import ErrorCode
from .protocol.constants import Opcode

__all__ = [
    "Backoff",
    "ConnectionCore",
    "DeliveryBuffer",
    "Keepalive",
    "Retry",
    "Settings",
    "Subscription",
    "Waiter",
    "parse_address",
]

log = logging.getLogger("fila")

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_REQUEST_TIMEOUT = 30.0
DEFAULT_KEEPALIVE_INTERVAL = 15.0
DEFAULT_KEEPALIVE_TIMEOUT = 10.0
DEFAULT_CONSUMER_BUFFER = 1024
DEFAULT_RECONNECT_INITIAL = 0.05
DEFAULT_RECONNECT_MAX = 5.0
DEFAULT_LEADER_CHECK_INTERVAL = 2.0
#: How long a new queue's Raft group may be missing on a node before Consume's QueueNotFound is final.
RAFT_GROUP_GRACE = 5.0
#: How long a subscription must last before losing it stops counting as a failed resubscribe.
STABLE_AFTER = 5.0
#: Leader redirects followed for one subscribe before giving up.
MAX_REDIRECTS = 5
#: Failed resubscribes in a row before each further failure is logged at WARNING.
WARN_AFTER_FAILURES = 5

#: The largest frame (or reassembled body) a client accepts by default. The server may push one
#: frame larger than its own 16 MiB limit (a Delivery of a message that arrived as
#: continuations), so this is larger; ``max_receive_size=`` changes it. Writes honour the
#: negotiated 16 MiB.
DEFAULT_MAX_RECEIVE_SIZE = 256 * 1024 * 1024

_MAX_ID = 0xFFFF_FFFF
_DELIVERY = int(Opcode.DELIVERY)
_ERROR = int(Opcode.ERROR)

# Opcodes that answer a request; anything else the server sends is ignored (logged at debug).
_ANSWERS = frozenset(
    {
        Opcode.HANDSHAKE_OK,
        Opcode.PONG,
        Opcode.ENQUEUE_RESULT,
        Opcode.CONSUME_OK,
        Opcode.ACK_RESULT,
        Opcode.NACK_RESULT,
        Opcode.ERROR,
        Opcode.CREATE_QUEUE_RESULT,
        Opcode.DELETE_QUEUE_RESULT,
        Opcode.GET_STATS_RESULT,
        Opcode.LIST_QUEUES_RESULT,
        Opcode.SET_CONFIG_RESULT,
        Opcode.GET_CONFIG_RESULT,
        Opcode.LIST_CONFIG_RESULT,
        Opcode.REDRIVE_RESULT,
        Opcode.CREATE_API_KEY_RESULT,
        Opcode.REVOKE_API_KEY_RESULT,
        Opcode.LIST_API_KEYS_RESULT,
        Opcode.SET_ACL_RESULT,
        Opcode.GET_ACL_RESULT,
    }
)


def _control(opcode: int, request_id: int) -> bytes:
    """A frame with an empty body."""
    return b"\x00\x00\x00\x06" + bytes((opcode, 0)) + request_id.to_bytes(4, "big")


DISCONNECT_FRAME = _control(Opcode.DISCONNECT, 0)


# ------------------------------------------------------------------ settings


def parse_address(addr: str) -> tuple[str, int]:
    """``host:port`` (split at the last colon) or ``[v6]:port`` → ``(host, port)``."""
    if not isinstance(addr, str):
        raise TypeError(f"the server address must be a str 'host:port', got {type(addr).__name__}")
    text = addr.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or not text[end + 1 :].startswith(":"):
            raise ValueError(f"invalid address (expected host:port or [v6]:port): {addr}")
        return text[1:end], _port(text[end + 2 :], addr)
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"invalid address (expected host:port): {addr}")
    return host, _port(port, addr)


def _port(text: str, addr: str) -> int:
    try:
        port = int(text, 10)
    except ValueError:
        raise ValueError(f"invalid address (the port {text!r} is not a number): {addr}") from None
    if not 0 < port < 65536:
        raise ValueError(f"invalid address (port {port} is out of range 1..65535): {addr}")
    return port


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_addresses(addr: str | Sequence[str]) -> list[str]:
    """The node addresses of ``addr``: ``"h1:5555"``, ``"h1:5555,h2:5555"`` or a list of them (normalised)."""
    if isinstance(addr, str):
        parts = [a for a in addr.split(",") if a.strip()] if "," in addr else [addr]
    elif isinstance(addr, Sequence) and addr and all(isinstance(a, str) for a in addr):
        parts = list(addr)
    else:
        raise TypeError(f"the server address must be 'host:port', 'h1:port,h2:port' or a list of them, got {addr!r}")
    return [format_address(*parse_address(a)) for a in parts]


def _positive_number(value: object) -> bool:
    """A number of seconds above 0 (a bool is not one)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and value > 0


class Settings:
    """Everything needed to open a connection; shared by a client and its consumers.

    The API key is kept here and nowhere else, and never shown by ``repr``.
    """

    __slots__ = (
        "_api_key",
        "cluster_batching",
        "connect_timeout",
        "consumer_buffer",
        "host",
        "keepalive_interval",
        "keepalive_timeout",
        "leader_check_interval",
        "max_receive_size",
        "nodes",
        "port",
        "reconnect_initial",
        "reconnect_max",
        "request_timeout",
        "resubscribe_attempts",
        "server_hostname",
        "ssl_context",
    )

    def __init__(
        self,
        addr: str | Sequence[str],
        *,
        api_key: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        keepalive_interval: float | None = DEFAULT_KEEPALIVE_INTERVAL,
        keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT,
        consumer_buffer: int = DEFAULT_CONSUMER_BUFFER,
        reconnect_initial: float = DEFAULT_RECONNECT_INITIAL,
        reconnect_max: float = DEFAULT_RECONNECT_MAX,
        cluster_batching: bool = False,
        leader_check_interval: float | None = DEFAULT_LEADER_CHECK_INTERVAL,
        resubscribe_attempts: int | None = None,
        max_receive_size: int = DEFAULT_MAX_RECEIVE_SIZE,
    ) -> None:
        if isinstance(max_receive_size, bool) or not isinstance(max_receive_size, int) or max_receive_size < 1024:
            raise ValueError(f"max_receive_size must be an int of at least 1024 bytes, got {max_receive_size!r}")
        if api_key is not None and not isinstance(api_key, str):
            raise TypeError(f"api_key must be a str or None, got {type(api_key).__name__}")
        for name, value in (
            ("connect_timeout", connect_timeout),
            ("request_timeout", request_timeout),
            ("keepalive_timeout", keepalive_timeout),
            ("reconnect_initial_delay", reconnect_initial),
            ("reconnect_max_delay", reconnect_max),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if keepalive_interval is not None and not _positive_number(keepalive_interval):
            raise ValueError(
                f"keepalive_interval must be a positive number of seconds or None, got {keepalive_interval!r}"
            )
        if isinstance(consumer_buffer, bool) or not (isinstance(consumer_buffer, int) and consumer_buffer > 0):
            raise ValueError(f"consumer_buffer must be a positive int, got {consumer_buffer!r}")
        if leader_check_interval is not None and not _positive_number(leader_check_interval):
            raise ValueError(f"leader_check_interval must be positive or None, got {leader_check_interval!r}")
        attempts = resubscribe_attempts
        if attempts is not None and (isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1):
            raise ValueError(f"resubscribe_attempts must be a positive int or None, got {resubscribe_attempts!r}")
        self.nodes = tuple(parse_addresses(addr))
        self.host, self.port = parse_address(self.nodes[0])
        self.cluster_batching = bool(cluster_batching)
        self.max_receive_size = max_receive_size
        self.leader_check_interval = None if leader_check_interval is None else float(leader_check_interval)
        self.resubscribe_attempts = resubscribe_attempts
        self._api_key = api_key
        self.ssl_context = ssl_context
        self.server_hostname = self.host if ssl_context is not None else None
        self.connect_timeout = float(connect_timeout)
        self.request_timeout = float(request_timeout)
        self.keepalive_interval = None if keepalive_interval is None else float(keepalive_interval)
        self.keepalive_timeout = float(keepalive_timeout)
        self.consumer_buffer = consumer_buffer
        self.reconnect_initial = float(reconnect_initial)
        self.reconnect_max = float(reconnect_max)

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)

    def handshake_frame(self) -> bytes:
        """The Handshake frame (request id 0), carrying the API key if any."""
        key = self._api_key
        body = PROTOCOL_VERSION.to_bytes(2, "big")
        if key is None:
            body += b"\x00"
        else:
            raw = key.encode("utf-8")
            if len(raw) > 0xFFFF:
                raise ValueError("api_key is longer than 65,535 bytes")
            body += b"\x01" + len(raw).to_bytes(2, "big") + raw
        return (6 + len(body)).to_bytes(4, "big") + bytes((Opcode.HANDSHAKE, 0)) + b"\x00\x00\x00\x00" + body

    def redirected(self, addr: str) -> Settings:
        """The same settings aimed at another node (a NotLeader ``leader_addr``)."""
        other = Settings.__new__(Settings)
        for name in Settings.__slots__:
            setattr(other, name, getattr(self, name))
        other.host, other.port = parse_address(addr)
        if other.ssl_context is not None:
            other.server_hostname = other.host
        return other

    def __repr__(self) -> str:
        return (
            f"Settings(address={self.address!r}, tls={self.ssl_context is not None}, "
            f"api_key={'<set>' if self._api_key is not None else None})"
        )


class Nodes:
    """What a client knows of its cluster: the addresses it was given and which node id answered where.

    Handshakes teach it node id → address; a consumer that must find a
    queue's leader asks it for the leader's address, and a failed address
    makes way for the next one listed.
    """

    __slots__ = ("by_id", "ids", "origin")

    def __init__(self, origin: Settings) -> None:
        self.origin = origin
        self.by_id: dict[int, str] = {}
        self.ids: dict[str, int] = {}

    @property
    def listed(self) -> tuple[str, ...]:
        return self.origin.nodes

    def learned(self, address: str, node_id: int) -> None:
        """``address`` answered a handshake as ``node_id`` (0: a single node)."""
        if node_id:
            self.by_id[node_id] = address
            self.ids[address] = node_id

    @property
    def clustered(self) -> bool:
        return bool(self.by_id) or len(self.listed) > 1

    def at(self, address: str) -> Settings:
        """Settings aimed at ``address`` (``host:port``)."""
        address = format_address(*parse_address(address))
        return self.origin if address == self.origin.address else self.origin.redirected(address)

    def after(self, address: str) -> Settings:
        """The next listed address after ``address`` (the first one if it is not listed)."""
        listed = self.listed
        try:
            i = listed.index(address)
        except ValueError:
            return self.at(listed[0])
        return self.at(listed[(i + 1) % len(listed)])

    def of(self, node_id: int) -> Settings | None:
        """Where node ``node_id`` answered, if known."""
        address = self.by_id.get(node_id)
        return None if address is None else self.at(address)

    def unknown(self) -> list[str]:
        """Listed addresses whose node id is not known yet."""
        return [a for a in self.listed if a not in self.ids]


# ---------------------------------------------------------------- connection


class Waiter(Protocol):
    """What :class:`ConnectionCore` completes: one per request id in flight.

    ``sent`` is set by the driver once the request's bytes were handed to the
    socket (so a failure afterwards may have been applied).
    """

    sent: bool

    def complete(self, frame: Any) -> None: ...

    def fail(self, exc: BaseException) -> None: ...


class NullWaiter:
    """A waiter whose answer nobody needs (keepalive Ping)."""

    __slots__ = ("sent",)

    def __init__(self) -> None:
        self.sent = False

    def complete(self, frame: Any) -> None:
        pass

    def fail(self, exc: BaseException) -> None:
        pass


class HandshakeInfo(NamedTuple):
    node_id: int
    max_frame_size: int


class ConnectionCore:
    """One FIBP connection's protocol state (sans I/O).

    :meth:`receive` takes bytes and completes waiters; Deliveries of the
    active subscription go to ``on_delivery`` as lists of messages. The
    ``*_frame`` methods return the bytes the driver must write.
    """

    __slots__ = (
        "_cluster_batching",
        "_ids",
        "address",
        "consume_id",
        "dead",
        "keepalive",
        "max_frame_size",
        "max_items",
        "node_id",
        "on_delivery",
        "on_end",
        "pending",
        "reader",
    )

    def __init__(
        self,
        settings: Settings,
        on_delivery: Callable[[list[Any]], None] | None = None,
        now: float | None = None,
    ) -> None:
        from .protocol import FrameReader  # the codec loads with the first connection, not with fila.errors

        # With a subscription, each Delivery is decoded in the loop that splits the frames.
        limit = settings.max_receive_size
        self.reader = FrameReader(
            min(limit, 0xFFFF_FFFF),
            max_reassembled_size=limit,
            decode_deliveries=on_delivery is not None,
        )
        self.address = settings.address
        self.pending: dict[int, Waiter] = {}
        self._ids = itertools.count(1)
        self.on_delivery = on_delivery
        self.consume_id = -1
        self.node_id = 0
        self.max_frame_size = MAX_FRAME_SIZE
        #: Most items per Enqueue/Ack/Nack frame (0: no limit). 1 on a cluster node unless
        #: ``cluster_batching``: today's servers replicate and forward only a batch's first item.
        self.max_items = 0
        self._cluster_batching = settings.cluster_batching
        self.dead: BaseException | None = None
        #: Called with the cause when the connection ends other than by being closed.
        self.on_end: Callable[[BaseException], None] | None = None
        self.keepalive = Keepalive(
            settings.keepalive_interval, settings.keepalive_timeout, time.monotonic() if now is None else now
        )

    # ------------------------------------------------------------ requests

    def next_id(self) -> int:
        """A fresh request id (1 .. 2**32-1; 0 is the handshake's)."""
        return next(self._ids) % _MAX_ID + 1

    def register(self, rid: int, waiter: Waiter) -> None:
        """Expect an answer for ``rid``; fails the waiter at once if the connection is dead."""
        self.pending[rid] = waiter
        dead = self.dead
        if dead is not None and self.pending.pop(rid, None) is not None:
            waiter.fail(connection_lost(dead, False))

    def forget(self, rid: int) -> None:
        """Stop waiting for ``rid`` (its caller gave up); a late answer is then ignored."""
        self.pending.pop(rid, None)

    # -------------------------------------------------------------- frames

    def ping_frame(self) -> bytes:
        """A keepalive Ping (its Pong completes nobody)."""
        rid = self.next_id()
        self.register(rid, NullWaiter())
        return _control(Opcode.PING, rid)

    def consume_frame(self, queue: str) -> tuple[int, bytes]:
        """``(request_id, frame)`` of a Consume; Deliveries with that id become this connection's."""
        from .protocol.messages import encode_message

        rid = self.next_id()
        self.consume_id = rid
        return rid, encode_message("ConsumeRequest", rid, {"queue": queue})

    def cancel_frame(self) -> bytes:
        """CancelConsume of this connection's subscription (the server cancels by the Consume's request id)."""
        rid = self.consume_id
        self.consume_id = -1
        return _control(Opcode.CANCEL_CONSUME, rid)

    # ------------------------------------------------------------- reading

    def receive(self, data: bytes) -> None:
        """Parse received bytes and dispatch every whole frame.

        Raises :class:`~fila.errors.DecodeError` on a malformed stream (the
        driver must then close the connection).
        """
        frames = self.reader.feed(data)
        pending = self.pending
        consume_id = self.consume_id
        # The messages of consecutive Deliveries go to on_delivery in one call (once per read,
        # not per frame: the server sends one message per Delivery).
        batch: list[Any] | None = None
        owned = False  # batch is a list of our own (never extend a frame's)
        for frame in frames:
            op = frame.opcode
            if op == _DELIVERY:
                messages = frame.messages
                if frame.request_id != consume_id or messages is None or self.on_delivery is None:
                    log.debug("ignoring a Delivery for request id %d (no such subscription)", frame.request_id)
                elif batch is None:
                    batch = messages
                elif owned:
                    batch.extend(messages)
                else:
                    batch = batch + messages
                    owned = True
                continue
            if batch is not None:
                self._deliver(batch)
                batch = None
                owned = False
            if op not in _ANSWERS:
                log.debug("ignoring a frame with unknown opcode 0x%02x", op)
                continue
            waiter = pending.pop(frame.request_id, None)
            if waiter is None:
                log.debug("ignoring opcode 0x%02x for request id %d (nobody waits for it)", op, frame.request_id)
                continue
            waiter.complete(frame)
        if batch is not None:
            self._deliver(batch)

    def _deliver(self, messages: list[Any]) -> None:
        cb = self.on_delivery
        if cb is not None and self.consume_id != -1:
            cb(messages)

    def accept_handshake(self, frame: Any) -> HandshakeInfo:
        """Read the answer to Handshake; raise its error if it is one."""
        from .protocol.messages import decode_body

        if frame.opcode == _ERROR:
            raise error_from_frame(frame.payload, "handshake with " + self.address)
        if frame.opcode != Opcode.HANDSHAKE_OK:
            raise ProtocolError(
                ErrorCode.INVALID_FRAME,
                f"{self.address} answered the handshake with opcode 0x{frame.opcode:02x}, not HandshakeOk (0x02)",
            )
        body = decode_body("HandshakeOk", frame.payload)
        if body["negotiated_version"] != PROTOCOL_VERSION:
            raise UnsupportedVersionError(
                f"{self.address} negotiated protocol version {body['negotiated_version']}; this client speaks 1"
            )
        self.node_id = body["node_id"]
        self.max_frame_size = body["max_frame_size"] or MAX_FRAME_SIZE
        self.max_items = 1 if self.node_id and not self._cluster_batching else 0
        return HandshakeInfo(self.node_id, self.max_frame_size)

    # -------------------------------------------------------------- ending

    def fail_all(self, cause: BaseException) -> None:
        """Mark the connection dead and fail every waiter (once each)."""
        if self.dead is None:
            self.dead = cause
        pending = self.pending
        while pending:
            try:
                _, waiter = pending.popitem()
            except KeyError:  # pragma: no cover - emptied concurrently
                break
            waiter.fail(connection_lost(cause, waiter.sent))

    def end(self, exc: BaseException, closing: bool) -> BaseException:
        """The connection ended with ``exc`` (or was closed): log it, fail every waiter; returns the cause."""
        if closing:
            cause: BaseException = ClientClosedError("the client was closed")
        elif isinstance(exc, FilaError):
            cause = exc
        else:
            cause = ConnectionLostError(f"connection to {self.address} lost: {exc}")
        if isinstance(cause, FilaConnectionError):
            log.debug("connection to %s ended: %s", self.address, cause)
        else:
            log.warning("connection to %s closed: %s", self.address, cause)
        self.fail_all(cause)
        on_end = self.on_end
        if on_end is not None and not closing:
            on_end(cause)
        return cause


def connection_lost(cause: BaseException, may_have_been_applied: bool) -> BaseException:
    """A fresh error for one waiter of a connection that died of ``cause``."""
    exc: BaseException
    if isinstance(cause, ProtocolError):
        exc = ProtocolError(cause.code, f"connection closed after a protocol error: {cause}")
    elif isinstance(cause, FilaConnectionError):
        exc = type(cause)(str(cause), may_have_been_applied=may_have_been_applied)
    else:
        exc = ConnectionLostError(f"connection lost: {cause}", may_have_been_applied=may_have_been_applied)
    exc.__cause__ = cause
    return exc


def error_from_frame(payload: bytes, context: str = "") -> FilaError:
    """The typed exception an Error frame (0xFE) carries."""
    from .protocol.messages import decode_body

    body = decode_body("ErrorFrame", payload)
    return error_for_code(body["error_code"], body["message"], body["metadata"], context=context)


def connect_failure(address: str, exc: BaseException, tls: bool, connect_timeout: float) -> ConnectError:
    """The :class:`ConnectError` for a failed connect / TLS / handshake, with what to check.

    A TLS mismatch shows up as a reset, a close or bytes that are not FIBP;
    the message says so rather than leaving the user to guess.
    """
    if isinstance(exc, TimeoutError):
        text = f"timed out connecting to {address} (connect_timeout={connect_timeout}s)"
        hint = "" if tls else "; is the server expecting TLS?"
    elif isinstance(exc, DecodeError):
        text = f"{address} did not answer the handshake with FIBP: {exc}"
        hint = "" if tls else " (is the server expecting TLS? enable TLS in the client)"
    else:
        text = f"cannot connect to {address}: {exc}"
        hint = ""
        if isinstance(exc, ssl.SSLError):
            hint = (
                " (TLS handshake failed: check the CA certificate, the server's hostname,"
                " and for mTLS the client certificate and key)"
            )
        elif isinstance(exc, (ConnectionResetError, BrokenPipeError)) or "closed the connection" in str(exc):
            if tls:
                hint = " (the server closed the connection during TLS: does it require a client certificate?)"
            else:
                hint = " (the server closed the connection: is it expecting TLS? enable TLS in the client)"
    err = ConnectError(text + hint)
    err.__cause__ = exc
    return err


# ----------------------------------------------------------------- keepalive


class Keepalive:
    """When to Ping and when silence means the connection is dead, given the time.

    The driver calls :meth:`received` when bytes arrive (or while it holds
    reading back on purpose) and :meth:`check` at the time it returns.
    """

    __slots__ = ("interval", "last_rx", "ping_at", "timeout")

    PING = "ping"
    DEAD = "dead"

    def __init__(self, interval: float | None, timeout: float, now: float) -> None:
        self.interval = interval
        self.timeout = timeout
        self.last_rx = now
        self.ping_at: float | None = None

    def received(self, now: float) -> None:
        self.last_rx = now
        self.ping_at = None

    def check(self, now: float) -> tuple[str | None, float | None]:
        """``(action, next_check)``: action is None, :attr:`PING` or :attr:`DEAD`; None means never."""
        interval = self.interval
        if interval is None:
            return None, None
        if self.ping_at is not None:
            if now - self.ping_at >= self.timeout:
                return self.DEAD, None
            return None, self.ping_at + self.timeout
        if now - self.last_rx >= interval:
            self.ping_at = now
            return self.PING, now + self.timeout
        return None, self.last_rx + interval

    def dead_error(self, address: str) -> ConnectionLostError:
        return ConnectionLostError(f"{address} did not answer a keepalive Ping within {self.timeout}s")


# ------------------------------------------------------------------- retries


class Backoff:
    """Exponential backoff with jitter: each delay is drawn from [d/2, d], d doubling up to ``maximum``."""

    __slots__ = ("_current", "initial", "maximum")

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = maximum
        self._current = initial

    @property
    def current(self) -> float:
        """The upper bound of the next delay."""
        return self._current

    def next(self) -> float:
        d = self._current
        self._current = min(d * 2, self.maximum)
        return random.uniform(d / 2, d)

    def reset(self) -> None:
        self._current = self.initial


def retryable(exc: BaseException) -> bool:
    """A whole-request refusal that applied nothing, so the request may simply be sent again.

    ChannelFull (backpressure), NodeNotReady, and a cluster node that could
    not reach the leader to forward the request (``forward error: connect``).
    """
    if isinstance(exc, (ChannelFullError, NodeNotReadyError)):
        return True
    return isinstance(exc, InternalServerError) and exc.message.startswith(_FORWARD_CONNECT)


def item_retryable(code: int, text: str) -> bool:
    """A per-item result that applied nothing: NotLeader (no leader yet, node not ready) or a failed forward connect."""
    return code == ErrorCode.NOT_LEADER or (code == ErrorCode.INTERNAL_ERROR and text.startswith(_FORWARD_CONNECT))


_FORWARD_CONNECT = "forward error: connect"


class Retry:
    """The one retry policy: a refused request is sent again with backoff until ``deadline``.

    ChannelFull means the server applied none of the request; the pause
    honours its ``retry_after_ms`` hint when there is one.
    """

    __slots__ = ("_backoff", "_redirected", "deadline")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self._backoff: Backoff | None = None
        self._redirected = False

    def after(self, exc: FilaError, now: float) -> tuple[str, Any]:
        """What to do after a request failed with ``exc``: raises it when final.

        ``("redirect", leader_addr)`` once, for NotLeader with a hint (resend
        there); ``("wait", seconds)`` for a refusal that applied nothing.
        """
        if isinstance(exc, NotLeaderError) and exc.leader_addr and not self._redirected:
            self._redirected = True
            return "redirect", exc.leader_addr
        delay = self.delay(exc, now)
        if delay is None:
            raise exc
        return "wait", delay

    def delay(self, exc: BaseException | None, now: float) -> float | None:
        """The pause before trying again after ``exc`` (None: items that :func:`item_retryable` accepted).

        None when it must be raised instead (final, or past the deadline).
        """
        if exc is not None and not retryable(exc):
            return None
        backoff = self._backoff = self._backoff or Backoff(0.01, 1.0)
        delay = backoff.next()
        hint = exc.retry_after_ms if isinstance(exc, ChannelFullError) else None
        if hint:
            delay = max(delay, hint / 1000.0)
        return None if now + delay >= self.deadline else delay


# -------------------------------------------------------------- subscription


class Decision(NamedTuple):
    """What a consumer's driver does next.

    ``"subscribe"`` to ``settings`` after ``delay`` seconds, or ``"fail"`` with ``error``.
    """

    action: str
    delay: float = 0.0
    settings: Settings | None = None
    error: BaseException | None = None


def _ignore(*args: Any) -> None:
    pass


class Subscription:
    """One consumer's subscription, as a state machine driven by its driver.

    The driver connects to :attr:`target` and sends Consume; then reports
    :meth:`subscribed`, :meth:`refused` (the Consume or the connection failed)
    or :meth:`lost` (a live subscription's connection ended), and does what
    the returned :class:`Decision` says:

    * NotLeader with ``leader_addr``: go there at once (at most
      :data:`MAX_REDIRECTS` in a row);
    * NotLeader without it, in a cluster: ``"locate"`` — the driver asks
      GetStats for the leader's node id and reports :meth:`located`;
    * a connection failure: the next listed node, after a backoff;
    * other refusals that may pass (NodeNotReady, ChannelFull, a new queue's
      missing Raft group for :data:`RAFT_GROUP_GRACE`): back off and retry;
    * anything else, or the first subscribe past ``deadline``, or
      ``resubscribe_attempts`` failures in a row: ``"fail"``.
    """

    __slots__ = (
        "_active_since",
        "_grace_until",
        "_redirects",
        "_seen",
        "backoff",
        "deadline",
        "emit",
        "failures",
        "nodes",
        "queue",
        "state",
        "target",
    )

    def __init__(self, nodes: Nodes, queue: str, now: float, emit: Callable[..., None] | None = None) -> None:
        self.emit = emit or _ignore
        self.nodes = nodes
        self.target = nodes.origin
        self.queue = queue
        settings = nodes.origin
        self.backoff = Backoff(settings.reconnect_initial, settings.reconnect_max)
        self.deadline: float | None = now + settings.request_timeout
        self.failures = 0
        self._redirects = 0
        self._grace_until: float | None = None
        self._active_since: float | None = None
        self._seen = -1
        self.state = "subscribing"

    def subscribed(self, node_id: int = 0, now: float | None = None) -> bool:
        """The Consume was accepted (by ``node_id``, at ``now``); False if the consumer was closed meanwhile.

        Failures and backoff are reset by a subscription that lasts
        :data:`STABLE_AFTER` seconds (see :meth:`lost`), not by the mere
        ConsumeOk: a server that accepts every Consume and then breaks the
        stream must still exhaust ``resubscribe_attempts``.
        """
        if self.state == "closed":
            return False
        self.nodes.learned(self.target.address, node_id)
        if self.state == "resubscribing":
            self.emit("resubscribed", self.target.address, self.queue)
        else:
            self.failures = 0
            self.backoff.reset()
        self.state = "active"
        self.deadline = None
        self._redirects = 0
        self._grace_until = None
        self._active_since = now
        log.debug("subscribed to %r at %s", self.queue, self.target.address)
        return True

    def refused(self, exc: BaseException, now: float) -> Decision:
        """The connect or the Consume failed with ``exc``."""
        if self.state == "closed":
            return Decision("fail", error=ClientClosedError("the consumer is closed"))
        if isinstance(exc, NotLeaderError) and exc.leader_addr:
            self._redirects += 1
            if self._redirects <= MAX_REDIRECTS:
                try:
                    self.target = self.nodes.at(exc.leader_addr)
                except (TypeError, ValueError):
                    log.warning("consume %r: unusable leader address %r", self.queue, exc.leader_addr)
                else:
                    self.emit("redirected", self.target.address, self.queue, exc)
                    return Decision("subscribe", 0.0, self.target)
        if isinstance(exc, FilaConnectionError):
            self.target = self.nodes.after(self.target.address)  # that node is unreachable: try the next listed one
            retry = True
        elif isinstance(exc, NotLeaderError):
            if self.nodes.clustered:
                return self._pause(exc, now, "locate")
            retry = True
        elif isinstance(exc, QueueNotFoundError) and "raft group" in exc.message:
            # A queue created a moment ago has no Raft group on this node yet.
            if self._grace_until is None:
                self._grace_until = now + RAFT_GROUP_GRACE
            retry = now < self._grace_until or self.deadline is None
        else:
            retry = isinstance(exc, (NodeNotReadyError, ChannelFullError)) or (
                isinstance(exc, ProtocolError) and self.deadline is None  # a broken stream while resubscribing
            )
        if not retry:
            return self._fail(exc)
        return self._pause(exc, now, "subscribe")

    def located(self, leader_node_id: int, now: float) -> Decision:
        """The driver's GetStats named ``leader_node_id`` (0: no leader yet) as the queue's leader."""
        target = self.nodes.of(leader_node_id) if leader_node_id else None
        if target is None and leader_node_id:
            unknown = self.nodes.unknown()  # learn more node ids by subscribing at nodes not met yet
            if unknown:
                target = self.nodes.at(unknown[0])
        if target is None:
            return self._pause(NodeNotReadyError(f"no known leader for {self.queue!r} yet"), now, "subscribe")
        self.target = target
        return Decision("subscribe", 0.0, target)

    def lost(self, cause: BaseException, now: float, leader_node_id: int = 0) -> Decision:
        """The live subscription ended (its connection died, or the leader moved: ``leader_node_id``)."""
        if self.state == "closed":
            return Decision("fail", error=ClientClosedError("the consumer is closed"))
        self.state = "resubscribing"
        self.emit("subscription_lost", self.target.address, self.queue, cause)
        since = self._active_since
        if since is None or now - since >= STABLE_AFTER:
            self.failures = 0  # it served a while: a fresh start
            self.backoff.reset()
        else:
            self.failures += 1  # lost right after subscribing: counts toward resubscribe_attempts
            limit = self.target.resubscribe_attempts
            if limit is not None and self.failures > limit:
                return self._fail(cause)
        if leader_node_id:
            target = self.nodes.of(leader_node_id)
            if target is None:
                # The new leader is a listed node not met yet: try those (not the node that dropped us).
                unknown = self.nodes.unknown()
                target = self.nodes.at(unknown[0]) if unknown else None
            if target is not None:
                self.target = target
                return Decision("subscribe", 0.0, target)
        return Decision("subscribe", self.backoff.next(), self.target)

    def check_due(self, node_id: int, delivered: int) -> bool:
        """Called every ``leader_check_interval``: should an idle subscription on ``node_id`` check its leader?

        ``delivered`` is the driver's running count of delivered messages; no
        change since the last call means idle for a whole interval. Only
        cluster nodes (``node_id`` != 0) lose leadership; a leader that does
        drops its consumers without a frame, so silence is all a client sees.
        """
        idle = delivered == self._seen
        self._seen = delivered
        return bool(node_id) and self.state == "active" and idle

    def leader_moved(self, node_id: int, leader_node_id: int, ready: int, answered_by: int = 0) -> bool:
        """GetStats names ``leader_node_id`` with ``ready`` messages waiting while we sit on ``node_id``:
        True when the subscription was dropped by a leadership change (resubscribe at the leader).

        ``answered_by`` is the node that answered the GetStats: a node other than
        the leader reports the queue empty (its local scheduler holds none of
        it), so its ``ready`` is no evidence and the named leader decides alone.
        """
        if not leader_node_id or leader_node_id == node_id:
            return False
        return ready > 0 or (answered_by != 0 and answered_by != leader_node_id)

    def _pause(self, exc: BaseException, now: float, action: str) -> Decision:
        self._redirects = 0
        self.failures += 1
        limit = self.target.resubscribe_attempts
        delay = self.backoff.next()
        if self.deadline is not None and now + delay >= self.deadline:
            return self._fail(exc)
        if self.deadline is None and limit is not None and self.failures > limit:
            return self._fail(exc)
        level = logging.WARNING if self.failures >= WARN_AFTER_FAILURES else logging.DEBUG
        log.log(level, "subscribe to %r failed (%d times): %s; retry in %.2fs", self.queue, self.failures, exc, delay)
        return Decision(action, delay, self.target)

    def _fail(self, exc: BaseException) -> Decision:
        if self.deadline is None:
            self.emit("consumer_failed", self.target.address, self.queue, exc)
        self.state = "failed"
        return Decision("fail", error=exc)

    def close(self) -> None:
        self.state = "closed"


# ------------------------------------------------------------------ buffering


_M = TypeVar("_M")


class DeliveryBuffer(Generic[_M]):
    """A consumer's received messages, bounded: reading stops when it is full and resumes at half.

    ``push`` returns True when the driver must stop reading (it then sets
    ``paused``); after taking from ``messages``, ``should_resume`` says
    whether reading must resume.
    """

    __slots__ = ("capacity", "low", "messages", "paused")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.low = capacity // 2
        self.messages: deque[_M] = deque()
        self.paused = False

    def push(self, messages: list[_M]) -> bool:
        self.messages.extend(messages)
        return not self.paused and len(self.messages) >= self.capacity

    def should_resume(self) -> bool:
        return self.paused and len(self.messages) <= self.low
