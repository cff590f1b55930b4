"""The pure-Python codec twin: the reference for the hot path.

``fila._speedups._codec`` implements the same names with the same
signatures, return values, exception types and messages; the tests hold
both to that byte for byte. Layouts (PROTOCOL.md, all big-endian)::

    frame        u32 length (= 6 + payload) | u8 opcode | u8 flags | u32 request_id | payload
    Enqueue      u32 n × (string queue, map headers, bytes payload)
    EnqueueResult u32 n × (u8 code, string message_id)
    Delivery     u32 n × (string id, string queue, map headers, bytes payload,
                 string fairness_key, u32 weight, string[] throttle_keys,
                 u32 attempt_count, u64 enqueued_at, u64 leased_at)
    Ack          u32 n × (string queue, string message_id)
    Nack         u32 n × (string queue, string message_id, string error)
    AckResult / NackResult   u32 n × u8 code

A string is u16 length + UTF-8, bytes are u32 length + raw, a map is u16
count + (string, string) pairs, a string[] is u16 count + strings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from struct import Struct
from struct import error as StructError
from typing import Any

from .. import errors as _errors
from . import _failures as fail
from .constants import (
    DEFAULT_MAX_PENDING_STREAMS,
    DEFAULT_MAX_REASSEMBLED_SIZE,
    FLAG_CONTINUATION,
    HEADER_SIZE,
    MAX_DECODED_COUNT,
    MAX_FRAME_SIZE,
    MAX_U16,
    MAX_U32,
    MAX_U64,
    Opcode,
)

__all__ = [
    "IMPLEMENTATION",
    "Frame",
    "FrameReader",
    "Message",
    "Reader",
    "Writer",
    "decode_ack",
    "decode_ack_result",
    "decode_delivery",
    "decode_enqueue",
    "decode_enqueue_result",
    "decode_nack",
    "decode_nack_result",
    "encode_ack",
    "encode_ack_result",
    "encode_delivery",
    "encode_enqueue",
    "encode_enqueue_result",
    "encode_frame",
    "encode_nack",
    "encode_nack_result",
]

IMPLEMENTATION = "python"

_U16 = Struct(">H")
_U32 = Struct(">I")
_U64 = Struct(">Q")
_I64 = Struct(">q")
_F64 = Struct(">d")
_HEADER = Struct(">IBBI")  # length prefix, opcode, flags, request_id
_u16_at = _U16.unpack_from
_u32_at = _U32.unpack_from
_u64_at = _U64.unpack_from
_header_at = _HEADER.unpack_from
_weight_count_at = Struct(">IH").unpack_from  # Delivery: weight, throttle_keys count
_tail_at = Struct(">IQQ").unpack_from  # Delivery: attempt_count, enqueued_at, leased_at
_pack_u16 = _U16.pack
_pack_u32 = _U32.pack
_pack_u64 = _U64.pack
_pack_header = _HEADER.pack
_KNOWN_CODES = frozenset(range(0x11)) | {0xFF}
_BYTES_LIKE = (bytes, bytearray, memoryview)
_EMPTY_MAP = b"\x00\x00"
_SMALL_U16 = tuple(_pack_u16(i) for i in range(16))
_DELIVERY = int(Opcode.DELIVERY)


def _code(byte: int) -> int:
    return byte if byte in _KNOWN_CODES else 0xFF


# ---------------------------------------------------------------------- message


class Message:
    """A delivered message. Immutable; equality compares every field.

    ``headers`` is a dict, ``throttle_keys`` a tuple, timestamps are Unix
    milliseconds (0 when the server does not know them).
    """

    __slots__ = (
        "_attempt_count",
        "_enqueued_at",
        "_fairness_key",
        "_headers",
        "_id",
        "_leased_at",
        "_payload",
        "_queue",
        "_throttle_keys",
        "_weight",
    )

    def __init__(
        self,
        id: str,
        queue: str,
        headers: dict[str, str],
        payload: bytes,
        fairness_key: str = "",
        weight: int = 0,
        throttle_keys: tuple[str, ...] = (),
        attempt_count: int = 0,
        enqueued_at: int = 0,
        leased_at: int = 0,
    ) -> None:
        self._id = id
        self._queue = queue
        self._headers = headers
        self._payload = payload
        self._fairness_key = fairness_key
        self._weight = weight
        self._throttle_keys = throttle_keys
        self._attempt_count = attempt_count
        self._enqueued_at = enqueued_at
        self._leased_at = leased_at

    @property
    def id(self) -> str:
        return self._id

    @property
    def queue(self) -> str:
        return self._queue

    @property
    def headers(self) -> dict[str, str]:
        return self._headers

    @property
    def payload(self) -> bytes:
        return self._payload

    @property
    def fairness_key(self) -> str:
        return self._fairness_key

    @property
    def weight(self) -> int:
        return self._weight

    @property
    def throttle_keys(self) -> tuple[str, ...]:
        return self._throttle_keys

    @property
    def attempt_count(self) -> int:
        return self._attempt_count

    @property
    def enqueued_at(self) -> int:
        return self._enqueued_at

    @property
    def leased_at(self) -> int:
        return self._leased_at

    def as_tuple(self) -> tuple[Any, ...]:
        """All fields, in wire order."""
        return (
            self._id,
            self._queue,
            self._headers,
            self._payload,
            self._fairness_key,
            self._weight,
            self._throttle_keys,
            self._attempt_count,
            self._enqueued_at,
            self._leased_at,
        )

    def __eq__(self, other: object) -> bool:
        if type(other).__name__ != "Message" or not hasattr(other, "as_tuple"):
            return NotImplemented
        return bool(self.as_tuple() == other.as_tuple())

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    __hash__ = None  # type: ignore[assignment]  # headers is a dict

    def __repr__(self) -> str:
        return _message_repr(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Message, self.as_tuple())


def _message_repr(msg: Any) -> str:
    payload = msg.payload
    shown = repr(payload[:32]) + ("..." if len(payload) > 32 else "")
    return (
        f"Message(id={msg.id!r}, queue={msg.queue!r}, headers={msg.headers!r}, "
        f"payload=<{len(payload)} bytes: {shown}>, fairness_key={msg.fairness_key!r}, "
        f"weight={msg.weight}, throttle_keys={msg.throttle_keys!r}, "
        f"attempt_count={msg.attempt_count}, enqueued_at={msg.enqueued_at}, "
        f"leased_at={msg.leased_at})"
    )


# ------------------------------------------------------------------------ frames


class Frame:
    """One whole frame (continuations already joined). Immutable.

    ``messages`` holds the decoded messages of a Delivery frame when the
    reader was made with ``decode_deliveries=True``; otherwise None.
    """

    __slots__ = ("_flags", "_messages", "_opcode", "_payload", "_request_id")

    def __init__(
        self,
        opcode: int,
        flags: int,
        request_id: int,
        payload: bytes,
        messages: list[Message] | None = None,
    ) -> None:
        self._opcode = opcode
        self._flags = flags
        self._request_id = request_id
        self._payload = payload
        self._messages = messages

    @property
    def opcode(self) -> int:
        return self._opcode

    @property
    def flags(self) -> int:
        return self._flags

    @property
    def request_id(self) -> int:
        return self._request_id

    @property
    def payload(self) -> bytes:
        return self._payload

    @property
    def messages(self) -> list[Message] | None:
        return self._messages

    def __eq__(self, other: object) -> bool:
        if type(other).__name__ != "Frame" or not hasattr(other, "request_id"):
            return NotImplemented
        o: Any = other
        return bool(
            self._opcode == o.opcode
            and self._flags == o.flags
            and self._request_id == o.request_id
            and self._payload == o.payload
        )

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return _frame_repr(self)


def _frame_repr(frame: Any) -> str:
    opcode = frame.opcode
    try:
        name = Opcode(opcode).name
    except ValueError:
        name = "UNKNOWN"
    return (
        f"Frame(opcode=0x{opcode:02x} {name}, flags=0x{frame.flags:02x}, "
        f"request_id={frame.request_id}, payload=<{len(frame.payload)} bytes>)"
    )


def _check_max_frame_size(value: object) -> int:
    if type(value) is not int or not (value == 0 or HEADER_SIZE < value <= MAX_U32):
        raise fail.bad_max_frame_size(value)
    return value or MAX_FRAME_SIZE


class FrameReader:
    """Splits a byte stream into frames, however it was chunked.

    ``feed`` takes bytes as ``recv`` returns them and returns the frames that
    are now whole. Continuation frames are joined per request id (unless
    ``reassemble=False``); a joined frame is returned with flags 0. With
    ``decode_deliveries=True`` every Delivery frame comes out with its
    messages already decoded in ``frame.messages``. A malformed stream (or
    Delivery body, when decoding) raises :class:`~fila.errors.DecodeError`;
    the reader is then unusable (close the connection) and says so on the
    next ``feed``.
    """

    __slots__ = (
        "_buf",
        "_decode",
        "_failed",
        "_max_frame_size",
        "_max_pending_streams",
        "_max_reassembled_size",
        "_reassemble",
        "_streams",
        "_want",
    )

    def __init__(
        self,
        max_frame_size: int = MAX_FRAME_SIZE,
        *,
        max_reassembled_size: int = DEFAULT_MAX_REASSEMBLED_SIZE,
        max_pending_streams: int = DEFAULT_MAX_PENDING_STREAMS,
        reassemble: bool = True,
        decode_deliveries: bool = False,
    ) -> None:
        self._max_frame_size = _check_max_frame_size(max_frame_size)
        if type(max_reassembled_size) is not int or max_reassembled_size < 0:
            raise fail.bad_int("max_reassembled_size", max_reassembled_size, MAX_U64)
        if type(max_pending_streams) is not int or max_pending_streams < 0:
            raise fail.bad_int("max_pending_streams", max_pending_streams, MAX_U32)
        self._reassemble = bool(reassemble)
        self._decode = bool(decode_deliveries)
        if self._decode and not self._reassemble:
            raise fail.decode_needs_reassembly()
        self._max_reassembled_size = max_reassembled_size
        self._max_pending_streams = max_pending_streams
        self._buf = bytearray()
        # request_id -> [opcode, list of payload chunks, total size]
        self._streams: dict[int, list[Any]] = {}
        self._failed: Exception | None = None
        self._want = 4  # bytes the buffer must hold before parsing is worth trying

    @property
    def max_frame_size(self) -> int:
        """Largest accepted value of the length prefix (16 MiB by default)."""
        return self._max_frame_size

    @max_frame_size.setter
    def max_frame_size(self, value: int) -> None:
        self._max_frame_size = _check_max_frame_size(value)

    @property
    def buffered(self) -> int:
        """Bytes received that do not yet make a whole frame."""
        return len(self._buf)

    @property
    def pending_streams(self) -> int:
        """Continuation streams started and not yet finished."""
        return len(self._streams)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Add received bytes; return every frame completed by them, in order."""
        if self._failed is not None:
            raise fail.reader_failed(self._failed)
        if self._buf:
            self._buf += data
            if len(self._buf) < self._want:
                return []
            work = bytes(self._buf)
        elif type(data) is bytes:
            work = data
        else:
            work = bytes(data)
        end = len(work)
        pos = 0
        out: list[Frame] = []
        max_size = self._max_frame_size
        want = 4
        try:
            while end - pos >= 4:
                length = _u32_at(work, pos)[0]
                if length > max_size:
                    raise fail.frame_too_large(length, max_size)
                if end - pos - 4 < length:
                    want = 4 + length
                    break
                if length < HEADER_SIZE:
                    raise fail.body_too_short(length)
                _, opcode, flags, request_id = _header_at(work, pos)
                start = pos + 10
                pos += 4 + length
                if self._reassemble and (flags & FLAG_CONTINUATION or self._streams):
                    frame = self._join(opcode, flags, request_id, work[start:pos])
                    if frame is None:
                        continue
                else:
                    frame = Frame(opcode, flags, request_id, work[start:pos])
                if self._decode and opcode == _DELIVERY:
                    frame._messages = decode_delivery(frame._payload)
                out.append(frame)
        except _errors.DecodeError as exc:
            self._failed = exc
            self._streams.clear()
            self._buf = bytearray()
            raise
        self._want = want
        self._buf = bytearray(work[pos:]) if pos < end else bytearray()
        return out

    def _join(self, opcode: int, flags: int, request_id: int, payload: bytes) -> Frame | None:
        streams = self._streams
        stream = streams.get(request_id)
        if stream is None:
            if not flags & FLAG_CONTINUATION:
                return Frame(opcode, flags, request_id, payload)
            if len(streams) >= self._max_pending_streams:
                raise fail.too_many_streams(len(streams) + 1, self._max_pending_streams)
            size = len(payload)
            if size > self._max_reassembled_size:
                raise fail.reassembled_too_large(request_id, size, self._max_reassembled_size)
            streams[request_id] = [opcode, [payload], size]
            return None
        if opcode != stream[0]:
            del streams[request_id]
            raise fail.opcode_mismatch(request_id, stream[0], opcode)
        size = stream[2] + len(payload)
        if size > self._max_reassembled_size:
            del streams[request_id]
            raise fail.reassembled_too_large(request_id, size, self._max_reassembled_size)
        stream[1].append(payload)
        stream[2] = size
        if flags & FLAG_CONTINUATION:
            return None
        del streams[request_id]
        return Frame(opcode, 0, request_id, b"".join(stream[1]))


