"""The connection logic both clients share, free of any I/O.

:class:`Core` is one FIBP connection's state: the frame reader, the request
id counter and the map request id → waiter. The sync client drives it from a
reader thread, the asyncio client from ``Protocol.data_received``; neither
puts protocol logic anywhere else. Also here: address parsing, the settings
object, reconnect backoff, and the errors a dead connection hands its waiters.
"""

from __future__ import annotations

import itertools
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from ._accumulator import AccumulatorMode, Linger, check_mode
from ._operations import Backoff, error_from_frame
from ._tls import PemInput, make_ssl_context
from .errors import (
    ClientClosedError,
    ConnectionLostError,
    FilaConnectionError,
    ProtocolError,
)
from .protocol import (
    DEFAULT_PORT,
    MAX_FRAME_SIZE,
    PROTOCOL_VERSION,
    FrameReader,
    Opcode,
    decode_body,
    decode_delivery,
    encode_message,
)

__all__ = [
    "Backoff",
    "ClientBase",
    "Core",
    "NullWaiter",
    "Settings",
    "Waiter",
    "parse_address",
]

log = logging.getLogger("fila")

_C = TypeVar("_C")

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_REQUEST_TIMEOUT = 30.0
DEFAULT_KEEPALIVE_INTERVAL = 15.0
DEFAULT_KEEPALIVE_TIMEOUT = 10.0
DEFAULT_CONSUMER_BUFFER = 1024
DEFAULT_RECONNECT_INITIAL = 0.05
DEFAULT_RECONNECT_MAX = 5.0

# The server may push one frame larger than its own 16 MiB limit (a Delivery
# of a message that arrived as continuations), so the client accepts any size
# a u32 can state when reading; it honours the negotiated limit when writing.
RECEIVE_LIMIT = 0xFFFF_FFFF

_MAX_ID = 0xFFFF_FFFF

