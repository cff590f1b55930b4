"""The public surface both clients share: the constructor, and the rule that keeps them twins.

:class:`ClientBase` is the one constructor of :class:`~fila.Client` and
:class:`~fila.AsyncClient` (fila-python 0.3.0's parameters, then ours,
keyword-only). Each public method is written in :mod:`fila.client` with its
docstring; :func:`twin_of` gives the asyncio class the same docstrings and
refuses, at import, a method whose name or parameters differ from its sync
twin's. Every behaviour behind the methods lives in :mod:`fila._core` and
:mod:`fila._operations`.
"""

from __future__ import annotations

import inspect
import logging
import ssl
import time
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any
from typing import TypeVar

from ._accumulator import Mode
from ._accumulator import check_mode
from ._core import DEFAULT_CONNECT_TIMEOUT
from ._core import DEFAULT_CONSUMER_BUFFER
from ._core import DEFAULT_KEEPALIVE_INTERVAL
from ._core import DEFAULT_KEEPALIVE_TIMEOUT
from ._core import DEFAULT_LEADER_CHECK_INTERVAL
from ._core import DEFAULT_MAX_RECEIVE_SIZE
from ._core import DEFAULT_RECONNECT_INITIAL
from ._core import DEFAULT_RECONNECT_MAX
from ._core import DEFAULT_REQUEST_TIMEOUT
from ._core import Backoff
from ._core import Nodes
from ._core import Settings
from ._tls import PemInput
from ._tls import make_ssl_context
from .errors import ClientClosedError
from .types import AccumulatorMode
from .types import ClientEvent
from .types import Linger

__all__ = ["ClientBase", "ConsumerBase", "twin_of"]

log = logging.getLogger("fila")

_T = TypeVar("_T", bound=type)