def _check_request_id(request_id: object) -> int:
    if not isinstance(request_id, int) or not 0 <= request_id <= MAX_U32:
        raise fail.bad_int("request_id", request_id, MAX_U32)
    return int(request_id)


def _frame_parts(opcode: int, request_id: int, size: int, parts: list[Any], max_frame_size: int) -> bytes:
    """Join ``parts`` (``parts[0]`` reserved for the header) into wire bytes.

    ``size`` is the payload length. A payload over ``max_frame_size - 6``
    bytes is cut into continuation frames.
    """
    limit = _check_max_frame_size(max_frame_size) - HEADER_SIZE
    if size <= limit:
        parts[0] = _pack_header(size + HEADER_SIZE, opcode, 0, request_id)
        return b"".join(parts)
    parts[0] = b""
    return _split(opcode, request_id, b"".join(parts), limit)


def _split(opcode: int, request_id: int, body: bytes, chunk: int) -> bytes:
    view = memoryview(body)
    total = len(body)
    out: list[Any] = []
    for start in range(0, total, chunk):
        piece = view[start : start + chunk]
        last = start + chunk >= total
        out.append(_pack_header(len(piece) + HEADER_SIZE, opcode, 0 if last else FLAG_CONTINUATION, request_id))
        out.append(piece)
    return b"".join(out)


