"""A hostile or broken server (a raw-socket server of the tests' own, :mod:`.rawnet`).

Each scenario: the client connects; three callers wait on the first
connection at once (two ``get_stats``, one ``enqueue``); the server reads
the three requests and then misbehaves. Checked for :class:`fila.Client` and
:class:`fila.AsyncClient`:

* every waiting caller gets the scenario's FilaError subclass (a hang, a
  non-FilaError or a success fails the test);
* where the stream can no longer be trusted, the client closes the
  connection (the server sees EOF); a frame-level fault (unknown opcode,
  unknown request id) is ignored and the calls succeed;
* traced memory during the scenario stays within the bound the client's caps
  give (see :data:`SLACK`; the continuation scenario adds what the server sent);
* the client is usable afterwards: the next call reconnects to a well-behaved
  connection of the same server and succeeds.

The client's receive caps (``max_receive_size=``, 256 MiB by default, and the
FrameReader defaults): a frame's length prefix and a reassembled continuation
stream are each accepted up to ``max_receive_size``, at most 64 unfinished
streams, u32 element counts up to 1,000,000; strings and maps are u16-sized by
the encoding. A larger length prefix closes the connection at once; the
client never allocates ahead of the bytes actually received.
"""

from __future__ import annotations

import asyncio
import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from fila import AsyncClient
from fila import Client
from fila.errors import ConnectError
from fila.errors import DecodeError
from fila.errors import FilaConnectionError
from fila.errors import FilaError
from fila.errors import ProtocolError
from fila.errors import RequestTimeoutError
from fila.errors import UnsupportedVersionError
from fila.protocol.constants import Opcode

from . import rawnet
from .rawnet import Peer
from .rawnet import RawServer
from .rawnet import frame
from .rawnet import u16str
from .rel_helpers import Events
from .rel_helpers import report
from .rel_helpers import run_async
from .rel_helpers import settled_memory
from .rel_helpers import traced
from .rel_helpers import watchdog

#: Traced-memory allowance of one scenario beyond what the server sent: two receive
#: buffers (256 KiB each: asyncio's read size; the sync driver reads 64 KiB) plus the client's own
#: objects, threads and frames.
SLACK = 2 * 256 * 1024 + 1024 * 1024

