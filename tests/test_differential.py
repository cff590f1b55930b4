"""Differential tests: the compiled twin against the pure reference, byte for byte,
and both hot paths against the body table of :mod:`fila.protocol.messages`.

Random valid inputs must encode to identical bytes; random, truncated and
corrupted payloads must decode to equal values or fail with the same
exception type and message; any chunking of a frame stream must come out of
both frame readers as the same frames. The hot-path functions are the only
hand-written copies of a body layout: each must agree with the generic codec
on the same inputs. The compiled twin's constants must be generated from
:mod:`fila.protocol.constants`.
"""

from __future__ import annotations

import dataclasses
import itertools
import runpy
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck
from hypothesis import assume
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from fila.protocol import messages as table
from fila.protocol import pure

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def normalize(value: Any) -> Any:
    """A twin-independent form of a codec result (ConsumeMessage and Frame become tuples)."""
    name = type(value).__name__
    if name == "ConsumeMessage":
        return (name, tuple(normalize(getattr(value, f.name)) for f in dataclasses.fields(value)))
    if name == "Frame":
        return ("Frame", value.opcode, value.flags, value.request_id, value.payload, normalize(value.messages))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [normalize(v) for v in value])
    if isinstance(value, dict):
        return ("dict", [(k, normalize(v)) for k, v in value.items()])
    return (type(value).__name__, value)