def encode_frame(
    opcode: int,
    request_id: int,
    payload: bytes | bytearray | memoryview = b"",
    *,
    max_frame_size: int = MAX_FRAME_SIZE,
) -> bytes:
    """Wire bytes of one operation: a single frame, or continuation frames when
    ``payload`` is larger than ``max_frame_size - 6`` bytes."""
    if not isinstance(opcode, int) or not 0 <= opcode <= 0xFF:
        raise fail.bad_int("opcode", opcode, 0xFF)
    _check_request_id(request_id)
    if not isinstance(payload, _BYTES_LIKE):
        raise fail.not_bytes_like("payload", payload)
    return _frame_parts(opcode, request_id, len(payload), [b"", payload], max_frame_size)


# ------------------------------------------------------------- primitives: write


def _str_bytes(value: object, what: str) -> bytes:
    if type(value) is not str:
        if not isinstance(value, str):
            raise fail.not_str(what, value)
    try:
        raw = value.encode()
    except UnicodeEncodeError:
        raise fail.not_utf8(what) from None
    if len(raw) > MAX_U16:
        raise fail.string_too_long(what, len(raw))
    return raw


def _map_parts(headers: object, what: str, parts: list[Any]) -> int:
    """Append a map<string,string>; return its encoded size."""
    if headers is None:
        parts.append(_EMPTY_MAP)
        return 2
    if not isinstance(headers, Mapping):
        raise fail.not_mapping(what, headers)
    count = len(headers)
    if count > MAX_U16:
        raise fail.too_many_entries(what, count, MAX_U16)
    parts.append(_pack_u16(count))
    size = 2
    for key, value in headers.items():
        k = _str_bytes(key, what + " key")
        v = _str_bytes(value, what + " value")
        parts.append(_pack_u16(len(k)))
        parts.append(k)
        parts.append(_pack_u16(len(v)))
        parts.append(v)
        size += 4 + len(k) + len(v)
    return size


