"""The generic body codec: every FIBP body round-trips; errors name field and offset."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from fila.errors import DecodeError
from fila.errors import EncodeError
from fila.protocol import messages
from fila.protocol import pure
from fila.protocol.constants import FLAG_CONTINUATION
from fila.protocol.constants import Opcode

_INTS = {
    "u8": st.integers(0, 0xFF),
    "u16": st.integers(0, 0xFFFF),
    "u32": st.integers(0, 0xFFFF_FFFF),
    "u64": st.integers(0, 2**64 - 1),
    "i64": st.integers(-(2**63), 2**63 - 1),
}
_text = st.text(max_size=20)


def _strategy(field: messages.Field) -> st.SearchStrategy[Any]:
    t = field.type
    if t in _INTS:
        return _INTS[t]
    if t == "error_code":
        return st.sampled_from([*range(0x11), 0xFF])
    if t == "f64":
        return st.floats(allow_nan=False)
    if t == "bool":
        return st.booleans()
    if t == "string":
        return _text
    if t == "optional<string>":
        return st.none() | _text
    if t == "bytes":
        return st.binary(max_size=64)
    if t == "map<string,string>":
        return st.dictionaries(_text, _text, max_size=4)
    if t == "string[]":
        return st.lists(_text, max_size=4)
    assert t == "array"
    return st.lists(_fields(field.items), max_size=3)


def _fields(fields: tuple[messages.Field, ...]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({f.name: _strategy(f) for f in fields})


@pytest.mark.parametrize("type_name", sorted(messages.BODY_TYPES))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_every_body_round_trips(type_name: str, data: st.DataObject) -> None:
    body = messages.BODY_TYPES[type_name]
    values = data.draw(_fields(body.fields))
    payload = messages.encode_body(type_name, values)
    assert messages.decode_body(type_name, payload) == values
    assert messages.decode_body(int(body.opcode), payload + b"\x00trailing") == values
    frame = messages.encode_message(type_name, 7, values)
    (got,) = pure.FrameReader().feed(frame)
    assert (got.opcode, got.request_id, got.payload) == (body.opcode, 7, payload)


@settings(max_examples=30, deadline=None)
@given(payload=st.binary(min_size=0, max_size=300), mfs=st.integers(7, 64))
def test_encode_frame_splits_and_reader_joins(payload: bytes, mfs: int) -> None:
    wire = pure.encode_frame(Opcode.ENQUEUE, 3, payload, max_frame_size=mfs)
    reader = pure.FrameReader(reassemble=False)
    raw = reader.feed(wire)
    assert all(len(f.payload) <= mfs - 6 for f in raw)
    assert all(f.flags & FLAG_CONTINUATION for f in raw[:-1]) and raw[-1].flags == 0
    assert b"".join(f.payload for f in raw) == payload
    (joined,) = pure.FrameReader().feed(wire)
    assert joined.payload == payload


def test_decode_error_names_field_and_offset() -> None:
    payload = messages.encode_body("GetConfigResponse", {"error_code": 0, "value": "hello"})
    with pytest.raises(DecodeError) as info:
        messages.decode_body("GetConfigResponse", payload[:-2])
    err = info.value
    assert err.kind == "IncompleteFrame"
    assert err.detail == "incomplete frame: need 5 bytes, have 3"
    assert str(err) == "incomplete frame: need 5 bytes, have 3 (reading GetConfigResult.value at offset 3)"


def test_decode_bad_utf8_names_field() -> None:
    with pytest.raises(DecodeError, match=r"invalid string: not valid UTF-8 \(reading Consume.queue at offset 2\)"):
        messages.decode_body("ConsumeRequest", b"\x00\x02\xc3\x28")


def test_f64_special_values_round_trip() -> None:
    stats = {
        "error_code": 0,
        "depth": 1,
        "in_flight": 2,
        "active_fairness_keys": 3,
        "active_consumers": 4,
        "quantum": 5,
        "leader_node_id": 6,
        "replication_count": 7,
        "per_key_stats": [],
        "per_throttle_stats": [{"key": "k", "tokens": math.nan, "rate_per_second": -0.0, "burst": math.inf}],
    }
    back = messages.decode_body("GetStatsResponse", messages.encode_body("GetStatsResponse", stats))
    t = back["per_throttle_stats"][0]
    assert math.isnan(t["tokens"]) and struct.pack(">d", t["rate_per_second"]) == struct.pack(">d", -0.0)
    assert t["burst"] == math.inf


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"key": 1, "value": "v"}, "SetConfig.key must be str, got int"),
        ({"key": "k", "value": "\ud800"}, "SetConfig.value cannot be encoded as UTF-8"),
        ({"key": "k"}, "SetConfig.value is missing"),
        ({"key": "k" * 70000, "value": ""}, "SetConfig.key is 70000 bytes of UTF-8"),
    ],
)
def test_encode_errors_name_the_field(fields: dict[str, Any], match: str) -> None:
    with pytest.raises(EncodeError, match=match):
        messages.encode_message("SetConfigRequest", 1, fields)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        (
            {"dlq_queue": "q", "count": -1},
            r"Redrive.count is -1; it must be an integer from 0 to 18446744073709551615",
        ),
        ({"dlq_queue": "q", "count": 2**64}, r"Redrive.count is 18446744073709551616"),
        ({"dlq_queue": "q", "count": "5"}, r"Redrive.count must be int, got str"),
    ],
)
def test_encode_errors_for_integers(fields: dict[str, Any], match: str) -> None:
    with pytest.raises(EncodeError, match=match):
        messages.encode_message("RedriveRequest", 1, fields)


def test_encode_errors_for_bodies_and_request_ids() -> None:
    with pytest.raises(EncodeError, match="no FIBP body type 'Nope'"):
        messages.encode_body("Nope", {})
    with pytest.raises(EncodeError, match="request_id is 4294967296"):
        messages.encode_message("ConsumeRequest", 2**32, {"queue": "q"})
    with pytest.raises(EncodeError, match="max_frame_size is 6"):
        messages.encode_message("ConsumeRequest", 1, {"queue": "q"}, max_frame_size=6)
    with pytest.raises(EncodeError, match="SetAcl.permissions must be a list or tuple, got str"):
        messages.encode_message("SetAclRequest", 1, {"key_id": "k", "permissions": "produce"})
