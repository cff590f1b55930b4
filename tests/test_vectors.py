"""Golden vectors: frames made by the server's own codec, byte for byte.

Reads ``tests/vectors/fibp_vectors.json`` (a copy of the project's shared
vectors) or the file named by ``FILA_VECTORS_FILE``; any file of the same
schema works, since every type and field is mapped from the file's own
``types`` table. Every check runs on both codec twins where the twin has the
operation (the hot path), and on the generic body codec for every type.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from fila.errors import DecodeError
from fila.errors import EncodeError
from fila.protocol import messages
from fila.protocol import pure
from fila.protocol.constants import MAX_FRAME_SIZE

HERE = Path(__file__).resolve().parent
BUNDLED = HERE / "vectors" / "fibp_vectors.json"
# The server's vectors this copy was taken from: FILA_REFERENCE_VECTORS, else the
# project workspace's shared/vectors beside the checkout when there is one.
REFERENCE = Path(
    os.environ.get("FILA_REFERENCE_VECTORS") or HERE.parent.parent / "shared" / "vectors" / "fibp_vectors.json"
)
BUNDLED_SHA256 = "107f32c378aaa02b861b95352c5ae7d213924b69ee69c9093c1aeeb41f77753b"
VECTORS_PATH = Path(os.environ.get("FILA_VECTORS_FILE") or BUNDLED)
DATA: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
TYPES: dict[str, Any] = DATA["types"]


def _named(section: str) -> list[Any]:
    return [pytest.param(v, id=v["name"]) for v in DATA.get(section, [])]


VECTORS = {v["name"]: v for v in DATA.get("vectors", [])}

# --------------------------------------------------------------- JSON <-> values


def _float(value: Any) -> float:
    if isinstance(value, str):
        return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[value]
    return float(value)


def to_value(ftype: str, value: Any, field: dict[str, Any]) -> Any:
    """A JSON vector value as the Python value our codec takes and returns."""
    if ftype == "array":
        return [to_fields(field["items"], item) for item in value]
    if ftype == "bytes":
        return bytes.fromhex(value)
    if ftype == "f64":
        return _float(value)
    if ftype == "map<string,string>":
        return {k: v for k, v in value}
    if ftype in ("u8", "u16", "u32", "u64", "i64", "error_code"):
        assert isinstance(value, int) and not isinstance(value, bool)
        return value
    if ftype == "bool":
        assert isinstance(value, bool)
        return value
    if ftype in ("string", "optional<string>", "string[]"):
        return value
    raise AssertionError(f"vector schema type {ftype!r} is not mapped by this test")


def to_fields(layout: list[dict[str, Any]], values: dict[str, Any]) -> dict[str, Any]:
    assert list(values) == [f["name"] for f in layout], "fields out of wire order"
    return {f["name"]: to_value(f["type"], values[f["name"]], f) for f in layout}


def comparable(value: Any) -> Any:
    """Make floats comparable bit for bit (NaN, -0.0) and lists/dicts recursively."""
    if isinstance(value, float):
        return ("f64", struct.pack(">d", value)) if not math.isnan(value) else ("f64", "nan")
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [comparable(v) for v in value]
    return value


def frame_of(hexstr: str) -> tuple[int, int, int, int, bytes]:
    raw = bytes.fromhex(hexstr)
    length, opcode, flags, rid = struct.unpack_from(">IBBI", raw)
    assert length == len(raw) - 4
    return length, opcode, flags, rid, raw[10:]


# ------------------------------------------------------------------- the schema


def _layout(fields: tuple[messages.Field, ...]) -> list[dict[str, Any]]:
    out = []
    for f in fields:
        entry: dict[str, Any] = {"name": f.name, "type": f.type}
        if f.type == "array":
            entry["count"] = f.count_type
            entry["items"] = _layout(f.items)
        out.append(entry)
    return out


@pytest.mark.parametrize("type_name", sorted(TYPES))
def test_vectors_schema_type_is_mapped(type_name: str) -> None:
    """Every type of the file exists in our codec with the same opcode and layout."""
    assert type_name in messages.BODY_TYPES, f"our codec has no body type {type_name}"
    ours = messages.BODY_TYPES[type_name]
    spec = TYPES[type_name]
    assert [int(ours.opcode)] == spec["opcodes"]
    assert _layout(ours.fields) == spec["fields"]


def test_vectors_opcodes_and_error_codes_match() -> None:
    from fila.protocol.constants import ErrorCode

    by_opcode = {int(t.opcode): t for t in messages.BODY_TYPES.values()}
    for name, code in DATA["opcodes"].items():
        assert code in by_opcode, f"opcode {name}=0x{code:02x} unknown to our codec"
    ours = {c.value for c in ErrorCode}
    assert ours == set(DATA["error_codes"].values())


def test_vectors_constants_match() -> None:
    from fila.protocol import constants as c

    k = DATA["constants"]
    assert k["MAX_FRAME_SIZE"] == c.MAX_FRAME_SIZE
    assert k["HEADER_SIZE"] == c.HEADER_SIZE
    assert k["LENGTH_PREFIX_SIZE"] == c.LENGTH_PREFIX_SIZE
    assert k["FLAG_CONTINUATION"] == c.FLAG_CONTINUATION
    assert k["DEFAULT_MAX_REASSEMBLED_SIZE"] == c.DEFAULT_MAX_REASSEMBLED_SIZE
    assert k["DEFAULT_MAX_PENDING_STREAMS"] == c.DEFAULT_MAX_PENDING_STREAMS
    assert k["MAX_DECODED_COUNT"] == c.MAX_DECODED_COUNT


def test_vectors_bundled_copy_is_current() -> None:
    """The bundled copy is the one recorded here, and the reference's twin when the reference is at hand.

    Nothing else reads the reference: every other test uses the bundled copy,
    so the suite needs nothing outside the repository.
    """
    data = BUNDLED.read_bytes()
    if REFERENCE.is_file():
        assert data == REFERENCE.read_bytes(), f"tests/vectors is stale: copy {REFERENCE} again, update BUNDLED_SHA256"
    assert hashlib.sha256(data).hexdigest() == BUNDLED_SHA256, (
        "tests/vectors/fibp_vectors.json is not the recorded copy: if it was refreshed from the server's "
        "vectors on purpose, update BUNDLED_SHA256"
    )


# ---------------------------------------------------------- generic body codec


def _fields(v: dict[str, Any]) -> dict[str, Any]:
    return to_fields(TYPES[v["type"]]["fields"], v["fields"])


@pytest.mark.parametrize("v", _named("vectors"))
def test_vectors_encode_generic(v: dict[str, Any]) -> None:
    frame = messages.encode_message(v["type"], v["request_id"], _fields(v))
    assert v["flags"] == 0
    assert frame.hex() == v["frame_hex"]
    assert len(frame) == v["frame_len"]


@pytest.mark.parametrize("v", _named("vectors"))
def test_vectors_decode_generic(v: dict[str, Any], codec: ModuleType) -> None:
    length, opcode, flags, rid, payload = frame_of(v["frame_hex"])
    assert (opcode, flags, rid, len(payload)) == (v["opcode"], v["flags"], v["request_id"], v["payload_len"])
    frames = codec.FrameReader().feed(bytes.fromhex(v["frame_hex"]))
    assert len(frames) == 1
    f = frames[0]
    assert (f.opcode, f.flags, f.request_id, f.payload) == (opcode, flags, rid, payload)
    decoded = messages.decode_body(v["type"], f.payload)
    assert comparable(decoded) == comparable(_fields(v))


# -------------------------------------------------------------- hot path twins


def _hot_vectors(type_name: str) -> list[Any]:
    return [pytest.param(v, id=v["name"]) for v in DATA.get("vectors", []) if v["type"] == type_name]


def _message_fields(m: Any) -> dict[str, Any]:
    return {
        "message_id": m.id,
        "queue": m.queue,
        "headers": dict(m.headers),
        "payload": bytes(m.payload),
        "fairness_key": m.fairness_key,
        "weight": m.weight,
        "throttle_keys": m.throttle_keys,
        "attempt_count": m.attempt_count,
        "enqueued_at": m.enqueued_at,
        "leased_at": m.leased_at,
    }


@pytest.mark.parametrize("v", _hot_vectors("EnqueueRequest"))
def test_vectors_encode_enqueue(v: dict[str, Any], codec: ModuleType) -> None:
    msgs = [(m["queue"], m["headers"], m["payload"]) for m in _fields(v)["messages"]]
    assert codec.encode_enqueue(v["request_id"], msgs).hex() == v["frame_hex"]
    # None and {} both mean "no headers"; memoryview payloads are accepted.
    alt = [(q, h or None, memoryview(p)) for q, h, p in msgs]
    assert codec.encode_enqueue(v["request_id"], alt).hex() == v["frame_hex"]


@pytest.mark.parametrize("v", _hot_vectors("EnqueueRequest"))
def test_vectors_decode_enqueue_server_side(v: dict[str, Any]) -> None:
    payload = frame_of(v["frame_hex"])[4]
    expected = [(m["queue"], m["headers"], m["payload"]) for m in _fields(v)["messages"]]
    assert pure.decode_enqueue(payload) == expected


@pytest.mark.parametrize("v", _hot_vectors("AckRequest"))
def test_vectors_encode_ack(v: dict[str, Any], codec: ModuleType) -> None:
    items = [(i["queue"], i["message_id"]) for i in _fields(v)["items"]]
    assert codec.encode_ack(v["request_id"], items).hex() == v["frame_hex"]
    assert pure.decode_ack(frame_of(v["frame_hex"])[4]) == items


@pytest.mark.parametrize("v", _hot_vectors("NackRequest"))
def test_vectors_encode_nack(v: dict[str, Any], codec: ModuleType) -> None:
    items = [(i["queue"], i["message_id"], i["error"]) for i in _fields(v)["items"]]
    assert codec.encode_nack(v["request_id"], items).hex() == v["frame_hex"]
    assert pure.decode_nack(frame_of(v["frame_hex"])[4]) == items


@pytest.mark.parametrize("v", _hot_vectors("DeliveryBatch"))
def test_vectors_decode_delivery(v: dict[str, Any], codec: ModuleType) -> None:
    payload = frame_of(v["frame_hex"])[4]
    expected = _fields(v)["messages"]
    for data in (payload, bytearray(payload), memoryview(payload)):
        got = codec.decode_delivery(data)
        assert [_message_fields(m) for m in got] == expected
        assert all(type(m) is codec.ConsumeMessage and type(m.throttle_keys) is list for m in got)


@pytest.mark.parametrize("v", _hot_vectors("DeliveryBatch"))
def test_vectors_encode_delivery_server_side(v: dict[str, Any]) -> None:
    msgs = [
        pure.ConsumeMessage(
            m["message_id"],
            m["headers"],
            m["payload"],
            m["fairness_key"],
            m["attempt_count"],
            m["queue"],
            m["weight"],
            m["throttle_keys"],
            m["enqueued_at"],
            m["leased_at"],
        )
        for m in _fields(v)["messages"]
    ]
    assert pure.encode_delivery(v["request_id"], msgs).hex() == v["frame_hex"]


@pytest.mark.parametrize("v", _hot_vectors("EnqueueResponse"))
def test_vectors_enqueue_result(v: dict[str, Any], codec: ModuleType) -> None:
    payload = frame_of(v["frame_hex"])[4]
    expected = [(r["error_code"], r["message_id"]) for r in _fields(v)["results"]]
    assert codec.decode_enqueue_result(payload) == expected
    assert codec.decode_enqueue_result(memoryview(payload)) == expected
    assert pure.encode_enqueue_result(v["request_id"], expected).hex() == v["frame_hex"]


@pytest.mark.parametrize("v", _hot_vectors("AckResponse") + _hot_vectors("NackResponse"))
def test_vectors_ack_nack_result(v: dict[str, Any], codec: ModuleType) -> None:
    payload = frame_of(v["frame_hex"])[4]
    expected = [r["error_code"] for r in _fields(v)["results"]]
    if v["type"] == "AckResponse":
        assert codec.decode_ack_result(bytearray(payload)) == expected
        assert pure.encode_ack_result(v["request_id"], expected).hex() == v["frame_hex"]
    else:
        assert codec.decode_nack_result(bytearray(payload)) == expected
        assert pure.encode_nack_result(v["request_id"], expected).hex() == v["frame_hex"]


# ------------------------------------------------------------------ must_reject

_HOT_DECODERS = {
    "DeliveryBatch": "decode_delivery",
    "EnqueueResponse": "decode_enqueue_result",
    "AckResponse": "decode_ack_result",
    "NackResponse": "decode_nack_result",
}
_SERVER_DECODERS = {
    "EnqueueRequest": pure.decode_enqueue,
    "AckRequest": pure.decode_ack,
    "NackRequest": pure.decode_nack,
}


def _feed_all(reader: Any, frames: list[dict[str, Any]]) -> tuple[int, DecodeError]:
    for index, f in enumerate(frames):
        try:
            reader.feed(bytes.fromhex(f["frame_hex"]))
        except DecodeError as exc:
            return index, exc
    raise AssertionError("no frame was refused")


@pytest.mark.parametrize("v", _named("must_reject"))
def test_vectors_must_reject(v: dict[str, Any], codec: ModuleType) -> None:
    err = v["error"]
    stage = v["stage"]
    if stage == "frame":
        with pytest.raises(DecodeError) as info:
            codec.FrameReader().feed(bytes.fromhex(v["input_hex"]))
        caught = [info.value]
    elif stage == "reassembly":
        cfg = v["assembler_config"]
        reader = codec.FrameReader(
            max_reassembled_size=cfg["max_reassembled_size"],
            max_pending_streams=cfg["max_pending_streams"],
        )
        index, exc = _feed_all(reader, v["frames"])
        assert index == v["error_at_frame_index"]
        caught = [exc]
    else:
        assert stage == "payload"
        frames = codec.FrameReader().feed(bytes.fromhex(v["frame_hex"]))
        assert len(frames) == 1 and frames[0].payload.hex() == v["payload_hex"]
        payload = frames[0].payload
        caught = []
        with pytest.raises(DecodeError) as info:
            messages.decode_body(v["decoder"], payload)
        caught.append(info.value)
        hot = _HOT_DECODERS.get(v["decoder"])
        if hot is not None:
            with pytest.raises(DecodeError) as info:
                getattr(codec, hot)(payload)
            caught.append(info.value)
        server = _SERVER_DECODERS.get(v["decoder"])
        if server is not None:
            with pytest.raises(DecodeError) as info:
                server(payload)
            caught.append(info.value)
    for exc in caught:
        assert exc.kind == err["kind"]
        assert exc.detail == err["message"]
        assert err["message"] in str(exc)


# ----------------------------------------------------------------- continuation


@pytest.mark.parametrize("v", _named("continuation"))
def test_vectors_continuation_reassembles(v: dict[str, Any], codec: ModuleType) -> None:
    stream = b"".join(bytes.fromhex(f["frame_hex"]) for f in v["frames"])
    for f in v["frames"]:
        _, opcode, flags, rid, payload = frame_of(f["frame_hex"])
        assert (opcode, flags, rid, len(payload)) == (
            f["opcode"],
            f["flags"],
            f["request_id"],
            f["payload_len"],
        )
    # all at once, and one byte at a time
    for chunks in ([stream], [stream[i : i + 1] for i in range(len(stream))]):
        reader = codec.FrameReader()
        got = [fr for c in chunks for fr in reader.feed(c)]
        assert len(got) == len(v["assembled"])
        for fr, want in zip(got, v["assembled"], strict=True):
            assert (fr.opcode, fr.flags, fr.request_id) == (want["opcode"], want["flags"], want["request_id"])
            assert len(fr.payload) == want["payload_len"]
            if "payload_hex" in want:
                assert fr.payload.hex() == want["payload_hex"]
            if want.get("source_vector"):
                assert fr.payload == frame_of(VECTORS[want["source_vector"]]["frame_hex"])[4]
        assert reader.pending_streams == 0 and reader.buffered == 0


@pytest.mark.parametrize("v", [p for p in _named("continuation") if p.values[0].get("max_frame_size")])
def test_vectors_continuation_encodes(v: dict[str, Any], codec: ModuleType) -> None:
    src = VECTORS[v["source_vector"]]
    expected = "".join(f["frame_hex"] for f in v["frames"])
    mfs = v["max_frame_size"]
    fields = _fields(src)
    assert messages.encode_message(src["type"], src["request_id"], fields, max_frame_size=mfs).hex() == expected
    if src["type"] == "EnqueueRequest":
        msgs = [(m["queue"], m["headers"], m["payload"]) for m in fields["messages"]]
        assert codec.encode_enqueue(src["request_id"], msgs, max_frame_size=mfs).hex() == expected
    payload = frame_of(src["frame_hex"])[4]
    assert pure.encode_frame(src["opcode"], src["request_id"], payload, max_frame_size=mfs).hex() == expected


# ----------------------------------------------------------- need more / lenient


@pytest.mark.parametrize("v", _named("need_more_data"))
def test_vectors_need_more_data(v: dict[str, Any], codec: ModuleType) -> None:
    data = bytes.fromhex(v["input_hex"])
    reader = codec.FrameReader()
    assert reader.feed(data) == []
    assert reader.buffered == len(data)


@pytest.mark.parametrize("v", _named("lenient_decode"))
def test_vectors_lenient_decode(v: dict[str, Any], codec: ModuleType) -> None:
    if v["type"] == "RawFrame":
        want = v["decoded_raw_frame"]
        frames = codec.FrameReader(reassemble=False).feed(bytes.fromhex(v["frame_hex"]))
        assert len(frames) == 1
        f = frames[0]
        assert (f.opcode, f.flags, f.request_id, f.payload.hex()) == (
            want["opcode"],
            want["flags"],
            want["request_id"],
            want["payload_hex"],
        )
        assert bool(f.flags & 1) == want["is_continuation"]
        return
    payload = bytes.fromhex(v["payload_hex"])
    assert frame_of(v["frame_hex"])[4] == payload
    expected = to_fields(TYPES[v["type"]]["fields"], v["decoded_fields"]) if v["decoded_fields"] else {}
    assert comparable(messages.decode_body(v["type"], payload)) == comparable(expected)
    hot = _HOT_DECODERS.get(v["type"])
    if hot == "decode_enqueue_result":
        assert codec.decode_enqueue_result(payload) == [(r["error_code"], r["message_id"]) for r in expected["results"]]
    elif hot in ("decode_ack_result", "decode_nack_result"):
        assert getattr(codec, hot)(payload) == [r["error_code"] for r in expected["results"]]
    if v["type"] == "EnqueueRequest":
        assert pure.decode_enqueue(payload) == [(m["queue"], m["headers"], m["payload"]) for m in expected["messages"]]


# ------------------------------------------------------------------ encode edges


def _edge(name: str) -> dict[str, Any]:
    return next(e for e in DATA.get("encode_edge_cases", []) if e["name"] == name)


@pytest.mark.skipif(
    "string_65536_bytes_panics" not in {e["name"] for e in DATA.get("encode_edge_cases", [])},
    reason="not in this vector file",
)
def test_vectors_edge_long_string_refused() -> None:
    assert "65536" in _edge("string_65536_bytes_panics")["panic_message"]
    with pytest.raises(EncodeError, match="SetConfig.value is 65536 bytes"):
        messages.encode_message("SetConfigRequest", 1, {"key": "k", "value": "v" * 65536})
    # the limit itself encodes
    frame = messages.encode_message("SetConfigRequest", 1, {"key": "k", "value": "v" * 65535})
    assert frame[13:15] == b"\xff\xff"


def test_vectors_edge_big_map_and_list_refused(codec: ModuleType) -> None:
    meta = {f"k{i}": "" for i in range(65536)}
    with pytest.raises(EncodeError, match="65536 entries"):
        messages.encode_message("ErrorFrame", 1, {"error_code": 1, "message": "", "metadata": meta})
    with pytest.raises(EncodeError, match="65536 entries"):
        codec.encode_enqueue(1, [("q", meta, b"")])
    keys = [str(i) for i in range(65536)]
    with pytest.raises(EncodeError, match="65536 entries"):
        pure.encode_delivery(1, [pure.ConsumeMessage("id", {}, b"", "", 0, "q", 1, keys)])
    entries = [{"key": "", "value": ""}] * 65536
    with pytest.raises(EncodeError, match="65536 entries"):
        messages.encode_message("ListConfigResponse", 5, {"error_code": 0, "entries": entries})


def test_vectors_edge_u32_list_over_decoder_limit() -> None:
    edge = _edge("u32_list_over_decoder_limit_encodes_but_cannot_be_decoded")
    frame = pure.encode_ack_result(edge["request_id"], [0] * 1_000_001)
    assert len(frame) == edge["frame_len"]
    assert frame.hex().startswith(edge["frame_hex_prefix"])
    with pytest.raises(DecodeError) as info:
        pure.decode_ack_result(frame[10:])
    assert info.value.detail == edge["decode_error"]["message"]


def test_vectors_max_frame_size_default() -> None:
    assert pure.FrameReader().max_frame_size == MAX_FRAME_SIZE