def outcome(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    try:
        return ("ok", normalize(fn(*args, **kwargs)))
    except Exception as exc:
        return ("error", type(exc), str(exc))


def same(name: str, cy: ModuleType, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    expected = outcome(getattr(pure, name), *args, **kwargs)
    got = outcome(getattr(cy, name), *args, **kwargs)
    assert got == expected, f"{name}: cython {got!r} != pure {expected!r}"
    return expected


# ------------------------------------------------------------------ strategies

texts = st.text(max_size=12) | st.sampled_from(["", "orders", "tenant-1", "é", "日本語", "\U0001f600"])
headers = st.none() | st.dictionaries(texts, texts, max_size=4)
payloads = st.binary(max_size=96).flatmap(lambda b: st.sampled_from([b, bytearray(b), memoryview(b)]))
request_ids = st.integers(min_value=0, max_value=0xFFFFFFFF)
frame_sizes = st.sampled_from([16 * 1024 * 1024, 0]) | st.integers(min_value=7, max_value=80)
enqueue_items = st.lists(st.tuples(texts, headers, payloads), max_size=6)
ack_items = st.lists(st.tuples(texts, texts), max_size=8)
nack_items = st.lists(st.tuples(texts, texts, texts), max_size=8)

messages = st.builds(
    pure.ConsumeMessage,
    texts,
    st.dictionaries(texts, texts, max_size=3),
    st.binary(max_size=40),
    texts,
    st.integers(0, 0xFFFFFFFF),
    texts,
    st.integers(0, 0xFFFFFFFF),
    st.lists(texts, max_size=3),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
)
# Delivery batches where the queue and the fairness key, weight and throttle
# keys repeat (the decoders reuse repeated sections: they must still be right)
repeating = st.tuples(messages, st.lists(st.tuples(texts, st.binary(max_size=8)), min_size=1, max_size=4)).map(
    lambda t: [dataclasses.replace(t[0], id=i, payload=p) for i, p in t[1]]
)


def delivery_payload(msgs: list[pure.ConsumeMessage]) -> bytes:
    return pure.encode_delivery(1, msgs)[10:]


def enqueue_result_payload(results: list[tuple[int, str]]) -> bytes:
    return pure.encode_enqueue_result(1, results)[10:]


def codes_payload(codes: list[int]) -> bytes:
    return pure.encode_ack_result(1, codes)[10:]


DECODERS = ["decode_delivery", "decode_enqueue_result", "decode_ack_result", "decode_nack_result"]
valid_payloads = st.one_of(
    st.lists(messages, max_size=3).map(lambda m: ("decode_delivery", delivery_payload(m))),
    repeating.map(lambda m: ("decode_delivery", delivery_payload(m))),
    st.lists(st.tuples(st.integers(0, 255), texts), max_size=4).map(
        lambda r: ("decode_enqueue_result", enqueue_result_payload(r))
    ),
    st.lists(st.integers(0, 255), max_size=8).map(lambda c: ("decode_ack_result", codes_payload(c))),
    st.lists(st.integers(0, 255), max_size=8).map(lambda c: ("decode_nack_result", codes_payload(c))),
)


# -------------------------------------------------------------------- encoders


@SETTINGS
@given(request_ids, enqueue_items, frame_sizes)
def test_encode_enqueue_identical(cython_codec: ModuleType, rid: int, items: list[Any], mfs: int) -> None:
    result = same("encode_enqueue", cython_codec, rid, items, mfs)
    assert result[0] == "ok"


@SETTINGS
@given(request_ids, ack_items, frame_sizes)
def test_encode_ack_identical(cython_codec: ModuleType, rid: int, items: list[Any], mfs: int) -> None:
    assert same("encode_ack", cython_codec, rid, items, max_frame_size=mfs)[0] == "ok"


@SETTINGS
@given(request_ids, nack_items, frame_sizes)
def test_encode_nack_identical(cython_codec: ModuleType, rid: int, items: list[Any], mfs: int) -> None:
    assert same("encode_nack", cython_codec, rid, tuple(items), mfs)[0] == "ok"


def test_continuation_split_identical(cython_codec: ModuleType) -> None:
    items = [("q" * 50, {"k": "v" * 30}, bytes(range(256)) * 3)] * 5
    for mfs in (7, 8, 9, 13, 64, 255, 1000, 4000):
        wire = same("encode_enqueue", cython_codec, 9, items, mfs)
        assert wire[0] == "ok"
        same("encode_ack", cython_codec, 9, [("queue", "id")] * 40, mfs)
        same("encode_nack", cython_codec, 9, [("queue", "id", "boom")] * 40, mfs)


hashable_odd = st.sampled_from([None, 0, -1, 1.5, True, b"x", "s", "\ud800", (), (1, 2)]) | st.builds(
    lambda n, c: c * n, st.integers(32767, 65537), st.sampled_from(["x", "é"])
)
odd_values = hashable_odd | st.sampled_from([bytearray(b"x"), [], {}, [1]])
odd_items = st.one_of(
    odd_values,
    st.tuples(odd_values | texts, odd_values | headers, odd_values | payloads),
    st.lists(odd_values | texts, max_size=4),
    st.tuples(texts, st.dictionaries(hashable_odd | texts, odd_values | texts, max_size=2), payloads),
)


@SETTINGS
@given(
    st.one_of(request_ids, odd_values, st.integers(min_value=-(2**70), max_value=2**70)),
    st.one_of(odd_values, st.lists(odd_items, max_size=3), st.tuples(odd_items, odd_items)),
    st.one_of(frame_sizes, odd_values, st.integers(-10, 10)),
)
def test_encode_errors_identical(cython_codec: ModuleType, rid: Any, items: Any, mfs: Any) -> None:
    same("encode_enqueue", cython_codec, rid, items, mfs)
    same("encode_ack", cython_codec, rid, items, mfs)
    same("encode_nack", cython_codec, rid, items, mfs)


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("encode_enqueue", (1, [("x" * 65536, None, b"")])),
        ("encode_enqueue", (1, [("q", {"k": "é" * 40000}, b"")])),
        ("encode_enqueue", (1, [("q", {str(i): "" for i in range(65536)}, b"")])),
        ("encode_enqueue", (1, [("q", {1: "v"}, b"")])),
        ("encode_enqueue", (1, [("q", {"k": 2}, b"")])),
        ("encode_enqueue", (1, [("q", None, "text")])),
        ("encode_enqueue", (1, [("q", [("k", "v")], b"")])),
        ("encode_enqueue", (1, [("q", "not a map", b"")])),
        ("encode_enqueue", (1, [("q", [], b"")])),
        ("encode_enqueue", (1, [["q", None, b"list item is fine"]])),
        ("encode_enqueue", (1, [("q", None)])),
        ("encode_enqueue", (1, [("\udc80", None, b"")])),
        ("encode_enqueue", (1, "not a list")),
        ("encode_enqueue", (-1, [])),
        ("encode_enqueue", (2**32, [])),
        ("encode_enqueue", ("1", [])),
        ("encode_enqueue", (True, [])),
        ("encode_enqueue", (1, [], 6)),
        ("encode_enqueue", (1, [], 2**32)),
        ("encode_enqueue", (1, [], True)),
        ("encode_ack", (1, [("q",)])),
        ("encode_ack", (1, [("q", 5)])),
        ("encode_ack", (1, [["q", "id"]])),
        ("encode_nack", (1, [("q", "id", None)])),
        ("encode_nack", (1, {"q": "id"})),
    ],
)
def test_encode_validation_identical(cython_codec: ModuleType, name: str, args: tuple[Any, ...]) -> None:
    same(name, cython_codec, *args)


