"""Client options and waits shared by the cluster tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from collections.abc import Coroutine
from typing import Any

from fila.testing import Cluster

TEST_TIMEOUT = 60.0

#: Client options that keep the suite fast: quick leader checks and reconnects.
FAST: dict[str, Any] = {
    "leader_check_interval": 0.2,
    "reconnect_initial_delay": 0.02,
    "reconnect_max_delay": 0.2,
    "connect_timeout": 2.0,
    "request_timeout": 10.0,
}


def addrs(cluster: Cluster, *first: int) -> list[str]:
    """Every node's address, the nodes ``first`` in front (the client connects to the first one)."""
    order = list(first) + [b.node_id for b in cluster.nodes if b.node_id not in first]
    return [cluster.node(i).address for i in order]


def run(coro: Coroutine[Any, Any, Any], timeout: float = TEST_TIMEOUT) -> Any:
    """Run an async test body with a hard time limit."""

    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def wait_until(pred: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01) -> bool:
    """Poll ``pred`` until it is true or ``timeout`` passed; True if it became true."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


async def await_until(pred: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)
    return True


class Raw:
    """One plain FIBP connection to one node, for checking what a node answers (no client logic)."""

    def __init__(self, address: str, timeout: float = 5.0) -> None:
        import socket

        from fila._core import Settings
        from fila._core import parse_address
        from fila.protocol import FrameReader

        host, port = parse_address(address)
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.reader = FrameReader(decode_deliveries=True)
        self.frames: list[Any] = []
        self.rid = 0
        self.sock.sendall(Settings(address).handshake_frame())
        hs = self._next(0)
        from fila.protocol.messages import decode_body

        self.node_id = decode_body("HandshakeOk", hs.payload)["node_id"]

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _next(self, rid: int) -> Any:
        while True:
            for i, f in enumerate(self.frames):
                if f.request_id == rid and f.opcode != 0x14:
                    return self.frames.pop(i)
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            self.frames.extend(self.reader.feed(data))

    def send(self, build: Callable[[int], bytes]) -> int:
        self.rid += 1
        self.sock.sendall(build(self.rid))
        return self.rid

    def call(self, body: str, fields: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        """Send a request by body type name; ``(opcode, decoded answer)`` (Error frames decoded too)."""
        from fila.protocol.messages import decode_body
        from fila.protocol.messages import encode_message

        rid = self.send(lambda r: encode_message(body, r, fields or {}))
        frame = self._next(rid)
        kind = "ErrorFrame" if frame.opcode == 0xFE else frame.opcode
        return frame.opcode, (decode_body(kind, frame.payload) if frame.payload else {})

    def enqueue(self, items: list[tuple[str, dict[str, str], bytes]]) -> list[tuple[int, str]]:
        from fila.protocol import decode_enqueue_result
        from fila.protocol import encode_enqueue

        frame = self._next(self.send(lambda r: encode_enqueue(r, items)))
        assert frame.opcode == 0x11, hex(frame.opcode)
        return decode_enqueue_result(frame.payload)

    def ack(self, items: list[tuple[str, str]]) -> list[int]:
        from fila.protocol import decode_ack_result
        from fila.protocol import encode_ack

        frame = self._next(self.send(lambda r: encode_ack(r, items)))
        assert frame.opcode == 0x17, hex(frame.opcode)
        return decode_ack_result(frame.payload)

    def deliveries(self, timeout: float) -> list[Any]:
        """Messages delivered on this connection within ``timeout`` seconds."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
            if data:
                self.frames.extend(self.reader.feed(data))
        except TimeoutError:
            pass
        finally:
            self.sock.settimeout(5.0)
        out = [m for f in self.frames if f.opcode == 0x14 for m in f.messages]
        self.frames = [f for f in self.frames if f.opcode != 0x14]
        return out
