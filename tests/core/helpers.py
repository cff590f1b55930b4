"""Helpers for the sans-I/O core tests: frames as bytes, and a waiter that records."""

from __future__ import annotations

from typing import Any

from fila._core import Settings
from fila.protocol import FrameReader
from fila.protocol import Opcode
from fila.protocol import encode_message
from fila.protocol.pure import ConsumeMessage
from fila.protocol.pure import encode_delivery


class Recorder:
    """A :class:`fila._core.Waiter` that remembers every call."""

    def __init__(self, sent: bool = False) -> None:
        self.sent = sent
        self.frames: list[Any] = []
        self.errors: list[BaseException] = []

    def complete(self, frame: Any) -> None:
        self.frames.append(frame)

    def fail(self, exc: BaseException) -> None:
        self.errors.append(exc)


def settings(addr: str = "127.0.0.1:5555", **kw: Any) -> Settings:
    return Settings(addr, **kw)


def control(opcode: int, rid: int) -> bytes:
    return b"\x00\x00\x00\x06" + bytes((opcode, 0)) + rid.to_bytes(4, "big")


def handshake_ok(version: int = 1, node_id: int = 7, max_frame_size: int = 1 << 20) -> bytes:
    return encode_message(
        "HandshakeOk", 0, {"negotiated_version": version, "node_id": node_id, "max_frame_size": max_frame_size}
    )


def error_frame(rid: int, code: int, message: str = "", metadata: dict[str, str] | None = None) -> bytes:
    return encode_message("ErrorFrame", rid, {"error_code": code, "message": message, "metadata": metadata or {}})


def message(mid: str, queue: str = "q", payload: bytes = b"p") -> ConsumeMessage:
    return ConsumeMessage(mid, {"h": "v"}, payload, "fk", 0, queue, 1, [], 0, 0)


def delivery(rid: int, *ids: str) -> bytes:
    return encode_delivery(rid, [message(i) for i in ids])


def one_frame(data: bytes) -> Any:
    (frame,) = FrameReader().feed(data)
    return frame


PONG = Opcode.PONG