def test_encode_generic_mapping_and_views(cython_codec: ModuleType) -> None:
    from collections import OrderedDict
    from types import MappingProxyType

    items: list[Any] = [
        ("q", OrderedDict([("b", "1"), ("a", "2")]), memoryview(b"abcdef")[::2]),
        ("q", MappingProxyType({"k": "v"}), memoryview(bytearray(b"xyz"))),
        ("q", {}, bytearray(b"123")),
    ]
    same("encode_enqueue", cython_codec, 3, items)
    same("encode_enqueue", cython_codec, 3, items[1:])


# -------------------------------------------------------------------- decoders


@SETTINGS
@given(st.sampled_from(DECODERS), st.binary(max_size=200))
def test_decode_random_bytes(cython_codec: ModuleType, name: str, data: bytes) -> None:
    same(name, cython_codec, data)


@SETTINGS
@given(st.sampled_from(DECODERS), st.binary(max_size=64))
def test_decode_random_with_plausible_count(cython_codec: ModuleType, name: str, data: bytes) -> None:
    same(name, cython_codec, b"\x00\x00\x00\x01" + data)
    same(name, cython_codec, b"\x00\x00\x00\x02" + data)


@settings(max_examples=60, deadline=None)
@given(valid_payloads)
def test_decode_every_prefix_and_corruption(cython_codec: ModuleType, case: tuple[str, bytes]) -> None:
    name, payload = case
    assert same(name, cython_codec, payload)[0] == "ok"
    same(name, cython_codec, bytearray(payload))
    same(name, cython_codec, memoryview(payload))
    for cut in range(len(payload)):
        same(name, cython_codec, payload[:cut])
    for index in range(len(payload)):
        for value in (0x00, 0xFF, 0x80, payload[index] ^ 0x01, 0xC3):
            corrupted = bytearray(payload)
            corrupted[index] = value
            same(name, cython_codec, bytes(corrupted))


@SETTINGS
@given(st.lists(messages, min_size=1, max_size=3), st.data())
def test_decode_delivery_invalid_utf8(
    cython_codec: ModuleType, msgs: list[pure.ConsumeMessage], data: st.DataObject
) -> None:
    payload = bytearray(delivery_payload(msgs))
    index = data.draw(st.integers(0, len(payload) - 1))
    payload[index : index + 1] = data.draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xe2\x82"]))
    same("decode_delivery", cython_codec, bytes(payload))


# --------------------------------------------------------------- frame reader


def frame_stream() -> st.SearchStrategy[bytes]:
    single = st.one_of(
        st.builds(lambda rid, items: pure.encode_ack(rid, items), request_ids, ack_items),
        st.builds(lambda rid, m: pure.encode_delivery(rid, m), st.integers(0, 3), st.lists(messages, max_size=2)),
        st.builds(
            lambda rid, items, mfs: pure.encode_enqueue(rid, items, mfs),
            st.integers(0, 3),
            enqueue_items,
            st.integers(7, 40),
        ),
        st.builds(
            lambda rid, m, mfs: pure.encode_delivery(rid, m, mfs),
            st.integers(0, 3),
            st.lists(messages, max_size=2),
            st.integers(7, 60),
        ),
        st.binary(max_size=24),
    )
    return st.lists(single, max_size=6).map(b"".join)


def feed_all(codec: ModuleType, chunks: list[bytes], **options: Any) -> list[Any]:
    reader = codec.FrameReader(**options)
    out: list[Any] = []
    for chunk in chunks:
        try:
            out.append(("frames", normalize(reader.feed(chunk)), reader.buffered, reader.pending_streams))
        except Exception as exc:
            out.append(("error", type(exc), str(exc)))
    return out


def chunked(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts})
    edges = [0, *points, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(edges)] + [b""]


