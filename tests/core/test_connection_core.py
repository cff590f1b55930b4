"""ConnectionCore: request ids, waiters, routing of answers and Deliveries, the handshake (bytes in, no socket)."""

from __future__ import annotations

import itertools
import logging

import pytest

from fila._core import ConnectionCore
from fila._core import NullWaiter
from fila._core import connection_lost
from fila.errors import ClientClosedError
from fila.errors import ConnectionLostError
from fila.errors import DecodeError
from fila.errors import FilaConnectionError
from fila.errors import NotLeaderError
from fila.errors import ProtocolError
from fila.errors import RequestTimeoutError
from fila.errors import UnauthorizedError
from fila.errors import UnsupportedVersionError
from fila.protocol import MAX_FRAME_SIZE
from fila.protocol import ErrorCode
from fila.protocol import Opcode
from fila.protocol import encode_message
from fila.protocol.messages import decode_body

from .helpers import Recorder
from .helpers import control
from .helpers import delivery
from .helpers import error_frame
from .helpers import handshake_ok
from .helpers import one_frame
from .helpers import settings

PONG = Opcode.PONG


def core(with_deliveries: bool = False) -> tuple[ConnectionCore, list[list]]:
    got: list[list] = []
    c = ConnectionCore(settings(), got.append if with_deliveries else None, now=0.0)
    return c, got


# ------------------------------------------------------------------ request ids


def test_request_ids_are_fresh_and_never_zero() -> None:
    c, _ = core()
    ids = [c.next_id() for _ in range(1000)]
    assert len(set(ids)) == 1000 and 0 not in ids


def test_request_ids_wrap_within_u32_skipping_zero() -> None:
    c, _ = core()
    c._ids = itertools.count(0xFFFF_FFFD)
    assert [c.next_id() for _ in range(4)] == [0xFFFF_FFFE, 0xFFFF_FFFF, 1, 2]


# ----------------------------------------------------------------- answering


def test_an_answer_completes_its_waiter_once() -> None:
    c, _ = core()
    w = Recorder()
    rid = c.next_id()
    c.register(rid, w)
    c.receive(control(PONG, rid))
    assert [f.request_id for f in w.frames] == [rid] and w.frames[0].opcode == PONG
    assert rid not in c.pending
    c.receive(control(PONG, rid))  # a duplicate answer: nobody waits for it any more
    assert len(w.frames) == 1 and not w.errors


def test_answers_are_matched_by_request_id_not_by_order() -> None:
    c, _ = core()
    a, b = Recorder(), Recorder()
    ra, rb = c.next_id(), c.next_id()
    c.register(ra, a)
    c.register(rb, b)
    c.receive(encode_message("GetConfigResponse", rb, {"error_code": 0, "value": "B"}))
    c.receive(encode_message("GetConfigResponse", ra, {"error_code": 0, "value": "A"}))
    assert decode_body("GetConfigResponse", a.frames[0].payload)["value"] == "A"
    assert decode_body("GetConfigResponse", b.frames[0].payload)["value"] == "B"


def test_frames_split_anywhere_are_reassembled() -> None:
    c, _ = core()
    w = Recorder()
    rid = c.next_id()
    c.register(rid, w)
    data = control(Opcode.PONG, 999) + encode_message("GetConfigResponse", rid, {"error_code": 0, "value": "v"})
    for i in range(len(data)):
        c.receive(data[i : i + 1])
    assert len(w.frames) == 1


def test_unknown_request_id_is_ignored() -> None:
    c, _ = core()
    w = Recorder()
    rid = c.next_id()
    c.register(rid, w)
    c.receive(control(PONG, rid + 1000))
    c.receive(encode_message("ListQueuesResponse", 4242, {"error_code": 0, "cluster_node_count": 0, "queues": []}))
    assert not w.frames and not w.errors and c.pending == {rid: w}


def test_unknown_opcode_is_ignored_even_with_a_pending_request_id() -> None:
    c, _ = core()
    w = Recorder()
    rid = c.next_id()
    c.register(rid, w)
    c.receive(control(0x77, rid))  # not an answer opcode: must not complete the waiter
    c.receive(control(Opcode.PING, rid))  # the server never pings; a Ping is no answer either
    assert not w.frames and rid in c.pending
    c.receive(control(PONG, rid))
    assert [f.opcode for f in w.frames] == [PONG]


