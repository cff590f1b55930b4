"""Security: TLS verification by default, and the API key never shown.

TLS (certificates from :func:`fila.testing.make_test_pki`: the server's is
for ``localhost``, ``127.0.0.1`` and ``::1``):

* a server reached as ``127.0.0.2`` presents a certificate for other hosts:
  refused (hostname verification is on without being asked for);
* ``tls=True`` without ``ca_cert`` verifies against the system store: the
  test CA is unknown there, so the connection is refused;
* a ``ca_cert`` of another CA: refused with a ConnectError that says to
  check the CA certificate;
* the right CA and host name: connects (the control).

API key (a distinctive secret): absent from ``repr`` of the client, its
settings, consumers and events; from every log record at DEBUG (message,
arguments and formatted exception); from the message, ``repr`` and formatted
traceback of every error raised — a refused handshake (wrong key), an
unreachable address, a dropped connection; and from the CLI's stdout and
stderr (``python -m fila --api-key ...``: success, wrong key, unreachable,
with and without ``--debug``). Sync and asyncio.

Peer-controlled sizes are capped by the codec (frames, reassembly streams,
u32 counts; strings and maps are u16 by encoding): proved end to end in
``test_hostile_server.py`` (``65_unfinished_streams``, ``counts_over_limits``,
``map_count_huge``, ``length_2gib_then_silence``).
"""

from __future__ import annotations

import logging
import os
import ssl
import subprocess
import sys
import traceback
from typing import Any

import pytest

from fila import AsyncClient
from fila import Client
from fila.errors import ConnectError
from fila.errors import FilaError
from fila.errors import UnauthorizedError

from .rel_helpers import FILA_HOME
from .rel_helpers import Events
from .rel_helpers import run_async
from .rel_helpers import wait_for
from .rel_helpers import watchdog

SECRET = "s3cr3t-KEY-7f1c2a9e"
WRONG = "wr0ng-KEY-55d0b1c4"


def _ssl_cause(exc: BaseException) -> BaseException | None:
    while exc is not None:
        if isinstance(exc, ssl.SSLError):
            return exc
        exc = exc.__cause__  # type: ignore[assignment]
    return None


# --------------------------------------------------------------------- TLS


@pytest.fixture
def tls_brokers(broker_factory: Any, pki: Any) -> tuple[Any, Any]:
    """The same certificate served on 127.0.0.1 (matches it) and on 127.0.0.2 (does not)."""
    good = broker_factory(tls_cert=pki.server_cert, tls_key=pki.server_key)
    other = broker_factory(host="127.0.0.2", tls_cert=pki.server_cert, tls_key=pki.server_key)
    return good, other


def _tls_cases(good: Any, other: Any, pki: Any) -> list[tuple[str, str, dict[str, Any], str | None]]:
    """(name, address, options, what the error says or None when it must connect)."""
    port = good.port
    return [
        ("right CA, by IP", good.address, {"ca_cert": pki.ca_cert_pem}, None),
        ("right CA, by name", f"localhost:{port}", {"ca_cert": pki.ca_cert_pem}, None),
        ("certificate for another host", other.address, {"ca_cert": pki.ca_cert_pem}, "mismatch"),
        ("system store by default", good.address, {"tls": True}, "certificate verify failed"),
        ("wrong CA", good.address, {"ca_cert": pki.other_ca_cert_pem}, "certificate verify failed"),
    ]


def test_sync_tls_verification(tls_brokers: tuple[Any, Any], pki: Any) -> None:
    good, other = tls_brokers
    for name, addr, options, says in _tls_cases(good, other, pki):
        if says is None:
            with Client(addr, connect_timeout=5, **options) as client:
                assert client.list_queues() == [], name
            continue
        with pytest.raises(ConnectError) as info:
            Client(addr, connect_timeout=5, **options)
        # Fails if a bad certificate was accepted or refused without saying why.
        cause = _ssl_cause(info.value)
        assert cause is not None and says in str(cause), (name, repr(info.value), repr(cause))
        assert "TLS handshake failed" in str(info.value) and "CA certificate" in str(info.value), str(info.value)


def test_async_tls_verification(tls_brokers: tuple[Any, Any], pki: Any) -> None:
    # Fails if a certificate for another host, an unknown CA or the system store is accepted, or if the refusal does
    # not name TLS.
    good, other = tls_brokers

    async def body() -> None:
        for name, addr, options, says in _tls_cases(good, other, pki):
            if says is None:
                async with AsyncClient(addr, connect_timeout=5, **options) as client:
                    assert await client.list_queues() == [], name
                continue
            client = AsyncClient(addr, connect_timeout=5, **options)
            with pytest.raises(ConnectError) as info:
                await client.list_queues()
            await client.close()
            cause = _ssl_cause(info.value)
            assert cause is not None and says in str(cause), (name, repr(info.value), repr(cause))
            assert "TLS handshake failed" in str(info.value), str(info.value)

    run_async(body, 60)


# ----------------------------------------------------------------- API key