reader_options = st.fixed_dictionaries(
    {},
    optional={
        "max_frame_size": st.sampled_from([0, 7, 20, 64, 1000, 16 * 1024 * 1024]),
        "max_pending_streams": st.integers(0, 3),
        "max_reassembled_size": st.integers(0, 200),
        "reassemble": st.booleans(),
    },
)


@SETTINGS
@given(frame_stream(), st.lists(st.integers(0, 10_000), max_size=8), reader_options, st.booleans())
def test_frame_reader_chunkings(
    cython_codec: ModuleType, stream: bytes, cuts: list[int], options: dict[str, Any], decode: bool
) -> None:
    if decode and options.get("reassemble", True):
        options["decode_deliveries"] = True
    chunks = chunked(stream, cuts)
    expected = feed_all(pure, chunks, **options)
    assert feed_all(cython_codec, chunks, **options) == expected
    views = [memoryview(bytearray(c)) for c in chunks]
    assert feed_all(cython_codec, views, **options) == expected  # type: ignore[arg-type]


@SETTINGS
@given(frame_stream(), st.data())
def test_frame_reader_byte_at_a_time_and_corruption(
    cython_codec: ModuleType, stream: bytes, data: st.DataObject
) -> None:
    assume(stream)
    corrupted = bytearray(stream)
    index = data.draw(st.integers(0, len(stream) - 1))
    corrupted[index] = data.draw(st.integers(0, 255))
    for candidate in (stream, bytes(corrupted)):
        chunks = [candidate[i : i + 1] for i in range(len(candidate))]
        for options in ({}, {"decode_deliveries": True}, {"reassemble": False}):
            assert feed_all(cython_codec, chunks, **options) == feed_all(pure, chunks, **options)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_frame_size": 6},
        {"max_frame_size": -1},
        {"max_frame_size": 2**32},
        {"max_frame_size": "16"},
        {"max_frame_size": True},
        {"max_reassembled_size": -1},
        {"max_reassembled_size": 1.0},
        {"max_pending_streams": -2},
        {"max_pending_streams": None},
        {"reassemble": False, "decode_deliveries": True},
    ],
)
def test_frame_reader_options_identical(cython_codec: ModuleType, kwargs: dict[str, Any]) -> None:
    expected = outcome(lambda: pure.FrameReader(**kwargs).max_frame_size)
    assert outcome(lambda: cython_codec.FrameReader(**kwargs).max_frame_size) == expected
    assert expected[0] == "error"


# ------------------------------------------------------- the table of layouts
# Each hot-path function is a hand-written copy of one layout of
# fila.protocol.messages; here each must agree with the generic codec.

DELIVERY_ITEM = [f.name for f in table.BODY_TYPES["DeliveryBatch"].fields[0].items]
ATTRIBUTE = {"message_id": "id"}  # wire name -> ConsumeMessage field, where they differ


def as_table_message(msg: Any) -> dict[str, Any]:
    """A message as the generic codec's DeliveryBatch item (in wire order)."""
    return {name: getattr(msg, ATTRIBUTE.get(name, name)) for name in DELIVERY_ITEM}


def agree(hot: Callable[..., Any], generic: Callable[..., Any], *args: Any) -> tuple[Any, ...]:
    """Both give the same result (generic's form) or fail the same way."""
    got, want = outcome(hot, *args), outcome(generic, *args)
    assert got == want, f"{hot.__qualname__}: hot path {got!r} != table {want!r}"
    return want


def table_decoder(type_name: str, convert: Callable[[dict[str, Any]], Any]) -> Callable[[Any], Any]:
    return lambda payload: convert(table.decode_body(type_name, payload))


TABLE_DECODERS = {
    "decode_delivery": table_decoder("DeliveryBatch", lambda b: b["messages"]),
    "decode_enqueue_result": table_decoder(
        "EnqueueResponse", lambda b: [(r["error_code"], r["message_id"]) for r in b["results"]]
    ),
    "decode_ack_result": table_decoder("AckResponse", lambda b: [r["error_code"] for r in b["results"]]),
    "decode_nack_result": table_decoder("NackResponse", lambda b: [r["error_code"] for r in b["results"]]),
    "decode_enqueue": table_decoder(
        "EnqueueRequest", lambda b: [(m["queue"], m["headers"], m["payload"]) for m in b["messages"]]
    ),
    "decode_ack": table_decoder("AckRequest", lambda b: [(i["queue"], i["message_id"]) for i in b["items"]]),
    "decode_nack": table_decoder(
        "NackRequest", lambda b: [(i["queue"], i["message_id"], i["error"]) for i in b["items"]]
    ),
}