def test_an_error_frame_answers_its_request() -> None:
    c, _ = core()
    w = Recorder()
    rid = c.next_id()
    c.register(rid, w)
    c.receive(error_frame(rid, ErrorCode.CHANNEL_FULL, "overloaded"))
    assert w.frames[0].opcode == Opcode.ERROR


def test_malformed_bytes_raise_decode_error() -> None:
    c, _ = core()
    with pytest.raises(DecodeError):
        c.receive(b"\x00\x00\x00\x02\x00\x00")  # length below the 6-byte header


def test_ping_frame_is_answered_by_pong_and_completes_nobody() -> None:
    c, _ = core()
    frame = one_frame(c.ping_frame())
    assert frame.opcode == Opcode.PING and frame.request_id != 0
    assert isinstance(c.pending[frame.request_id], NullWaiter)
    c.receive(control(PONG, frame.request_id))
    assert not c.pending


# ------------------------------------------------------------------ deliveries


def test_deliveries_are_routed_by_the_consume_request_id() -> None:
    c, got = core(with_deliveries=True)
    rid, data = c.consume_frame("orders")
    frame = one_frame(data)
    assert frame.opcode == Opcode.CONSUME and frame.request_id == rid == c.consume_id
    assert decode_body("ConsumeRequest", frame.payload) == {"queue": "orders"}
    c.receive(delivery(rid, "m1") + delivery(rid + 1, "other") + delivery(rid, "m2", "m3"))
    # One read's Deliveries reach on_delivery together, in order; another id's are dropped.
    assert [[m.id for m in batch] for batch in got] == [["m1", "m2", "m3"]]
    c.receive(delivery(rid, "m4"))
    assert [m.id for m in got[1]] == ["m4"]
    assert got[0][0].queue == "q" and got[0][0].headers == {"h": "v"} and got[0][0].throttle_keys == []


def test_a_delivery_never_answers_the_consume_request() -> None:
    # A Delivery carries the Consume's request id; it must not be taken as the ConsumeOk.
    c, got = core(with_deliveries=True)
    w = Recorder()
    rid, _ = c.consume_frame("q")
    c.register(rid, w)
    c.receive(delivery(rid, "early"))
    assert not w.frames and rid in c.pending and len(got) == 1
    c.receive(control(Opcode.CONSUME_OK, rid))
    assert [f.opcode for f in w.frames] == [Opcode.CONSUME_OK]


def test_cancel_names_the_consume_request_id_and_ends_routing() -> None:
    c, got = core(with_deliveries=True)
    rid, _ = c.consume_frame("q")
    cancel = one_frame(c.cancel_frame())
    # the server cancels by the Consume's request id (0.3.0 sent a fresh id: defect D2)
    assert (cancel.opcode, cancel.request_id, cancel.payload) == (Opcode.CANCEL_CONSUME, rid, b"")
    assert c.consume_id == -1
    c.receive(delivery(rid, "late"))
    assert got == []


def test_a_core_without_subscription_ignores_deliveries() -> None:
    c, _ = core(with_deliveries=False)
    w = Recorder()
    rid = c.next_id()
    c.register(rid, w)
    c.receive(delivery(rid, "m"))
    assert not w.frames and rid in c.pending


# ------------------------------------------------------------ a dead connection


def test_register_on_a_dead_core_fails_at_once() -> None:
    c, _ = core()
    c.fail_all(ConnectionLostError("gone"))
    w = Recorder(sent=False)
    c.register(c.next_id(), w)
    assert not c.pending and not w.frames
    (err,) = w.errors
    assert isinstance(err, ConnectionLostError) and err.may_have_been_applied is False


def test_fail_all_fails_every_waiter_once_with_may_have_been_applied() -> None:
    c, _ = core()
    sent, unsent = Recorder(sent=True), Recorder(sent=False)
    c.register(c.next_id(), sent)
    c.register(c.next_id(), unsent)
    cause = ConnectionLostError("reset by peer")
    c.fail_all(cause)
    c.fail_all(ConnectionLostError("again"))
    assert c.dead is cause and not c.pending
    assert len(sent.errors) == 1 and len(unsent.errors) == 1
    assert sent.errors[0].may_have_been_applied is True
    assert unsent.errors[0].may_have_been_applied is False
    assert sent.errors[0] is not unsent.errors[0] and sent.errors[0].__cause__ is cause


