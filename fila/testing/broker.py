"""The in-process FIBP broker: lifecycle, listener and convenience admin calls."""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from collections.abc import Callable
from collections.abc import Iterable
from typing import Any
from typing import TypeVar

from ..protocol.constants import ErrorCode
from ._endpoint import Endpoint
from ._loop import LoopThread
from .auth import PERMISSION_KINDS
from .auth import AuthStore
from .connection import Connection
from .faults import Faults
from .handlers import Handlers
from .hooks import Hook
from .scheduler import Scheduler
from .tls import PemSource
from .tls import server_context

__all__ = ["Broker", "BrokerError"]

log = logging.getLogger("fila")

T = TypeVar("T")



class BrokerError(Exception):
    """A convenience call on :class:`Broker` failed (the message says why)."""


class Broker(LoopThread, Endpoint):
    """A Fila broker double speaking FIBP over real TCP (optionally TLS/mTLS).

    ``api_key`` turns auth on with that bootstrap (superadmin) key;
    ``tls_cert``/``tls_key`` serve TLS and ``tls_ca`` additionally requires
    client certificates signed by it (each a file path or PEM bytes);
    ``node_id`` ≠ 0 simulates a cluster node in HandshakeOk and stats.
    ``visibility_timeout_ms`` is the default lease time,
    ``lease_check_interval`` the scheduler's idle time in seconds (a delivery
    pass and a lease scan run after that long without a scheduler command),
    ``quantum`` the DRR quantum, ``delivery_batch_size`` the most messages per
    Delivery frame (the server always sends 1), ``ready_buffer`` and
    ``delivery_buffer`` the sizes of the per-subscription ready buffer and the
    per-connection outbound buffer deliveries pass through (64 and 256, as on
    the server; a lease is taken when a message enters the ready buffer).

    Timing as on the server, each switchable for tests that cannot afford it:
    ``nagle=True`` keeps Nagle on for accepted sockets (the server never sets
    TCP_NODELAY, so a frame written while an earlier one is unacknowledged
    can wait for the client's delayed ACK, ~40 ms on Linux); ``False`` sets
    TCP_NODELAY. ``idle_reclaim=True`` reclaims expired leases only once the
    scheduler has been idle ``lease_check_interval``, so constant request
    traffic postpones redelivery; ``False`` reclaims on a fixed tick.

    Start it with ``start()``/``stop()`` or ``with Broker() as b:`` (the
    event loop runs in a background thread), or ``async with Broker() as b:``
    / ``await b.start_async()`` (it runs in the current loop).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str | None = None,
        tls_cert: PemSource | None = None,
        tls_key: PemSource | None = None,
        tls_ca: PemSource | None = None,
        node_id: int = 0,
        visibility_timeout_ms: int = 30_000,
        lease_check_interval: float = 0.1,
        quantum: int = 1000,
        delivery_batch_size: int = 1,
        ready_buffer: int = 64,
        delivery_buffer: int = 256,
        nagle: bool = True,
        idle_reclaim: bool = True,
    ) -> None:
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
        if tls_ca is not None and tls_cert is None:
            raise ValueError("tls_ca (mutual TLS) needs tls_cert and tls_key too")
        if delivery_batch_size < 1:
            raise ValueError(f"delivery_batch_size must be at least 1, got {delivery_batch_size}")
        if ready_buffer < 1:
            raise ValueError(f"ready_buffer must be at least 1, got {ready_buffer}")
        if delivery_buffer < 1:
            raise ValueError(f"delivery_buffer must be at least 1, got {delivery_buffer}")
        if visibility_timeout_ms < 1:
            raise ValueError(f"visibility_timeout_ms must be at least 1, got {visibility_timeout_ms}")
        if lease_check_interval <= 0:
            raise ValueError(f"lease_check_interval must be positive, got {lease_check_interval}")
        if not 0 <= node_id <= 0xFFFF_FFFF_FFFF_FFFF:
            raise ValueError(f"node_id must fit in u64, got {node_id}")
        self._host = host
        self._port = port
        self.node_id = node_id
        self.lease_check_interval = lease_check_interval
        self.delivery_batch_size = delivery_batch_size
        self.ready_buffer = ready_buffer
        self.delivery_buffer = delivery_buffer
        self.nagle = bool(nagle)
        self.idle_reclaim = bool(idle_reclaim)
        self._ssl: ssl.SSLContext | None = (
            server_context(tls_cert, tls_key, tls_ca) if tls_cert is not None and tls_key is not None else None
        )
        self.scheduler = Scheduler(quantum=quantum, visibility_timeout_ms=visibility_timeout_ms)
        self.auth = AuthStore(api_key)
        self.faults = Faults(self)
        self.handlers = Handlers(self)
        self.connections: set[Connection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self._last_command = 0.0
        self._pass_scheduled = False

    # ------------------------------------------------------------ address

    @property
    def tls(self) -> bool:
        return self._ssl is not None

    @property
    def running(self) -> bool:
        return self._server is not None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<fila.testing.Broker {self.address} {state}{' tls' if self.tls else ''}>"

    # ---------------------------------------------------------- lifecycle

    async def start_async(self) -> Broker:
        """Listen on the current event loop."""
        if self._server is not None:
            raise RuntimeError("broker already started")
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._server = await loop.create_server(
            lambda: Connection(self),
            self._host,
            self._port,
            ssl=self._ssl,
            ssl_handshake_timeout=10.0 if self._ssl is not None else None,
        )
        self._port = self._server.sockets[0].getsockname()[1]
        self._last_command = loop.time()
        self._tick_handle = loop.call_later(self.lease_check_interval, self._tick)
        log.debug("fila.testing: broker listening on %s", self.address)
        return self

    async def stop_async(self) -> None:
        """Stop listening and abort every connection (no frame is sent)."""
        server = self._server
        if server is None:
            return
        self._server = None
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        server.close()
        self.abort_connections()
        await server.wait_closed()
        self._loop = None
        self._loop_thread = None

    # ------------------------------------------------------- loop helpers

    def command(self) -> None:
        """A request reached the scheduler (SERVER.md §7.3, §7.6).

        Like the server's scheduler loop, the broker runs a delivery pass over
        every queue once the commands at hand are handled (so an Ack, which
        starts no pass itself, is followed by one), and its idle clock restarts.
        """
        loop = self._loop
        if loop is None or not loop.is_running():
            return
        self._last_command = loop.time()
        if not self._pass_scheduled:
            self._pass_scheduled = True
            loop.call_soon(self._iteration)

    def _command(self, fn: Callable[[], T]) -> Callable[[], T]:
        """``fn`` as a scheduler command, as the admin request it stands for would be."""

        def run() -> T:
            try:
                return fn()
            finally:
                self.command()

        return run

    def _iteration(self) -> None:
        self._pass_scheduled = False
        try:
            self.scheduler.deliver_all()
        except Exception:  # a broker bug must not stop the broker
            log.exception("fila.testing: delivery pass failed")

    def _tick(self) -> None:
        """The scheduler's idle wake-up: every ``lease_check_interval`` without a command,
        scan for expired leases, then run a delivery pass (SERVER.md §7.3, §7.6)."""
        self._tick_handle = None
        loop = self._loop
        if self._server is None or loop is None:
            return
        interval = self.lease_check_interval
        quiet = loop.time() - self._last_command
        delay = interval
        if self.idle_reclaim and quiet < interval * 0.99:
            delay = interval - quiet  # a command came in: wait for the scheduler to go idle
        else:
            try:
                self.scheduler.reclaim()
                self.scheduler.deliver_all()
            except Exception:  # never let a bug stop the lease clock
                log.exception("fila.testing: scheduler tick failed")
        self._tick_handle = loop.call_later(delay, self._tick)

    def abort_connections(self) -> int:
        conns = list(self.connections)
        for conn in conns:
            conn.abort()
        return len(conns)

    def apply_reading(self) -> None:
        for conn in list(self.connections):
            conn.apply_reading()

    @property
    def connection_count(self) -> int:
        """Open client connections."""
        return len(self.connections)

    # ------------------------------------------- convenience admin calls

    def create_queue(
        self,
        name: str,
        *,
        on_enqueue: str | Hook | None = None,
        on_failure: str | Hook | None = None,
        visibility_timeout_ms: int = 0,
    ) -> None:
        """Create a queue (and ``<name>.dlq``) directly; hooks may be Lua source or Python callables.

        Raises :class:`BrokerError` if it exists or a script does not compile.
        """
        code, text = self.call(
            self._command(lambda: self.scheduler.create_queue(name, on_enqueue, on_failure, visibility_timeout_ms))
        )
        if code != ErrorCode.OK:
            raise BrokerError(f"cannot create queue {name!r}: {ErrorCode(code).name}: {text}")

    def delete_queue(self, name: str) -> bool:
        """Delete a queue and its DLQ; False if it did not exist."""
        return self.call(self._command(lambda: self.scheduler.delete_queue(name))) == ErrorCode.OK

    def set_config(self, key: str, value: str) -> None:
        """Set a runtime config value (``throttle.<key>`` = ``"rate,burst"`` makes a bucket)."""
        code = self.call(self._command(lambda: self.scheduler.set_config(key, value)))
        if code != ErrorCode.OK:
            raise BrokerError(f"invalid config value for {key!r}: {value!r}")

    def get_config(self, key: str) -> str:
        return self.call(lambda: self.scheduler.config.get(key, ""))

    def stats(self, queue: str) -> dict[str, Any] | None:
        """GetStats fields of ``queue`` as a dict, or None when it does not exist."""
        return self.call(lambda: self.scheduler.stats(queue))

    def queue_names(self) -> list[str]:
        return self.call(lambda: [q["name"] for q in self.scheduler.list_queues()])

    def create_api_key(
        self,
        name: str = "test",
        *,
        is_superadmin: bool = False,
        expires_at_ms: int = 0,
        permissions: Iterable[tuple[str, str]] = (),
    ) -> tuple[str, str]:
        """Store an API key with ``permissions`` (``(kind, pattern)`` pairs); returns ``(key_id, token)``."""
        perms = [(str(k), str(p)) for k, p in permissions]
        for kind, _ in perms:
            if kind not in PERMISSION_KINDS:
                raise ValueError(f"permission kind must be produce, consume or admin, got {kind!r}")

        def create() -> tuple[str, str]:
            key, token = self.auth.create(name, expires_at_ms, is_superadmin)
            key.permissions = perms
            return key.key_id, token

        return self.call(create)

    def set_acl(self, key_id: str, permissions: Iterable[tuple[str, str]]) -> None:
        """Replace a stored key's permissions."""
        perms = [(str(k), str(p)) for k, p in permissions]

        def apply() -> None:
            key = self.auth.keys.get(key_id)
            if key is None:
                raise BrokerError(f"no API key {key_id!r}")
            key.permissions = perms

        self.call(apply)

    def revoke_api_key(self, key_id: str) -> bool:
        return self.call(lambda: self.auth.revoke(key_id))