def _items(items: object, what: str) -> Sequence[Any]:
    if not isinstance(items, (list, tuple)):
        raise fail.not_sequence(what, items)
    if len(items) > MAX_U32:
        raise fail.too_many_entries(what, len(items), MAX_U32)
    return items


def _item(item: object, what: str, index: int, width: int) -> Sequence[Any]:
    if type(item) is not tuple and not isinstance(item, (tuple, list)):
        raise fail.bad_item(what, index, width, item)
    if len(item) != width:
        raise fail.bad_item(what, index, width, item)
    return item


class Writer:
    """Builds a payload from primitives; ``frame()`` wraps it for the wire."""

    __slots__ = ("_parts", "_size")

    def __init__(self) -> None:
        self._parts: list[Any] = [b""]  # slot 0 is the frame header
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def _int(self, st: Struct, value: object, what: str, limit: int) -> Writer:
        if not isinstance(value, int) or not 0 <= value <= limit:
            raise fail.bad_int(what, value, limit)
        self._parts.append(st.pack(value))
        self._size += st.size
        return self

    def write_u8(self, value: int, what: str = "u8") -> Writer:
        return self._int(_U8, value, what, 0xFF)

    def write_u16(self, value: int, what: str = "u16") -> Writer:
        return self._int(_U16, value, what, MAX_U16)

    def write_u32(self, value: int, what: str = "u32") -> Writer:
        return self._int(_U32, value, what, MAX_U32)

    def write_u64(self, value: int, what: str = "u64") -> Writer:
        return self._int(_U64, value, what, MAX_U64)

    def write_i64(self, value: int, what: str = "i64") -> Writer:
        if not isinstance(value, int) or not -(2**63) <= value < 2**63:
            raise _i64_error(what, value)
        self._parts.append(_I64.pack(value))
        self._size += 8
        return self

    def write_f64(self, value: float, what: str = "f64") -> Writer:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise _errors.EncodeError(f"{what} must be float, got {type(value).__name__}")
        self._parts.append(_F64.pack(value))
        self._size += 8
        return self

    def write_bool(self, value: bool, what: str = "bool") -> Writer:
        if not isinstance(value, bool):
            raise _errors.EncodeError(f"{what} must be bool, got {type(value).__name__}")
        self._parts.append(b"\x01" if value else b"\x00")
        self._size += 1
        return self

    def write_string(self, value: str, what: str = "string") -> Writer:
        raw = _str_bytes(value, what)
        self._parts.append(_pack_u16(len(raw)))
        self._parts.append(raw)
        self._size += 2 + len(raw)
        return self

    def write_optional_string(self, value: str | None, what: str = "optional string") -> Writer:
        if value is None:
            self._parts.append(b"\x00")
            self._size += 1
            return self
        raw = _str_bytes(value, what)
        self._parts.append(b"\x01" + _pack_u16(len(raw)))
        self._parts.append(raw)
        self._size += 3 + len(raw)
        return self

    def write_bytes(self, value: bytes | bytearray | memoryview, what: str = "bytes") -> Writer:
        if not isinstance(value, _BYTES_LIKE):
            raise fail.not_bytes_like(what, value)
        size = value.nbytes if isinstance(value, memoryview) else len(value)
        if size > MAX_U32:
            raise fail.bytes_too_long(what, size)
        self._parts.append(_pack_u32(size))
        self._parts.append(value)
        self._size += 4 + size
        return self

    def write_string_map(self, value: Mapping[str, str] | None, what: str = "map") -> Writer:
        self._size += _map_parts(value, what, self._parts)
        return self

    def write_string_list(self, value: Sequence[str], what: str = "string list") -> Writer:
        if not isinstance(value, (list, tuple)):
            raise fail.not_sequence(what, value)
        if len(value) > MAX_U16:
            raise fail.too_many_entries(what, len(value), MAX_U16)
        self._parts.append(_pack_u16(len(value)))
        self._size += 2
        for item in value:
            self.write_string(item, what + " item")
        return self

    def write_count(self, value: int, what: str, limit: int = MAX_U32) -> Writer:
        """An element count: u16 when ``limit`` is 65535, else u32."""
        if value > limit:
            raise fail.too_many_entries(what, value, limit)
        return self.write_u16(value, what) if limit == MAX_U16 else self.write_u32(value, what)

    def payload(self) -> bytes:
        return b"".join(self._parts[1:])

    def frame(self, opcode: int, request_id: int, max_frame_size: int = MAX_FRAME_SIZE) -> bytes:
        _check_request_id(request_id)
        return _frame_parts(opcode, request_id, self._size, list(self._parts), max_frame_size)


