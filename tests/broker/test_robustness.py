"""Bad client input never crashes the broker or disturbs other connections."""

from __future__ import annotations

import socket

from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from fila.protocol.constants import Opcode
from fila.protocol.pure import encode_frame
from fila.testing import Broker

from .conftest import Wire

# Nagle off: the pipelined junk gets several answers, each of which would
# otherwise wait ~40 ms for the client's delayed ACK (SERVER.md §16.1).
_BROKER = Broker(lease_check_interval=0.02, nagle=False)

opcodes = st.sampled_from([int(o) for o in Opcode] + [0x00, 0x06, 0x40, 0x77])


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(frames=st.lists(st.tuples(opcodes, st.integers(0, 3), st.binary(max_size=64)), max_size=6))
def test_random_frames_after_the_handshake(frames: list[tuple[int, int, bytes]]) -> None:
    if not _BROKER.running:
        _BROKER.start()
    w = Wire(_BROKER)
    try:
        data = b"".join(encode_frame(op, rid, payload) for op, rid, payload in frames)
        w.send(data + encode_frame(Opcode.PING, 0xABCD, b""))
        while True:  # the Ping behind the junk is answered unless a frame closed the connection
            try:
                f = w.recv_frame()
            except AssertionError:
                break
            if f.opcode == Opcode.PONG and f.request_id == 0xABCD:
                break
    except (TimeoutError, ConnectionError):
        pass
    finally:
        w.close()
    probe = Wire(_BROKER)
    try:
        assert probe.call("Ping")[0] == Opcode.PONG
    finally:
        probe.close()


@settings(max_examples=100, deadline=None)
@given(junk=st.binary(max_size=80))
def test_random_bytes_instead_of_a_handshake(junk: bytes) -> None:
    if not _BROKER.running:
        _BROKER.start()
    s = socket.create_connection((_BROKER.host, _BROKER.port), timeout=5)
    try:
        s.sendall(junk)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(5)
        while s.recv(4096):
            pass
    except OSError:
        pass
    finally:
        s.close()
    probe = Wire(_BROKER)
    try:
        assert probe.call("Ping")[0] == Opcode.PONG
    finally:
        probe.close()


def teardown_module() -> None:
    _BROKER.stop()