# Opcodes the server sends; anything else is ignored (and logged at debug).
_SERVER_OPCODES = frozenset(
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


def parse_address(addr: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port``, a bare host or a bare IPv6 address → (host, port)."""
    if not isinstance(addr, str) or not addr.strip():
        raise ValueError(f"server address must be 'host', 'host:port' or '[v6]:port', got {addr!r}")
    text = addr.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"unclosed '[' in server address {addr!r}")
        host, rest = text[1:end], text[end + 1 :]
        if not rest:
            return host, DEFAULT_PORT
        if not rest.startswith(":"):
            raise ValueError(f"unexpected {rest!r} after ']' in server address {addr!r}")
        return host, _port(rest[1:], addr)
    if text.count(":") > 1:  # a bare IPv6 address
        return text, DEFAULT_PORT
    host, sep, port = text.partition(":")
    if not host:
        raise ValueError(f"server address {addr!r} has no host")
    return host, (_port(port, addr) if sep else DEFAULT_PORT)


def _port(text: str, addr: str) -> int:
    try:
        port = int(text, 10)
    except ValueError:
        raise ValueError(f"port {text!r} in server address {addr!r} is not a number") from None
    if not 0 < port < 65536:
        raise ValueError(f"port {port} in server address {addr!r} is out of range 1..65535")
    return port


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Settings:
    """Everything needed to open a connection; shared by a client and its consumers.

    The API key is kept here and nowhere else, and never shown by ``repr``.
    """

    __slots__ = (
        "_api_key",
        "connect_timeout",
        "consumer_buffer",
        "host",
        "keepalive_interval",
        "keepalive_timeout",
        "port",
        "reconnect_initial",
        "reconnect_max",
        "request_timeout",
        "server_hostname",
        "ssl_context",
    )

    def __init__(
        self,
        host: str,
        port: int,
        *,
        api_key: str | None,
        ssl_context: ssl.SSLContext | None,
        connect_timeout: float,
        request_timeout: float,
        keepalive_interval: float | None,
        keepalive_timeout: float,
        consumer_buffer: int,
        reconnect_initial: float,
        reconnect_max: float,
    ) -> None:
        if api_key is not None and not isinstance(api_key, str):
            raise TypeError("api_key must be a str")
        for name, value in (
            ("connect_timeout", connect_timeout),
            ("request_timeout", request_timeout),
            ("keepalive_timeout", keepalive_timeout),
            ("reconnect_initial", reconnect_initial),
            ("reconnect_max", reconnect_max),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if keepalive_interval is not None and not keepalive_interval > 0:
            raise ValueError(f"keepalive_interval must be positive or None, got {keepalive_interval!r}")
        if not (isinstance(consumer_buffer, int) and consumer_buffer > 0):
            raise ValueError(f"consumer_buffer must be a positive int, got {consumer_buffer!r}")
        self.host = host
        self.port = port
        self._api_key = api_key
        self.ssl_context = ssl_context
        self.server_hostname = host if ssl_context is not None else None
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

    @property
    def has_api_key(self) -> bool:
        return self._api_key is not None

    def handshake(self) -> bytes:
        """The Handshake frame (request id 0), carrying the API key if any."""
        return encode_message("Handshake", 0, {"protocol_version": PROTOCOL_VERSION, "api_key": self._api_key})

    def redirected(self, addr: str) -> Settings:
        """The same settings aimed at another node (a NotLeader ``leader_addr``)."""
        host, port = parse_address(addr)
        other = Settings.__new__(Settings)
        for name in Settings.__slots__:
            setattr(other, name, getattr(self, name))
        other.host = host
        other.port = port
        if other.ssl_context is not None:
            other.server_hostname = host
        return other

    def __repr__(self) -> str:
        return (
            f"Settings(address={self.address!r}, tls={self.ssl_context is not None}, "
            f"api_key={'<set>' if self._api_key is not None else None})"
        )


class Waiter(Protocol):
    """What ``Core`` completes: one per request id in flight."""

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


class ClientBase:
    """What :class:`~fila.Client` and :class:`~fila.AsyncClient` share: the constructor,
    the settings, reconnect pacing and ``repr``.

    ``addr`` is ``host:port``, ``[v6]:port`` or a bare host (port 5555). TLS:
    ``tls=True`` verifies the server against the system trust store;
    ``ca_cert`` (PEM bytes) replaces that store; ``client_cert`` plus
    ``client_key`` (PEM bytes) add a client certificate (mTLS). ``api_key``
    is sent in the handshake and never shown in a repr or a log line.
    ``accumulator`` sets how enqueues are batched: :attr:`AccumulatorMode.AUTO`,
    :class:`Linger` or :attr:`AccumulatorMode.DISABLED`. Timeouts and delays
    are in seconds; ``keepalive_interval=None`` turns keepalive pings off;
    ``consumer_buffer`` is how many deliveries a consumer holds before it
    stops reading (TCP backpressure).
    """

    _conn: Any
    _consumers: Any

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
        self._conn = None
        self._backoff = Backoff(self._settings.reconnect_initial, self._settings.reconnect_max)
        self._next_attempt = 0.0
        self._closed = False
        self._setup()

    def _setup(self) -> None:
        """The subclass's own state (called at the end of ``__init__``)."""

    def __repr__(self) -> str:
        conn = self._conn
        state = "closed" if self._closed else ("connected" if conn is not None and not conn.dead else "idle")
        settings = self._settings
        return f"<fila.{type(self).__name__} {settings.address} tls={settings.ssl_context is not None} {state}>"

    @property
    def closed(self) -> bool:
        return self._closed

    def _add_consumer(self, cls: Callable[[Any, str, int], _C], queue: str, buffer_size: int | None) -> _C:
        """A new consumer of ``cls`` for this client (refused once closed), tracked for :meth:`close`."""
        if self._closed:
            raise ClientClosedError("the client is closed")
        consumer = cls(self, queue, buffer_size or self._settings.consumer_buffer)
        self._consumers.add(consumer)
        return consumer

    def _wait_or_default(self, timeout: float | None) -> float:
        """``timeout``, or the request timeout when it is None."""
        return self._settings.request_timeout if timeout is None else timeout

    def _live_connection(self) -> Any:
        """The connection if it is alive, else None; raises once the client is closed."""
        if self._closed:
            raise ClientClosedError("the client is closed")
        conn = self._conn
        return conn if conn is not None and not conn.dead else None

    def _reconnect_pause(self) -> float:
        """How long to wait before the next connection attempt (backoff after a failure)."""
        return min(self._next_attempt - time.monotonic(), self._settings.connect_timeout)

    def _connect_failed(self) -> None:
        self._next_attempt = time.monotonic() + self._backoff.next()

    def _connect_succeeded(self) -> None:
        self._backoff.reset()
        self._next_attempt = 0.0


def _new_reader(want_messages: bool) -> tuple[Any, bool]:
    """A FrameReader; when the codec twin can decode Deliveries itself, ask it to."""
    if want_messages:
        try:
            return FrameReader(RECEIVE_LIMIT, decode_deliveries=True), True
        except TypeError:
            pass
    return FrameReader(RECEIVE_LIMIT), False


class Core:
    """One connection's protocol state (sans I/O).

    ``feed`` takes received bytes and completes waiters; Deliveries for the
    active subscription go to ``on_delivery`` as lists of messages. The owner
    writes the bytes the ``*_frame`` helpers return.
    """

    __slots__ = (
        "_decoded",
        "_ids",
        "consume_id",
        "dead",
        "max_frame_size",
        "node_id",
        "on_delivery",
        "pending",
        "reader",
    )

    def __init__(self, on_delivery: Callable[[list[Any]], None] | None = None) -> None:
        self.reader, self._decoded = _new_reader(on_delivery is not None)
        self.pending: dict[int, Waiter] = {}
        self._ids = itertools.count(1)
        self.on_delivery = on_delivery
        self.consume_id = -1
        self.node_id = 0
        self.max_frame_size = MAX_FRAME_SIZE
        self.dead: BaseException | None = None

    def next_id(self) -> int:
        """A fresh request id (1 .. 2**32-1; 0 is the handshake's)."""
        return next(self._ids) % _MAX_ID + 1

    def register(self, rid: int, waiter: Waiter) -> None:
        """Expect an answer for ``rid``; fails the waiter at once if the connection is dead."""
        self.pending[rid] = waiter
        dead = self.dead
        if dead is not None and self.pending.pop(rid, None) is not None:
            waiter.fail(connection_lost(dead, False))

    def feed(self, data: bytes) -> None:
        """Parse received bytes and dispatch every whole frame.

        Raises :class:`~fila.errors.DecodeError` on a malformed stream (the
        owner must then close the connection).
        """
        frames = self.reader.feed(data)
        pending = self.pending
        for frame in frames:
            op = frame.opcode
            if op == 0x14:  # Delivery
                cb = self.on_delivery
                if cb is not None and frame.request_id == self.consume_id:
                    cb(frame.messages if self._decoded else decode_delivery(frame.payload))
                else:
                    log.debug("ignoring a Delivery for request id %d (no such subscription)", frame.request_id)
                continue
            if op not in _SERVER_OPCODES:
                log.debug("ignoring a frame with unknown opcode 0x%02x", op)
                continue
            waiter = pending.pop(frame.request_id, None)
            if waiter is None:
                log.debug("ignoring opcode 0x%02x for unknown request id %d", op, frame.request_id)
                continue
            waiter.complete(frame)

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

    def accept_handshake(self, frame: Any) -> None:
        """Read the answer to Handshake; raise its error if it is one."""
        if frame.opcode == Opcode.ERROR:
            raise error_from_frame(frame.payload)
        if frame.opcode != Opcode.HANDSHAKE_OK:
            raise ProtocolError(f"expected HandshakeOk, got opcode 0x{frame.opcode:02x}")
        body = decode_body("HandshakeOk", frame.payload)
        if body["negotiated_version"] != PROTOCOL_VERSION:
            raise ProtocolError(f"server negotiated protocol version {body['negotiated_version']}, expected 1")
        self.node_id = body["node_id"]
        self.max_frame_size = body["max_frame_size"] or MAX_FRAME_SIZE


def connection_lost(cause: BaseException, may_have_been_applied: bool) -> BaseException:
    """A fresh error for one waiter of a connection that died of ``cause``."""
    exc: BaseException
    if isinstance(cause, ProtocolError):
        exc = ProtocolError(f"connection closed after a protocol error: {cause}")
    elif isinstance(cause, FilaConnectionError):
        exc = type(cause)(str(cause), may_have_been_applied=may_have_been_applied)
    else:
        exc = ConnectionLostError(f"connection lost: {cause}", may_have_been_applied=may_have_been_applied)
    exc.__cause__ = cause
    return exc