_U8 = Struct(">B")


def _i64_error(what: str, value: object) -> _errors.EncodeError:
    if isinstance(value, int) and not isinstance(value, bool):
        return _errors.EncodeError(f"{what} is {value}; it must fit in a signed 64-bit integer")
    return _errors.EncodeError(f"{what} must be int, got {type(value).__name__}")


# -------------------------------------------------------------- primitives: read


class Reader:
    """Reads FIBP primitives from a payload, checking bounds before every read.

    ``what`` names the field in the error message. Offsets count from the
    start of the payload.
    """

    __slots__ = ("_buf", "_end", "_pos")

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._buf = data if type(data) is bytes else bytes(data)
        self._pos = 0
        self._end = len(self._buf)

    @property
    def pos(self) -> int:
        return self._pos

    @property
    def remaining(self) -> int:
        return self._end - self._pos

    def _need(self, n: int, what: str) -> int:
        pos = self._pos
        if n > self._end - pos:
            raise fail.incomplete(what, pos, n, self._end - pos)
        self._pos = pos + n
        return pos

    def read_u8(self, what: str = "u8") -> int:
        return self._buf[self._need(1, what)]

    def read_bool(self, what: str = "bool") -> bool:
        return self._buf[self._need(1, what)] != 0

    def read_error_code(self, what: str = "error code") -> int:
        return _code(self._buf[self._need(1, what)])

    def read_u16(self, what: str = "u16") -> int:
        return int(_u16_at(self._buf, self._need(2, what))[0])

    def read_u32(self, what: str = "u32") -> int:
        return int(_u32_at(self._buf, self._need(4, what))[0])

    def read_u64(self, what: str = "u64") -> int:
        return int(_u64_at(self._buf, self._need(8, what))[0])

    def read_i64(self, what: str = "i64") -> int:
        return int(_I64.unpack_from(self._buf, self._need(8, what))[0])

    def read_f64(self, what: str = "f64") -> float:
        return float(_F64.unpack_from(self._buf, self._need(8, what))[0])

    def read_count(self, what: str = "count") -> int:
        """A u32 element count, refused above 1,000,000."""
        pos = self._pos
        count = self.read_u32(what)
        if count > MAX_DECODED_COUNT:
            raise fail.count_exceeds(what, pos, count)
        return count

    def read_string(self, what: str = "string") -> str:
        n = self.read_u16(what)
        start = self._need(n, what)
        try:
            return self._buf[start : start + n].decode()
        except UnicodeDecodeError:
            raise fail.invalid_utf8(what, start) from None

    def read_optional_string(self, what: str = "optional string") -> str | None:
        if self._buf[self._need(1, what + " flag")] == 0:
            return None
        return self.read_string(what)

    def read_bytes(self, what: str = "bytes") -> bytes:
        n = self.read_u32(what)
        start = self._need(n, what)
        return self._buf[start : start + n]

    def read_string_map(self, what: str = "map") -> dict[str, str]:
        count = self.read_u16(what + " count")
        out: dict[str, str] = {}
        for _ in range(count):
            key = self.read_string(what + " key")
            out[key] = self.read_string(what + " value")
        return out

    def read_string_list(self, what: str = "string list") -> list[str]:
        count = self.read_u16(what + " count")
        return [self.read_string(what + " item") for _ in range(count)]


# ---------------------------------------------------------- hot path: client side


def _prefixed(value: object, what: str) -> bytes:
    """A string field as wire bytes (u16 length + UTF-8), validated."""
    raw = _str_bytes(value, what)
    return _pack_u16(len(raw)) + raw


def _index_of(items: Sequence[Any], item: object) -> int:
    """Position of ``item`` (by identity) in ``items``, for an error message."""
    return next(i for i, x in enumerate(items) if x is item)


