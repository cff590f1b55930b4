"""Starting and stopping the broker: sync, async, the CLI and the pytest plugin."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fila.protocol.constants import Opcode
from fila.testing import Broker

from .conftest import Wire


def test_sync_context_manager_and_address() -> None:
    with Broker() as b:
        assert b.running and b.host == "127.0.0.1" and b.port > 0
        assert b.address == f"127.0.0.1:{b.port}"
        w = Wire(b)
        assert w.call("Ping")[0] == Opcode.PONG
        w.close()
    assert not b.running
    b.stop()  # idempotent


def test_stop_closes_connections() -> None:
    b = Broker().start()
    w = Wire(b)
    b.stop()
    w.assert_closed()
    w.close()


def test_async_context_manager() -> None:
    async def main() -> None:
        async with Broker() as b:
            reader, writer = await asyncio.open_connection(b.host, b.port)
            writer.write(bytes.fromhex("00000009010000000000000100"))
            await writer.drain()
            head = await asyncio.wait_for(reader.readexactly(10), 5)
            assert head[4] == Opcode.HANDSHAKE_OK
            writer.close()
        assert not b.running

    asyncio.run(asyncio.wait_for(main(), 20))


def test_two_brokers_are_independent() -> None:
    with Broker() as a, Broker() as b:
        assert a.port != b.port
        a.create_queue("q")
        assert a.queue_names() == ["q", "q.dlq"] and b.queue_names() == []


def test_cli_prints_the_address_and_stops_on_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "fila.testing", "--port", "0", "--api-key", "boot", "--node-id", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        host, port = line.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0

        class Target:
            pass

        t = Target()
        t.host, t.port = host, int(port)  # type: ignore[attr-defined]
        w = Wire(t, api_key="boot")  # type: ignore[arg-type]
        assert w.handshake_ok is not None and w.handshake_ok["node_id"] == 4
        w.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_cli_refuses_half_a_tls_config() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fila.testing", "--port", "0", "--tls-cert", "x.pem"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2 and "--tls-key" in out.stderr


def test_pytest_plugin_in_a_fresh_project(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent(
            """
            import socket

            def test_fixture(fila_broker):
                s = socket.create_connection((fila_broker.host, fila_broker.port), timeout=5)
                s.sendall(bytes.fromhex("000000090100000000000001" "00"))
                assert s.recv(64)[4] == 0x02
                s.close()

            def test_factory(fila_broker_factory):
                b = fila_broker_factory(node_id=9, api_key="k")
                assert b.node_id == 9 and b.address.endswith(str(b.port))
            """
        )
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)]
    from importlib.metadata import entry_points

    if not any(ep.value == "fila.testing.pytest_plugin" for ep in entry_points(group="pytest11")):
        args[3:3] = ["-p", "fila.testing.pytest_plugin"]  # not installed: load it by name
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 passed" in out.stdout


def test_constructor_validates_options() -> None:
    for kwargs in (
        {"delivery_batch_size": 0},
        {"visibility_timeout_ms": 0},
        {"lease_check_interval": 0},
        {"node_id": -1},
    ):
        with pytest.raises(ValueError):
            Broker(**kwargs)  # type: ignore[arg-type]
