"""Real-server mode: the test fixtures hand out a real Fila server instead of the double.

Two environment variables switch it on (without them nothing changes):

``FILA_SERVER=host:port``
    An already running server, shared by every test. It must run without
    auth. Each test gets it only while it holds no queues, config entries or
    API keys, and whatever the test created is deleted afterwards, so run it
    empty and dedicated to the test run (no other users, no parallel
    workers). Otherwise the test is skipped ("needs a fresh broker").
    Brokers that need a configuration (``api_key``, TLS, scheduler knobs) or
    a second broker in the same test are skipped, unless
    ``FILA_SERVER_BIN`` is set too: then those are started from it.

``FILA_SERVER_BIN=/path/to/fila-server``
    The server binary. Every broker is a fresh server process started in a
    temporary directory (its working directory, holding the ``fila.toml``
    it reads and its data directory, ``FILA_DATA_DIR``) listening on a free
    port; ``api_key`` becomes the bootstrap key (``[auth] bootstrap_apikey``
    and ``FILA_BOOTSTRAP_APIKEY``), ``tls_cert``/``tls_key``/``tls_ca`` the
    ``[tls]`` section, ``quantum`` and ``lease_check_interval`` the
    ``[scheduler]`` section. It is stopped with SIGTERM after the test.

:class:`ExternalServer` stands in for :class:`~fila.testing.Broker`: it has
``address``, ``host``, ``port``, ``api_key``, ``tls``, ``start()`` /
``stop()``, the context-manager protocols and the convenience admin calls
(through a :class:`fila.Client`). Everything else a Broker has (``faults``,
``scheduler``, ``connections``, ``nagle`` …) skips the test that touches it,
with the reason ("needs fila.testing fault injection (FILA_SERVER is set)").
So do Broker options the real server has no setting for (``node_id``,
``visibility_timeout_ms``, ``nagle=False`` …).

:class:`BrokerFactory` is what the fixtures use: a Broker, or an
ExternalServer when a variable is set.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import warnings
import weakref
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING
from typing import Any
from typing import NoReturn

from .._core import parse_address
from ..protocol.constants import PROTOCOL_VERSION
from ..protocol.constants import ErrorCode
from ..protocol.constants import Opcode
from ._endpoint import Endpoint
from .broker import Broker
from .broker import BrokerError
from .tls import PemSource

if TYPE_CHECKING:
    import fila

__all__ = [
    "ENV_SERVER",
    "ENV_SERVER_BIN",
    "BrokerFactory",
    "ExternalServer",
    "ExternalServerError",
    "ExternalServerWarning",
    "external_mode",
    "needs",
]

ENV_SERVER = "FILA_SERVER"
ENV_SERVER_BIN = "FILA_SERVER_BIN"

_STARTUP_TIMEOUT = 30.0
_STOP_TIMEOUT = 10.0
_ADMIN_TIMEOUT = 10.0


class ExternalServerWarning(UserWarning):
    """Something about the shared server that may affect later tests (the message says what)."""


class ExternalServerError(OSError):
    """The external server could not be reached, started or used (the message says why).

    An :class:`OSError`, like a :class:`~fila.testing.Broker` that cannot listen.
    """


# ----------------------------------------------------------------- variables


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def external_mode() -> str | None:
    """The variable that makes plain brokers external (``FILA_SERVER``, else ``FILA_SERVER_BIN``), or None."""
    if _env(ENV_SERVER):
        return ENV_SERVER
    if _env(ENV_SERVER_BIN):
        return ENV_SERVER_BIN
    return None


def needs(what: str, variable: str | None = None) -> NoReturn:
    """Skip the current test: it ``needs <what>``, which the external server cannot give."""
    variable = variable or external_mode()
    reason = f"needs {what} ({f'{variable} is set' if variable and _env(variable) else 'an external server'})"
    if "pytest" in sys.modules:
        import pytest

        try:  # reported at the test's location rather than this line (pytest >= 7)
            exc = pytest.skip.Exception(reason, _use_item_location=True)
        except TypeError:  # pragma: no cover - older pytest
            pytest.skip(reason)
        raise exc
    import unittest

    raise unittest.SkipTest(reason)


# What a test that touches a Broker-only attribute needs (anything else on Broker: "fila.testing Broker.<name>").
_INTERNALS = {
    "faults": "fila.testing fault injection",
    "scheduler": "fila.testing Broker internals (its scheduler)",
    "handlers": "fila.testing Broker internals (its request handlers)",
    "auth": "fila.testing Broker internals (its key store)",
    "connections": "fila.testing Broker internals (its connection list)",
    "connection_count": "fila.testing Broker internals (its connection count)",
    "abort_connections": "fila.testing Broker internals (its connection list)",
    "apply_reading": "fila.testing Broker internals (its connection list)",
    "call": "fila.testing Broker internals (its event loop)",
    "command": "fila.testing Broker internals (its event loop)",
    "nagle": "fila.testing timing switches (Broker.nagle)",
    "idle_reclaim": "fila.testing timing switches (Broker.idle_reclaim)",
}
_BROKER_INSTANCE_ATTRS = frozenset(
    {"lease_check_interval", "delivery_batch_size", "ready_buffer", "delivery_buffer", *_INTERNALS}
)


def _broker_defaults() -> dict[str, Any]:
    params = inspect.signature(Broker.__init__).parameters
    return {n: p.default for n, p in params.items() if n != "self" and p.default is not inspect.Parameter.empty}


# ------------------------------------------------------------------ the server


class ExternalServer(Endpoint):
    """A real Fila server in place of a :class:`~fila.testing.Broker` (see the module docstring).

    ``ExternalServer("host:port")`` is an already running server: ``start()``
    checks that it answers a handshake, ``stop()`` leaves it running.
    ``ExternalServer(binary="/path/to/fila-server", api_key=…, tls_cert=…)``
    starts a fresh server in a temporary directory on ``start()`` (on a free
    port unless ``port`` is given) and stops it with SIGTERM on ``stop()``.
    """

    node_id = 0  # a single-node server reports node_id 0 in HandshakeOk

    def __init__(
        self,
        address: str | None = None,
        *,
        binary: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        tls_cert: PemSource | None = None,
        tls_key: PemSource | None = None,
        tls_ca: PemSource | None = None,
        quantum: int | None = None,
        lease_check_interval: float | None = None,
        startup_timeout: float = _STARTUP_TIMEOUT,
    ) -> None:
        if (address is None) == (binary is None):
            raise ValueError("give either the address of a running server or the server binary to start")
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
        if tls_ca is not None and tls_cert is None:
            raise ValueError("tls_ca (mutual TLS) needs tls_cert and tls_key too")
        self.variable = ENV_SERVER if binary is None else ENV_SERVER_BIN
        self.binary = None if binary is None else os.fspath(binary)
        if address is not None:
            host, port = parse_address(address)
        self._host = host
        self._port = port
        self.api_key = api_key
        self._tls_files = (tls_cert, tls_key, tls_ca)
        self.quantum = quantum
        self._lease_check_interval = lease_check_interval
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: str | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._started = False

    # ------------------------------------------------------------ address

    @property
    def tls(self) -> bool:
        return self._tls_files[0] is not None

    @property
    def running(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return self._started

    @property
    def shared(self) -> bool:
        """True for an already running server (``FILA_SERVER``), False for one this object starts."""
        return self.binary is None

    def __repr__(self) -> str:
        kind = "shared" if self.shared else "started"
        state = "running" if self.running else "stopped"
        return f"<fila.testing.ExternalServer {kind} {self.address} {state}{' tls' if self.tls else ''}>"

    def __getattr__(self, name: str) -> Any:
        # Only reached for names this class lacks: Broker-only ones skip the test, with the reason.
        if not name.startswith("__") and (name in _BROKER_INSTANCE_ATTRS or hasattr(Broker, name)):
            needs(_INTERNALS.get(name, f"fila.testing Broker.{name}"), self.variable)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # ---------------------------------------------------------- lifecycle

    def start(self) -> ExternalServer:
        """Start the binary (or check that the shared server answers) and wait until it accepts a handshake."""
        if self._started:
            raise RuntimeError("server already started")
        if self.binary is None:
            if self.tls:
                raise ExternalServerError("a shared server (FILA_SERVER) is used as it is: TLS cannot be configured")
            self._wait_ready(None, time.monotonic() + min(self.startup_timeout, 10.0))
        else:
            self._spawn()
        self._started = True
        return self

    def stop(self) -> None:
        """Stop a started binary with SIGTERM (idempotent); a shared server is left running.

        Raises :class:`ExternalServerError` if the binary had exited on its own before (a crash).
        """
        self._started = False
        proc, self._proc = self._proc, None
        if proc is None:
            return
        crashed = proc.poll()
        try:
            if crashed is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(_STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            else:
                raise ExternalServerError(
                    f"{self.binary} exited on its own (status {crashed}) before it was stopped; "
                    f"its output ends with:\n{self._log_tail()}"
                )
        finally:
            self._cleanup_dir()

    def _cleanup_dir(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        directory, self._dir = self._dir, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    def __enter__(self) -> ExternalServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def start_async(self) -> ExternalServer:
        return await asyncio.to_thread(self.start)

    async def stop_async(self) -> None:
        await asyncio.to_thread(self.stop)

    async def __aenter__(self) -> ExternalServer:
        return await self.start_async()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop_async()

    def log_text(self) -> str:
        """What the started binary has written to stdout/stderr so far ("" for a shared server)."""
        if self._dir is None:
            return ""
        try:
            with open(os.path.join(self._dir, "server.log"), encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def _log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:]) or "(no output)"

    # ------------------------------------------------------ starting binary

    def _config(self, directory: str) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        out = ["[server]", f"listen_addr = {_toml(f'{host}:{self._port}')}"]
        if self.api_key is not None:
            out += ["", "[auth]", f"bootstrap_apikey = {_toml(self.api_key)}"]
        cert, key, ca = self._tls_files
        if cert is not None and key is not None:
            out += [
                "",
                "[tls]",
                f"cert_file = {_toml(_pem_file(cert, directory, 'server-cert.pem'))}",
                f"key_file = {_toml(_pem_file(key, directory, 'server-key.pem'))}",
            ]
            if ca is not None:
                out.append(f"ca_file = {_toml(_pem_file(ca, directory, 'client-ca.pem'))}")
        scheduler = []
        if self.quantum is not None:
            scheduler.append(f"quantum = {int(self.quantum)}")
        if self._lease_check_interval is not None:
            scheduler.append(f"idle_timeout_ms = {max(1, round(self._lease_check_interval * 1000))}")
        if scheduler:
            out += ["", "[scheduler]", *scheduler]
        return "\n".join(out) + "\n"

    def _spawn(self) -> None:
        assert self.binary is not None
        # the server runs in its own directory: resolve a relative path (or a bare name on PATH) first
        binary = os.path.abspath(self.binary) if os.sep in self.binary else shutil.which(self.binary)
        if binary is None or not os.path.isfile(binary) or not os.access(binary, os.X_OK):
            raise ExternalServerError(f"{ENV_SERVER_BIN}={self.binary}: not an executable file")
        fixed_port = self._port
        for attempt in range(5):
            directory = tempfile.mkdtemp(prefix="fila-server-")
            self._dir = directory
            self._finalizer = weakref.finalize(self, shutil.rmtree, directory, True)
            self._port = fixed_port or _free_port(self._host)
            with open(os.path.join(directory, "fila.toml"), "w", encoding="utf-8") as f:
                f.write(self._config(directory))
            env = {k: v for k, v in os.environ.items() if k not in ("FILA_BOOTSTRAP_APIKEY", "FILA_DATA_DIR")}
            env["FILA_DATA_DIR"] = os.path.join(directory, "data")
            env.setdefault("NO_COLOR", "1")  # a plain-text log for failure messages
            if self.api_key is not None:
                env["FILA_BOOTSTRAP_APIKEY"] = self.api_key
            with open(os.path.join(directory, "server.log"), "wb") as log:
                proc = subprocess.Popen(
                    [binary],
                    cwd=directory,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self._proc = proc
            self._finalizer.detach()
            self._finalizer = weakref.finalize(self, _kill_and_remove, proc, directory)
            try:
                self._wait_ready(proc, time.monotonic() + self.startup_timeout)
                return
            except ExternalServerError:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
                self._proc = None
                in_use = "addrinuse" in self.log_text().lower().replace(" ", "").replace("_", "")
                in_use = in_use or "address already in use" in self.log_text().lower()
                self._cleanup_dir()
                if fixed_port or not in_use or attempt == 4:
                    raise
            except BaseException:
                proc.kill()
                proc.wait()
                self._proc = None
                self._cleanup_dir()
                raise

    # ------------------------------------------------------------ readiness

    def _wait_ready(self, proc: subprocess.Popen[bytes] | None, deadline: float) -> None:
        last: BaseException | None = None
        while True:
            if proc is not None and proc.poll() is not None:
                raise ExternalServerError(
                    f"{self.binary} exited (status {proc.returncode}) before accepting connections on "
                    f"{self.address}; its output ends with:\n{self._log_tail()}"
                )
            try:
                self._probe()
                return
            except _Refused as exc:
                raise ExternalServerError(f"{self.variable}: the server at {self.address} {exc}") from None
            except OSError as exc:
                last = exc
            if time.monotonic() >= deadline:
                what = self.binary or f"{ENV_SERVER}={self.address}"
                raise ExternalServerError(f"{what}: no FIBP handshake on {self.address} in time (last: {last})")
            time.sleep(0.02)

    def _probe(self) -> None:
        """One connection: a FIBP handshake answered by HandshakeOk (over TLS when configured)."""
        sock: socket.socket = socket.create_connection((self._host, self._port), timeout=2.0)
        try:
            if self.tls:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                if self._tls_files[2] is not None:
                    # mutual TLS: we hold no client certificate; a TLS handshake (or a TLS refusal) proves it serves
                    try:
                        sock = ctx.wrap_socket(sock, server_hostname="localhost")
                    except ssl.SSLError as exc:
                        if isinstance(exc, ssl.SSLEOFError):
                            raise
                    return
                sock = ctx.wrap_socket(sock, server_hostname="localhost")
            key = None if self.api_key is None else self.api_key.encode()
            payload = struct.pack(">H", PROTOCOL_VERSION) + (
                b"\x00" if key is None else b"\x01" + struct.pack(">H", len(key)) + key
            )
            sock.sendall(struct.pack(">IBBI", 6 + len(payload), Opcode.HANDSHAKE, 0, 0) + payload)
            header = _recv_exact(sock, 4)
            body = _recv_exact(sock, struct.unpack(">I", header)[0])
            if body[0] == Opcode.HANDSHAKE_OK:
                try:
                    sock.sendall(struct.pack(">IBBI", 6, Opcode.DISCONNECT, 0, 0))
                except OSError:
                    pass
                return
            if body[0] == Opcode.ERROR and len(body) >= 7:
                code = body[6]
                (n,) = struct.unpack(">H", body[7:9]) if len(body) >= 9 else (0,)
                message = body[9 : 9 + n].decode("utf-8", "replace")
                name = ErrorCode(code).name if code in ErrorCode._value2member_map_ else hex(code)
                shared_auth = self.shared and code == ErrorCode.UNAUTHORIZED
                hint = " (the fixtures need a server with auth off)" if shared_auth else ""
                raise _Refused(f"refused the handshake: {name}: {message}{hint}")
            raise _Refused(f"answered the handshake with opcode {body[0]:#04x}")
        finally:
            sock.close()

    # ---------------------------------------------- convenience admin calls

    def client(self, **options: Any) -> fila.Client:
        """A :class:`fila.Client` on this server (with ``api_key`` when it has one); close it after use."""
        import fila

        if self.tls:
            needs("fila.testing admin shortcuts on a TLS broker", self.variable)
        options.setdefault("api_key", self.api_key)
        options.setdefault("connect_timeout", _ADMIN_TIMEOUT)
        options.setdefault("request_timeout", _ADMIN_TIMEOUT)
        return fila.Client(self.address, **options)

    def create_queue(
        self,
        name: str,
        *,
        on_enqueue: str | None = None,
        on_failure: str | None = None,
        visibility_timeout_ms: int = 0,
    ) -> None:
        """Create a queue (and ``<name>.dlq``); hooks are Lua source (Python callables need the double)."""
        if callable(on_enqueue) or callable(on_failure):
            needs("fila.testing Python-callable hooks", self.variable)
        from .. import errors

        with self.client() as c:
            try:
                c.create_queue(
                    name, on_enqueue=on_enqueue, on_failure=on_failure, visibility_timeout_ms=visibility_timeout_ms
                )
            except errors.FilaError as exc:
                raise BrokerError(f"cannot create queue {name!r}: {exc}") from exc

    def delete_queue(self, name: str) -> bool:
        """Delete a queue and its DLQ; False if it did not exist."""
        from .. import errors

        with self.client() as c:
            try:
                c.delete_queue(name)
            except errors.QueueNotFoundError:
                return False
        return True

    def set_config(self, key: str, value: str) -> None:
        from .. import errors

        with self.client() as c:
            try:
                c.set_config(key, value)
            except errors.InvalidArgumentError as exc:
                raise BrokerError(f"invalid config value for {key!r}: {value!r}") from exc

    def get_config(self, key: str) -> str:
        with self.client() as c:
            return c.get_config(key)

    def stats(self, queue: str) -> dict[str, Any] | None:
        """GetStats fields of ``queue`` as a dict, or None when it does not exist."""
        from .. import errors

        with self.client() as c:
            try:
                result = c.get_stats(queue)
            except errors.QueueNotFoundError:
                return None
        return {"error_code": 0, **dataclasses.asdict(result)}

    def queue_names(self) -> list[str]:
        with self.client() as c:
            return [q.name for q in c.list_queues()]

    def create_api_key(
        self,
        name: str = "test",
        *,
        is_superadmin: bool = False,
        expires_at_ms: int = 0,
        permissions: Iterable[tuple[str, str]] = (),
    ) -> tuple[str, str]:
        """Create an API key with ``permissions`` (``(kind, pattern)`` pairs); returns ``(key_id, token)``."""
        perms = [(str(k), str(p)) for k, p in permissions]
        with self.client() as c:
            key = c.create_api_key(name, expires_at_ms=expires_at_ms, superadmin=is_superadmin)
            if perms:
                c.set_acl(key.key_id, perms)
        return key.key_id, key.raw_key

    def set_acl(self, key_id: str, permissions: Iterable[tuple[str, str]]) -> None:
        from .. import errors

        with self.client() as c:
            try:
                c.set_acl(key_id, [(str(k), str(p)) for k, p in permissions])
            except errors.ApiKeyNotFoundError as exc:
                raise BrokerError(f"no API key {key_id!r}") from exc

    def revoke_api_key(self, key_id: str) -> bool:
        from .. import errors

        with self.client() as c:
            try:
                c.revoke_api_key(key_id)
            except errors.ApiKeyNotFoundError:
                return False
        return True

    # ---------------------------------------- isolation on a shared server

    def snapshot(self) -> _State:
        """The queues, config keys and API key ids the server holds now."""
        with self.client() as c:
            return self._current(c)

    def restore(self, before: _State) -> None:
        """Delete the queues, API keys and config entries that appeared since ``before`` was taken."""
        from .. import errors

        with self.client() as c:
            now = self._current(c)
            leased = {q.name: q.in_flight for q in c.list_queues() if q.in_flight and q.name not in before.queues}
            for name in sorted(now.queues - before.queues, key=lambda n: (n.endswith(".dlq"), n)):
                try:
                    c.delete_queue(name)  # a queue's DLQ goes with it
                except errors.QueueNotFoundError:
                    pass
            if leased:
                warnings.warn(
                    ExternalServerWarning(
                        f"{ENV_SERVER}: deleted queue(s) with leased messages "
                        f"({', '.join(f'{n}: {k}' for n, k in sorted(leased.items()))}); the server brings them "
                        "back when a queue of that name is created again after the lease ends (SERVER.md §16.2), "
                        "so a later test reusing the name can see them"
                    ),
                    stacklevel=2,
                )
            for key_id in now.api_keys - before.api_keys:
                try:
                    c.revoke_api_key(key_id)
                except errors.ApiKeyNotFoundError:
                    pass
            for key in set(c.list_config("")) - before.config:
                c.set_config(key, "")  # an empty value deletes the key (and a throttle bucket)

    @staticmethod
    def _current(c: fila.Client) -> _State:
        return _State(
            frozenset(q.name for q in c.list_queues()),
            frozenset(c.list_config("")),
            frozenset(k.key_id for k in c.list_api_keys()),
        )


@dataclasses.dataclass(frozen=True)
class _State:
    queues: frozenset[str]
    config: frozenset[str]
    api_keys: frozenset[str]

    def describe(self) -> str:
        parts = []
        for label, items in (("queues", self.queues), ("config keys", self.config), ("API keys", self.api_keys)):
            if items:
                shown = ", ".join(sorted(items)[:5]) + (" …" if len(items) > 5 else "")
                parts.append(f"{label} {shown}")
        return "; ".join(parts)


class _Refused(Exception):
    pass


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionResetError("the server closed the connection during the handshake")
        buf += chunk
    return buf


def _toml(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid TOML basic string


def _pem_file(source: PemSource, directory: str, name: str) -> str:
    if isinstance(source, bytes):
        path = os.path.join(directory, name)
        with open(path, "wb") as f:
            f.write(source)
        return path
    return os.path.abspath(os.fspath(source))


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _kill_and_remove(proc: subprocess.Popen[bytes], directory: str) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    shutil.rmtree(directory, ignore_errors=True)


# ------------------------------------------------------------------ factory


class BrokerFactory:
    """Brokers for one fixture scope: ``factory(**broker_options)``; ``close()`` stops them all.

    Without ``FILA_SERVER``/``FILA_SERVER_BIN`` (or with ``double=True``) each
    call starts a :class:`~fila.testing.Broker`. With ``FILA_SERVER`` the
    first plain call returns the shared server, once it holds nothing (else
    the test is skipped: "needs a fresh broker"), and ``close()`` deletes what
    was created meanwhile. With ``FILA_SERVER_BIN`` each call starts a fresh
    server process. Options the chosen server cannot honour skip the test.
    """

    def __init__(self, *, double: bool = False) -> None:
        self.double = double
        self.brokers: list[Broker | ExternalServer] = []
        self._shared: ExternalServer | None = None
        self._before: _State | None = None

    def __call__(self, **options: Any) -> Any:
        if self.double or external_mode() is None:
            broker = Broker(**options)
            broker.start()
            self.brokers.append(broker)
            return broker
        server = self._external(options)
        self.brokers.append(server)
        return server

    def _external(self, options: dict[str, Any]) -> ExternalServer:
        defaults = _broker_defaults()
        unknown = set(options) - set(defaults)
        if unknown:
            raise TypeError(f"unexpected Broker option(s): {', '.join(sorted(unknown))}")
        given = {k: v for k, v in options.items() if v != defaults[k]}
        shared, binary = _env(ENV_SERVER), _env(ENV_SERVER_BIN)
        if shared and (given or self._shared is not None) and not binary:
            if given:
                needs(f"a broker started with {', '.join(sorted(given))} (a shared server cannot be configured)")
            needs("a second, separate broker (a shared server is a single broker)")
        if shared and not given and self._shared is None:
            return self._take_shared(shared)
        assert binary is not None
        return self._spawn(binary, given)

    def _take_shared(self, address: str) -> ExternalServer:
        failure = _SHARED_FAILURES.get(address)
        if failure is not None:
            raise ExternalServerError(str(failure))
        server = ExternalServer(address)
        try:
            server.start()
            before = server.snapshot()
        except Exception as exc:
            _SHARED_FAILURES[address] = exc
            raise
        if before.queues or before.config or before.api_keys:
            needs(
                f"a fresh broker: the {ENV_SERVER} server holds {before.describe()} "
                "(start it empty; each test's leftovers are deleted after it)",
                ENV_SERVER,
            )
        self._shared, self._before = server, before
        return server

    def _spawn(self, binary: str, given: dict[str, Any]) -> ExternalServer:
        var = ENV_SERVER_BIN
        if given.get("node_id"):
            needs(f"fila.testing cluster simulation (node_id={given['node_id']})", var)
        if "visibility_timeout_ms" in given:
            needs("fila.testing's visibility_timeout_ms option (the server's default lease is fixed)", var)
        for name in ("delivery_batch_size", "ready_buffer", "delivery_buffer"):
            if name in given:
                needs(f"fila.testing's {name} option (fixed on the real server)", var)
        for name in ("nagle", "idle_reclaim"):
            if name in given:
                needs(f"fila.testing's {name}={given[name]!r} timing switch (the real server has none)", var)
        server = ExternalServer(
            binary=binary,
            host=given.get("host", "127.0.0.1"),
            port=given.get("port", 0),
            api_key=given.get("api_key"),
            tls_cert=given.get("tls_cert"),
            tls_key=given.get("tls_key"),
            tls_ca=given.get("tls_ca"),
            quantum=given.get("quantum"),
            lease_check_interval=given.get("lease_check_interval"),
        )
        server.start()
        return server

    def close(self) -> None:
        """Stop every broker (a shared server: delete what the scope created); the first error is raised."""
        errors: list[BaseException] = []
        brokers, self.brokers = self.brokers, []
        for broker in reversed(brokers):
            try:
                if broker is self._shared and self._before is not None:
                    broker.restore(self._before)
                broker.stop()
            except Exception as exc:
                errors.append(exc)
        self._shared = self._before = None
        if errors:
            raise errors[0]


_SHARED_FAILURES: dict[str, BaseException] = {}