def encode_enqueue(
    request_id: int,
    messages: Sequence[tuple[str, Mapping[str, str] | None, bytes]],
    max_frame_size: int = MAX_FRAME_SIZE,
) -> bytes:
    """Enqueue frame(s) for ``messages``: ``(queue, headers_or_None, payload)`` each."""
    _check_request_id(request_id)
    _items(messages, "Enqueue.messages")
    parts: list[Any] = [b"", _pack_u32(len(messages))]
    size = 4
    append = parts.append
    # str -> its wire bytes, for this call: queues and header keys repeat.
    strings: dict[str, bytes] = {}
    lookup = strings.get
    lengths: dict[int, bytes] = {}  # payload size -> its u32 prefix
    for item in messages:
        try:
            if type(item) is not tuple:
                raise ValueError
            queue, headers, payload = item
        except ValueError:
            queue, headers, payload = _item(item, "Enqueue.messages", _index_of(messages, item), 3)
        try:
            q = lookup(queue)
        except TypeError:  # unhashable, so not a str
            q = None
        if q is None:
            q = strings[queue] = _prefixed(queue, "Enqueue.queue")
        append(q)
        if headers:
            if type(headers) is dict:
                count = len(headers)
                if count < 16:
                    append(_SMALL_U16[count])
                elif count <= MAX_U16:
                    append(_pack_u16(count))
                else:
                    raise fail.too_many_entries("Enqueue.headers", count, MAX_U16)
                try:
                    for key, value in headers.items():
                        k = lookup(key)
                        if k is None:
                            k = strings[key] = _prefixed(key, "Enqueue.headers key")
                        v = lookup(value)
                        if v is None:
                            if type(value) is str and value.isascii() and len(value) <= MAX_U16:
                                v = strings[value] = _pack_u16(len(value)) + value.encode()
                            else:
                                v = strings[value] = _prefixed(value, "Enqueue.headers value")
                        append(k)
                        append(v)
                        size += len(k) + len(v)
                except TypeError:  # an unhashable value: not a str; say which
                    _map_parts(headers, "Enqueue.headers", [])
                    raise
            else:
                size += _map_parts(headers, "Enqueue.headers", parts) - 2
        elif headers is None or isinstance(headers, Mapping):
            append(_EMPTY_MAP)
        else:
            raise fail.not_mapping("Enqueue.headers", headers)
        if type(payload) is bytes:
            n = len(payload)
        elif isinstance(payload, _BYTES_LIKE):
            n = payload.nbytes if isinstance(payload, memoryview) else len(payload)
        else:
            raise fail.not_bytes_like("Enqueue.payload", payload)
        prefix = lengths.get(n)
        if prefix is None:
            if n > MAX_U32:
                raise fail.bytes_too_long("Enqueue.payload", n)
            prefix = lengths[n] = _pack_u32(n)
        append(prefix)
        append(payload)
        size += len(q) + 6 + n  # queue, map count, payload length and bytes
    return _frame_parts(Opcode.ENQUEUE, request_id, size, parts, max_frame_size)


def _encode_pairs(
    opcode: int, label: str, request_id: int, items: Sequence[Any], width: int, max_frame_size: int
) -> bytes:
    _check_request_id(request_id)
    _items(items, label + ".items")
    names = (".queue", ".message_id", ".error")
    parts: list[Any] = [b"", _pack_u32(len(items))]
    size = 4
    append = parts.append
    for index, item in enumerate(items):
        if type(item) is not tuple or len(item) != width:
            _item(item, label + ".items", index, width)
        for field in range(width):
            raw = _str_bytes(item[field], label + names[field])
            append(_pack_u16(len(raw)))
            append(raw)
            size += 2 + len(raw)
    return _frame_parts(opcode, request_id, size, parts, max_frame_size)


def encode_ack(request_id: int, items: Sequence[tuple[str, str]], max_frame_size: int = MAX_FRAME_SIZE) -> bytes:
    """Ack frame(s) for ``items``: ``(queue, message_id)`` each."""
    return _encode_pairs(Opcode.ACK, "Ack", request_id, items, 2, max_frame_size)


def encode_nack(request_id: int, items: Sequence[tuple[str, str, str]], max_frame_size: int = MAX_FRAME_SIZE) -> bytes:
    """Nack frame(s) for ``items``: ``(queue, message_id, error)`` each."""
    return _encode_pairs(Opcode.NACK, "Nack", request_id, items, 3, max_frame_size)


def _as_bytes(payload: bytes | bytearray | memoryview) -> bytes:
    return payload if type(payload) is bytes else bytes(payload)


def decode_delivery(payload: bytes | bytearray | memoryview) -> list[Message]:
    """Every message of a Delivery payload (any count)."""
    buf = _as_bytes(payload)
    try:
        out = _delivery_unchecked(buf)
    except (IndexError, StructError, UnicodeDecodeError):
        out = None
    if out is None:
        out = _delivery_checked(buf)  # malformed: find the exact failure
    return out