def _shown(exc: BaseException) -> str:
    """Everything a user could see of an exception: str, repr, formatted traceback with its chain."""
    return "\n".join([str(exc), repr(exc), "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))])


def _records_text(caplog: pytest.LogCaptureFixture) -> str:
    out = []
    for r in caplog.records:
        out.append(r.getMessage())
        out.append(repr(r.args))
        if r.exc_info and r.exc_info[1] is not None:
            out.append(_shown(r.exc_info[1]))
    return "\n".join(out)


def test_sync_api_key_never_shown(broker_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    broker = broker_factory(api_key=SECRET)
    events = Events()
    seen: list[str] = []

    def body() -> None:
        with Client(broker.address, api_key=SECRET, on_event=events, reconnect_initial_delay=0.01) as client:
            client.create_queue("q")
            client.enqueue("q", None, b"x")
            consumer = client.consume("q")
            msg = consumer.get(timeout=10)
            assert msg is not None
            seen.extend([repr(client), repr(client._settings), repr(consumer), repr(msg)])
            broker.faults.close_all()  # errors and events of a dropped connection
            events.wait("subscription_lost")
            events.wait("disconnected")
            consumer.ack(msg)
            client.get_stats("q")  # reconnects, handshaking with the key again
            events.wait("resubscribed")
            consumer.close()
            seen.extend(repr(e) for e in events.events)
        # A refused handshake: the wrong key.
        with pytest.raises(UnauthorizedError) as info:
            Client(broker.address, api_key=WRONG)
        seen.append(_shown(info.value))
        # An unreachable address.
        with pytest.raises(ConnectError) as info2:
            Client("127.0.0.1:1", api_key=SECRET, connect_timeout=2)
        seen.append(_shown(info2.value))

    watchdog(body, 60)
    text = "\n".join(seen) + _records_text(caplog)
    assert caplog.records, "nothing was logged: the check proves nothing"
    # Fails if the key (right or wrong) appears anywhere a user or a log could see it.
    assert SECRET not in text and WRONG not in text


def test_async_api_key_never_shown(broker_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    # Fails if either key appears in a repr, an event, a DEBUG log record or an error's text or traceback.
    caplog.set_level(logging.DEBUG)
    broker = broker_factory(api_key=SECRET)
    events = Events()
    seen: list[str] = []

    async def body() -> None:
        async with AsyncClient(broker.address, api_key=SECRET, on_event=events, reconnect_initial_delay=0.01) as c:
            await c.create_queue("q")
            await c.enqueue("q", None, b"x")
            consumer = await c.consume("q")
            msg = await consumer.get(timeout=10)
            assert msg is not None
            seen.extend([repr(c), repr(c._settings), repr(consumer), repr(msg)])
            broker.faults.close_all()
            await events.await_kind("subscription_lost")
            await c.get_stats("q")
            await events.await_kind("resubscribed")
            await consumer.close()
            seen.extend(repr(e) for e in events.events)
        bad = AsyncClient(broker.address, api_key=WRONG)
        try:
            await bad.get_stats("q")
        except FilaError as exc:
            assert isinstance(exc, UnauthorizedError), repr(exc)
            seen.append(_shown(exc))
        else:  # pragma: no cover
            raise AssertionError("the wrong key was accepted")
        await bad.close()
        far = AsyncClient("127.0.0.1:1", api_key=SECRET, connect_timeout=2)
        try:
            await far.get_stats("q")
        except ConnectError as exc:
            seen.append(_shown(exc))
        await far.close()

    run_async(body, 60)
    text = "\n".join(seen) + _records_text(caplog)
    assert caplog.records
    assert SECRET not in text and WRONG not in text


def _cli_start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    full = {k: v for k, v in os.environ.items() if k not in ("FILA_ADDR", "FILA_API_KEY", "PYTHONPATH")}
    full["PYTHONPATH"] = FILA_HOME
    full.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "fila", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=full,
    )


def _cli_finish(proc: subprocess.Popen[bytes]) -> subprocess.CompletedProcess[str]:
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    )


def test_cli_api_key_never_printed(broker_factory: Any) -> None:
    broker = broker_factory(api_key=SECRET)
    broker.create_queue("q")
    addr = broker.address
    cases = {
        "ok-debug": (("--addr", addr, "--api-key", SECRET, "--debug", "--json", "queue", "list"), None),
        "wrong-debug": (("--addr", addr, "--api-key", WRONG, "--debug", "queue", "list"), None),
        "wrong-env": (("--addr", addr, "enqueue", "q", "--data", "hi"), {"FILA_API_KEY": WRONG}),
        "unreachable-debug": (
            ("--addr", "127.0.0.1:1", "--api-key", SECRET, "--debug", "enqueue", "q", "--data", "hi"),
            None,
        ),
    }
    procs = {name: _cli_start(*args, env=env) for name, (args, env) in cases.items()}  # in parallel
    runs = {name: _cli_finish(p) for name, p in procs.items()}
    assert runs["ok-debug"].returncode == 0 and '"q"' in runs["ok-debug"].stdout, runs["ok-debug"]
    assert "DEBUG" in runs["ok-debug"].stderr  # debug logging was on: it must still hide the key
    for name in ("wrong-debug", "wrong-env", "unreachable-debug"):
        assert runs[name].returncode not in (0, None), (name, runs[name].stdout, runs[name].stderr)
    assert "Traceback" in runs["wrong-debug"].stderr and "invalid API key" in runs["wrong-debug"].stderr
    for name, proc in runs.items():
        # Fails if the CLI echoes the key in any output, traceback or debug log line.
        assert SECRET not in proc.stdout + proc.stderr, (name, proc.stdout, proc.stderr)
        assert WRONG not in proc.stdout + proc.stderr, (name, proc.stdout, proc.stderr)


def test_wait_helper_is_bounded() -> None:
    # The helpers' waits end in a test failure, never a hang (what every test here relies on).
    with pytest.raises(pytest.fail.Exception):
        wait_for(lambda: False, 0.05, "nothing")
