"""The text of every codec failure, in one place.

Both codec twins build their exceptions here, so a malformed frame or a bad
value raises the same type with the same message whichever twin runs. Only
error paths come here; nothing in this module is on a hot path.
"""

from __future__ import annotations

from .. import errors as _errors  # imported as a module: fila.errors imports fila.protocol
from .constants import MAX_DECODED_COUNT

# ------------------------------------------------------------------ decoding


def incomplete(what: str, offset: int, need: int, have: int) -> _errors.DecodeError:
    detail = f"incomplete frame: need {need} bytes, have {have}"
    return _errors.DecodeError(f"{detail} (reading {what} at offset {offset})", "IncompleteFrame", detail)


def invalid_utf8(what: str, offset: int) -> _errors.DecodeError:
    detail = "invalid string: not valid UTF-8"
    return _errors.DecodeError(f"{detail} (reading {what} at offset {offset})", "InvalidUtf8", detail)


def count_exceeds(what: str, offset: int, count: int) -> _errors.DecodeError:
    detail = f"decoded count {count} exceeds maximum allowed {MAX_DECODED_COUNT}"
    return _errors.DecodeError(f"{detail} (reading {what} at offset {offset})", "CountExceedsLimit", detail)


def frame_too_large(size: int, limit: int) -> _errors.DecodeError:
    detail = f"frame too large: {size} bytes exceeds max {limit} bytes"
    return _errors.DecodeError(detail, "FrameTooLarge", detail)


def body_too_short(length: int) -> _errors.DecodeError:
    detail = f"incomplete frame: need 6 bytes, have {length}"
    return _errors.DecodeError(
        f"{detail} (the length prefix says {length}, less than the 6-byte frame header)",
        "IncompleteFrame",
        detail,
    )


def opcode_mismatch(request_id: int, initial: int, got: int) -> _errors.DecodeError:
    detail = f"continuation opcode mismatch for request_id {request_id}: initial 0x{initial:02x}, got 0x{got:02x}"
    return _errors.DecodeError(detail, "ContinuationOpcodeMismatch", detail)


def too_many_streams(count: int, limit: int) -> _errors.DecodeError:
    detail = f"too many in-flight continuation streams: {count} exceeds max {limit}"
    return _errors.DecodeError(detail, "TooManyContinuationStreams", detail)


def reassembled_too_large(request_id: int, size: int, limit: int) -> _errors.DecodeError:
    detail = f"reassembled payload too large for request_id {request_id}: {size} bytes exceeds max {limit} bytes"
    return _errors.DecodeError(detail, "ReassembledTooLarge", detail)


# ------------------------------------------------------------------ encoding


def _type_name(value: object) -> str:
    return type(value).__name__


def not_str(what: str, value: object) -> _errors.EncodeError:
    return _errors.EncodeError(f"{what} must be str, got {_type_name(value)}")


def not_utf8(what: str) -> _errors.EncodeError:
    return _errors.EncodeError(f"{what} cannot be encoded as UTF-8 (it contains a lone surrogate)")


def string_too_long(what: str, size: int) -> _errors.EncodeError:
    return _errors.EncodeError(f"{what} is {size} bytes of UTF-8; a FIBP string holds at most 65535 bytes")


def not_bytes_like(what: str, value: object) -> _errors.EncodeError:
    return _errors.EncodeError(f"{what} must be bytes-like (bytes, bytearray or memoryview), got {_type_name(value)}")


def bytes_too_long(what: str, size: int) -> _errors.EncodeError:
    return _errors.EncodeError(f"{what} is {size} bytes; a FIBP byte string holds at most 4294967295")


def not_mapping(what: str, value: object) -> _errors.EncodeError:
    return _errors.EncodeError(f"{what} must be a dict of str to str or None, got {_type_name(value)}")


def not_sequence(what: str, value: object) -> _errors.EncodeError:
    return _errors.EncodeError(f"{what} must be a list or tuple, got {_type_name(value)}")


def too_many_entries(what: str, count: int, limit: int) -> _errors.EncodeError:
    return _errors.EncodeError(f"{what} has {count} entries; at most {limit} fit on the wire")


def bad_item(what: str, index: int, expected: int, value: object) -> _errors.EncodeError:
    return _errors.EncodeError(f"{what}[{index}] must be a tuple of {expected} fields, got {_type_name(value)}")


def bad_int(what: str, value: object, limit: int) -> _errors.EncodeError:
    if isinstance(value, int) and not isinstance(value, bool):
        return _errors.EncodeError(f"{what} is {value}; it must be an integer from 0 to {limit}")
    return _errors.EncodeError(f"{what} must be int, got {_type_name(value)}")


def bad_max_frame_size(value: object) -> _errors.EncodeError:
    return _errors.EncodeError(
        f"max_frame_size is {value!r}; it must be an integer from 7 to 4294967295 (0 means the 16 MiB default)"
    )


def decode_needs_reassembly() -> _errors.EncodeError:
    return _errors.EncodeError(
        "decode_deliveries=True needs reassemble=True (a Delivery body can only be "
        "decoded once its continuation frames are joined)"
    )


def reader_failed(cause: BaseException) -> _errors.DecodeError:
    return _errors.DecodeError(
        f"frame reader stopped after an earlier error ({cause}); the connection must be closed",
        "ReaderFailed",
    )