def _delivery_unchecked(buf: bytes) -> list[Message] | None:
    """The fast path: no bounds check per field. A read past the end either
    raises (index, struct) or leaves ``pos`` beyond the end; both mean "None,
    go the checked way", which names the exact field and offset."""
    count = _u32_at(buf, 0)[0]
    if count > MAX_DECODED_COUNT:
        return None
    if count > 1:
        return _delivery_reusing(buf, count)
    pos = 4
    out: list[Message] = []
    append = out.append
    for _ in range(count):
        n = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
        mid = buf[pos + 2 : n].decode()
        pos = n
        n = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
        queue = buf[pos + 2 : n].decode()
        pos = n
        nh = (buf[pos] << 8) | buf[pos + 1]
        pos += 2
        headers: dict[str, str] = {}
        for _h in range(nh):
            n = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
            key = buf[pos + 2 : n].decode()
            pos = n
            n = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
            headers[key] = buf[pos + 2 : n].decode()
            pos = n
        n = _u32_at(buf, pos)[0]
        pos += 4
        body = buf[pos : pos + n]
        pos += n
        n = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
        fkey = buf[pos + 2 : n].decode()
        pos = n
        weight, nt = _weight_count_at(buf, pos)
        pos += 6
        if nt:
            tkeys = []
            for _t in range(nt):
                n = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
                tkeys.append(buf[pos + 2 : n].decode())
                pos = n
            throttle_keys: tuple[str, ...] = tuple(tkeys)
        else:
            throttle_keys = ()
        attempts, enqueued, leased = _tail_at(buf, pos)
        pos += 20
        append(Message(mid, queue, headers, body, fkey, weight, throttle_keys, attempts, enqueued, leased))
    if pos > len(buf):
        return None
    return out


def _delivery_reusing(buf: bytes, count: int) -> list[Message] | None:
    """``_delivery_unchecked`` for several messages. The queue, the fairness
    key and the throttle keys usually repeat from one message to the next:
    when their raw bytes (length prefix included) equal the previous
    message's, the previous value is reused. The initial raw value is the
    encoding of the initial value, so a match is always right."""
    pos = 4
    out: list[Message] = []
    append = out.append
    startswith = buf.startswith
    q_raw = f_raw = t_raw = _EMPTY_MAP  # u16 0: "" and ()
    q_len = f_len = t_len = 2
    queue = fkey = ""
    throttle_keys: tuple[str, ...] = ()
    for _ in range(count):
        n = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
        mid = buf[pos + 2 : n].decode()
        pos = n
        if startswith(q_raw, pos):
            pos += q_len
        else:
            n = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
            queue = buf[pos + 2 : n].decode()
            q_raw = buf[pos:n]
            q_len = n - pos
            pos = n
        nh = (buf[pos] << 8) | buf[pos + 1]
        pos += 2
        headers: dict[str, str] = {}
        for _h in range(nh):
            n = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
            key = buf[pos + 2 : n].decode()
            pos = n
            n = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
            headers[key] = buf[pos + 2 : n].decode()
            pos = n
        n = _u32_at(buf, pos)[0]
        pos += 4
        body = buf[pos : pos + n]
        pos += n
        if startswith(f_raw, pos):
            pos += f_len
        else:
            n = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
            fkey = buf[pos + 2 : n].decode()
            f_raw = buf[pos:n]
            f_len = n - pos
            pos = n
        weight = _u32_at(buf, pos)[0]
        pos += 4
        if startswith(t_raw, pos):
            pos += t_len
        else:
            start = pos
            nt = (buf[pos] << 8) | buf[pos + 1]
            pos += 2
            tkeys = []
            for _t in range(nt):
                n = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
                tkeys.append(buf[pos + 2 : n].decode())
                pos = n
            throttle_keys = tuple(tkeys)
            t_raw = buf[start:pos]
            t_len = pos - start
        attempts, enqueued, leased = _tail_at(buf, pos)
        pos += 20
        append(Message(mid, queue, headers, body, fkey, weight, throttle_keys, attempts, enqueued, leased))
    if pos > len(buf):
        return None
    return out


def _delivery_checked(buf: bytes) -> list[Message]:
    """The reference decoder: every read bounds-checked by :class:`Reader`,
    so a malformed payload fails naming the exact field and offset."""
    r = Reader(buf)
    out: list[Message] = []
    for _ in range(r.read_count("Delivery.messages count")):
        out.append(
            Message(
                r.read_string("Delivery.message_id"),
                r.read_string("Delivery.queue"),
                r.read_string_map("Delivery.headers"),
                r.read_bytes("Delivery.payload"),
                r.read_string("Delivery.fairness_key"),
                r.read_u32("Delivery.weight"),
                tuple(r.read_string_list("Delivery.throttle_keys")),
                r.read_u32("Delivery.attempt_count"),
                r.read_u64("Delivery.enqueued_at"),
                r.read_u64("Delivery.leased_at"),
            )
        )
    return out


def decode_enqueue_result(payload: bytes | bytearray | memoryview) -> list[tuple[int, str]]:
    """``(error_code, message_id)`` per message, in request order."""
    buf = _as_bytes(payload)
    end = len(buf)
    if end < 4:
        raise fail.incomplete("EnqueueResult.results count", 0, 4, end)
    count = _u32_at(buf, 0)[0]
    if count > MAX_DECODED_COUNT:
        raise fail.count_exceeds("EnqueueResult.results count", 0, count)
    pos = 4
    out: list[tuple[int, str]] = []
    for _ in range(count):
        if end - pos < 1:
            raise fail.incomplete("EnqueueResult.error_code", pos, 1, end - pos)
        code = buf[pos]
        if code > 0x10:
            code = 0xFF
        pos += 1
        if end - pos < 2:
            raise fail.incomplete("EnqueueResult.message_id", pos, 2, end - pos)
        n = (buf[pos] << 8) | buf[pos + 1]
        pos += 2
        if end - pos < n:
            raise fail.incomplete("EnqueueResult.message_id", pos, n, end - pos)
        try:
            mid = buf[pos : pos + n].decode()
        except UnicodeDecodeError:
            raise fail.invalid_utf8("EnqueueResult.message_id", pos) from None
        pos += n
        out.append((code, mid))
    return out


