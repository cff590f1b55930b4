"""The pure-Python codec twin: the reference for the hot path.

``fila._speedups._codec`` implements the hot path (``encode_enqueue``,
``encode_ack``, ``encode_nack``, ``decode_delivery``,
``decode_enqueue_result``, ``decode_ack_result``, ``decode_nack_result``,
``FrameReader``, ``Frame``, ``ConsumeMessage``) with the same names,
signatures, return values, exception types and messages; the tests hold both
to that byte for byte, and both to the body layouts of
:mod:`fila.protocol.messages`. This module also has what only the pure twin
needs: ``Reader``/``Writer`` (the primitives of the generic codec),
``encode_frame`` and the server side of the hot path (for the test broker).

A frame is ``u32 length (= 6 + payload) | u8 opcode | u8 flags | u32
request_id | payload``, big-endian; body layouts are in
:mod:`fila.protocol.messages`.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import Field
from dataclasses import FrozenInstanceError
from dataclasses import dataclass
from operator import attrgetter
from struct import Struct
from struct import calcsize
from typing import Any
from typing import ClassVar

from .. import errors as _errors
from . import _failures as fail
from .constants import DEFAULT_MAX_PENDING_STREAMS
from .constants import DEFAULT_MAX_REASSEMBLED_SIZE
from .constants import ERROR_CODE_BY_BYTE
from .constants import FLAG_CONTINUATION
from .constants import HEADER_SIZE
from .constants import MAX_DECODED_COUNT
from .constants import MAX_FRAME_SIZE
from .constants import MAX_U16
from .constants import MAX_U32
from .constants import MAX_U64
from .constants import Opcode

__all__ = [
    "IMPLEMENTATION",
    "ConsumeMessage",
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
_u32_at = _U32.unpack_from
_u64_at = _U64.unpack_from
_header_at = _HEADER.unpack_from
_pack_u16 = _U16.pack
_pack_u32 = _U32.pack
_pack_header = _HEADER.pack
_BYTES_LIKE = (bytes, bytearray, memoryview)
_EMPTY_MAP = b"\x00\x00"
_SMALL_U16 = tuple(_pack_u16(i) for i in range(16))
_DELIVERY = int(Opcode.DELIVERY)


# ---------------------------------------------------------------------- message


@dataclass(frozen=True)
class _ConsumeMessageFields:
    """The fields of :class:`ConsumeMessage`, as a real frozen dataclass: both
    twins' message classes carry its ``dataclasses`` metadata."""

    id: str
    headers: dict[str, str]
    payload: bytes
    fairness_key: str
    attempt_count: int
    queue: str
    weight: int = 0
    throttle_keys: list[str] | None = None
    enqueued_at: int = 0
    leased_at: int = 0


DATACLASS_FIELDS: dict[str, Field[Any]] = _ConsumeMessageFields.__dataclass_fields__
DATACLASS_PARAMS: Any = _ConsumeMessageFields.__dataclass_params__  # type: ignore[attr-defined]
FIELD_NAMES: tuple[str, ...] = tuple(DATACLASS_FIELDS)
#: The constructor's signature, for ``inspect.signature`` on the compiled twin's class too.
SIGNATURE = inspect.signature(_ConsumeMessageFields)
_field_values = attrgetter(*FIELD_NAMES)


class _Slots:
    """The storage of :class:`ConsumeMessage`: its slots, writable.

    ``decode_delivery`` fills a ``_Slots`` with plain attribute stores and then
    makes it a ``ConsumeMessage`` by assigning ``__class__`` (the subclass adds
    nothing to the layout). That costs about a quarter of the ten
    ``object.__setattr__`` calls a frozen constructor makes.
    """

    __slots__ = (
        "attempt_count",
        "enqueued_at",
        "fairness_key",
        "headers",
        "id",
        "leased_at",
        "payload",
        "queue",
        "throttle_keys",
        "weight",
    )

    id: str
    headers: dict[str, str]
    payload: bytes
    fairness_key: str
    attempt_count: int
    queue: str
    weight: int
    throttle_keys: list[str] | None
    enqueued_at: int
    leased_at: int


