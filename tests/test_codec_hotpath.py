"""Hot-path codec behaviour, run on each twin through the ``codec`` fixture."""

from __future__ import annotations

import copy
import dataclasses
import os
import pickle
import subprocess
import sys
from types import ModuleType
from typing import Any

import pytest

from fila.errors import DecodeError
from fila.errors import EncodeError
from fila.protocol import constants
from fila.protocol import pure

# id, headers, payload, fairness_key, attempt_count, queue, weight, throttle_keys, enqueued_at, leased_at
MSG_ARGS: tuple[Any, ...] = ("id-1", {"k": "v"}, b"hello", "tenant", 1, "orders", 2, ["t"], 10, 20)
FIELD_NAMES = (
    "id",
    "headers",
    "payload",
    "fairness_key",
    "attempt_count",
    "queue",
    "weight",
    "throttle_keys",
    "enqueued_at",
    "leased_at",
)


def values(msg: Any) -> tuple[Any, ...]:
    """A message's field values in order (twin-independent)."""
    return tuple(getattr(msg, f.name) for f in dataclasses.fields(msg))


def delivery_payload(*messages: Any) -> bytes:
    return pure.encode_delivery(1, list(messages))[10:]


def one_delivery_frame(request_id: int, message_id: str) -> bytes:
    return pure.encode_delivery(request_id, [pure.ConsumeMessage(message_id, {}, b"x", "", 0, "q")])


# ---------------------------------------------------------------- inputs


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_decoders_take_any_bytes_like(codec: ModuleType, wrap: Any) -> None:
    msg = codec.ConsumeMessage(*MSG_ARGS)
    assert codec.decode_delivery(wrap(delivery_payload(msg))) == [msg]
    result = pure.encode_enqueue_result(1, [(0, "a"), (0x42, "")])[10:]
    assert codec.decode_enqueue_result(wrap(result)) == [(0, "a"), (0xFF, "")]
    codes = pure.encode_ack_result(1, [0, 1, 0x10, 0x11, 0xFF])[10:]
    assert codec.decode_ack_result(wrap(codes)) == [0, 1, 0x10, 0xFF, 0xFF]
    assert codec.decode_nack_result(wrap(codes)) == [0, 1, 0x10, 0xFF, 0xFF]


def test_decode_of_a_memoryview_slice(codec: ModuleType) -> None:
    msg = codec.ConsumeMessage(*MSG_ARGS)
    framed = b"junk" + delivery_payload(msg) + b"trailing bytes are ignored"
    assert codec.decode_delivery(memoryview(framed)[4:]) == [msg]


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_encoders_take_any_bytes_like_payload(codec: ModuleType, wrap: Any) -> None:
    wire = codec.encode_enqueue(5, [("q", {"a": "b"}, wrap(b"abc"))])
    assert wire == pure.encode_enqueue(5, [("q", {"a": "b"}, b"abc")])
    assert pure.decode_enqueue(wire[10:]) == [("q", {"a": "b"}, b"abc")]


def test_decode_errors_name_field_and_offset(codec: ModuleType) -> None:
    payload = delivery_payload(pure.ConsumeMessage(*MSG_ARGS))
    with pytest.raises(DecodeError, match=r"reading Delivery\.queue at offset 12"):
        codec.decode_delivery(payload[:14])
    with pytest.raises(DecodeError, match=r"reading Delivery\.enqueued_at at offset 56"):
        codec.decode_delivery(payload[:60])
    with pytest.raises(DecodeError, match="invalid string: not valid UTF-8"):
        codec.decode_delivery(payload[:6] + b"\xff" + payload[7:])
    with pytest.raises(DecodeError, match="exceeds maximum allowed 1000000"):
        codec.decode_ack_result(b"\x00\x0f\x42\x41")


# -------------------------------------------------------- ConsumeMessage


def test_message_is_the_0_3_0_dataclass_shape(codec: ModuleType) -> None:
    cls = codec.ConsumeMessage
    assert codec.Message is cls and cls.__name__ == "ConsumeMessage"
    assert dataclasses.is_dataclass(cls)
    fields = dataclasses.fields(cls)
    assert tuple(f.name for f in fields) == FIELD_NAMES
    missing = dataclasses.MISSING
    assert [f.default for f in fields] == [missing] * 6 + [0, None, 0, 0]
    assert cls.__match_args__ == FIELD_NAMES
    assert cls.__dataclass_params__.frozen and cls.__dataclass_params__.eq


