"""SERVER.md §2 and §4: frames, limits, continuations, ordering, Ping/Disconnect."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fila.protocol.constants import ErrorCode
from fila.protocol.constants import Opcode
from fila.protocol.messages import decode_body
from fila.protocol.messages import encode_message
from fila.protocol.pure import encode_frame

from .conftest import Wire


def _header(length: int, opcode: int, flags: int, rid: int) -> bytes:
    return length.to_bytes(4, "big") + bytes([opcode, flags]) + rid.to_bytes(4, "big")


def test_ping_pong_bytes(wire: Wire) -> None:
    wire.send(bytes.fromhex("00000006030000 00002a".replace(" ", "")))
    f = wire.recv_frame()
    assert (f.opcode, f.flags, f.request_id, f.payload) == (Opcode.PONG, 0, 42, b"")


def test_ping_payload_is_ignored(wire: Wire) -> None:
    wire.send(encode_frame(Opcode.PING, 1, b"junk"))
    assert wire.recv_frame().opcode == Opcode.PONG


def test_oversize_frame_closes_without_a_frame(wire: Wire) -> None:
    wire.send((16 * 1024 * 1024 + 1).to_bytes(4, "big"))
    assert wire.assert_closed() == []


def test_largest_legal_length_prefix_is_accepted(wire: Wire) -> None:
    # A frame of exactly 16 MiB is legal: send its header, then a Ping behind it.
    body = b"\x00" * (16 * 1024 * 1024 - 6)
    wire.send(_header(16 * 1024 * 1024, 0x77, 0, 3) + body)
    body_resp = decode_body(Opcode.ERROR, wire.response(3, timeout=30).payload)
    assert body_resp["message"] == "unknown or unsupported opcode: 0x77"


def test_length_below_six_closes_without_a_frame(wire: Wire) -> None:
    wire.send(bytes.fromhex("000000050300000000"))
    assert wire.assert_closed() == []


@pytest.mark.parametrize("opcode", [0x00, 0x02, 0x04, 0x11, 0x13, 0x14, 0x17, 0x19, 0x40, 0x4D, 0x99, 0xFE, 0xFC, 0x01])
def test_unknown_or_server_opcodes_get_invalid_frame_and_the_connection_stays(wire: Wire, opcode: int) -> None:
    wire.send(encode_frame(opcode, 11, b""))
    f = wire.response(11)
    body = decode_body(f.opcode, f.payload)
    assert body == {
        "error_code": ErrorCode.INVALID_FRAME,
        "message": f"unknown or unsupported opcode: 0x{opcode:02x}",
        "metadata": {},
    }
    assert wire.call("Ping")[0] == Opcode.PONG


@pytest.mark.parametrize(
    ("opcode", "op", "payload", "detail"),
    [
        (Opcode.ENQUEUE, "enqueue", b"\x00\x00\x00\x01\x00", "incomplete frame: need 2 bytes, have 1"),
        (Opcode.ENQUEUE, "enqueue", b"\x00\x0f\x42\x41", "decoded count 1000001 exceeds maximum allowed 1000000"),
        (Opcode.CONSUME, "consume", b"\x00\x02\xff\xfe", "invalid string: not valid UTF-8"),
        (Opcode.ACK, "ack", b"\x00\x00", "incomplete frame: need 4 bytes, have 2"),
        (Opcode.NACK, "nack", b"\x00\x00\x00\x01\x00\x01q\x00\x01x", "incomplete frame: need 2 bytes, have 0"),
        (Opcode.CREATE_QUEUE, "create_queue", b"\x00\x01q", "incomplete frame: need 1 bytes, have 0"),
        (Opcode.DELETE_QUEUE, "delete_queue", b"", "incomplete frame: need 2 bytes, have 0"),
        (Opcode.GET_STATS, "get_stats", b"\x00", "incomplete frame: need 2 bytes, have 1"),
        (Opcode.SET_CONFIG, "set_config", b"\x00\x01k", "incomplete frame: need 2 bytes, have 0"),
        (Opcode.GET_CONFIG, "get_config", b"", "incomplete frame: need 2 bytes, have 0"),
        (Opcode.LIST_CONFIG, "list_config", b"\x00\x05ab", "incomplete frame: need 5 bytes, have 2"),
        (Opcode.REDRIVE, "redrive", b"\x00\x01q\x00", "incomplete frame: need 8 bytes, have 1"),
        (Opcode.CREATE_API_KEY, "create_api_key", b"\x00\x00", "incomplete frame: need 8 bytes, have 0"),
        (Opcode.REVOKE_API_KEY, "revoke_api_key", b"", "incomplete frame: need 2 bytes, have 0"),
        (Opcode.SET_ACL, "set_acl", b"\x00\x00\x00\x01", "incomplete frame: need 2 bytes, have 0"),
        (Opcode.GET_ACL, "get_acl", b"\x00\x03ab", "incomplete frame: need 3 bytes, have 2"),
    ],
)
def test_malformed_bodies_get_invalid_op_frame(wire: Wire, opcode: int, op: str, payload: bytes, detail: str) -> None:
    wire.send(encode_frame(opcode, 21, payload))
    body = decode_body(Opcode.ERROR, wire.response(21).payload)
    assert body["error_code"] == ErrorCode.INVALID_FRAME
    assert body["message"] == f"invalid {op} frame: {detail}"
    assert wire.call("Ping")[0] == Opcode.PONG


@pytest.mark.parametrize("opcode", [Opcode.LIST_QUEUES, Opcode.LIST_API_KEYS])
def test_payload_is_not_read_for_list_ops(wire: Wire, opcode: int) -> None:
    wire.send(encode_frame(opcode, 5, b"\xff\xff garbage"))
    assert wire.response(5).opcode == opcode - 1


def test_trailing_bytes_are_ignored(wire: Wire) -> None:
    wire.create_queue("q")
    wire.send(encode_message("GetStatsRequest", 8, {"queue": "q"}))
    payload = encode_message("GetStatsRequest", 9, {"queue": "q"})[10:] + b"extra"
    wire.send(encode_frame(Opcode.GET_STATS, 9, payload))
    assert wire.response(8).opcode == Opcode.GET_STATS_RESULT
    assert wire.response(9).opcode == Opcode.GET_STATS_RESULT


def test_continuation_frames_are_reassembled_and_interleave(wire: Wire) -> None:
    wire.create_queue("q")
    payload = encode_message("EnqueueRequest", 0, {"messages": [{"queue": "q", "headers": {}, "payload": b"abcdef"}]})[
        10:
    ]
    a, b, c = payload[:5], payload[5:9], payload[9:]
    wire.send(_header(6 + len(a), Opcode.ENQUEUE, 1, 30) + a)
    wire.send(encode_message("Ping", 31))  # other frames are served while a stream is open
    assert wire.response(31).opcode == Opcode.PONG
    wire.send(_header(6 + len(b), Opcode.ENQUEUE, 0x81, 30) + b)  # flag bits other than 0 are ignored
    wire.send(_header(6 + len(c), Opcode.ENQUEUE, 0, 30) + c)
    f = wire.response(30)
    assert f.opcode == Opcode.ENQUEUE_RESULT and f.flags == 0
    assert decode_body(f.opcode, f.payload)["results"][0]["error_code"] == 0
    assert wire.stats("q")["depth"] == 1


def test_unknown_opcode_in_continuation_is_answered_after_the_last_chunk(wire: Wire) -> None:
    wire.send(_header(8, 0x70, 1, 40) + b"ab")
    wire.assert_silent(0.2)
    wire.send(_header(8, 0x70, 0, 40) + b"cd")
    body = decode_body(Opcode.ERROR, wire.response(40).payload)
    assert body["message"] == "unknown or unsupported opcode: 0x70"


def test_continuation_opcode_mismatch_closes(wire: Wire) -> None:
    wire.send(_header(8, Opcode.ENQUEUE, 1, 50) + b"ab")
    wire.send(_header(8, Opcode.ACK, 0, 50) + b"cd")
    assert wire.assert_closed() == []


def test_more_than_64_open_streams_closes(wire: Wire) -> None:
    wire.send(b"".join(_header(7, Opcode.ENQUEUE, 1, rid) + b"x" for rid in range(100, 164)))
    assert wire.call("Ping")[0] == Opcode.PONG
    wire.send(_header(7, Opcode.ENQUEUE, 1, 999) + b"x")
    assert wire.assert_closed() == []


def test_pipelined_responses_come_back_in_request_order(wire: Wire) -> None:
    wire.create_queue("q")
    batch = b"".join(
        encode_message("GetStatsRequest", rid, {"queue": "q"}) if rid % 3 else encode_message("Ping", rid)
        for rid in range(1000, 1200)
    )
    wire.send(batch)
    got = [wire.recv_frame().request_id for _ in range(200)]
    assert got == list(range(1000, 1200))


def test_disconnect_closes_and_drops_frames_behind_it(wire: Wire) -> None:
    wire.send(encode_message("Disconnect", 1) + encode_message("Ping", 2))
    assert wire.assert_closed() == []


def test_bad_input_on_one_connection_does_not_disturb_another(connect: Callable[..., Wire]) -> None:
    good = connect()
    good.create_queue("q")
    for junk in (b"\xff\xff\xff\xff", b"\x00\x00\x00\x02ab", b"\x00\x00\x00\x08\x10\x00\x00\x00\x00\x01\xff\xff"):
        bad = connect()
        bad.send(junk)
    assert good.call("Ping")[0] == Opcode.PONG
    assert good.stats("q")["depth"] == 0