def _decode_codes(payload: bytes | bytearray | memoryview, label: str) -> list[int]:
    buf = _as_bytes(payload)
    end = len(buf)
    if end < 4:
        raise fail.incomplete(label + ".results count", 0, 4, end)
    count = _u32_at(buf, 0)[0]
    if count > MAX_DECODED_COUNT:
        raise fail.count_exceeds(label + ".results count", 0, count)
    if end - 4 < count:
        raise fail.incomplete(label + ".error_code", end, 1, 0)
    return [c if c <= 0x10 else 0xFF for c in buf[4 : 4 + count]]


def decode_ack_result(payload: bytes | bytearray | memoryview) -> list[int]:
    """One error code per acked item, in request order."""
    return _decode_codes(payload, "AckResult")


def decode_nack_result(payload: bytes | bytearray | memoryview) -> list[int]:
    """One error code per nacked item, in request order."""
    return _decode_codes(payload, "NackResult")


# ---------------------------------------------------------- hot path: server side


def decode_enqueue(payload: bytes | bytearray | memoryview) -> list[tuple[str, dict[str, str], bytes]]:
    """Server side of Enqueue: ``(queue, headers, payload)`` per message."""
    r = Reader(payload)
    count = r.read_count("Enqueue.messages count")
    out = []
    for _ in range(count):
        queue = r.read_string("Enqueue.queue")
        headers = r.read_string_map("Enqueue.headers")
        out.append((queue, headers, r.read_bytes("Enqueue.payload")))
    return out


def decode_ack(payload: bytes | bytearray | memoryview) -> list[tuple[str, str]]:
    """Server side of Ack: ``(queue, message_id)`` per item."""
    r = Reader(payload)
    count = r.read_count("Ack.items count")
    return [(r.read_string("Ack.queue"), r.read_string("Ack.message_id")) for _ in range(count)]


def decode_nack(payload: bytes | bytearray | memoryview) -> list[tuple[str, str, str]]:
    """Server side of Nack: ``(queue, message_id, error)`` per item."""
    r = Reader(payload)
    count = r.read_count("Nack.items count")
    return [
        (r.read_string("Nack.queue"), r.read_string("Nack.message_id"), r.read_string("Nack.error"))
        for _ in range(count)
    ]


def encode_delivery(request_id: int, messages: Iterable[Any], max_frame_size: int = MAX_FRAME_SIZE) -> bytes:
    """Delivery frame(s) for ``messages`` (objects with the :class:`Message` fields)."""
    msgs = list(messages)
    w = Writer()
    w.write_count(len(msgs), "Delivery.messages count")
    for m in msgs:
        w.write_string(m.id, "Delivery.message_id")
        w.write_string(m.queue, "Delivery.queue")
        w.write_string_map(m.headers, "Delivery.headers")
        w.write_bytes(m.payload, "Delivery.payload")
        w.write_string(m.fairness_key, "Delivery.fairness_key")
        w.write_u32(m.weight, "Delivery.weight")
        w.write_string_list(list(m.throttle_keys), "Delivery.throttle_keys")
        w.write_u32(m.attempt_count, "Delivery.attempt_count")
        w.write_u64(m.enqueued_at, "Delivery.enqueued_at")
        w.write_u64(m.leased_at, "Delivery.leased_at")
    return w.frame(Opcode.DELIVERY, request_id, max_frame_size)


def encode_enqueue_result(
    request_id: int, results: Sequence[tuple[int, str]], max_frame_size: int = MAX_FRAME_SIZE
) -> bytes:
    """EnqueueResult frame: ``(error_code, message_id)`` per message."""
    w = Writer()
    w.write_count(len(results), "EnqueueResult.results count")
    for code, mid in results:
        w.write_u8(code, "EnqueueResult.error_code")
        w.write_string(mid, "EnqueueResult.message_id")
    return w.frame(Opcode.ENQUEUE_RESULT, request_id, max_frame_size)


def _encode_codes(opcode: int, label: str, request_id: int, codes: Sequence[int], max_frame_size: int) -> bytes:
    w = Writer()
    w.write_count(len(codes), label + ".results count")
    for code in codes:
        w.write_u8(code, label + ".error_code")
    return w.frame(opcode, request_id, max_frame_size)


def encode_ack_result(request_id: int, codes: Sequence[int], max_frame_size: int = MAX_FRAME_SIZE) -> bytes:
    """AckResult frame: one error code per item."""
    return _encode_codes(Opcode.ACK_RESULT, "AckResult", request_id, codes, max_frame_size)


def encode_nack_result(request_id: int, codes: Sequence[int], max_frame_size: int = MAX_FRAME_SIZE) -> bytes:
    """NackResult frame: one error code per item."""
    return _encode_codes(Opcode.NACK_RESULT, "NackResult", request_id, codes, max_frame_size)
