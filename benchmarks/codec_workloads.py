"""The codec benchmark workloads, shared by ``test_codec_bench.py`` and ``codec_table.py``.

Each workload builds its input once and returns ``(run, units)``: ``run()``
does the work on the given twin, ``units`` is what the time is divided by
(messages, items or frames).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from fila.protocol import pure

Workload = Callable[[ModuleType], tuple[Callable[[], Any], int]]


def _message_id(i: int) -> str:
    return f"0190b6a4-7d1c-7c4e-9a61-{i:012x}"


def _headers(i: int) -> dict[str, str]:
    return {"content-type": "application/json", "trace-id": f"{i:016x}"}


def _enqueue(count: int, size: int, with_headers: bool) -> Workload:
    items = [("orders", _headers(i) if with_headers else None, bytes([i % 256]) * size) for i in range(count)]

    def make(codec: ModuleType) -> tuple[Callable[[], Any], int]:
        encode = codec.encode_enqueue
        return (lambda: encode(1, items)), count

    return make


def _messages(count: int, size: int) -> list[pure.ConsumeMessage]:
    return [
        pure.ConsumeMessage(_message_id(i), _headers(i), b"p" * size, "tenant-42", 1, "orders", 1, ["tenant-42"], 0, 0)
        for i in range(count)
    ]


def _delivery(count: int, size: int) -> Workload:
    payload = pure.encode_delivery(7, _messages(count, size))[10:]

    def make(codec: ModuleType) -> tuple[Callable[[], Any], int]:
        decode = codec.decode_delivery
        return (lambda: decode(payload)), count

    return make


def _ack(count: int) -> Workload:
    items = [("orders", _message_id(i)) for i in range(count)]

    def make(codec: ModuleType) -> tuple[Callable[[], Any], int]:
        encode = codec.encode_ack
        return (lambda: encode(1, items)), count

    return make


def _enqueue_result(count: int) -> Workload:
    payload = pure.encode_enqueue_result(1, [(0, _message_id(i)) for i in range(count)])[10:]

    def make(codec: ModuleType) -> tuple[Callable[[], Any], int]:
        decode = codec.decode_enqueue_result
        return (lambda: decode(payload)), count

    return make


def _ack_result(count: int) -> Workload:
    payload = pure.encode_ack_result(1, [0] * count)[10:]

    def make(codec: ModuleType) -> tuple[Callable[[], Any], int]:
        decode = codec.decode_ack_result
        return (lambda: decode(payload)), count

    return make


def _reader(count: int, size: int) -> Workload:
    """The consumer hot path: one buffer of one-message Delivery frames, split and decoded."""
    stream = b"".join(pure.encode_delivery(7, [m]) for m in _messages(count, size))

    def make(codec: ModuleType) -> tuple[Callable[[], Any], int]:
        reader = codec.FrameReader(decode_deliveries=True)
        return (lambda: reader.feed(stream)), count

    return make


WORKLOADS: dict[str, Workload] = {
    "encode Enqueue 1×64 B (2 headers)": _enqueue(1, 64, True),
    "encode Enqueue 100×64 B (2 headers)": _enqueue(100, 64, True),
    "encode Enqueue 100×1 KiB (no headers)": _enqueue(100, 1024, False),
    "encode Enqueue 1×1 MiB": _enqueue(1, 1 << 20, False),
    "decode Delivery 1×64 B": _delivery(1, 64),
    "decode Delivery 100×64 B": _delivery(100, 64),
    "decode Delivery 100×1 KiB": _delivery(100, 1024),
    "encode Ack 100": _ack(100),
    "decode EnqueueResult 100": _enqueue_result(100),
    "decode AckResult 100": _ack_result(100),
    "FrameReader + decode, 100 one-message Delivery frames": _reader(100, 64),
}