STREAM_CHUNK = 64 * 1024
STREAM_TOTAL = 4 * 1024 * 1024  # what the never-ending continuation sends before going silent
_CHUNK = bytes(range(256)) * (STREAM_CHUNK // 256)


# ------------------------------------------------------------------ scripts


def _after_three(misbehave: Callable[[Peer, list[Any]], None]) -> Callable[[Peer], None]:
    """Handshake, read three requests, then ``misbehave(peer, requests)``."""

    def script(peer: Peer) -> None:
        if peer.handshake() is None:
            return
        reqs = [peer.request() for _ in range(3)]
        assert all(r is not None for r in reqs), "the client did not send its three requests"
        misbehave(peer, reqs)

    return script


def _wait_close(peer: Peer, timeout: float = 20.0) -> None:
    peer.saw_close = peer.wait_client_close(timeout)  # type: ignore[attr-defined]


def close_mid_frame(peer: Peer, reqs: list[Any]) -> None:
    whole = rawnet.enqueue_result(reqs[0].request_id, ["00000000-0000-0000-0000-000000000000"])
    peer.send(whole[: len(whole) // 2])  # then the server closes (the script returns)


def truncated_bodies(peer: Peer, reqs: list[Any]) -> None:
    for r in reqs:
        op = Opcode.ENQUEUE_RESULT if r.opcode == Opcode.ENQUEUE else Opcode.GET_STATS_RESULT
        body = b"\x00\x00\x00\x01" if op == Opcode.ENQUEUE_RESULT else b"\x00\x00\x00"  # the rest is missing
        peer.send(frame(op, r.request_id, body))
    peer.serve()


def length_below_header(peer: Peer, reqs: list[Any]) -> None:
    peer.send(b"\x00\x00\x00\x03abc")
    _wait_close(peer)


def length_2gib(peer: Peer, reqs: list[Any]) -> None:
    peer.send(b"\x80\x00\x00\x00" + b"\x11\x00" + reqs[0].request_id.to_bytes(4, "big") + bytes(90))
    _wait_close(peer)  # silent: no Pong either


def endless_continuation(peer: Peer, reqs: list[Any]) -> None:
    rid = reqs[0].request_id
    sent = 0
    while sent < STREAM_TOTAL:
        if not peer.send(frame(Opcode.GET_STATS_RESULT, rid, _CHUNK, rawnet.CONTINUATION)):
            break
        sent += len(_CHUNK)
    _wait_close(peer)


def many_streams(peer: Peer, reqs: list[Any]) -> None:
    peer.send(b"".join(frame(Opcode.GET_STATS_RESULT, 1000 + i, b"x", rawnet.CONTINUATION) for i in range(65)))
    _wait_close(peer)


def invalid_utf8(peer: Peer, reqs: list[Any]) -> None:
    for r in reqs:
        if r.opcode == Opcode.ENQUEUE:
            peer.send(frame(Opcode.ENQUEUE_RESULT, r.request_id, b"\x00\x00\x00\x01\x00" + u16str(b"\xff\xfe\xfd")))
        else:
            # GetStats answered as an Error frame whose message is not UTF-8.
            peer.send(frame(Opcode.ERROR, r.request_id, b"\x09" + u16str(b"\xc3\x28") + b"\x00\x00"))
    peer.serve()


def unknown_opcode_then_answers(peer: Peer, reqs: list[Any]) -> None:
    for r in reqs:
        peer.send(frame(0x77, r.request_id, b"garbage"))
        peer.answer(r)
    peer.serve()


def unknown_request_id_then_answers(peer: Peer, reqs: list[Any]) -> None:
    for r in reqs:
        peer.send(rawnet.enqueue_result(0x7FFF_0000 + r.request_id, ["ffffffff-0000-0000-0000-000000000000"]))
        peer.send(frame(Opcode.GET_STATS_RESULT, 0x7FFF_0100 + r.request_id, b"\x00"))
        peer.answer(r)
    peer.serve()


def counts_over_limits(peer: Peer, reqs: list[Any]) -> None:
    for r in reqs:
        if r.opcode == Opcode.ENQUEUE:  # u32 count far above the 1,000,000 cap, no items
            peer.send(frame(Opcode.ENQUEUE_RESULT, r.request_id, b"\xff\xff\xff\xff"))
        else:  # GetStatsResult claiming 65,535 per-key entries, with none there
            peer.send(frame(Opcode.GET_STATS_RESULT, r.request_id, bytes(1 + 8 * 3 + 4 * 2 + 8 + 4) + b"\xff\xff"))
    peer.serve()


def stray_bad_delivery_then_answers(peer: Peer, reqs: list[Any]) -> None:
    for r in reqs:  # a malformed Delivery on a connection with no subscription: never decoded, ignored
        peer.send(frame(Opcode.DELIVERY, r.request_id, b"\x00\x00\x00\x01\x00\xc8abc"))
        peer.answer(r)
    peer.serve()


def silence(peer: Peer, reqs: list[Any]) -> None:
    _wait_close(peer)  # answers nothing, not even Pings


def drop_three_then_serve(peer: Peer, reqs: list[Any]) -> None:
    peer.serve()  # the three requests are never answered; later ones are


class Scenario:
    def __init__(
        self,
        name: str,
        misbehave: Callable[[Peer, list[Any]], None],
        error: type[BaseException] | None,
        *,
        client_closes: bool,
        request_timeout: float = 10.0,
        extra_memory: int = 0,
        match: str = "",
        keepalive: float | None = 0.3,
    ) -> None:
        self.keepalive = keepalive
        self.name = name
        self.misbehave = misbehave
        self.error = error  # None: the calls succeed
        self.client_closes = client_closes
        self.request_timeout = request_timeout
        self.extra_memory = extra_memory
        self.match = match

    def __repr__(self) -> str:
        return self.name


SCENARIOS = [
    # What fails each: a caller that hangs, succeeds or gets another class; a connection left open.
    Scenario("close_mid_frame", close_mid_frame, FilaConnectionError, client_closes=False),
    Scenario("truncated_bodies", truncated_bodies, DecodeError, client_closes=False, match="incomplete frame"),
    Scenario("length_below_header", length_below_header, ProtocolError, client_closes=True, match="6-byte"),
    Scenario(
        # Above max_receive_size (256 MiB): refused as soon as the length prefix arrives.
        "length_2gib_then_silence",
        length_2gib,
        ProtocolError,
        client_closes=True,
        match="frame too large",
    ),
    Scenario(
        "continuation_never_ends",
        endless_continuation,
        FilaConnectionError,
        client_closes=True,
        match="keepalive",
        extra_memory=2 * STREAM_TOTAL,
    ),
    Scenario("65_unfinished_streams", many_streams, ProtocolError, client_closes=True, match="continuation streams"),
    Scenario("invalid_utf8", invalid_utf8, DecodeError, client_closes=False, match="UTF-8"),
    Scenario("counts_over_limits", counts_over_limits, DecodeError, client_closes=False),
    Scenario("unknown_opcode", unknown_opcode_then_answers, None, client_closes=False),
    Scenario("stray_bad_delivery", stray_bad_delivery_then_answers, None, client_closes=False),
    Scenario("unknown_request_id", unknown_request_id_then_answers, None, client_closes=False),
    # Silence: with keepalive, the dead peer is found and the connection closed ...
    Scenario("silence_keepalive", silence, FilaConnectionError, client_closes=True, match="keepalive"),
    # ... without it, each request times out on its own and the connection stays (later calls work).
    Scenario(
        "silence_request_timeout",
        drop_three_then_serve,
        RequestTimeoutError,
        client_closes=False,
        request_timeout=0.5,
        keepalive=None,
    ),
]


def _options(sc: Scenario, events: Events) -> dict[str, Any]:
    return {
        "on_event": events,
        "request_timeout": sc.request_timeout,
        "keepalive_interval": sc.keepalive,
        "keepalive_timeout": 0.5,
        "reconnect_initial_delay": 0.01,
    }


def _check_outcomes(sc: Scenario, outcomes: list[Any]) -> None:
    assert len(outcomes) == 3
    for out in outcomes:
        if sc.error is None:
            assert not isinstance(out, BaseException), repr(out)
            continue
        assert isinstance(out, FilaError), f"{sc.name}: {out!r} is not a FilaError"
        assert isinstance(out, sc.error), f"{sc.name}: {out!r} is not a {sc.error.__name__}"
        assert sc.match in str(out), f"{sc.name}: {str(out)!r} does not say {sc.match!r}"
        if isinstance(out, FilaConnectionError):
            # The request was written and got no answer: it may have been applied.
            assert out.may_have_been_applied is True, repr(out)
        if isinstance(out, DecodeError):
            # The server answered, unreadably: it acted on the request in some way nobody knows.
            assert out.may_have_been_applied is True, repr(out)


def _check_after(sc: Scenario, server: RawServer, peak_growth: int, flavour: str) -> None:
    report("hostile", scenario=sc.name, flavour=flavour, peak=peak_growth, bound=SLACK + sc.extra_memory)
    server.check()
    peer = server.peer(0)
    if sc.client_closes:
        # Fails if the client kept a connection it can no longer trust.
        assert getattr(peer, "saw_close", False), f"{sc.name}: the client did not close the connection"
    bound = SLACK + sc.extra_memory
    assert peak_growth <= bound, f"{sc.name}: traced memory grew by {peak_growth} bytes (bound {bound})"


@pytest.mark.parametrize("sc", SCENARIOS, ids=repr)
def test_sync_hostile(sc: Scenario) -> None:
    # Fails if a waiting caller hangs, succeeds when it must not, or gets another class; if the client keeps an
    # untrustworthy connection; if memory exceeds the bound; or if the client is not usable afterwards.
    events = Events()
    with RawServer(_after_three(sc.misbehave)) as server, traced():

        def body() -> int:
            with Client(server.address, **_options(sc, events)) as client:
                settled_memory()
                base = tracemalloc.get_traced_memory()[0]
                tracemalloc.reset_peak()
                outcomes: list[Any] = [None, None, None]
                calls = [
                    lambda: client.get_stats("a"),
                    lambda: client.get_stats("b"),
                    lambda: client.enqueue("q", None, b"x"),
                ]

                def call(i: int) -> None:
                    try:
                        outcomes[i] = calls[i]()
                    except BaseException as exc:
                        outcomes[i] = exc

                threads = [threading.Thread(target=call, args=(i,)) for i in range(3)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                _check_outcomes(sc, outcomes)
                if sc.client_closes:
                    peer = server.peer(0)
                    deadline = time.monotonic() + 20
                    while not hasattr(peer, "saw_close") and time.monotonic() < deadline:
                        time.sleep(0.01)
                peak = tracemalloc.get_traced_memory()[1] - base
                # Usable afterwards: this reconnects if the connection was closed.
                assert client.get_stats("after").depth == 0
                return peak

        peak = watchdog(body, 60)
        _check_after(sc, server, peak, "sync")


@pytest.mark.parametrize("sc", SCENARIOS, ids=repr)
def test_async_hostile(sc: Scenario) -> None:
    # Fails if a waiting caller hangs, succeeds when it must not, or gets another class; if the client keeps an
    # untrustworthy connection; if memory exceeds the bound; or if the client is not usable afterwards.
    events = Events()
    with RawServer(_after_three(sc.misbehave)) as server, traced():

        async def body() -> int:
            async with AsyncClient(server.address, **_options(sc, events)) as client:
                settled_memory()
                base = tracemalloc.get_traced_memory()[0]
                tracemalloc.reset_peak()
                outcomes = await asyncio.gather(
                    client.get_stats("a"),
                    client.get_stats("b"),
                    client.enqueue("q", None, b"x"),
                    return_exceptions=True,
                )
                _check_outcomes(sc, list(outcomes))
                if sc.client_closes:
                    peer = server.peer(0)
                    deadline = time.monotonic() + 20
                    while not hasattr(peer, "saw_close") and time.monotonic() < deadline:
                        await asyncio.sleep(0.01)
                peak = tracemalloc.get_traced_memory()[1] - base
                assert (await client.get_stats("after")).depth == 0
                return peak

        peak = run_async(body, 60)
        _check_after(sc, server, peak, "asyncio")


# ---------------------------------------------------------------- handshake


def _bad_handshake(answer: bytes) -> Callable[[Peer], None]:
    def script(peer: Peer) -> None:
        if peer.handshake(answer=answer) is None:
            return
        _wait_close(peer)

    return script


HANDSHAKES = [
    pytest.param(rawnet.frame(Opcode.PONG, 0), ProtocolError, "not HandshakeOk", id="wrong_opcode"),
    pytest.param(rawnet.handshake_ok(version=2), UnsupportedVersionError, "version 2", id="wrong_version"),
    pytest.param(
        rawnet.error_frame(0, 0x0D, "only protocol version 1 is supported", {"max_version": "1"}),
        UnsupportedVersionError,
        "only protocol version 1",
        id="unsupported_version_error",
    ),
    pytest.param(rawnet.frame(Opcode.HANDSHAKE_OK, 0, b"\x00\x01"), ConnectError, "incomplete", id="short_body"),
]


def _check_handshake(server: RawServer, exc: BaseException, cls: type[BaseException], text: str) -> None:
    # Fails on a hang, on a generic error, or if the client kept the bad connection open.
    assert isinstance(exc, cls), repr(exc)
    assert text in str(exc), str(exc)
    server.check()
    assert getattr(server.peer(0), "saw_close", False), "the client did not close the refused connection"


@pytest.mark.parametrize(("answer", "cls", "text"), HANDSHAKES)
def test_sync_bad_handshake(answer: bytes, cls: type[BaseException], text: str) -> None:
    # Fails if a bad handshake answer is accepted, raises something vague, leaves the socket open, or poisons the next
    # connect.
    with RawServer(_bad_handshake(answer)) as server:

        def body() -> BaseException:
            with pytest.raises(FilaError) as info:
                Client(server.address, connect_timeout=5)
            return info.value

        exc = watchdog(body, 30)
        wait_saw_close(server)
        _check_handshake(server, exc, cls, text)
        # Usable once the server behaves: connection #1 is well-behaved.
        with Client(server.address) as client:
            assert client.get_stats("q").depth == 0


@pytest.mark.parametrize(("answer", "cls", "text"), HANDSHAKES)
def test_async_bad_handshake(answer: bytes, cls: type[BaseException], text: str) -> None:
    # Fails if a bad handshake answer is accepted, raises something vague, leaves the socket open, or poisons the same
    # client's next call.
    with RawServer(_bad_handshake(answer)) as server:

        async def body() -> BaseException:
            client = AsyncClient(server.address, connect_timeout=5, reconnect_initial_delay=0.01)
            with pytest.raises(FilaError) as info:
                await client.get_stats("q")
            # The same client is usable once the server behaves.
            deadline = time.monotonic() + 10
            while True:
                try:
                    assert (await client.get_stats("q")).depth == 0
                    break
                except FilaConnectionError:  # still in the reconnect backoff
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.02)
            await client.close()
            return info.value

        exc = run_async(body, 30)
        wait_saw_close(server)
        _check_handshake(server, exc, cls, text)


def wait_saw_close(server: RawServer) -> None:
    peer = server.peer(0)
    deadline = time.monotonic() + 20
    while not hasattr(peer, "saw_close") and time.monotonic() < deadline:
        time.sleep(0.01)


# ----------------------------------------------------------------- consumer

#: Delivery payloads a consumer cannot decode (each a frame-level failure on a subscribed connection).
BAD_DELIVERIES = {
    "string_past_end": b"\x00\x00\x00\x01" + b"\x00\xc8" + b"abcde",
    "invalid_utf8": b"\x00\x00\x00\x01" + u16str(b"\xff\xfe") + u16str("q"),
    "count_over_limit": b"\xff\xff\xff\xff",
    "map_count_huge": b"\x00\x00\x00\x01" + u16str("m1") + u16str("q") + b"\xff\xff",
}
FIRST_ID = "01900000-0000-7000-8000-000000000001"
GOOD_ID = "01900000-0000-7000-8000-000000000002"


def _consumer_script(bad: bytes, bad_times: int, refuse_after: bool) -> tuple[Callable[[Peer], None], dict[str, int]]:
    """Request connections are served; the first ``bad_times`` Consumes get ConsumeOk and the bad Delivery;
    later Consumes get a good Delivery, or (``refuse_after``) ChannelFull."""
    state = {"consumes": 0}
    lock = threading.Lock()

    def script(peer: Peer) -> None:
        if peer.handshake() is None:
            return
        f = peer.request()
        if f is None:
            return
        if f.opcode != Opcode.CONSUME:
            peer.answer(f)
            peer.serve()
            return
        with lock:
            n = state["consumes"]
            state["consumes"] += 1
        rid = f.request_id
        if n < bad_times:
            # Mid-stream: a good Delivery first; once the client acks it, the undecodable one.
            peer.send(rawnet.encode_message(Opcode.CONSUME_OK, rid, {"consumer_id": f"c{n}"}))
            peer.send(rawnet.delivery(rid, FIRST_ID, "q", b"first"))
            ack = peer.request()
            assert ack is not None and ack.opcode == Opcode.ACK, ack
            peer.send(frame(Opcode.ACK_RESULT, ack.request_id, b"\x00\x00\x00\x01\x00"))
            peer.send(frame(Opcode.DELIVERY, rid, bad))
            _wait_close(peer)
        elif refuse_after:
            peer.send(rawnet.error_frame(rid, 0x09, "scheduler overloaded"))
            _wait_close(peer)
        else:
            peer.send(rawnet.encode_message(Opcode.CONSUME_OK, rid, {"consumer_id": f"c{n}"}))
            peer.send(rawnet.delivery(rid, GOOD_ID, "q", b"good"))
            peer.serve()

    return script, state


def _check_lost(events: Events, server: RawServer) -> None:
    lost = events.of("subscription_lost")
    # Fails if the undecodable Delivery was not reported as the protocol failure it is.
    assert lost and isinstance(lost[0].error, ProtocolError), [(e.kind, e.error) for e in events.events]
    server.check()
    bad_peers = [p for p in server.peers if getattr(p, "saw_close", None) is not None]
    assert bad_peers and all(p.saw_close for p in bad_peers), "the client kept a connection that sent garbage"


@pytest.mark.parametrize("bad", list(BAD_DELIVERIES), ids=str)
def test_sync_consumer_bad_delivery_resubscribes(bad: str) -> None:
    script, _ = _consumer_script(BAD_DELIVERIES[bad], 1, False)
    events = Events()
    with RawServer(default=script) as server, traced():

        def body() -> int:
            with Client(server.address, on_event=events, reconnect_initial_delay=0.01) as client:
                base = settled_memory()
                tracemalloc.reset_peak()
                with client.consume("q") as consumer:
                    first = consumer.get(timeout=20)
                    assert first is not None and first.id == FIRST_ID
                    consumer.ack(first)
                    msg = consumer.get(timeout=20)
                    # Fails if the consumer gave up, hung, or surfaced the garbage as a message.
                    assert msg is not None and msg.id == GOOD_ID and msg.payload == b"good"
                    events.wait("resubscribed")  # (may follow the first message of the new stream)
                return tracemalloc.get_traced_memory()[1] - base

        peak = watchdog(body, 60)
    events.wait("resubscribed")
    _check_lost(events, server)
    assert peak <= SLACK, peak


@pytest.mark.parametrize("bad", list(BAD_DELIVERIES), ids=str)
def test_async_consumer_bad_delivery_resubscribes(bad: str) -> None:
    # Fails if the undecodable Delivery is surfaced as a message, kills the consumer, or is not reported as a
    # ProtocolError; or if memory exceeds the bound.
    script, _ = _consumer_script(BAD_DELIVERIES[bad], 1, False)
    events = Events()
    with RawServer(default=script) as server, traced():

        async def body() -> int:
            async with AsyncClient(server.address, on_event=events, reconnect_initial_delay=0.01) as client:
                base = settled_memory()
                tracemalloc.reset_peak()
                async with client.consume("q") as consumer:
                    first = await consumer.get(timeout=20)
                    assert first is not None and first.id == FIRST_ID
                    consumer.ack(first)
                    msg = await consumer.get(timeout=20)
                    assert msg is not None and msg.id == GOOD_ID and msg.payload == b"good"
                    await events.await_kind("resubscribed")
                return tracemalloc.get_traced_memory()[1] - base

        peak = run_async(body, 60)
    events.wait("resubscribed")
    _check_lost(events, server)
    assert peak <= SLACK, peak


def test_sync_consumer_gives_up_after_resubscribe_attempts() -> None:
    # Garbage, then every resubscribe refused (ChannelFull): after 2 failed attempts the consumer fails.
    script, state = _consumer_script(BAD_DELIVERIES["string_past_end"], 1, True)
    events = Events()
    with RawServer(default=script) as server:

        def body() -> BaseException:
            with Client(server.address, on_event=events, reconnect_initial_delay=0.01, resubscribe_attempts=2) as c:
                consumer = c.consume("q")
                first = consumer.get(timeout=20)
                assert first is not None
                consumer.ack(first)
                with pytest.raises(FilaError) as info:
                    consumer.get(timeout=20)  # raises once the consumer gave up
                consumer.close()
                return info.value

        exc = watchdog(body, 60)
    failed = events.wait("consumer_failed")
    # Fails if the consumer kept retrying past resubscribe_attempts or failed silently.
    assert type(exc).__name__ == "ChannelFullError" and failed[0].error is exc
    # The first subscription broke at once (a loss within STABLE_AFTER counts as a failed attempt),
    # then 2 refused resubscribes: the 3rd failure exceeds resubscribe_attempts=2.
    assert state["consumes"] == 1 + 2


def test_async_consumer_gives_up_after_resubscribe_attempts() -> None:
    # Fails if the consumer retries past resubscribe_attempts, gives up silently, or raises something other than the
    # refusal.
    script, state = _consumer_script(BAD_DELIVERIES["string_past_end"], 1, True)
    events = Events()
    with RawServer(default=script) as server:

        async def body() -> BaseException:
            async with AsyncClient(
                server.address, on_event=events, reconnect_initial_delay=0.01, resubscribe_attempts=2
            ) as c:
                consumer = await c.consume("q")
                first = await consumer.get(timeout=20)
                assert first is not None
                consumer.ack(first)
                with pytest.raises(FilaError) as info:
                    await consumer.get(timeout=20)
                await consumer.close()
                return info.value

        exc = run_async(body, 60)
    failed = events.wait("consumer_failed")
    assert type(exc).__name__ == "ChannelFullError" and failed[0].error is exc
    # As in the sync test: the broken first subscription counts, then 2 refusals exceed the limit.
    assert state["consumes"] == 1 + 2


def _poison_script(state: dict[str, int]) -> Callable[[Peer], None]:
    """Every Consume is accepted; once the subscription is live (the client's first keepalive Ping on it,
    which its reader sends only after subscribing), an undecodable Delivery follows."""

    def script(peer: Peer) -> None:
        if peer.handshake() is None:
            return
        f = peer.request()
        if f is None:
            return
        if f.opcode != Opcode.CONSUME:
            peer.answer(f)
            peer.serve()
            return
        state["consumes"] += 1
        peer.send(rawnet.encode_message(Opcode.CONSUME_OK, f.request_id, {"consumer_id": "poisoned"}))
        while True:
            g = peer.request(pong=False)
            if g is None:
                return
            if g.opcode == Opcode.PING:
                break
        peer.send(frame(Opcode.DELIVERY, f.request_id, BAD_DELIVERIES["count_over_limit"]))
        _wait_close(peer)

    return script


def test_sync_poison_stream_consumer_gives_up() -> None:
    # A server that accepts every Consume and then breaks the stream: each subscription lost within
    # STABLE_AFTER counts as a failed attempt, so the consumer gives up after resubscribe_attempts instead
    # of resubscribing at the initial backoff forever (which fails this test through the timeout).
    state = {"consumes": 0}
    with RawServer(default=_poison_script(state)) as server:

        def body() -> None:
            with Client(
                server.address,
                keepalive_interval=0.05,
                keepalive_timeout=5,
                reconnect_initial_delay=0.01,
                resubscribe_attempts=3,
            ) as client:
                consumer = client.consume("q")
                try:
                    with pytest.raises(FilaError):
                        consumer.get(timeout=3)
                finally:
                    consumer.close()

        watchdog(body, 60)
