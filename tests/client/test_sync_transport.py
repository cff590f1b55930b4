"""Client (sync): connection loss, reconnect, retries, keepalive, redirects, backpressure, TLS, big messages."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fila import Client
from fila import errors as E
from fila.protocol import ErrorCode, FrameReader, Opcode, encode_message
from fila.testing import Broker


def wait_until(pred: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return True
        except E.FilaConnectionError:  # a call that raced a connection the broker just closed
            pass
        time.sleep(0.02)
    return bool(pred())


# ------------------------------------------------------------ connection loss


def test_connection_loss_mid_request_fails_waiters_promptly(broker: Broker) -> None:
    with Client(broker.address, request_timeout=30) as c:
        c.create_queue("q")
        broker.faults.delay(30, opcode=Opcode.LIST_QUEUES)
        errors: list[BaseException] = []

        def call() -> None:
            try:
                c.list_queues()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=call, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        pending = c._conn.core.pending  # type: ignore[union-attr]
        assert wait_until(lambda: len(pending) == 4 and all(w.sent for w in list(pending.values())))
        t0 = time.monotonic()
        broker.faults.close_all()
        for t in threads:
            t.join(10)
        assert time.monotonic() - t0 < 5
        assert len(errors) == 4
        assert all(isinstance(e, E.ConnectionLostError) and e.may_have_been_applied for e in errors), errors
        broker.faults.clear_delay()
        assert "q" in c.list_queues()  # the next call reconnects


def test_nowait_futures_fail_on_connection_loss(broker: Broker) -> None:
    with Client(broker.address) as c:
        c.create_queue("q")
        broker.faults.delay(30, opcode=Opcode.ENQUEUE)
        first = c.enqueue_nowait("q", b"x")
        assert wait_until(lambda: c._conn is not None and len(c._conn.core.pending) == 1)
        rest = [c.enqueue_nowait("q", b"x") for _ in range(49)]  # queued behind the batch in flight
        broker.faults.close_all()
        broker.faults.clear_delay()
        with pytest.raises(E.ConnectionLostError) as info:
            first.result(10)
        assert info.value.may_have_been_applied
        # what was still queued goes out on the next connection: every future resolves
        assert all(isinstance(f.result(10), str) for f in rest)
        assert c.enqueue("q", b"after")


def test_truncated_frame_then_eof(broker: Broker) -> None:
    with Client(broker.address) as c:
        c.create_queue("q")
        broker.faults.close_mid_frame(Opcode.LIST_QUEUES_RESULT)
        with pytest.raises(E.ConnectionLostError):
            c.list_queues()
        assert "q" in c.list_queues()


def test_reconnect_backoff_when_server_is_gone() -> None:
    b = Broker()
    b.start()
    addr = b.address
    c = Client(addr, connect_timeout=2, reconnect_initial_delay=0.05, reconnect_max_delay=0.2)
    c.create_queue("q")
    b.stop()
    with pytest.raises(E.FilaConnectionError):
        c.list_queues()
    with pytest.raises(E.ConnectError):
        c.list_queues()
    c.close()


def test_connect_error_is_fila_error() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    c = Client(f"127.0.0.1:{port}", connect_timeout=2)
    with pytest.raises(E.ConnectError) as info:
        c.connect()
    assert isinstance(info.value, E.FilaError) and not info.value.may_have_been_applied
    c.close()


def test_request_timeout_per_call(broker: Broker) -> None:
    with Client(broker.address) as c:
        c.create_queue("q")
        broker.faults.delay(2, opcode=Opcode.GET_STATS, count=1)
        with pytest.raises(E.RequestTimeoutError) as info:
            c.get_stats("q", timeout=0.2)
        assert info.value.may_have_been_applied
        assert c.list_queues()  # the connection is still fine (answers stay in order)


# ------------------------------------------------------------------- fake peers


class FakeServer:
    """A raw TCP peer: answers the handshake, then runs ``script(conn, reader)``."""

    def __init__(self, script: Any) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.script = script
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        reader = FrameReader()
        frames: list[Any] = []
        try:
            while not frames:
                frames += reader.feed(conn.recv(65536))
            conn.sendall(
                encode_message("HandshakeOk", 0, {"negotiated_version": 1, "node_id": 0, "max_frame_size": 16777216})
            )
            self.script(conn, reader, frames[1:])
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


def test_malformed_frame_fails_waiters_and_client_recovers(broker: Broker) -> None:
    def script(conn: socket.socket, reader: Any, frames: list[Any]) -> None:
        while not frames:
            frames += reader.feed(conn.recv(65536))
        conn.sendall(b"\x00\x00\x00\x02\x00\x00")  # length < 6: malformed

    server = FakeServer(script)
    try:
        with Client(server.address, request_timeout=10) as c:
            with pytest.raises(E.ProtocolError):
                c.list_queues()
            with pytest.raises(E.ProtocolError):
                c.list_queues()  # reconnected, and the fake breaks it again
    finally:
        server.close()


def test_unknown_opcode_and_unknown_request_id_are_ignored() -> None:
    def script(conn: socket.socket, reader: Any, frames: list[Any]) -> None:
        while not frames:
            frames += reader.feed(conn.recv(65536))
        rid = frames[0].request_id
        conn.sendall(encode_message("Pong", rid + 1000))  # unknown id
        conn.sendall(b"\x00\x00\x00\x06\x77\x00" + rid.to_bytes(4, "big"))  # unknown opcode
        conn.sendall(
            encode_message("ListQueuesResponse", rid, {"error_code": 0, "cluster_node_count": 3, "queues": []})
        )
        time.sleep(5)

    server = FakeServer(script)
    try:
        with Client(server.address, request_timeout=5) as c:
            assert c.list_queues().cluster_node_count == 3
    finally:
        server.close()


def test_keepalive_declares_silent_peer_dead() -> None:
    def script(conn: socket.socket, reader: Any, frames: list[Any]) -> None:
        time.sleep(30)  # never answers anything, never reads

    server = FakeServer(script)
    try:
        c = Client(server.address, keepalive_interval=0.2, keepalive_timeout=0.3, request_timeout=30)
        c.connect()
        t0 = time.monotonic()
        with pytest.raises(E.ConnectionLostError) as info:
            c.get_config("x")
        assert time.monotonic() - t0 < 5
        assert "keepalive" in str(info.value)
        c.close()
    finally:
        server.close()


def test_keepalive_keeps_idle_connection(broker: Broker) -> None:
    with Client(broker.address, keepalive_interval=0.05, keepalive_timeout=1) as c:
        c.create_queue("q")
        conn = c._conn
        time.sleep(0.5)
        assert c._conn is conn and conn is not None and conn.alive
        assert c.enqueue("q", b"x")


# ------------------------------------------------------------------ ChannelFull


def test_channel_full_is_retried(broker: Broker) -> None:
    with Client(broker.address, request_timeout=10) as c:
        c.create_queue("q")
        broker.faults.fail_next(3, code=ErrorCode.CHANNEL_FULL, opcode=Opcode.LIST_QUEUES)
        assert "q" in c.list_queues()
        broker.faults.fail_next(3, code=ErrorCode.CHANNEL_FULL, opcode=Opcode.ENQUEUE)
        assert c.enqueue("q", b"x")
        broker.faults.fail_next(2, code=ErrorCode.CHANNEL_FULL, opcode=Opcode.ENQUEUE)
        assert all(r.ok for r in c.enqueue_many([("q", b"1"), ("q", b"2")]))
        assert c.get_stats("q").depth == 3


def test_channel_full_gives_up_at_request_timeout(broker: Broker) -> None:
    with Client(broker.address, request_timeout=0.5) as c:
        c.create_queue("q")
        broker.faults.fail_next(10_000, code=ErrorCode.CHANNEL_FULL, opcode=Opcode.GET_CONFIG)
        with pytest.raises(E.ChannelFullError):
            c.get_config("k")
        broker.faults.fail_next(10_000, code=ErrorCode.CHANNEL_FULL, opcode=Opcode.ENQUEUE)
        fut = c.enqueue_nowait("q", b"x")
        with pytest.raises(E.ChannelFullError):
            fut.result(10)
        broker.faults.reset()


def test_other_whole_request_errors_are_not_retried(broker: Broker) -> None:
    with Client(broker.address) as c:
        c.create_queue("q")
        broker.faults.fail_next(1, code=ErrorCode.INTERNAL_ERROR, opcode=Opcode.ENQUEUE)
        with pytest.raises(E.InternalServerError):
            c.enqueue("q", b"x")
        assert c.enqueue("q", b"y")


# --------------------------------------------------------------- consumers


def test_consumer_resubscribes_after_broker_drops_it(broker: Broker) -> None:
    with Client(broker.address, reconnect_initial_delay=0.05, reconnect_max_delay=0.2) as c:
        c.create_queue("q")
        with c.consume("q") as consumer:
            c.enqueue("q", b"before")
            m = consumer.get(timeout=10)
            assert m is not None and m.payload == b"before"
            consumer.ack(m)
            assert consumer.flush(10)
            broker.faults.close_all()
            assert wait_until(lambda: c.get_stats("q").active_consumers == 1)
            c.enqueue("q", b"after")
            m = consumer.get(timeout=10)
            assert m is not None and m.payload == b"after"


def test_leader_redirect_between_two_brokers(broker_factory) -> None:  # type: ignore[no-untyped-def]
    leader = broker_factory(node_id=2)
    follower = broker_factory(node_id=1)
    for b in (leader, follower):
        with Client(b.address) as c:
            c.create_queue("q")
    follower.faults.not_leader(leader_addr=leader)
    with Client(follower.address) as c:
        with c.consume("q") as consumer:
            with Client(leader.address) as lc:
                lc.enqueue("q", b"on leader")
                assert lc.get_stats("q").active_consumers == 1
            m = consumer.get(timeout=10)
            assert m is not None and m.payload == b"on leader"
        assert c.get_stats("q").active_consumers == 0


def test_not_leader_without_address_is_retried(broker: Broker) -> None:
    broker.faults.not_leader()
    with Client(broker.address, request_timeout=10) as c:
        c.create_queue("q")
        threading.Timer(0.3, broker.faults.clear_not_leader).start()
        with c.consume("q") as consumer:
            c.enqueue("q", b"x")
            assert consumer.get(timeout=10) is not None


def test_not_leader_gives_up_after_request_timeout(broker: Broker) -> None:
    broker.faults.not_leader()
    with Client(broker.address, request_timeout=0.5) as c:
        with pytest.raises(E.NotLeaderError):
            c.consume("q")


def test_backpressure_keeps_memory_bounded(broker: Broker) -> None:
    with Client(broker.address, consumer_buffer=16) as c:
        c.create_queue("bp")
        n = 5000  # 20 MiB: more than socket buffers hold
        c.enqueue_many([("bp", b"x" * 4096) for _ in range(n)])
        # The buffer holds at most its capacity plus the frames of one socket read (256 KiB).
        bound = 16 + 256 * 1024 // 4096
        with c.consume("bp") as consumer:
            time.sleep(1.0)  # a consumer that does not read
            assert consumer.buffered <= bound
            assert consumer._state.paused
            in_flight = c.get_stats("bp").in_flight
            assert in_flight < n  # the server was held back: it did not lease everything
            time.sleep(0.5)
            assert c.get_stats("bp").in_flight == in_flight  # and stays held back
            # acks on the main connection are unaffected by the paused consumer connection
            m = consumer.get(timeout=5)
            assert m is not None
            c.ack(m.queue, m.id)
            got = 1
            while got < n:
                m = consumer.get(timeout=10)
                assert m is not None
                consumer.ack(m)
                got += 1
                assert consumer.buffered <= bound
            assert consumer.flush(10)
        assert c.get_stats("bp").depth == 0


def test_interleaved_consume_ack_enqueue_on_shared_connection(broker: Broker) -> None:
    with Client(broker.address) as c:
        c.create_queue("a")
        c.create_queue("b")
        with c.consume("a") as consumer:
            for i in range(100):
                c.enqueue("a", b"%d" % i)
                c.enqueue_nowait("b", b"%d" % i)
                m = consumer.get(timeout=10)
                assert m is not None
                if i % 2:
                    c.ack(m.queue, m.id)
                else:
                    consumer.ack(m)
            assert consumer.flush(10)
        c.flush()
        assert c.get_stats("a").depth == 0 and c.get_stats("b").depth == 100


# -------------------------------------------------------------- big messages


def test_message_above_16_mib_uses_continuation_frames(broker: Broker) -> None:
    payload = bytes(range(256)) * (17 * 4096 + 7)  # ~17 MiB
    assert len(payload) > 16 * 1024 * 1024
    with Client(broker.address, request_timeout=60) as c:
        c.create_queue("big")
        sent: list[bytes] = []
        conn = c._connection()

        class Spy:
            def __init__(self, io: Any) -> None:
                self.io = io

            def sendall(self, data: bytes) -> None:
                sent.append(bytes(data[:10]) + len(data).to_bytes(8, "big"))
                self.io.sendall(data)

            def __getattr__(self, name: str) -> Any:
                return getattr(self.io, name)

        conn._io = Spy(conn._io)
        mid = c.enqueue("big", payload, {"h": "v"})
        big = [h for h in sent if int.from_bytes(h[10:], "big") > 16 * 1024 * 1024]
        assert big and big[0][4] == Opcode.ENQUEUE and big[0][5] == 1  # first frame flagged CONTINUATION
        with c.consume("big") as consumer:
            m = consumer.get(timeout=60)
            assert m is not None and m.id == mid and m.payload == payload and m.headers == {"h": "v"}
            consumer.ack(m)


def test_batches_are_cut_by_bytes(broker: Broker) -> None:
    with Client(broker.address, request_timeout=60) as c:
        c.create_queue("q")
        payload = b"z" * (3 * 1024 * 1024)
        res = c.enqueue_many([("q", payload)] * 8)  # 24 MiB: must take several frames
        assert all(r.ok for r in res)
        futs = [c.enqueue_nowait("q", payload) for _ in range(8)]
        assert all(f.result(60) for f in futs)
        assert c.get_stats("q").depth == 16


# -------------------------------------------------------------------- TLS


def _pem(p: Path) -> bytes:
    return Path(p).read_bytes()


def test_tls_with_ca(broker_factory, pki) -> None:  # type: ignore[no-untyped-def]
    b = broker_factory(tls_cert=pki.server_cert, tls_key=pki.server_key)
    with Client(b.address, ca_cert=_pem(pki.ca_cert)) as c:
        c.create_queue("q")
        assert c.enqueue("q", b"secure")
        with c.consume("q") as consumer:
            m = consumer.get(timeout=10)
            assert m is not None and m.payload == b"secure"


def test_tls_rejects_unknown_ca(broker_factory, pki) -> None:  # type: ignore[no-untyped-def]
    b = broker_factory(tls_cert=pki.server_cert, tls_key=pki.server_key)
    with pytest.raises(E.ConnectError):
        Client(b.address, ca_cert=_pem(pki.other_ca_cert), connect_timeout=5).connect()
    with pytest.raises(E.ConnectError):  # system trust store does not know the test CA
        Client(b.address, tls=True, connect_timeout=5).connect()


def test_tls_verifies_hostname(broker_factory, pki) -> None:  # type: ignore[no-untyped-def]
    b = broker_factory(host="127.0.0.1", tls_cert=pki.server_cert, tls_key=pki.server_key)
    with Client(f"localhost:{b.port}", ca_cert=_pem(pki.ca_cert), connect_timeout=5) as c:
        c.list_queues()  # the test certificate names localhost and 127.0.0.1


def test_mtls(broker_factory, pki) -> None:  # type: ignore[no-untyped-def]
    b = broker_factory(tls_cert=pki.server_cert, tls_key=pki.server_key, tls_ca=pki.ca_cert)
    with Client(
        b.address, ca_cert=_pem(pki.ca_cert), client_cert=_pem(pki.client_cert), client_key=_pem(pki.client_key)
    ) as c:
        c.create_queue("m")
        assert c.enqueue("m", b"x")
    with pytest.raises(E.FilaConnectionError):
        Client(b.address, ca_cert=_pem(pki.ca_cert), connect_timeout=5).list_queues()
    with pytest.raises(E.FilaConnectionError):
        Client(
            b.address,
            ca_cert=_pem(pki.ca_cert),
            client_cert=_pem(pki.other_client_cert),
            client_key=_pem(pki.other_client_key),
            connect_timeout=5,
        ).list_queues()


def test_cert_without_key_is_a_clear_error(pki) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="client_cert was given without client_key"):
        Client("localhost", client_cert=_pem(pki.client_cert))
    with pytest.raises(ValueError, match="client_key was given without client_cert"):
        Client("localhost", client_key=_pem(pki.client_key))
    with pytest.raises(ValueError, match="PEM"):
        Client("localhost", ca_cert=b"garbage")


def test_private_key_never_lands_in_a_file(pki, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    Client("localhost", ca_cert=_pem(pki.ca_cert), client_cert=_pem(pki.client_cert), client_key=_pem(pki.client_key))
    assert list(tmp_path.iterdir()) == []


def test_tempfile_fallback_removes_key(pki, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import tempfile

    from fila import _tls

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(_tls.sys, "platform", "darwin")
    ctx = _tls.make_ssl_context(False, _pem(pki.ca_cert), _pem(pki.client_cert), _pem(pki.client_key))
    assert ctx is not None
    assert list(tmp_path.iterdir()) == []