class ConsumeMessage(_Slots):
    """A delivered message: fila-python 0.3.0's ``ConsumeMessage``.

    It behaves as that ``@dataclass(frozen=True)``: the same fields in the
    same order (the first six required), ``dataclasses.fields``, ``asdict``
    and ``replace`` work, equality compares every field, assigning raises
    ``dataclasses.FrozenInstanceError``, and the hash is that of the field
    values (so a message with a ``headers`` dict is unhashable). A delivered
    message always has ``throttle_keys`` as a list (possibly empty);
    timestamps are Unix milliseconds (0 when the server does not know them).
    """

    __slots__ = ()
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]] = DATACLASS_FIELDS
    __dataclass_params__: ClassVar[Any] = DATACLASS_PARAMS
    __match_args__ = (
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

    def __init__(
        self,
        id: str,
        headers: dict[str, str],
        payload: bytes,
        fairness_key: str,
        attempt_count: int,
        queue: str,
        weight: int = 0,
        throttle_keys: list[str] | None = None,
        enqueued_at: int = 0,
        leased_at: int = 0,
    ) -> None:
        init = object.__setattr__  # as a frozen dataclass does
        init(self, "id", id)
        init(self, "headers", headers)
        init(self, "payload", payload)
        init(self, "fairness_key", fairness_key)
        init(self, "attempt_count", attempt_count)
        init(self, "queue", queue)
        init(self, "weight", weight)
        init(self, "throttle_keys", throttle_keys)
        init(self, "enqueued_at", enqueued_at)
        init(self, "leased_at", leased_at)

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return bool(_field_values(self) == _field_values(other))

    def __hash__(self) -> int:
        return hash(_field_values(self))

    def __repr__(self) -> str:
        return _message_repr(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, _field_values(self))


Message = ConsumeMessage
"""The codec's historical name for :class:`ConsumeMessage`."""


_REPR_PAYLOAD = 64  # longer payloads are shown cut, with their length


def _message_repr(msg: Any) -> str:
    payload = msg.payload
    if isinstance(payload, (bytes, bytearray)) and len(payload) > _REPR_PAYLOAD:
        shown = f"<{len(payload)} bytes: {bytes(payload[:32])!r}...>"
    else:
        shown = repr(payload)
    return (
        f"{type(msg).__qualname__}(id={msg.id!r}, headers={msg.headers!r}, payload={shown}, "
        f"fairness_key={msg.fairness_key!r}, attempt_count={msg.attempt_count!r}, queue={msg.queue!r}, "
        f"weight={msg.weight!r}, throttle_keys={msg.throttle_keys!r}, enqueued_at={msg.enqueued_at!r}, "
        f"leased_at={msg.leased_at!r})"
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
        messages: list[ConsumeMessage] | None = None,
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
    def messages(self) -> list[ConsumeMessage] | None:
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
    start of the payload. A failed read raises
    :class:`~fila.errors.DecodeError` and leaves the position unspecified.
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

    def _take(self, n: int, what: str) -> int:
        """Where the next ``n`` bytes start; moves past them."""
        pos = self._pos
        if n > self._end - pos:
            raise fail.incomplete(what, pos, n, self._end - pos)
        self._pos = pos + n
        return pos

    def skip_if_next(self, raw: bytes) -> bool:
        """If the payload continues with ``raw``, move past it and say so."""
        if self._buf.startswith(raw, self._pos):
            self._pos += len(raw)
            return True
        return False

    def since(self, start: int) -> bytes:
        """The bytes read from ``start`` up to the current position."""
        return self._buf[start : self._pos]

    def read_u8(self, what: str = "u8") -> int:
        return self._buf[self._take(1, what)]

    def read_bool(self, what: str = "bool") -> bool:
        return self._buf[self._take(1, what)] != 0

    def read_error_code(self, what: str = "error code") -> int:
        pos = self._pos
        if pos >= self._end:
            raise fail.incomplete(what, pos, 1, self._end - pos)
        self._pos = pos + 1
        return ERROR_CODE_BY_BYTE[self._buf[pos]]

    def read_u16(self, what: str = "u16") -> int:
        pos = self._take(2, what)
        return (self._buf[pos] << 8) | self._buf[pos + 1]

    def read_u32(self, what: str = "u32") -> int:
        pos = self._pos
        if self._end - pos < 4:
            raise fail.incomplete(what, pos, 4, self._end - pos)
        self._pos = pos + 4
        value: int = _u32_at(self._buf, pos)[0]
        return value

    def read_u64(self, what: str = "u64") -> int:
        pos = self._pos
        if self._end - pos < 8:
            raise fail.incomplete(what, pos, 8, self._end - pos)
        self._pos = pos + 8
        value: int = _u64_at(self._buf, pos)[0]
        return value

    def read_i64(self, what: str = "i64") -> int:
        return int(_I64.unpack_from(self._buf, self._take(8, what))[0])

    def read_f64(self, what: str = "f64") -> float:
        return float(_F64.unpack_from(self._buf, self._take(8, what))[0])

    def read_fixed(self, st: Struct, what: tuple[str, ...]) -> tuple[Any, ...]:
        """Consecutive fixed-size fields in one read: ``st`` is their big-endian
        format (one letter per field), ``what`` names each field."""
        pos = self._pos
        if self._end - pos < st.size:
            for letter, name in zip(st.format[1:], what, strict=True):
                self._take(calcsize(">" + letter), name)  # raises at the field that does not fit
        self._pos = pos + st.size
        return st.unpack_from(self._buf, pos)

    def read_count(self, what: str = "count") -> int:
        """A u32 element count, refused above 1,000,000."""
        pos = self._pos
        if self._end - pos < 4:
            raise fail.incomplete(what, pos, 4, self._end - pos)
        count: int = _u32_at(self._buf, pos)[0]
        if count > MAX_DECODED_COUNT:
            raise fail.count_exceeds(what, pos, count)
        self._pos = pos + 4
        return count

    def read_string(self, what: str = "string") -> str:
        buf = self._buf
        pos = self._pos
        end = self._end
        if end - pos < 2:
            raise fail.incomplete(what, pos, 2, end - pos)
        pos += 2
        stop = pos + ((buf[pos - 2] << 8) | buf[pos - 1])
        if stop > end:
            self._pos = pos
            raise fail.incomplete(what, pos, stop - pos, end - pos)
        self._pos = stop
        try:
            return buf[pos:stop].decode()
        except UnicodeDecodeError:
            raise fail.invalid_utf8(what, pos) from None

    def read_optional_string(self, what: str = "optional string") -> str | None:
        if self._buf[self._take(1, what + " flag")] == 0:
            return None
        return self.read_string(what)

    def read_bytes(self, what: str = "bytes") -> bytes:
        pos = self._pos
        end = self._end
        if end - pos < 4:
            raise fail.incomplete(what, pos, 4, end - pos)
        pos += 4
        stop = pos + _u32_at(self._buf, pos - 4)[0]
        if stop > end:
            self._pos = pos
            raise fail.incomplete(what, pos, stop - pos, end - pos)
        self._pos = stop
        return self._buf[pos:stop]

    def read_string_map(self, what: str = "map") -> dict[str, str]:
        # Speed trick (a map of two entries in ~2/3 of the time of a
        # read_string per key and value): read every entry without checks,
        # then see whether the reads stayed inside the payload. If not, or on
        # bad UTF-8, read it again with every step checked, to raise the exact error.
        buf = self._buf
        pos = self._pos
        out: dict[str, str] = {}
        try:
            count = (buf[pos] << 8) | buf[pos + 1]
            pos += 2
            for _ in range(count):
                stop = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
                key = buf[pos + 2 : stop].decode()
                pos = stop + 2 + ((buf[stop] << 8) | buf[stop + 1])
                out[key] = buf[stop + 2 : pos].decode()
        except (IndexError, UnicodeDecodeError):
            pos = self._end + 1
        if pos <= self._end:
            self._pos = pos
            return out
        checked: dict[str, str] = {}
        for _ in range(self.read_u16(what + " count")):
            key = self.read_string(what + " key")
            checked[key] = self.read_string(what + " value")
        return checked

    def read_string_list(self, what: str = "string list") -> list[str]:
        # Speed trick, as read_string_map (a list of one item: ~3/4 of the time).
        buf = self._buf
        pos = self._pos
        out: list[str] = []
        try:
            count = (buf[pos] << 8) | buf[pos + 1]
            pos += 2
            for _ in range(count):
                stop = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
                out.append(buf[pos + 2 : stop].decode())
                pos = stop
        except (IndexError, UnicodeDecodeError):
            pos = self._end + 1
        if pos <= self._end:
            self._pos = pos
            return out
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


_new = object.__new__
_DELIVERY_TAIL = Struct(">IQQ")
_DELIVERY_TAIL_FIELDS = ("Delivery.attempt_count", "Delivery.enqueued_at", "Delivery.leased_at")


def decode_delivery(payload: bytes | bytearray | memoryview) -> list[ConsumeMessage]:
    """Every message of a Delivery payload (any count)."""
    r = Reader(payload)
    count = r.read_count("Delivery.messages count")
    string = r.read_string
    # Speed trick (a quarter of the time of the 100-message Delivery rows of the
    # codec benchmark): consecutive messages usually share the queue, and the
    # fairness key, weight and throttle keys. When their bytes equal the
    # previous message's, the values are reused instead of decoded again.
    reuse = count > 1
    queue_raw = tail_raw = b""
    queue = fairness_key = ""
    weight = 0
    throttle_keys: list[str] = []
    out: list[ConsumeMessage] = []
    for _ in range(count):
        m: Any = _new(_Slots)
        m.id = string("Delivery.message_id")
        if not (queue_raw and r.skip_if_next(queue_raw)):
            start = r.pos if reuse else 0
            queue = string("Delivery.queue")
            queue_raw = r.since(start) if reuse else b""
        m.queue = queue
        m.headers = r.read_string_map("Delivery.headers")
        m.payload = r.read_bytes("Delivery.payload")
        if tail_raw and r.skip_if_next(tail_raw):
            throttle_keys = list(throttle_keys)  # each message owns its list
        else:
            start = r.pos if reuse else 0
            fairness_key = string("Delivery.fairness_key")
            weight = r.read_u32("Delivery.weight")
            throttle_keys = r.read_string_list("Delivery.throttle_keys")
            tail_raw = r.since(start) if reuse else b""
        m.fairness_key = fairness_key
        m.weight = weight
        m.throttle_keys = throttle_keys
        # one read for the three fixed-size fields: half the time of three reads
        m.attempt_count, m.enqueued_at, m.leased_at = r.read_fixed(_DELIVERY_TAIL, _DELIVERY_TAIL_FIELDS)
        m.__class__ = ConsumeMessage  # see _Slots
        out.append(m)
    return out


def decode_enqueue_result(payload: bytes | bytearray | memoryview) -> list[tuple[int, str]]:
    """``(error_code, message_id)`` per message, in request order."""
    # Read inline rather than through Reader: two Reader calls per item cost
    # ~15% more (codec benchmark, "decode EnqueueResult 100").
    buf = payload if type(payload) is bytes else bytes(payload)
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
        code = ERROR_CODE_BY_BYTE[buf[pos]]
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
    r = Reader(payload)
    count = r.read_count(label + ".results count")
    if r.remaining < count:
        raise fail.incomplete(label + ".error_code", r.pos + r.remaining, 1, 0)
    start = r.pos
    return list(r._buf[start : start + count].translate(ERROR_CODE_BY_BYTE))


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
    """Delivery frame(s) for ``messages`` (objects with the :class:`ConsumeMessage` fields)."""
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
        w.write_string_list(list(m.throttle_keys or ()), "Delivery.throttle_keys")
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