@pytest.mark.parametrize(
    ("cause", "expected"),
    [
        (OSError("reset"), ConnectionLostError),
        (ClientClosedError("closed"), ClientClosedError),
        (RequestTimeoutError("slow"), RequestTimeoutError),
        (DecodeError("garbage"), ProtocolError),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else type(v).__name__,
)
def test_connection_lost_keeps_the_kind_of_failure(cause: BaseException, expected: type) -> None:
    err = connection_lost(cause, True)
    assert type(err) is expected
    if isinstance(err, FilaConnectionError):
        assert err.may_have_been_applied is True


def test_end_fails_waiters_with_the_cause_and_logs_it(caplog: pytest.LogCaptureFixture) -> None:
    c, _ = core()
    w = Recorder(sent=True)
    c.register(c.next_id(), w)
    with caplog.at_level(logging.DEBUG, logger="fila"):
        cause = c.end(OSError("reset by peer"), closing=False)
    assert isinstance(cause, ConnectionLostError) and "127.0.0.1:5555" in str(cause) and "reset" in str(cause)
    assert c.dead is cause and isinstance(w.errors[0], ConnectionLostError) and w.errors[0].may_have_been_applied
    assert any("reset by peer" in r.getMessage() for r in caplog.records)


def test_end_while_closing_tells_waiters_the_client_was_closed() -> None:
    c, _ = core()
    w = Recorder()
    c.register(c.next_id(), w)
    assert isinstance(c.end(OSError("x"), closing=True), ClientClosedError)
    assert isinstance(w.errors[0], ClientClosedError)


def test_end_keeps_a_fila_error_as_the_cause() -> None:
    c, _ = core()
    own = ConnectionLostError("10.0.0.1:5555 did not answer a keepalive Ping within 1.0s")
    assert c.end(own, closing=False) is own
    c2, _ = core()
    bad = ProtocolError(0x0E, "malformed data")
    w = Recorder()
    c2.register(c2.next_id(), w)
    assert c2.end(bad, closing=False) is bad
    assert type(w.errors[0]) is ProtocolError and "malformed data" in str(w.errors[0])


# ------------------------------------------------------------------- handshake


def test_accept_handshake_ok() -> None:
    c, _ = core()
    info = c.accept_handshake(one_frame(handshake_ok(node_id=7, max_frame_size=1 << 20)))
    assert (info.node_id, info.max_frame_size) == (7, 1 << 20) == (c.node_id, c.max_frame_size)


def test_accept_handshake_zero_frame_size_means_the_default() -> None:
    c, _ = core()
    assert c.accept_handshake(one_frame(handshake_ok(max_frame_size=0))).max_frame_size == MAX_FRAME_SIZE


def test_accept_handshake_error_frame_raises_its_error() -> None:
    c, _ = core()
    with pytest.raises(UnauthorizedError) as info:
        c.accept_handshake(one_frame(error_frame(0, ErrorCode.UNAUTHORIZED, "API key required")))
    assert info.value.message == "API key required" and "127.0.0.1:5555" in str(info.value)
    with pytest.raises(NotLeaderError) as nl:
        c.accept_handshake(one_frame(error_frame(0, ErrorCode.NOT_LEADER, "no", {"leader_addr": "h:1", "x": "y"})))
    assert nl.value.leader_addr == "h:1" and nl.value.metadata == {"leader_addr": "h:1", "x": "y"}


def test_accept_handshake_wrong_opcode() -> None:
    c, _ = core()
    with pytest.raises(ProtocolError) as info:
        c.accept_handshake(one_frame(control(PONG, 0)))
    assert info.value.code == ErrorCode.INVALID_FRAME and "0x04" in str(info.value)


def test_accept_handshake_wrong_version() -> None:
    c, _ = core()
    with pytest.raises(UnsupportedVersionError) as info:
        c.accept_handshake(one_frame(handshake_ok(version=2)))
    assert isinstance(info.value, ProtocolError) and info.value.code == ErrorCode.UNSUPPORTED_VERSION
    assert "version 2" in str(info.value)
