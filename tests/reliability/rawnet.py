"""Raw-socket peers of the tests' own (no fila client code on the server side).

* :class:`RawServer` — a TCP server that runs a script per accepted
  connection: the hostile or broken servers (truncated frames, absurd
  lengths, never-ending continuations, wrong handshakes …), and a small
  well-behaved FIBP server for the "usable after reconnect" half of each
  test and for a broker that advertises a small ``max_frame_size``.
* :class:`DropProxy` — a TCP proxy in front of a real broker that parses the
  frames going through it and cuts the connection at an exact point of the
  Enqueue stream, recording which messages were in flight.

Frames on the server side are read with the pure codec's FrameReader and
built by hand, byte by byte where the test is about malformed bytes.
"""

from __future__ import annotations

import itertools
import socket
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from fila.protocol.constants import ErrorCode
from fila.protocol.constants import Opcode
from fila.protocol.messages import decode_body
from fila.protocol.messages import encode_message
from fila.protocol.pure import Frame
from fila.protocol.pure import FrameReader
from fila.protocol.pure import decode_enqueue
from fila.protocol.pure import encode_delivery

HEADER = struct.Struct(">IBBI")
CONTINUATION = 0x01


def frame(opcode: int, rid: int, payload: bytes = b"", flags: int = 0) -> bytes:
    """One frame, exactly as given (no checks: tests build malformed ones on purpose)."""
    return HEADER.pack(6 + len(payload), opcode, flags, rid) + payload


