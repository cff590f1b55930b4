"""Paths no test exercised before, each on both clients.

* ``flush``: nothing to flush; many futures outstanding; a flush that times
  out while the broker holds the answer (False), then completes (True).
* Enqueue before connecting (``AsyncClient`` connects on first use) and
  after the connection was lost (the broker gone: the call fails with a
  ConnectError that says it was not applied; a broker back on the port:
  the next call works).
* A failed accumulator resend: ChannelFull with ``retry_after_ms``, and the
  broker gone before the resend: the futures fail (not applied), the
  accumulator is not stuck (``flush`` is True), later enqueues work.
* ``retry_after_ms`` of ChannelFull (``faults.fail_next(..., retry_after_ms=)``,
  added for these tests): the accumulator, ``enqueue_many`` and an admin call
  each wait at least the hint before sending again (without it the retry
  comes after ~10 ms: this is the hint being honoured, not a speed test); a
  hint beyond the call's deadline raises ChannelFullError at once with the hint.
* Frames cut to the broker's ``max_frame_size`` (a server of the tests' own
  advertising 4,096 bytes): an accumulator batch split across frames; a
  batch whose payload-only size estimate fits but whose headers do not, so
  the encoded frame must be halved; a single message larger than a frame,
  sent as continuation frames — every frame within the limit, every message
  answered in order. And 17 MiB messages (above the real 16 MiB frame) through
  the real double, both ways.
* Per-call timeouts (sync and asyncio): ``get_stats``, ``enqueue``,
  ``enqueue_many`` and ``ack`` with ``timeout=`` while the broker holds the
  request: RequestTimeoutError (may have been applied); the client works after.
* Resubscribe failures: the connection lost and the next Consumes refused
  (ChannelFull) three times: the consumer keeps trying and resubscribes.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest

from fila import AsyncClient
from fila import Client
from fila.errors import ChannelFullError
from fila.errors import ConnectError
from fila.errors import FilaConnectionError
from fila.errors import RequestTimeoutError
from fila.protocol.constants import ErrorCode
from fila.protocol.constants import Opcode
from fila.testing import Broker

from . import rawnet
from .rawnet import RawServer
from .rel_helpers import Events
from .rel_helpers import async_wait_for
from .rel_helpers import broker_messages
from .rel_helpers import run_async
from .rel_helpers import wait_for
from .rel_helpers import watchdog

QUEUE = "paths"


# -------------------------------------------------------------------- flush


def test_sync_flush(broker: Any) -> None:
    broker.create_queue(QUEUE)

    def body() -> None:
        with Client(broker.address) as client:
            assert client.flush() is True  # nothing queued
            futs = [client.enqueue_nowait(QUEUE, None, b"%d" % i) for i in range(500)]
            assert client.flush(30) is True
            # Fails if flush returned before every answer was in.
            assert all(f.done() and isinstance(f.result(0), str) for f in futs)
            broker.faults.delay(30, opcode=Opcode.ENQUEUE)
            late = client.enqueue_nowait(QUEUE, None, b"late")
            wait_for(lambda: broker.faults.held == 1, 10, "the broker to hold the enqueue")
            assert client.flush(0.2) is False  # the answer is held: flush gives up at its timeout
            assert not late.done()
            broker.faults.clear_delay()
            assert client.flush(30) is True and isinstance(late.result(0), str)

    watchdog(body, 60)
    assert len(broker_messages(broker, QUEUE)) == 501


def test_async_flush(broker: Any) -> None:
    # Fails if flush returns before every answer, ignores its timeout, or an enqueue before any connection breaks it.
    broker.create_queue(QUEUE)

    async def body() -> None:
        async with AsyncClient(broker.address) as client:
            assert await client.flush() is True  # nothing was ever enqueued (no accumulator yet)
            futs = [client.enqueue_nowait(QUEUE, None, b"%d" % i) for i in range(500)]
            assert await client.flush(30) is True
            assert all(f.done() and isinstance(f.result(), str) for f in futs)
            broker.faults.delay(30, opcode=Opcode.ENQUEUE)
            late = client.enqueue_nowait(QUEUE, None, b"late")
            await async_wait_for(lambda: broker.faults.held == 1, 10, "the broker to hold the enqueue")
            assert await client.flush(0.2) is False
            assert not late.done()
            broker.faults.clear_delay()
            assert await client.flush(30) is True and isinstance(late.result(), str)

    run_async(body, 60)
    assert len(broker_messages(broker, QUEUE)) == 501


# ---------------------------------------------------- before / after a link


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_async_enqueue_before_connecting(broker: Any) -> None:
    # Fails if the first call of all (an enqueue, before any connection) is lost or does not connect.
    broker.create_queue(QUEUE)
    events = Events()

    async def body() -> None:
        client = AsyncClient(broker.address, on_event=events)
        assert events.kinds() == []  # no I/O in the constructor
        fut = client.enqueue_nowait(QUEUE, None, b"first")  # the first call of all: connects
        assert isinstance(await fut, str)
        assert events.kinds() == ["connected"]
        await client.close()

    run_async(body, 30)
    assert list(broker_messages(broker, QUEUE).values()) == [b"first"]


def test_async_enqueue_before_a_broker_exists_then_after() -> None:
    port = _free_port()
    addr = f"127.0.0.1:{port}"

    async def body() -> None:
        client = AsyncClient(addr, connect_timeout=2, reconnect_initial_delay=0.01, reconnect_max_delay=0.05)
        fut = client.enqueue_nowait(QUEUE, None, b"nobody")
        with pytest.raises(ConnectError) as info:
            await fut
        # Fails if the client claims a message that never left may have been applied.
        assert info.value.may_have_been_applied is False
        broker = await asyncio.to_thread(lambda: Broker(port=port, nagle=False).start())
        try:
            broker.create_queue(QUEUE)
            deadline = time.monotonic() + 10
            while True:  # the reconnect backoff may refuse the first attempts at once
                try:
                    assert isinstance(await client.enqueue(QUEUE, None, b"now"), str)
                    break
                except ConnectError:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.02)
            await client.close()
            assert list(broker_messages(broker, QUEUE).values()) == [b"now"]
        finally:
            await asyncio.to_thread(broker.stop)

    run_async(body, 60)


def _restart(port: int) -> Broker:
    b = Broker(port=port, nagle=False).start()
    b.create_queue(QUEUE)
    return b


def test_sync_enqueue_after_lost_connection() -> None:
    # Fails if the call made while the broker is gone hangs or says it may have been applied, or if the client does
    # not recover once a broker is back.
    port = _free_port()
    first = _restart(port)
    events = Events()

    def body() -> Broker:
        with Client(
            first.address, on_event=events, connect_timeout=2, reconnect_initial_delay=0.01, reconnect_max_delay=0.05
        ) as client:
            assert isinstance(client.enqueue(QUEUE, None, b"one"), str)
            first.stop()
            events.wait("disconnected")
            with pytest.raises(FilaConnectionError) as info:
                client.enqueue(QUEUE, None, b"lost")
            assert info.value.may_have_been_applied is False
            second = _restart(port)
            deadline = time.monotonic() + 10
            while True:
                try:
                    assert isinstance(client.enqueue(QUEUE, None, b"two"), str)
                    break
                except ConnectError:
                    assert time.monotonic() < deadline
                    time.sleep(0.02)
            events.wait("reconnected")
            return second

    second = watchdog(body, 60)
    try:
        assert list(broker_messages(second, QUEUE).values()) == [b"two"]
    finally:
        second.stop()


def test_async_enqueue_after_lost_connection() -> None:
    # Fails if the call made while the broker is gone hangs or says it may have been applied, or if the client does
    # not recover once a broker is back.
    port = _free_port()
    first = _restart(port)
    events = Events()

    async def body() -> Broker:
        async with AsyncClient(
            first.address, on_event=events, connect_timeout=2, reconnect_initial_delay=0.01, reconnect_max_delay=0.05
        ) as client:
            assert isinstance(await client.enqueue(QUEUE, None, b"one"), str)
            await asyncio.to_thread(first.stop)
            await events.await_kind("disconnected")
            with pytest.raises(FilaConnectionError) as info:
                await client.enqueue(QUEUE, None, b"lost")
            assert info.value.may_have_been_applied is False
            second = await asyncio.to_thread(_restart, port)
            deadline = time.monotonic() + 10
            while True:
                try:
                    assert isinstance(await client.enqueue(QUEUE, None, b"two"), str)
                    break
                except ConnectError:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.02)
            await events.await_kind("reconnected")
            return second

    second = run_async(body, 60)
    try:
        assert list(broker_messages(second, QUEUE).values()) == [b"two"]
    finally:
        second.stop()


# ------------------------------------------------------ failed resend


def _refuse_then_vanish(broker: Broker, hint_ms: int) -> None:
    """The held Enqueue is refused with ChannelFull (hint ``hint_ms``), then the broker stops at once."""
    broker.faults.fail_next(1, ErrorCode.CHANNEL_FULL, Opcode.ENQUEUE, retry_after_ms=hint_ms)
    broker.faults.clear_delay()  # releases the held request: it gets the refusal
    broker.stop()


def test_sync_failed_accumulator_resend() -> None:
    port = _free_port()
    broker = _restart(port)

    def body() -> Broker:
        with Client(broker.address, connect_timeout=2, reconnect_initial_delay=0.01, reconnect_max_delay=0.05) as c:
            broker.faults.delay(30, opcode=Opcode.ENQUEUE)
            futs = [c.enqueue_nowait(QUEUE, None, b"%d" % i) for i in range(5)]
            wait_for(lambda: broker.faults.held == 1, 10, "the broker to hold the first batch")
            _refuse_then_vanish(broker, 1000)
            for f in futs:
                exc = f.exception(30)
                # Fails if a resend that could not even connect hangs, succeeds, or claims it may have applied.
                assert isinstance(exc, FilaConnectionError), repr(exc)
                assert exc.may_have_been_applied is False, repr(exc)
            assert c.flush(10) is True  # the accumulator is not stuck
            again = _restart(port)
            deadline = time.monotonic() + 10
            while True:
                try:
                    assert isinstance(c.enqueue(QUEUE, None, b"later"), str)
                    return again
                except ConnectError:
                    assert time.monotonic() < deadline
                    time.sleep(0.02)

    again = watchdog(body, 60)
    try:
        assert list(broker_messages(again, QUEUE).values()) == [b"later"]
    finally:
        again.stop()


def test_async_failed_accumulator_resend() -> None:
    # Fails if a resend that cannot connect hangs its futures, reports them as possibly applied, or leaves the
    # accumulator stuck.
    port = _free_port()
    broker = _restart(port)

    async def body() -> Broker:
        async with AsyncClient(
            broker.address, connect_timeout=2, reconnect_initial_delay=0.01, reconnect_max_delay=0.05
        ) as c:
            broker.faults.delay(30, opcode=Opcode.ENQUEUE)
            futs = [c.enqueue_nowait(QUEUE, None, b"%d" % i) for i in range(5)]
            await async_wait_for(lambda: broker.faults.held == 1, 10, "the broker to hold the first batch")
            await asyncio.to_thread(_refuse_then_vanish, broker, 1000)
            for exc in await asyncio.gather(*futs, return_exceptions=True):
                assert isinstance(exc, FilaConnectionError), repr(exc)
                assert exc.may_have_been_applied is False, repr(exc)
            assert await c.flush(10) is True
            again = await asyncio.to_thread(_restart, port)
            deadline = time.monotonic() + 10
            while True:
                try:
                    assert isinstance(await c.enqueue(QUEUE, None, b"later"), str)
                    return again
                except ConnectError:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.02)

    again = run_async(body, 60)
    try:
        assert list(broker_messages(again, QUEUE).values()) == [b"later"]
    finally:
        again.stop()


# ---------------------------------------------------------- retry_after_ms

HINT_MS = 400


def test_sync_channel_full_retry_after(broker: Any) -> None:
    broker.create_queue(QUEUE)

    def body() -> None:
        with Client(broker.address) as client:
            for name, call, opcode in (
                ("enqueue", lambda: client.enqueue(QUEUE, None, b"a"), Opcode.ENQUEUE),
                ("enqueue_many", lambda: client.enqueue_many([(QUEUE, None, b"b")]), Opcode.ENQUEUE),
                ("get_stats", lambda: client.get_stats(QUEUE), Opcode.GET_STATS),
            ):
                before = broker.faults.injected
                broker.faults.fail_next(1, ErrorCode.CHANNEL_FULL, opcode, retry_after_ms=HINT_MS)
                start = time.monotonic()
                call()
                waited = time.monotonic() - start
                assert broker.faults.injected == before + 1, name  # it was refused once, then succeeded
                # Fails if the client resent before the server's hint.
                assert waited >= HINT_MS / 1000, (name, waited)
            # A hint beyond the call's deadline: no pointless wait, the refusal is raised with its hint.
            broker.faults.fail_next(1, ErrorCode.CHANNEL_FULL, Opcode.GET_STATS, retry_after_ms=60_000)
            with pytest.raises(ChannelFullError) as info:
                client.get_stats(QUEUE, timeout=2)
            assert info.value.retry_after_ms == 60_000

    watchdog(body, 60)


def test_async_channel_full_retry_after(broker: Any) -> None:
    broker.create_queue(QUEUE)

    async def body() -> None:
        async with AsyncClient(broker.address) as client:
            for name, call, opcode in (
                ("enqueue", lambda: client.enqueue(QUEUE, None, b"a"), Opcode.ENQUEUE),
                ("enqueue_many", lambda: client.enqueue_many([(QUEUE, None, b"b")]), Opcode.ENQUEUE),
                ("get_stats", lambda: client.get_stats(QUEUE), Opcode.GET_STATS),
            ):
                before = broker.faults.injected
                broker.faults.fail_next(1, ErrorCode.CHANNEL_FULL, opcode, retry_after_ms=HINT_MS)
                start = time.monotonic()
                await call()
                waited = time.monotonic() - start
                assert broker.faults.injected == before + 1, name
                assert waited >= HINT_MS / 1000, (name, waited)
            broker.faults.fail_next(1, ErrorCode.CHANNEL_FULL, Opcode.GET_STATS, retry_after_ms=60_000)
            with pytest.raises(ChannelFullError) as info:
                await client.get_stats(QUEUE, timeout=2)
            assert info.value.retry_after_ms == 60_000

    run_async(body, 60)


# ------------------------------------------------------- small frames

SMALL = 4096


def _small_frame_server() -> RawServer:
    def script(peer: rawnet.Peer) -> None:
        if peer.handshake(answer=rawnet.handshake_ok(max_frame_size=SMALL)) is not None:
            peer.serve()

    return RawServer(default=script)


def _check_frames(server: RawServer, sent: list[tuple[str, Any, bytes]]) -> dict[str, int]:
    server.check()
    # Every message arrived, in order, intact.
    assert [(q, h or {}, p) for q, h, p in sent] == [(q, h, p) for q, h, p in server.enqueued]
    wire = [w for p in server.peers for w in p.wire if w[0] == Opcode.ENQUEUE]
    # Fails if the client wrote a frame above the size the server advertised.
    assert wire and max(length for _, _, length in wire) <= SMALL, max(length for _, _, length in wire)
    return {"frames": len(wire), "continued": sum(1 for _, flags, _ in wire if flags & 1)}


HEADERS = {"h": "v" * 300}


def _split_cases() -> list[tuple[str, list[tuple[str, Any, bytes]]]]:
    return [
        # ~60 KB of payload: one accumulator batch cut into many frames by bytes.
        ("split", [(QUEUE, None, b"%05d" % i + b"." * 295) for i in range(200)]),
        # Tiny payloads, big headers: the payload-only estimate says "one frame", the encoded batch is not.
        ("halve", [(QUEUE, dict(HEADERS), b"%d" % i) for i in range(20)]),
        # One message larger than a frame: continuation frames.
        ("continuation", [(QUEUE, None, bytes(range(256)) * 40)]),
    ]


@pytest.mark.parametrize("case", ["split", "halve", "continuation"])
def test_sync_frames_cut_to_max_frame_size(case: str) -> None:
    # Fails if a frame exceeds the advertised max_frame_size, a message is lost, reordered or altered, or the batch
    # was not cut.
    msgs = dict(_split_cases())[case]
    with _small_frame_server() as server:

        def body() -> None:
            with Client(server.address) as client:
                futs = [client.enqueue_nowait(q, h, p) for q, h, p in msgs]
                assert client.flush(30)
                assert all(isinstance(f.result(0), str) for f in futs)

        watchdog(body, 60)
        counts = _check_frames(server, msgs)
    assert counts["frames"] >= 2, counts  # it was cut
    if case == "continuation":
        assert counts["continued"] >= 2, counts
    else:
        assert counts["continued"] == 0, counts  # a batch is cut between messages, never inside one


@pytest.mark.parametrize("case", ["split", "halve", "continuation"])
def test_async_frames_cut_to_max_frame_size(case: str) -> None:
    # Fails if a frame exceeds the advertised max_frame_size, a message is lost, reordered or altered, or the batch
    # was not cut.
    msgs = dict(_split_cases())[case]
    with _small_frame_server() as server:

        async def body() -> None:
            async with AsyncClient(server.address) as client:
                futs = [client.enqueue_nowait(q, h, p) for q, h, p in msgs]
                assert await client.flush(30)
                assert all(isinstance(f.result(), str) for f in futs)

        run_async(body, 60)
        counts = _check_frames(server, msgs)
    assert counts["frames"] >= 2, counts
    if case == "continuation":
        assert counts["continued"] >= 2, counts
    else:
        assert counts["continued"] == 0, counts


def test_enqueue_many_cut_to_max_frame_size() -> None:
    # Fails if enqueue_many writes a frame above the advertised max_frame_size or loses, reorders or alters a message.
    msgs = dict(_split_cases())["split"] + dict(_split_cases())["continuation"]
    with _small_frame_server() as server:

        def body() -> None:
            with Client(server.address) as client:
                assert all(r.is_success for r in client.enqueue_many(msgs))

            async def run() -> None:
                async with AsyncClient(server.address) as client:
                    assert all(r.is_success for r in await client.enqueue_many(msgs))

            asyncio.run(run())

        watchdog(body, 60)
        counts = _check_frames(server, msgs + msgs)
    assert counts["frames"] >= 4 and counts["continued"] >= 4, counts


BIG = 17 * 1024 * 1024 + 3  # above the 16 MiB frame: continuation frames out, one oversized Delivery back


def test_sync_message_above_frame_size_round_trip(broker: Any) -> None:
    # Fails if a message above the 16 MiB frame cannot be sent (continuations) or received (one oversized Delivery)
    # intact.
    broker.create_queue(QUEUE)
    payload = bytes(range(256)) * (BIG // 256) + b"end"

    def body() -> None:
        with Client(broker.address) as client:
            mid = client.enqueue(QUEUE, None, payload)
            with client.consume(QUEUE) as consumer:
                msg = consumer.get(timeout=30)
                assert msg is not None and msg.id == mid and msg.payload == payload
                consumer.ack(msg)

    watchdog(body, 60)


def test_async_message_above_frame_size_round_trip(broker: Any) -> None:
    # Fails if a message above the 16 MiB frame cannot be sent (continuations) or received (one oversized Delivery)
    # intact.
    broker.create_queue(QUEUE)
    payload = bytes(range(256)) * (BIG // 256) + b"end"

    async def body() -> None:
        async with AsyncClient(broker.address) as client:
            mid = await client.enqueue(QUEUE, None, payload)
            async with client.consume(QUEUE) as consumer:
                msg = await consumer.get(timeout=30)
                assert msg is not None and msg.id == mid and msg.payload == payload
                consumer.ack(msg)

    run_async(body, 60)


# ------------------------------------------------------- per-call timeouts


def test_sync_per_call_timeouts(broker: Any) -> None:
    broker.create_queue(QUEUE)

    def body() -> None:
        with Client(broker.address) as client:
            mid = client.enqueue(QUEUE, None, b"to-ack")
            with client.consume(QUEUE) as consumer:
                msg = consumer.get(timeout=10)
                assert msg is not None and msg.id == mid
            calls = (
                (Opcode.GET_STATS, lambda: client.get_stats(QUEUE, timeout=0.3)),
                (Opcode.ENQUEUE, lambda: client.enqueue(QUEUE, None, b"late", timeout=0.3)),
                (Opcode.ENQUEUE, lambda: client.enqueue_many([(QUEUE, None, b"late-many")], timeout=0.3)),
                (Opcode.ACK, lambda: client.ack(QUEUE, mid, timeout=0.3)),
            )
            for opcode, call in calls:
                broker.faults.delay(30, opcode=opcode)
                with pytest.raises(RequestTimeoutError) as info:
                    call()
                # Fails if a request that was written is reported as certainly not applied.
                assert info.value.may_have_been_applied is True
                broker.faults.clear_delay()
            assert client.flush(10)
            assert client.get_stats(QUEUE, timeout=10).depth == 2  # the late enqueues were applied

    watchdog(body, 60)


def test_async_per_call_timeouts(broker: Any) -> None:
    # Fails if a per-call timeout is ignored (the call waits for the held answer), raises another class, or says a
    # written request cannot have been applied.
    broker.create_queue(QUEUE)

    async def body() -> None:
        async with AsyncClient(broker.address) as client:
            mid = await client.enqueue(QUEUE, None, b"to-ack")
            async with client.consume(QUEUE) as consumer:
                msg = await consumer.get(timeout=10)
                assert msg is not None and msg.id == mid
            calls = (
                (Opcode.GET_STATS, lambda: client.get_stats(QUEUE, timeout=0.3)),
                (Opcode.ENQUEUE, lambda: client.enqueue(QUEUE, None, b"late", timeout=0.3)),
                (Opcode.ENQUEUE, lambda: client.enqueue_many([(QUEUE, None, b"late-many")], timeout=0.3)),
                (Opcode.ACK, lambda: client.ack(QUEUE, mid, timeout=0.3)),
            )
            for opcode, call in calls:
                broker.faults.delay(30, opcode=opcode)
                with pytest.raises(RequestTimeoutError) as info:
                    await call()
                assert info.value.may_have_been_applied is True
                broker.faults.clear_delay()
            assert await client.flush(10)
            assert (await client.get_stats(QUEUE, timeout=10)).depth == 2

    run_async(body, 60)


# ------------------------------------------------------- resubscribe fails


def test_sync_resubscribe_failures_then_success(broker: Any) -> None:
    broker.create_queue(QUEUE)
    events = Events()

    def body() -> None:
        with Client(broker.address, on_event=events, reconnect_initial_delay=0.01, reconnect_max_delay=0.05) as c:
            consumer = c.consume(QUEUE)
            broker.faults.fail_next(3, ErrorCode.CHANNEL_FULL, Opcode.CONSUME)
            broker.faults.close_all()
            events.wait("resubscribed")
            assert broker.faults.injected == 3  # three refusals before the one that worked
            c.enqueue(QUEUE, None, b"after")
            msg = consumer.get(timeout=10)
            assert msg is not None and msg.payload == b"after"
            consumer.close()

    watchdog(body, 60)
    assert not events.of("consumer_failed")


def test_async_resubscribe_failures_then_success(broker: Any) -> None:
    broker.create_queue(QUEUE)
    events = Events()

    async def body() -> None:
        async with AsyncClient(
            broker.address, on_event=events, reconnect_initial_delay=0.01, reconnect_max_delay=0.05
        ) as c:
            consumer = await c.consume(QUEUE)
            broker.faults.fail_next(3, ErrorCode.CHANNEL_FULL, Opcode.CONSUME)
            broker.faults.close_all()
            await events.await_kind("resubscribed")
            assert broker.faults.injected == 3
            await c.enqueue(QUEUE, None, b"after")
            msg = await consumer.get(timeout=10)
            assert msg is not None and msg.payload == b"after"
            await consumer.close()

    run_async(body, 60)
    assert not events.of("consumer_failed")