def test_message_construction(codec: ModuleType) -> None:
    msg = codec.ConsumeMessage(*MSG_ARGS)
    assert values(msg) == MSG_ARGS
    assert codec.ConsumeMessage(**dict(zip(FIELD_NAMES, MSG_ARGS, strict=True))) == msg
    short = codec.ConsumeMessage("i", {}, b"", "fk", 0, "q")
    assert values(short) == ("i", {}, b"", "fk", 0, "q", 0, None, 0, 0)
    with pytest.raises(TypeError):
        codec.ConsumeMessage("i", {}, b"", "fk", 0)  # queue is required
    with pytest.raises(TypeError):
        codec.ConsumeMessage(*MSG_ARGS, 1)


def test_message_dataclass_functions(codec: ModuleType) -> None:
    msg = codec.ConsumeMessage(*MSG_ARGS)
    assert dataclasses.asdict(msg) == dict(zip(FIELD_NAMES, MSG_ARGS, strict=True))
    assert dataclasses.astuple(msg) == MSG_ARGS
    other = dataclasses.replace(msg, id="id-2", weight=7)
    assert type(other) is type(msg)
    assert values(other) == ("id-2", *MSG_ARGS[1:6], 7, *MSG_ARGS[7:])
    match msg:
        case codec.ConsumeMessage(message_id, headers, payload):
            assert (message_id, headers, payload) == MSG_ARGS[:3]
        case _:
            pytest.fail("no match")


def test_message_eq_hash_repr_pickle(codec: ModuleType) -> None:
    msg = codec.ConsumeMessage(*MSG_ARGS)
    assert msg == codec.ConsumeMessage(*MSG_ARGS)
    assert not msg != codec.ConsumeMessage(*MSG_ARGS)
    assert msg != dataclasses.replace(msg, leased_at=21)
    assert msg != MSG_ARGS
    with pytest.raises(TypeError):
        hash(msg)  # the headers dict (and the throttle_keys list) are unhashable
    hashable = codec.ConsumeMessage("i", None, b"", "", 0, "q")
    assert hash(hashable) == hash(("i", None, b"", "", 0, "q", 0, None, 0, 0))
    assert repr(msg) == (
        "ConsumeMessage(id='id-1', headers={'k': 'v'}, payload=b'hello', fairness_key='tenant', "
        "attempt_count=1, queue='orders', weight=2, throttle_keys=['t'], enqueued_at=10, leased_at=20)"
    )
    for clone in (pickle.loads(pickle.dumps(msg)), copy.copy(msg), copy.deepcopy(msg)):
        assert clone == msg and type(clone) is type(msg)


def test_message_twins_agree(cython_codec: ModuleType) -> None:
    py, cy = pure.ConsumeMessage(*MSG_ARGS), cython_codec.ConsumeMessage(*MSG_ARGS)
    assert repr(py) == repr(cy)
    assert dataclasses.fields(py) == dataclasses.fields(cy)
    assert dataclasses.asdict(py) == dataclasses.asdict(cy)
    assert py != cy  # like two dataclasses: equal only within one class


def test_message_is_immutable(codec: ModuleType) -> None:
    msg = codec.ConsumeMessage(*MSG_ARGS)
    for name, value in (("id", "other"), ("throttle_keys", []), ("extra", 1)):
        with pytest.raises(dataclasses.FrozenInstanceError, match=f"cannot assign to field '{name}'"):
            setattr(msg, name, value)
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot delete field 'id'"):
        del msg.id
    assert values(msg) == MSG_ARGS


def test_message_repr_does_not_dump_a_big_payload(codec: ModuleType) -> None:
    msg = codec.ConsumeMessage("i", {}, b"x" * (1 << 20), "", 0, "q")
    text = repr(msg)
    assert len(text) < 300 and "1048576 bytes" in text


def test_decoded_messages_own_their_throttle_keys(codec: ModuleType) -> None:
    msg = pure.ConsumeMessage("i", {}, b"", "fk", 0, "q", 1, ["a", "b"])
    empty = pure.ConsumeMessage("j", {}, b"", "fk", 0, "q", 1, [])
    reader = codec.FrameReader(decode_deliveries=True)
    (frame,) = reader.feed(pure.encode_delivery(1, [msg, msg, empty, empty]))
    got = frame.messages
    assert got[0] == got[1] and got[0] != got[2]  # before any throttle_keys read
    assert repr(got[2]).endswith("throttle_keys=[], enqueued_at=0, leased_at=0)")
    assert pickle.loads(pickle.dumps(got[3])).throttle_keys == []
    assert [m.throttle_keys for m in got] == [["a", "b"], ["a", "b"], [], []]
    assert all(type(m.throttle_keys) is list for m in got)
    got[0].throttle_keys.append("mutated")
    got[2].throttle_keys.append("mutated")
    assert got[1].throttle_keys == ["a", "b"] and got[3].throttle_keys == []
    (frame,) = reader.feed(pure.encode_delivery(1, [msg]))  # the reader's cache was not touched either
    assert frame.messages[0].throttle_keys == ["a", "b"]


def test_frame_eq_repr(codec: ModuleType) -> None:
    frame = codec.Frame(0x14, 0, 7, b"abc")
    assert frame == pure.Frame(0x14, 0, 7, b"abc")
    assert frame != codec.Frame(0x14, 0, 8, b"abc")
    assert repr(frame) == "Frame(opcode=0x14 DELIVERY, flags=0x00, request_id=7, payload=<3 bytes>)"
    assert frame.messages is None
    with pytest.raises(TypeError):
        hash(frame)


# ----------------------------------------------------------- FrameReader


def test_reader_splits_anywhere(codec: ModuleType) -> None:
    stream = b"".join(one_delivery_frame(3, f"m{i}") for i in range(5))
    reader = codec.FrameReader()
    frames: list[Any] = []
    for i in range(len(stream)):
        frames += reader.feed(stream[i : i + 1])
    assert [pure.decode_delivery(f.payload)[0].id for f in frames] == [f"m{i}" for i in range(5)]
    assert reader.buffered == 0 and reader.pending_streams == 0


def test_reader_decode_deliveries(codec: ModuleType) -> None:
    ack = pure.encode_ack_result(9, [0])
    last = pure.ConsumeMessage("b", {}, b"y" * 50, "", 0, "q")
    stream = one_delivery_frame(3, "a") + ack + pure.encode_delivery(3, [last], 20)
    reader = codec.FrameReader(decode_deliveries=True)
    frames = reader.feed(bytearray(stream))
    assert [f.opcode for f in frames] == [0x14, 0x17, 0x14]
    assert frames[0].messages[0].id == "a"
    assert frames[1].messages is None
    assert frames[2].messages[0].payload == b"y" * 50 and frames[2].flags == 0
    with pytest.raises(EncodeError, match="decode_deliveries=True needs reassemble=True"):
        codec.FrameReader(reassemble=False, decode_deliveries=True)


def test_reader_bad_delivery_fails_the_reader(codec: ModuleType) -> None:
    reader = codec.FrameReader(decode_deliveries=True)
    bad = pure.encode_frame(0x14, 1, b"\x00\x00\x00\x01\x00")
    with pytest.raises(DecodeError, match="Delivery.message_id"):
        reader.feed(bad)
    with pytest.raises(DecodeError, match="frame reader stopped after an earlier error"):
        reader.feed(b"")


def test_reader_limits_and_failed_state(codec: ModuleType) -> None:
    reader = codec.FrameReader(max_frame_size=100)
    assert reader.max_frame_size == 100
    assert reader.feed(b"\x00\x00\x00") == [] and reader.buffered == 3
    with pytest.raises(DecodeError, match="frame too large: 255 bytes exceeds max 100 bytes"):
        reader.feed(b"\xff\x00")
    assert reader.buffered == 0
    with pytest.raises(DecodeError, match=r"frame reader stopped .*frame too large"):
        reader.feed(b"")
    with pytest.raises(DecodeError, match="less than the 6-byte frame header"):
        codec.FrameReader().feed(b"\x00\x00\x00\x05" + b"\x00" * 5)
    reader = codec.FrameReader(max_frame_size=0)
    assert reader.max_frame_size == 16 * 1024 * 1024
    reader.max_frame_size = 4096
    assert reader.max_frame_size == 4096
    with pytest.raises(EncodeError):
        reader.max_frame_size = 3


def test_reader_continuation_limits(codec: ModuleType) -> None:
    def part(rid: int, flags: int, payload: bytes, opcode: int = 0x14) -> bytes:
        return (6 + len(payload)).to_bytes(4, "big") + bytes([opcode, flags]) + rid.to_bytes(4, "big") + payload

    reader = codec.FrameReader(max_pending_streams=2)
    assert reader.feed(part(1, 1, b"a") + part(2, 1, b"b") + part(1, 0, b"c")) == [codec.Frame(0x14, 0, 1, b"ac")]
    assert reader.pending_streams == 1
    with pytest.raises(DecodeError, match="too many in-flight continuation streams: 3 exceeds max 2"):
        reader.feed(part(3, 1, b"x") + part(4, 1, b"y"))
    with pytest.raises(DecodeError, match="continuation opcode mismatch for request_id 1: initial 0x14, got 0x17"):
        codec.FrameReader().feed(part(1, 1, b"a") + part(1, 0, b"b", 0x17))
    with pytest.raises(DecodeError, match="reassembled payload too large for request_id 1: 4 bytes exceeds max 3"):
        codec.FrameReader(max_reassembled_size=3).feed(part(1, 1, b"ab") + part(1, 0, b"cd"))
    raw = codec.FrameReader(reassemble=False).feed(part(1, 1, b"a") + part(1, 0, b"b"))
    assert [(f.flags, f.payload) for f in raw] == [(1, b"a"), (0, b"b")]


def test_reader_large_partial_frame_is_not_recopied(codec: ModuleType) -> None:
    frame = pure.encode_frame(0x14, 1, b"z" * 200_000)
    reader = codec.FrameReader()
    for start in range(0, len(frame) - 1000, 1000):
        assert reader.feed(frame[start : start + 1000]) == []
    frames = reader.feed(frame[reader.buffered :])
    assert len(frames) == 1 and frames[0].payload == b"z" * 200_000


# ------------------------------------------------------------ round trips


def test_one_mib_payload_round_trip(codec: ModuleType) -> None:
    payload = bytes(range(256)) * 4096
    wire = codec.encode_enqueue(11, [("q", {"h": "v"}, payload)])
    assert len(wire) == 10 + 4 + 3 + 2 + 6 + 4 + len(payload)
    (frame,) = codec.FrameReader().feed(wire)
    assert pure.decode_enqueue(frame.payload) == [("q", {"h": "v"}, payload)]
    delivery = pure.encode_delivery(2, [pure.ConsumeMessage("i", {}, payload, "", 0, "q")])
    (frame,) = codec.FrameReader(decode_deliveries=True).feed(delivery)
    assert frame.messages[0].payload == payload


def test_over_16_mib_payload_uses_continuation(codec: ModuleType) -> None:
    payload = b"\xab" * (17 * 1024 * 1024)
    wire = codec.encode_enqueue(12, [("q", None, payload)])
    assert wire[5] == 1  # first frame carries CONTINUATION
    assert int.from_bytes(wire[:4], "big") == 16 * 1024 * 1024
    reader = codec.FrameReader()
    frames: list[Any] = []
    view = memoryview(wire)
    for start in range(0, len(wire), 1 << 20):
        frames += reader.feed(view[start : start + (1 << 20)])
    assert len(frames) == 1 and frames[0].flags == 0
    assert pure.decode_enqueue(frames[0].payload) == [("q", {}, payload)]


def test_small_max_frame_size_splits_like_pure(codec: ModuleType) -> None:
    items = [("queue", f"message-id-{i}") for i in range(20)]
    for mfs in (7, 10, 50):
        assert codec.encode_ack(1, items, mfs) == pure.encode_ack(1, items, mfs)
        assert codec.encode_ack(1, items, max_frame_size=mfs) == pure.encode_ack(1, items, mfs)


# ----------------------------------------------------- Reader (pure only)


def test_reader_primitives() -> None:
    data = (
        b"\x07\x01\x02\x00\x03\x00\x00\x00\x04"
        + (2**64 - 1).to_bytes(8, "big")
        + (-5).to_bytes(8, "big", signed=True)
        + b"\x3f\xf0\x00\x00\x00\x00\x00\x00"
        + b"\x00\x02hi\x01\x00\x01x\x00\x00\x00\x02ab"
        + b"\x00\x01\x00\x01k\x00\x01v\x00\x02\x00\x01a\x00\x00"
    )
    r = pure.Reader(bytearray(data))
    assert [r.read_u8(), r.read_error_code(), r.read_bool(), r.read_u16(), r.read_u32()] == [7, 1, True, 3, 4]
    assert [r.read_u64(), r.read_i64(), r.read_f64()] == [2**64 - 1, -5, 1.0]
    assert [r.read_string(), r.read_optional_string(), r.read_bytes()] == ["hi", "x", b"ab"]
    assert r.read_string_map() == {"k": "v"}
    assert r.read_string_list() == ["a", ""]
    assert r.remaining == 0 and r.pos == len(data)
    with pytest.raises(DecodeError, match=r"need 1 bytes, have 0 \(reading tail at offset"):
        r.read_u8("tail")


@pytest.mark.parametrize(
    ("data", "method", "message"),
    [
        (b"\x00\x02\x00\x01k", "read_string_map", r"need 2 bytes, have 0 \(reading m value at offset 5\)"),
        (b"\x00\x01\x00\x02k", "read_string_map", r"need 2 bytes, have 1 \(reading m key at offset 4\)"),
        (b"\x00\x01\x00\x01\xff\x00\x00", "read_string_map", r"not valid UTF-8 \(reading m key at offset 4\)"),
        (b"\x00", "read_string_list", r"need 2 bytes, have 1 \(reading m count at offset 0\)"),
        (b"\x00\x02\x00\x00\x00", "read_string_list", r"need 2 bytes, have 1 \(reading m item at offset 4\)"),
    ],
)
def test_reader_compound_reads_name_the_failing_part(data: bytes, method: str, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        getattr(pure.Reader(data), method)("m")


def test_reader_fixed_names_the_field_that_does_not_fit() -> None:
    from struct import Struct

    st = Struct(">IQQ")
    assert pure.Reader(bytes(20)).read_fixed(st, ("a", "b", "c")) == (0, 0, 0)
    with pytest.raises(DecodeError, match=r"need 8 bytes, have 6 \(reading c at offset 12\)"):
        pure.Reader(bytes(18)).read_fixed(st, ("a", "b", "c"))


# ------------------------------------------------------ constants, package


def test_error_codes_normalise_from_one_table(codec: ModuleType) -> None:
    known = {int(c) for c in constants.ErrorCode}
    for byte in range(256):
        expected = byte if byte in known else 0xFF
        assert constants.normalize_error_code(byte) == expected == constants.ERROR_CODE_BY_BYTE[byte]
    every = bytes(range(256))
    codes = pure.encode_ack_result(1, list(every))[10:]
    assert codec.decode_ack_result(codes) == list(constants.ERROR_CODE_BY_BYTE)
    result = pure.encode_enqueue_result(1, [(b, "") for b in every])[10:]
    assert [c for c, _ in codec.decode_enqueue_result(result)] == list(constants.ERROR_CODE_BY_BYTE)


def test_importing_the_constants_does_not_load_the_codec() -> None:
    code = (
        "import sys, fila.protocol, fila.protocol.constants\n"
        "loaded = [m for m in ('fila.protocol.pure', 'fila.protocol.messages', 'fila._speedups._codec')"
        " if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "from fila.protocol import ConsumeMessage, IMPLEMENTATION, decode_body\n"
        "assert ConsumeMessage.__module__ == ('fila.protocol.pure' if IMPLEMENTATION == 'python'"
        " else 'fila._speedups._codec'), ConsumeMessage.__module__\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ))