def hot_decoder(codec: ModuleType, name: str) -> Callable[[Any], Any]:
    fn = getattr(codec, name)
    if name == "decode_delivery":
        return lambda payload: [as_table_message(m) for m in fn(payload)]
    return fn  # type: ignore[no-any-return]


table_payloads = st.one_of(
    valid_payloads,
    st.lists(st.tuples(texts, headers, st.binary(max_size=20)), max_size=3).map(
        lambda items: ("decode_enqueue", pure.encode_enqueue(1, items)[10:])
    ),
    ack_items.map(lambda items: ("decode_ack", pure.encode_ack(1, items)[10:])),
    nack_items.map(lambda items: ("decode_nack", pure.encode_nack(1, items)[10:])),
)


@settings(max_examples=150, deadline=None)
@given(table_payloads, st.data())
def test_decoders_agree_with_the_table(codec: ModuleType, case: tuple[str, bytes], data: st.DataObject) -> None:
    name, payload = case
    if name in ("decode_enqueue", "decode_ack", "decode_nack"):
        codec = pure  # the server side exists in the pure twin only
    hot, generic = hot_decoder(codec, name), TABLE_DECODERS[name]
    assert agree(hot, generic, payload)[0] == "ok"
    cut = data.draw(st.integers(0, max(0, len(payload) - 1)))
    agree(hot, generic, payload[:cut])
    if payload:
        corrupted = bytearray(payload)
        corrupted[data.draw(st.integers(0, len(payload) - 1))] = data.draw(st.sampled_from([0x00, 0xFF, 0x80, 0xC3]))
        agree(hot, generic, bytes(corrupted))


@SETTINGS
@given(request_ids, enqueue_items, ack_items, nack_items, frame_sizes)
def test_encoders_agree_with_the_table(
    codec: ModuleType, rid: int, enqueue: list[Any], acks: list[Any], nacks: list[Any], mfs: int
) -> None:
    def frame(type_name: str, body: dict[str, Any]) -> bytes:
        return table.encode_message(type_name, rid, body, max_frame_size=mfs)

    msgs = [{"queue": q, "headers": h, "payload": p} for q, h, p in enqueue]
    assert codec.encode_enqueue(rid, enqueue, mfs) == frame("EnqueueRequest", {"messages": msgs})
    assert codec.encode_ack(rid, acks, mfs) == frame(
        "AckRequest", {"items": [{"queue": q, "message_id": i} for q, i in acks]}
    )
    assert codec.encode_nack(rid, nacks, mfs) == frame(
        "NackRequest", {"items": [{"queue": q, "message_id": i, "error": e} for q, i, e in nacks]}
    )


@SETTINGS
@given(request_ids, st.lists(messages, max_size=3), st.lists(st.tuples(st.integers(0, 255), texts), max_size=4))
def test_server_side_encoders_agree_with_the_table(rid: int, msgs: list[Any], results: list[Any]) -> None:
    items = [as_table_message(m) for m in msgs]
    assert pure.encode_delivery(rid, msgs) == table.encode_message("DeliveryBatch", rid, {"messages": items})
    assert pure.encode_enqueue_result(rid, results) == table.encode_message(
        "EnqueueResponse", rid, {"results": [{"error_code": c, "message_id": i} for c, i in results]}
    )
    codes = [c for c, _ in results]
    for name, type_name in (("encode_ack_result", "AckResponse"), ("encode_nack_result", "NackResponse")):
        assert getattr(pure, name)(rid, codes) == table.encode_message(
            type_name, rid, {"results": [{"error_code": c} for c in codes]}
        )


# ------------------------------------------------------------------ constants

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT / "scripts" / "gen-pxd"
PXD = ROOT / "fila" / "_speedups" / "_constants.pxd"


@pytest.mark.skipif(not (GENERATOR.is_file() and PXD.is_file()), reason="needs the source tree (scripts/gen-pxd)")
def test_constants_pxd_is_generated_from_constants_py() -> None:
    expected = runpy.run_path(str(GENERATOR))["render"]()
    assert PXD.read_text(encoding="utf-8") == expected, "fila/_speedups/_constants.pxd is stale: run scripts/gen-pxd"