class ClientBase:
    """A client for a Fila server at ``addr`` (``"host:port"`` or ``"[v6]:port"``).

    For a cluster, ``addr`` may list several nodes (``"h1:5555,h2:5555"`` or a
    list): requests use any live one, consumers find and follow each queue's
    leader, and a node that dies makes way for the next.

    TLS: ``tls=True`` verifies the server against the system trust store;
    ``ca_cert`` (PEM bytes, or a path) turns TLS on and replaces that store;
    ``client_cert`` plus ``client_key`` add a client certificate (mTLS) and
    need ``tls=True`` or ``ca_cert``. ``api_key`` is sent once, in the
    handshake, and never shown in a repr, a log line or an error.

    ``accumulator_mode`` sets how ``enqueue`` calls are batched:
    :attr:`AccumulatorMode.AUTO` (default; batches of at most
    ``max_accumulator_messages`` form while a frame is in flight),
    :class:`Linger` or :attr:`AccumulatorMode.DISABLED`.

    The rest are this package's additions: timeouts in seconds
    (``keepalive_interval=None`` turns keepalive Pings off);
    ``consumer_buffer``, how many deliveries a consumer holds before it stops
    reading (TCP backpressure); the reconnect backoff bounds; ``on_event``,
    called with a :class:`~fila.ClientEvent` for each connection lost,
    reconnect, resubscription, leader redirect and consumer giving up (from
    the client's reader thread, or the event loop for ``AsyncClient``; keep it
    short and non-blocking). Cluster options: ``cluster_batching`` (False:
    on a cluster node each Enqueue/Ack/Nack frame carries one item, because
    today's servers replicate and forward only a batch's first item; set it
    once the servers are fixed), ``leader_check_interval`` (how often an idle
    consumer checks that its node still leads the queue; None: never),
    ``resubscribe_attempts`` (failed resubscribes in a row before a consumer
    gives up and its iterator raises; None: never). ``max_receive_size``
    caps what a server can make the client hold for one frame or one
    reassembled body (256 MiB by default); a larger one closes the connection
    with a ProtocolError.
    """

    _conn: Any

    def __init__(
        self,
        addr: str | Sequence[str],
        *,
        tls: bool = False,
        ca_cert: PemInput | None = None,
        client_cert: PemInput | None = None,
        client_key: PemInput | None = None,
        api_key: str | None = None,
        accumulator_mode: AccumulatorMode | Linger = AccumulatorMode.AUTO,
        max_accumulator_messages: int = 1000,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        keepalive_interval: float | None = DEFAULT_KEEPALIVE_INTERVAL,
        keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT,
        consumer_buffer: int = DEFAULT_CONSUMER_BUFFER,
        reconnect_initial_delay: float = DEFAULT_RECONNECT_INITIAL,
        reconnect_max_delay: float = DEFAULT_RECONNECT_MAX,
        on_event: Callable[[ClientEvent], None] | None = None,
        cluster_batching: bool = False,
        leader_check_interval: float | None = DEFAULT_LEADER_CHECK_INTERVAL,
        resubscribe_attempts: int | None = None,
        max_receive_size: int = DEFAULT_MAX_RECEIVE_SIZE,
    ) -> None:
        if on_event is not None and not callable(on_event):
            raise TypeError(f"on_event must be callable, got {type(on_event).__name__}")
        self._on_event = on_event
        self._was_connected = False
        self._closed = True  # until fully constructed (close() and __del__ then do nothing)
        self._conn = None
        ssl_context: ssl.SSLContext | None = make_ssl_context(tls, ca_cert, client_cert, client_key)
        self._origin = Settings(
            addr,
            api_key=api_key,
            ssl_context=ssl_context,
            connect_timeout=connect_timeout,
            request_timeout=request_timeout,
            keepalive_interval=keepalive_interval,
            keepalive_timeout=keepalive_timeout,
            consumer_buffer=consumer_buffer,
            reconnect_initial=reconnect_initial_delay,
            reconnect_max=reconnect_max_delay,
            cluster_batching=cluster_batching,
            leader_check_interval=leader_check_interval,
            resubscribe_attempts=resubscribe_attempts,
            max_receive_size=max_receive_size,
        )
        self._nodes = Nodes(self._origin)
        self._settings = self._origin
        mode: Mode
        mode, self._batch_cap = check_mode(accumulator_mode, max_accumulator_messages)
        self._mode = mode
        self._backoff = Backoff(self._origin.reconnect_initial, self._origin.reconnect_max)
        self._next_attempt = 0.0
        self._failed_in_round = 0
        self._closed = False
        self._setup()

    def _setup(self) -> None:
        """The driver's own state (called at the end of ``__init__``)."""

    def __repr__(self) -> str:
        conn = self._conn
        state = "closed" if self._closed else ("connected" if conn is not None and not conn.dead else "idle")
        s = self._settings
        return f"<fila.{type(self).__name__} {s.address} tls={s.ssl_context is not None} {state}>"

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError("the client is closed; create a new one")

    def _wait_or_default(self, timeout: float | None) -> float:
        """``timeout``, or the request timeout when it is None."""
        return self._settings.request_timeout if timeout is None else timeout

    def _deadline(self, timeout: float | None) -> float:
        return time.monotonic() + self._wait_or_default(timeout)

    def _live_connection(self) -> Any:
        """The connection if it is alive, else None; raises once the client is closed."""
        self._check_open()
        conn = self._conn
        return conn if conn is not None and not conn.dead else None

    def _reconnect_pause(self) -> float:
        """How long to wait before the next connection attempt (backoff after a failure)."""
        return min(self._next_attempt - time.monotonic(), self._settings.connect_timeout)

    def _connect_failed(self) -> bool:
        """A connection attempt failed: aim at the next listed node.

        True while that one is still untried in this round (try it now);
        False once every listed node failed (raise; the next round waits for
        the backoff).
        """
        self._settings = self._nodes.after(self._settings.address)
        self._failed_in_round += 1
        if self._failed_in_round < len(self._origin.nodes):
            return True
        self._failed_in_round = 0
        self._next_attempt = time.monotonic() + self._backoff.next()
        return False

    def _connect_succeeded(self, conn: Any) -> None:
        self._failed_in_round = 0
        self._backoff.reset()
        self._next_attempt = 0.0
        self._nodes.learned(conn.settings.address, conn.core.node_id)
        self._emit("reconnected" if self._was_connected else "connected", conn.settings.address)
        self._was_connected = True
        conn.core.on_end = lambda cause: self._emit("disconnected", conn.settings.address, None, cause)

    def _emit(self, kind: str, address: str, queue: str | None = None, error: BaseException | None = None) -> None:
        """Log a recovery step at INFO and hand it to ``on_event`` (whose exceptions are logged, never raised)."""
        if kind != "connected":
            log.info(
                "%s: %s%s%s", kind, address, f" (queue {queue!r})" if queue is not None else "",
                f": {error}" if error is not None else "",
            )
        callback = self._on_event
        if callback is not None:
            try:
                callback(ClientEvent(kind, address, queue, error))
            except Exception:
                log.exception("the on_event callback raised (ignored)")

    def _follow_leader(self, leader_addr: str) -> None:
        """Send later requests to ``leader_addr`` (a NotLeader hint).

        The current connection is retired, not cut: requests still waiting on
        it get their answers, and it closes after the request timeout.
        """
        target = self._nodes.at(leader_addr)
        if target.address == self._settings.address:
            return
        self._settings = target
        conn, self._conn = self._conn, None
        if conn is not None:
            self._call_later(self._settings.request_timeout, conn.close)

    def _call_later(self, delay: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` after ``delay`` seconds on the driver's timers."""
        raise NotImplementedError


class ConsumerBase:
    """What :class:`~fila.Consumer` and :class:`~fila.AsyncConsumer` share (``queue``, state, ``repr``)."""

    _state: Any
    _buf: Any

    def __init__(self, queue: str) -> None:
        if type(queue) is not str:
            raise TypeError(f"queue must be str, got {type(queue).__name__}")
        self.queue = queue

    def __repr__(self) -> str:
        return f"<fila.{type(self).__name__} queue={self.queue!r} {'closed' if self.closed else 'open'}>"

    @property
    def buffered(self) -> int:
        """Messages received and not yet taken."""
        return len(self._buf)

    @property
    def closed(self) -> bool:
        """True once closed (by ``close()``, the client's close, or a final subscription error)."""
        return bool(self._state.closed)


def _parameters(fn: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    sig = inspect.signature(fn)
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()]


def twin_of(sync_cls: type, *, own: tuple[str, ...] = ()) -> Callable[[_T], _T]:
    """Class decorator: the asyncio class gets the docstrings of ``sync_cls``.

    Every public method (and property) of the two classes must have the same
    name and the same parameters (names, kinds, defaults); the decorated
    class's own methods carry no docstrings. ``own`` names methods only the
    asyncio class has (they keep their own docstrings).
    """

    def apply(cls: _T) -> _T:
        public = {n for n in vars(sync_cls) if not n.startswith("_")}
        mine = {n for n in vars(cls) if not n.startswith("_")} - set(own)
        if public != mine:
            raise TypeError(f"{cls.__name__} and {sync_cls.__name__} differ: {sorted(public ^ mine)}")
        if cls.__doc__ is None:
            cls.__doc__ = sync_cls.__doc__
        for name in sorted(public):
            theirs, ours = vars(sync_cls)[name], vars(cls)[name]
            if isinstance(theirs, property):
                if not isinstance(ours, property):
                    raise TypeError(f"{cls.__name__}.{name} must be a property like {sync_cls.__name__}.{name}")
                setattr(cls, name, property(ours.fget, ours.fset, ours.fdel, theirs.__doc__))
                continue
            if _parameters(theirs) != _parameters(ours):
                raise TypeError(f"{cls.__name__}.{name} does not take the parameters of {sync_cls.__name__}.{name}")
            ours.__doc__ = theirs.__doc__
        return cls

    return apply
