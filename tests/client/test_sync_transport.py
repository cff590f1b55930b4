"""Client (sync): connection loss, reconnect, retries, keepalive, redirects, backpressure, TLS, big messages."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from client_helpers import wait_until

from fila import Client
from fila import errors as E
from fila._core import Subscription
from fila.protocol import ErrorCode
from fila.protocol import FrameReader
from fila.protocol import Opcode
from fila.protocol import encode_message
from fila.testing import Broker


def names(c: Client) -> list[str]:
    return [q.name for q in c.list_queues()]


def settle(pred: Any, timeout: float = 10.0) -> bool:
    """wait_until, counting a call that raced a connection the broker just closed as "not yet"."""
    return wait_until(pred, timeout, interval=0.02, ignore=E.FilaConnectionError)


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
        assert settle(lambda: len(pending) == 4 and all(w.sent for w in list(pending.values())))
        t0 = time.monotonic()
        broker.faults.close_all()
        for t in threads:
            t.join(10)
        assert time.monotonic() - t0 < 5
        assert len(errors) == 4
        assert all(isinstance(e, E.ConnectionLostError) and e.may_have_been_applied for e in errors), errors
        broker.faults.clear_delay()
        assert names(c) == ["q", "q.dlq"]  # the next call reconnects


def test_nowait_futures_fail_on_connection_loss(broker: Broker) -> None:
    with Client(broker.address) as c:
        c.create_queue("q")
        broker.faults.delay(30, opcode=Opcode.ENQUEUE)
        first = c.enqueue_nowait("q", None, b"x")
        assert settle(lambda: c._conn is not None and len(c._conn.core.pending) == 1)
        rest = [c.enqueue_nowait("q", None, b"x") for _ in range(49)]  # queued behind the batch in flight
        assert not any(f.done() for f in rest)
        broker.faults.close_all()
        broker.faults.clear_delay()
        with pytest.raises(E.ConnectionLostError) as info:
            first.result(10)
        assert info.value.may_have_been_applied
        # what was still queued goes out on the next connection: every future resolves, each with its own id
        ids = {f.result(10) for f in rest}
        assert len(ids) == 49
        after = c.enqueue("q", None, b"after")
        assert after not in ids
        # the 49 and "after" are stored; the first may or may not have been applied
        assert c.get_stats("q").depth in (50, 51)


def test_truncated_frame_then_eof(broker: Broker) -> None:
    with Client(broker.address) as c:
        c.create_queue("q")
        broker.faults.close_mid_frame(Opcode.LIST_QUEUES_RESULT)
        with pytest.raises(E.ConnectionLostError):
            c.list_queues()
        assert names(c) == ["q", "q.dlq"]


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
    # Client connects in its constructor (0.3.0), so that is where an unreachable server shows
    with pytest.raises(E.ConnectError) as info:
        Client(f"127.0.0.1:{port}", connect_timeout=2)
    assert isinstance(info.value, E.FilaError) and not info.value.may_have_been_applied
    assert isinstance(info.value, ConnectionError)  # code that caught 0.3.0's raw OSError still does
    assert f"127.0.0.1:{port}" in str(info.value)


def test_request_timeout_per_call(broker: Broker) -> None:
    with Client(broker.address) as c:
        c.create_queue("q")
        conn = c._conn
        broker.faults.delay(2, opcode=Opcode.GET_STATS, count=1)
        with pytest.raises(E.RequestTimeoutError) as info:
            c.get_stats("q", timeout=0.2)
        assert info.value.may_have_been_applied
        # Was: `assert c.list_queues()`. Now: the timeout did not cost the connection
        # (same one, still alive) and the late answer is dropped, not given to the next call.
        assert names(c) == ["q", "q.dlq"]
        assert c._conn is conn and conn is not None and not conn.dead
        assert c.get_config("unset") == ""
        assert broker.connection_count == 1


# ------------------------------------------------------------------- fake peers


class FakeServer:
    """A raw TCP peer: answers the handshake, then runs ``script(conn, reader, frames)``.

    ``frames`` holds the frames after the handshake already read; ``stop`` is
    set by :meth:`close`, so a script can wait for the end of the test.
    """

    def __init__(self, script: Any) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.script = script
        self.conns: list[socket.socket] = []
        self.stop = threading.Event()
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
        self.stop.set()
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


def read_frames(conn: socket.socket, reader: Any, frames: list[Any], n: int) -> None:
    while len(frames) < n:
        data = conn.recv(65536)
        if not data:
            raise ConnectionResetError("client closed")
        frames += reader.feed(data)


def test_malformed_frame_fails_waiters_and_client_recovers() -> None:
    def script(conn: socket.socket, reader: Any, frames: list[Any]) -> None:
        read_frames(conn, reader, frames, 1)
        conn.sendall(b"\x00\x00\x00\x02\x00\x00")  # length < 6: malformed

    server = FakeServer(script)
    try:
        with Client(server.address, request_timeout=10) as c:
            with pytest.raises(E.ProtocolError):
                c.list_queues()
            with pytest.raises(E.ProtocolError):
                c.list_queues()  # reconnected, and the fake breaks it again
        assert len(server.conns) == 2
    finally:
        server.close()


def test_unknown_opcode_and_unknown_request_id_are_ignored() -> None:
    def script(conn: socket.socket, reader: Any, frames: list[Any]) -> None:
        read_frames(conn, reader, frames, 1)
        rid = frames[0].request_id
        conn.sendall(encode_message("Pong", rid + 1000))  # unknown id
        conn.sendall(b"\x00\x00\x00\x06\x77\x00" + rid.to_bytes(4, "big"))  # unknown opcode, the request's id
        queue = {"name": "from-fake", "depth": 3, "in_flight": 1, "active_consumers": 2, "leader_node_id": 9}
        conn.sendall(
            encode_message("ListQueuesResponse", rid, {"error_code": 0, "cluster_node_count": 3, "queues": [queue]})
        )
        # Was: time.sleep(5). Now: keep the connection open until the client leaves (EOF) or the test ends.
        while not server.stop.is_set() and conn.recv(65536):
            pass

    server = FakeServer(script)
    try:
        with Client(server.address, request_timeout=5) as c:
            (q,) = c.list_queues()
            assert (q.name, q.depth, q.in_flight, q.active_consumers, q.leader_node_id) == ("from-fake", 3, 1, 2, 9)
            assert c._conn is not None and not c._conn.dead  # ignored frames did not break the connection
    finally:
        server.close()


def test_keepalive_declares_silent_peer_dead_with_a_request_in_flight() -> None:
    def script(conn: socket.socket, reader: Any, frames: list[Any]) -> None:
        server.stop.wait(30)  # never answers anything, never reads

    server = FakeServer(script)
    try:
        c = Client(server.address, keepalive_interval=0.2, keepalive_timeout=0.3, request_timeout=30)
        t0 = time.monotonic()
        with pytest.raises(E.ConnectionLostError) as info:
            c.get_config("x")
        assert time.monotonic() - t0 < 5  # well before the 30 s request timeout
        assert "keepalive" in str(info.value)
        c.close()
    finally:
        server.close()


def test_keepalive_declares_an_idle_silent_peer_dead_within_the_bound() -> None:
    # Replaces a test that slept 0.5 s with keepalive_timeout=1 and passed whether or not
    # a Pong ever came. This peer reads the client's frames but never writes after the
    # handshake. It fails if the client never pings (no Ping reaches the peer), if it
    # never declares the peer dead (the connection stays alive past the bound), or if it
    # declares it dead before interval + timeout.
    received: list[int] = []

    def script(conn: socket.socket, reader: Any, frames: list[Any]) -> None:
        while not server.stop.is_set():
            data = conn.recv(65536)
            if not data:
                return
            received.extend(f.opcode for f in reader.feed(data))

    server = FakeServer(script)
    interval, timeout = 0.2, 0.3
    try:
        t0 = time.monotonic()
        c = Client(server.address, keepalive_interval=interval, keepalive_timeout=timeout)
        conn = c._conn
        assert conn is not None
        assert wait_until(lambda: conn.dead, timeout=5), "a silent peer was never declared dead"
        elapsed = time.monotonic() - t0
        assert elapsed >= interval + timeout
        assert Opcode.PING in received  # it asked before giving up
        cause = conn.core.dead
        assert isinstance(cause, E.ConnectionLostError) and "keepalive" in str(cause)
        c.close()
    finally:
        server.close()


def test_keepalive_pings_are_answered_and_keep_an_idle_connection(broker: Broker) -> None:
    # Replaces the 0.5 s sleep. The client sends a new Ping only after it received
    # something since the last one, so several Pings on an idle connection prove that
    # each Pong came back and was taken as an answer. It fails if no Ping is sent, if the
    # broker's Pongs are not read as answers (one Ping, then the connection dies after
    # keepalive_timeout), or if the connection is replaced.
    with Client(broker.address, keepalive_interval=0.05, keepalive_timeout=0.5) as c:
        c.create_queue("q")
        conn = c._conn
        assert conn is not None
        pings: list[int] = []
        write = conn.write

        def spy(data: bytes, waiter: Any = None) -> None:
            if data[4] == Opcode.PING:
                pings.append(int.from_bytes(data[6:10], "big"))
            write(data, waiter)

        conn.write = spy  # type: ignore[method-assign]
        assert wait_until(lambda: len(pings) >= 5 or conn.dead, timeout=10)
        assert not conn.dead and len(pings) >= 5 and len(set(pings)) == len(pings)
        assert c._conn is conn
        assert len(conn.core.pending) <= 1  # each Ping's waiter was completed by its Pong
        assert c.enqueue("q", None, b"x") and c._conn is conn


# ------------------------------------------------------------------ ChannelFull


def test_channel_full_is_retried(broker: Broker) -> None:
    with Client(broker.address, request_timeout=10) as c:
        c.create_queue("q")
        broker.faults.fail_next(3, code=ErrorCode.CHANNEL_FULL, opcode=Opcode.LIST_QUEUES)
        assert names(c) == ["q", "q.dlq"]
        broker.faults.fail_next(3, code=ErrorCode.CHANNEL_FULL, opcode=Opcode.ENQUEUE)
        assert c.enqueue("q", None, b"x")
        broker.faults.fail_next(2, code=ErrorCode.CHANNEL_FULL, opcode=Opcode.ENQUEUE)
        assert all(r.is_success for r in c.enqueue_many([("q", None, b"1"), ("q", None, b"2")]))
        assert c.get_stats("q").depth == 3


def test_channel_full_gives_up_at_request_timeout(broker: Broker) -> None:
    with Client(broker.address, request_timeout=0.5) as c:
        c.create_queue("q")
        broker.faults.fail_next(10_000, code=ErrorCode.CHANNEL_FULL, opcode=Opcode.GET_CONFIG)
        t0 = time.monotonic()
        with pytest.raises(E.ChannelFullError):
            c.get_config("k")
        assert time.monotonic() - t0 < 5
        broker.faults.fail_next(10_000, code=ErrorCode.CHANNEL_FULL, opcode=Opcode.ENQUEUE)
        fut = c.enqueue_nowait("q", None, b"x")
        with pytest.raises(E.ChannelFullError):
            fut.result(10)
        broker.faults.reset()


def test_other_whole_request_errors_are_not_retried(broker: Broker) -> None:
    with Client(broker.address) as c:
        c.create_queue("q")
        broker.faults.fail_next(1, code=ErrorCode.INTERNAL_ERROR, opcode=Opcode.ENQUEUE)
        with pytest.raises(E.InternalServerError):
            c.enqueue("q", None, b"x")
        assert c.enqueue("q", None, b"y")
        assert c.get_stats("q").depth == 1  # the refused one was not sent again


# --------------------------------------------------------------- consumers


def test_consumer_resubscribes_after_broker_drops_it(broker: Broker) -> None:
    with Client(broker.address, reconnect_initial_delay=0.05, reconnect_max_delay=0.2) as c:
        c.create_queue("q")
        with c.consume("q") as consumer:
            c.enqueue("q", None, b"before")
            m = consumer.get(timeout=10)
            assert m is not None and m.payload == b"before"
            consumer.ack(m)
            assert consumer.flush(10)
            broker.faults.close_all()
            assert settle(lambda: c.get_stats("q").active_consumers == 1)
            c.enqueue("q", None, b"after")
            m = consumer.get(timeout=10)
            assert m is not None and m.payload == b"after"


def test_idle_consumer_without_keepalive_outlives_the_request_timeout(broker: Broker) -> None:
    # The subscribe waits for ConsumeOk with a read timeout; if that timeout stayed on the
    # socket, the reader (which blocks in recv when keepalive is off) would give up on an
    # idle, healthy subscription after request_timeout and resubscribe on a new connection.
    with Client(broker.address, keepalive_interval=None, request_timeout=0.3) as c:
        c.create_queue("q")
        with c.consume("q") as consumer:
            conn = consumer._state.conn
            assert conn is not None
            # idle for several request timeouts: the connection must not die (the wait is the check)
            assert not wait_until(lambda: conn.dead or consumer._state.conn is not conn, timeout=1.2)
            c.enqueue("q", None, b"late")
            m = consumer.get(timeout=10)
            assert m is not None and m.payload == b"late"
            assert consumer._state.conn is conn


def test_client_close_ends_a_consumer_blocked_in_another_thread(broker: Broker) -> None:
    c = Client(broker.address)
    c.create_queue("q")
    consumer = c.consume("q")
    got: list[Any] = []
    ended = threading.Event()

    def iterate() -> None:
        got.extend(consumer)  # blocks in next() until the consumer is closed
        ended.set()

    t = threading.Thread(target=iterate, daemon=True)
    t.start()
    assert wait_until(lambda: consumer._state.waiting == 1)
    c.close()
    assert ended.wait(10), "the iterating thread was not released by close()"
    assert got == [] and consumer.closed
    assert wait_until(lambda: broker.connection_count == 0)


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
                lc.enqueue("q", None, b"on leader")
                assert lc.get_stats("q").active_consumers == 1
            m = consumer.get(timeout=10)
            assert m is not None and m.payload == b"on leader"
        assert settle(lambda: c.get_stats("q").active_consumers == 0)


def test_not_leader_without_address_is_retried(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    # Was: cleared by a 0.3 s timer. Now the refusal is lifted only once the consumer was
    # observed retrying (two refusals), so the test fails if a NotLeader without an address
    # is not retried, and cannot pass before any retry happened.
    refusals: list[BaseException] = []
    retried = threading.Event()
    refused = Subscription.refused

    def counting(self: Subscription, exc: BaseException, now: float) -> Any:
        refusals.append(exc)
        if len(refusals) >= 2:
            retried.set()
        return refused(self, exc, now)

    monkeypatch.setattr(Subscription, "refused", counting)
    broker.faults.not_leader()
    with Client(broker.address, request_timeout=10) as c:
        c.create_queue("q")

        def lift() -> None:
            if retried.wait(10):
                broker.faults.clear_not_leader()

        threading.Thread(target=lift, daemon=True).start()
        with c.consume("q") as consumer:
            assert len(refusals) >= 2 and all(isinstance(e, E.NotLeaderError) for e in refusals)
            c.enqueue("q", None, b"x")
            m = consumer.get(timeout=10)
            assert m is not None and m.payload == b"x"


def test_not_leader_gives_up_after_request_timeout(broker: Broker) -> None:
    broker.faults.not_leader()
    with Client(broker.address, request_timeout=0.5) as c:
        t0 = time.monotonic()
        with pytest.raises(E.NotLeaderError):
            c.consume("q")
        assert time.monotonic() - t0 < 5


def test_backpressure_keeps_memory_bounded(broker: Broker) -> None:
    with Client(broker.address, consumer_buffer=16) as c:
        c.create_queue("bp")
        n = 5000  # 20 MiB: more than socket buffers hold
        c.enqueue_many([("bp", None, b"x" * 4096) for _ in range(n)])
        # The buffer holds at most its capacity plus the frames of one socket read (256 KiB).
        bound = 16 + 256 * 1024 // 4096
        with c.consume("bp") as consumer:
            # Was: time.sleep(1.0). Now: wait for the reader to stop (buffer full, reading paused).
            assert wait_until(lambda: consumer._state.buffer.paused, timeout=10)
            assert consumer.buffered <= bound
            # the server was held back: wait for its lease count to settle, then it must be below n
            last: list[int] = []

            def settled() -> bool:
                last.append(c.get_stats("bp").in_flight)
                return len(last) >= 5 and len(set(last[-5:])) == 1

            assert wait_until(settled, timeout=10, interval=0.05)
            in_flight = last[-1]
            assert in_flight < n
            assert consumer.buffered <= bound and consumer._state.buffer.paused
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
                c.enqueue("a", None, b"%d" % i)
                c.enqueue_nowait("b", None, b"%d" % i)
                m = consumer.get(timeout=10)
                assert m is not None and m.payload == b"%d" % i
                if i % 2:
                    c.ack(m.queue, m.id)
                else:
                    consumer.ack(m)
            assert consumer.flush(10)
        assert c.flush(10)
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
        mid = c.enqueue("big", {"h": "v"}, payload)
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
        res = c.enqueue_many([("q", None, payload)] * 8)  # 24 MiB: must take several frames
        assert all(r.is_success for r in res)
        futs = [c.enqueue_nowait("q", None, payload) for _ in range(8)]
        ids = {f.result(60) for f in futs} | {r.message_id for r in res}
        assert len(ids) == 16
        assert c.get_stats("q").depth == 16


# -------------------------------------------------------------------- TLS


def _pem(p: Path) -> bytes:
    return Path(p).read_bytes()


def test_tls_with_ca(broker_factory, pki) -> None:  # type: ignore[no-untyped-def]
    b = broker_factory(tls_cert=pki.server_cert, tls_key=pki.server_key)
    with Client(b.address, ca_cert=_pem(pki.ca_cert)) as c:
        c.create_queue("q")
        assert c.enqueue("q", None, b"secure")
        with c.consume("q") as consumer:
            m = consumer.get(timeout=10)
            assert m is not None and m.payload == b"secure"


def test_tls_rejects_unknown_ca(broker_factory, pki) -> None:  # type: ignore[no-untyped-def]
    b = broker_factory(tls_cert=pki.server_cert, tls_key=pki.server_key)
    with pytest.raises(E.ConnectError, match="TLS"):
        Client(b.address, ca_cert=_pem(pki.other_ca_cert), connect_timeout=5)
    with pytest.raises(E.ConnectError):  # system trust store does not know the test CA
        Client(b.address, tls=True, connect_timeout=5)


def test_tls_verifies_hostname(broker_factory, pki) -> None:  # type: ignore[no-untyped-def]
    b = broker_factory(host="127.0.0.1", tls_cert=pki.server_cert, tls_key=pki.server_key)
    with Client(f"localhost:{b.port}", ca_cert=_pem(pki.ca_cert), connect_timeout=5) as c:
        # the test certificate names localhost and 127.0.0.1
        c.create_queue("h")
        assert names(c) == ["h", "h.dlq"]


def test_plain_client_against_tls_server_is_a_clear_connect_error(broker_factory, pki) -> None:  # type: ignore[no-untyped-def]
    b = broker_factory(tls_cert=pki.server_cert, tls_key=pki.server_key)
    with pytest.raises(E.ConnectError, match="TLS"):
        Client(b.address, connect_timeout=5)


def test_mtls(broker_factory, pki) -> None:  # type: ignore[no-untyped-def]
    b = broker_factory(tls_cert=pki.server_cert, tls_key=pki.server_key, tls_ca=pki.ca_cert)
    with Client(
        b.address, ca_cert=_pem(pki.ca_cert), client_cert=_pem(pki.client_cert), client_key=_pem(pki.client_key)
    ) as c:
        c.create_queue("m")
        assert c.enqueue("m", None, b"x")
        assert c.get_stats("m").depth == 1
    with pytest.raises(E.FilaConnectionError):
        Client(b.address, ca_cert=_pem(pki.ca_cert), connect_timeout=5)
    with pytest.raises(E.FilaConnectionError):
        Client(
            b.address,
            ca_cert=_pem(pki.ca_cert),
            client_cert=_pem(pki.other_client_cert),
            client_key=_pem(pki.other_client_key),
            connect_timeout=5,
        )


def test_cert_without_key_is_a_clear_error(pki) -> None:  # type: ignore[no-untyped-def]
    # 0.3.0's message when client credentials come without TLS
    with pytest.raises(ValueError, match="client_cert and client_key require ca_cert or tls=True"):
        Client("localhost:1", client_cert=_pem(pki.client_cert), client_key=_pem(pki.client_key))
    # ours, where 0.3.0 silently ignored a lone half of the pair
    with pytest.raises(ValueError, match="client_cert was given without client_key"):
        Client("localhost:1", tls=True, client_cert=_pem(pki.client_cert))
    with pytest.raises(ValueError, match="client_key was given without client_cert"):
        Client("localhost:1", ca_cert=_pem(pki.ca_cert), client_key=_pem(pki.client_key))
    with pytest.raises(ValueError, match="PEM"):
        Client("localhost:1", ca_cert=b"garbage")


def test_private_key_never_lands_in_a_file(pki, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    # the TLS context (with the key) is built before connecting; nothing listens there
    with pytest.raises(E.ConnectError):
        Client(
            f"127.0.0.1:{port}",
            ca_cert=_pem(pki.ca_cert),
            client_cert=_pem(pki.client_cert),
            client_key=_pem(pki.client_key),
            connect_timeout=2,
        )
    assert list(tmp_path.iterdir()) == []


def test_tempfile_fallback_removes_key(pki, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import tempfile

    from fila import _tls

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(_tls.sys, "platform", "darwin")
    created: list[str] = []
    mkstemp = tempfile.mkstemp

    def spy(*a: Any, **kw: Any) -> Any:
        fd, path = mkstemp(*a, **kw)
        created.append(path)
        return fd, path

    monkeypatch.setattr(tempfile, "mkstemp", spy)
    ctx = _tls.make_ssl_context(False, _pem(pki.ca_cert), _pem(pki.client_cert), _pem(pki.client_key))
    assert ctx is not None
    assert len(created) == 1 and created[0].startswith(str(tmp_path))  # the fallback was really taken
    assert list(tmp_path.iterdir()) == []
