"""atheris harness: the compiled codec's decoders and frame reader on arbitrary bytes.

Each input is split into a selector byte, a chunking seed and a body. The body
goes to one of the C decoders (or through a FrameReader in random chunks) and
the same call is made on the pure twin: the only acceptable outcomes are equal
results or the same DecodeError message. Anything else (a crash, a sanitizer
report, another exception type, a mismatch) is a finding.

Run: ``python fuzz/fuzz_codec.py [corpus_dir] [-max_total_time=60]``.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import atheris

with atheris.instrument_imports():
    from fila.protocol import pure

import fila._speedups._codec as cy
from fila.errors import DecodeError

DECODERS = ("decode_delivery", "decode_enqueue_result", "decode_ack_result", "decode_nack_result")


def _normal(value: Any) -> Any:
    name = type(value).__name__
    if name == "ConsumeMessage":
        return ("M", dataclasses.astuple(value))
    if name == "Frame":
        return ("F", value.opcode, value.flags, value.request_id, value.payload, _normal(value.messages))
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return value


def _run(fn: Any, *args: Any) -> Any:
    try:
        return ("ok", _normal(fn(*args)))
    except DecodeError as exc:
        return ("decode-error", str(exc))


def _reader_run(module: Any, chunks: list[bytes], options: dict[str, Any]) -> list[Any]:
    reader = module.FrameReader(**options)
    out = []
    for chunk in chunks:
        out.append(_run(reader.feed, chunk))
        out.append((reader.buffered, reader.pending_streams))
    return out


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    selector, seed, body = data[0], data[1], data[2:]
    if selector % 8 < len(DECODERS):
        name = DECODERS[selector % 8]
        view: Any = memoryview(body) if selector & 0x40 else body
        got = _run(getattr(cy, name), view)
        want = _run(getattr(pure, name), body)
        if got != want:
            raise AssertionError(f"{name}: cython {got!r} != pure {want!r}")
        return
    options: dict[str, Any] = {
        "max_frame_size": (0, 7, 64, 4096)[seed & 3],
        "max_pending_streams": (seed >> 2) & 3,
        "max_reassembled_size": (0, 50, 1000, 1 << 20)[(seed >> 4) & 3],
    }
    if selector & 0x10:
        options["decode_deliveries"] = True
    elif selector & 0x20:
        options["reassemble"] = False
    step = 1 + (seed >> 6) * 7
    chunks = [body[i : i + step] for i in range(0, len(body), step)] or [b""]
    got = _reader_run(cy, chunks, options)
    want = _reader_run(pure, chunks, options)
    if got != want:
        raise AssertionError(f"FrameReader({options}): cython {got!r} != pure {want!r}")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