def u16str(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return len(raw).to_bytes(2, "big") + raw


def handshake_ok(version: int = 1, node_id: int = 0, max_frame_size: int = 0) -> bytes:
    body = version.to_bytes(2, "big") + node_id.to_bytes(8, "big") + max_frame_size.to_bytes(4, "big")
    return frame(Opcode.HANDSHAKE_OK, 0, body)


def enqueue_result(rid: int, ids: list[str]) -> bytes:
    body = len(ids).to_bytes(4, "big") + b"".join(b"\x00" + u16str(i) for i in ids)
    return frame(Opcode.ENQUEUE_RESULT, rid, body)


def error_frame(rid: int, code: int, message: str, metadata: dict[str, str] | None = None) -> bytes:
    return encode_message(Opcode.ERROR, rid, {"error_code": code, "message": message, "metadata": metadata or {}})


class _Msg:
    """What encode_delivery reads."""

    def __init__(self, mid: str, queue: str, payload: bytes, attempt_count: int = 0) -> None:
        self.id = mid
        self.queue = queue
        self.headers: dict[str, str] = {}
        self.payload = payload
        self.fairness_key = "default"
        self.weight = 1
        self.throttle_keys: list[str] = []
        self.attempt_count = attempt_count
        self.enqueued_at = 0
        self.leased_at = 0


def delivery(rid: int, mid: str, queue: str, payload: bytes, attempt_count: int = 0) -> bytes:
    return encode_delivery(rid, [_Msg(mid, queue, payload, attempt_count)])


STATS_OK = {
    "error_code": 0,
    "depth": 0,
    "in_flight": 0,
    "active_fairness_keys": 0,
    "active_consumers": 0,
    "quantum": 1000,
    "leader_node_id": 0,
    "replication_count": 0,
    "per_key_stats": [],
    "per_throttle_stats": [],
}


class Peer:
    """The server side of one accepted connection."""

    def __init__(self, sock: socket.socket, index: int, server: RawServer) -> None:
        self.sock = sock
        self.index = index
        self.server = server
        self.reader = FrameReader(0xFFFF_FFFF)
        self._wire = FrameReader(0xFFFF_FFFF, reassemble=False)
        self.wire: list[tuple[int, int, int]] = []  # (opcode, flags, body_length) of every frame as sent
        self.frames: deque[Frame] = deque()
        self.client_closed = threading.Event()
        self.received: list[Frame] = []  # every request frame read after the handshake (Pings excluded)

    # ------------------------------------------------------------- reading

    def recv_frame(self, timeout: float = 10.0) -> Frame | None:
        """The next whole frame from the client; None once it closed (or reset) the connection."""
        deadline = time.monotonic() + timeout
        while not self.frames:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the client sent nothing in time")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError:
                data = b""
            if not data:
                self.client_closed.set()
                return None
            self.wire.extend((f.opcode, f.flags, 6 + len(f.payload)) for f in self._wire.feed(data))
            self.frames.extend(self.reader.feed(data))
        return self.frames.popleft()

    def handshake(self, answer: bytes | None = None, timeout: float = 10.0) -> Frame | None:
        """Read the Handshake and answer it (HandshakeOk unless ``answer`` is given)."""
        hs = self.recv_frame(timeout)
        if hs is None:
            return None
        assert hs.opcode == Opcode.HANDSHAKE, hs
        self.send(handshake_ok() if answer is None else answer)
        return hs

    def request(self, timeout: float = 10.0, pong: bool = True) -> Frame | None:
        """The next request (Pings answered with Pong and skipped unless ``pong`` is False)."""
        while True:
            f = self.recv_frame(timeout)
            if f is None:
                return None
            if pong and f.opcode == Opcode.PING:
                self.send(frame(Opcode.PONG, f.request_id))
                continue
            self.received.append(f)
            return f

    def wait_client_close(self, timeout: float = 20.0, pong: bool = False) -> bool:
        """Read (and drop) whatever comes until the client closes; True if it did within ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                f = self.recv_frame(left)
            except TimeoutError:
                return False
            if f is None:
                return True
            if pong and f.opcode == Opcode.PING:
                self.send(frame(Opcode.PONG, f.request_id))

    # ------------------------------------------------------------- writing

    def send(self, data: bytes | bytearray | memoryview) -> bool:
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    # ------------------------------------------------------- well behaved

    def serve(self, timeout: float = 60.0) -> None:
        """Answer like a (tiny) broker until the client leaves."""
        while True:
            try:
                f = self.request(timeout)
            except TimeoutError:
                return
            if f is None or f.opcode == Opcode.DISCONNECT:
                return
            self.answer(f)

    def answer(self, f: Frame) -> None:
        op, rid = f.opcode, f.request_id
        srv = self.server
        if op == Opcode.ENQUEUE:
            items = decode_enqueue(f.payload)
            ids = [str(uuid.uuid4()) for _ in items]
            with srv.lock:
                srv.enqueued.extend(items)
                srv.frame_sizes.append(len(f.payload) + 6)
            self.send(enqueue_result(rid, ids))
        elif op in (Opcode.ACK, Opcode.NACK):
            n = int.from_bytes(f.payload[:4], "big")
            result = Opcode.ACK_RESULT if op == Opcode.ACK else Opcode.NACK_RESULT
            self.send(frame(result, rid, n.to_bytes(4, "big") + bytes(n)))
        elif op == Opcode.GET_STATS:
            self.send(encode_message(Opcode.GET_STATS_RESULT, rid, STATS_OK))
        elif op == Opcode.CONSUME:
            queue = decode_body(Opcode.CONSUME, f.payload)["queue"]
            self.send(encode_message(Opcode.CONSUME_OK, rid, {"consumer_id": "c-" + str(self.index)}))
            for mid, payload in srv.to_deliver:
                self.send(delivery(rid, mid, queue, payload))
        elif op == Opcode.CANCEL_CONSUME:
            pass
        else:
            self.send(error_frame(rid, ErrorCode.INVALID_FRAME, f"unknown or unsupported opcode: 0x{op:02x}"))


Script = Callable[[Peer], None]


class RawServer:
    """A TCP server running ``script(peer)`` per accepted connection, each in its own thread.

    ``scripts`` maps the connection index (0 = first) to a script; connections
    beyond the list run ``default`` (the well-behaved :meth:`Peer.serve`
    after a normal handshake unless given). Exceptions raised by a script
    are kept in :attr:`errors`; :meth:`check` re-raises the first.
    """

    def __init__(self, *scripts: Script, default: Script | None = None, host: str = "127.0.0.1") -> None:
        self.scripts = list(scripts)
        self.default = default or _serve_default
        self._listener = socket.create_server((host, 0))
        self.address = f"{host}:{self._listener.getsockname()[1]}"
        self.peers: list[Peer] = []
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()
        self.enqueued: list[tuple[str, dict[str, str], bytes]] = []
        self.frame_sizes: list[int] = []  # body_length of each Enqueue frame (after reassembly) served
        self.to_deliver: list[tuple[str, bytes]] = []
        self._threads: list[threading.Thread] = []
        self._stopped = False
        self._accept = threading.Thread(target=self._run, name="raw-server", daemon=True)
        self._accept.start()

    def __enter__(self) -> RawServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        for index in itertools.count():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peer = Peer(sock, index, self)
            with self.lock:
                self.peers.append(peer)
            script = self.scripts[index] if index < len(self.scripts) else self.default
            t = threading.Thread(target=self._one, args=(script, peer), name=f"raw-peer-{index}", daemon=True)
            self._threads.append(t)
            t.start()

    def _one(self, script: Script, peer: Peer) -> None:
        try:
            script(peer)
        except BaseException as exc:  # kept for check()
            if not self._stopped:
                self.errors.append(exc)
        finally:
            peer.close()

    @property
    def accepted(self) -> int:
        with self.lock:
            return len(self.peers)

    def peer(self, index: int, timeout: float = 20.0) -> Peer:
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if len(self.peers) > index:
                    return self.peers[index]
            if time.monotonic() > deadline:
                raise AssertionError(f"connection #{index} was never made")
            time.sleep(0.005)

    def check(self) -> None:
        if self.errors:
            raise self.errors[0]

    def stop(self) -> None:
        self._stopped = True
        self._listener.close()
        with self.lock:
            peers = list(self.peers)
        for p in peers:
            p.close()
        for t in self._threads:
            t.join(10)


def _serve_default(peer: Peer) -> None:
    if peer.handshake() is not None:
        peer.serve()


# ---------------------------------------------------------------- the proxy


class DropProxy:
    """A proxy in front of ``upstream`` that cuts connections at exact points of the Enqueue stream.

    It counts the EnqueueResult frames it forwards to clients (over every
    connection). When that count reaches one of ``drop_after`` it arms the
    connection that carried it, before forwarding that answer; the client's
    next Enqueue frame on it — the batch in flight — is then:

    * ``mode="unapplied"``: not forwarded; both sockets are closed at once
      (the broker never sees the batch);
    * ``mode="lost_answer"``: forwarded; the broker's answer is swallowed
      and both sockets are closed (the broker applied the batch, the client
      never learns it).

    :attr:`in_flight` collects the payloads of those batches, one list per cut.
    """

    def __init__(self, upstream: str, drop_after: list[int], mode: str = "unapplied") -> None:
        assert mode in ("unapplied", "lost_answer")
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.drops = sorted(drop_after)
        self.mode = mode
        self.answers = 0
        self.in_flight: list[list[bytes]] = []
        self.lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self.errors: list[BaseException] = []
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, name="drop-proxy", daemon=True).start()

    def __enter__(self) -> DropProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._listener.close()
        with self.lock:
            socks = list(self._socks)
        for s in socks:
            _close(s)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self._socks += [client, upstream]
            state: dict[str, Any] = {"armed": False, "swallow": None, "cut": False}
            for src, dst, up in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(
                    target=self._pump, args=(src, dst, up, state, client, upstream), daemon=True, name="drop-proxy-pump"
                ).start()

    def _cut(self, state: dict[str, Any], a: socket.socket, b: socket.socket) -> None:
        state["cut"] = True
        _close(a)
        _close(b)

    def _pump(
        self,
        src: socket.socket,
        dst: socket.socket,
        upward: bool,
        state: dict[str, Any],
        client: socket.socket,
        upstream: socket.socket,
    ) -> None:
        reader = FrameReader(0xFFFF_FFFF, reassemble=False)
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                for f in reader.feed(data):
                    raw = frame(f.opcode, f.request_id, f.payload, f.flags)
                    with self.lock:
                        if state["cut"]:
                            return
                        if upward and f.opcode == Opcode.ENQUEUE and state["armed"]:
                            batch = [p for _, _, p in decode_enqueue(f.payload)]
                            state["armed"] = False
                            self.in_flight.append(batch)
                            if self.mode == "unapplied":
                                self._cut(state, client, upstream)
                                return
                            state["swallow"] = f.request_id
                        elif not upward and f.opcode == Opcode.ENQUEUE_RESULT:
                            if state["swallow"] == f.request_id:
                                self._cut(state, client, upstream)
                                return
                            self.answers += 1
                            if self.drops and self.answers >= self.drops[0]:
                                self.drops.pop(0)
                                state["armed"] = True  # before the client can see this answer
                    dst.sendall(raw)
        except OSError:
            pass
        except BaseException as exc:  # pragma: no cover - a proxy bug
            self.errors.append(exc)
        finally:
            if not state["cut"]:
                _close(dst)

    @property
    def cuts(self) -> int:
        with self.lock:
            return len(self.in_flight)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass
