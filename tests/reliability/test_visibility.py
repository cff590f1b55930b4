"""The user can see recovery: every step reaches ``on_event`` and the log (INFO), on both clients.

* connection lost and reconnect: ``disconnected`` (with the cause), then
  ``reconnected`` on the next call;
* a consumer's connection lost: ``subscription_lost`` then ``resubscribed``
  (with the queue);
* a leader redirect: the broker answers Consume with NotLeader naming
  another broker (``faults.not_leader(leader_addr=other)``): ``redirected``
  to that address, and the consumer then receives that broker's messages;
* a consumer giving up: every resubscribe refused (ChannelFull), with
  ``resubscribe_attempts=2``: ``consumer_failed`` with the error, which the
  consumer's ``get`` raises; after 5 failures in a row each further one is
  logged at WARNING.

Each step must appear as an event with the right address / queue / error
and as a ``fila`` log record at INFO starting with the event's kind. What
would fail: a recovery that happens silently, an event with the wrong
address or no cause, or a missing log line.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from fila import AsyncClient
from fila import Client
from fila.errors import ChannelFullError
from fila.errors import FilaConnectionError
from fila.errors import FilaError
from fila.protocol.constants import ErrorCode
from fila.protocol.constants import Opcode

from .rel_helpers import Events
from .rel_helpers import run_async
from .rel_helpers import watchdog

QUEUE = "vis"


def _logged(caplog: pytest.LogCaptureFixture, kind: str, *needles: str) -> None:
    lines = [r.getMessage() for r in caplog.records if r.name == "fila" and r.levelno == logging.INFO]
    hits = [m for m in lines if m.startswith(kind + ":") and all(n in m for n in needles)]
    assert hits, f"no INFO log line for {kind!r} with {needles}; INFO lines: {lines}"


def _check_connection_events(events: Events, caplog: pytest.LogCaptureFixture, addr: str) -> None:
    lost = events.of("disconnected")[0]
    assert lost.address == addr and isinstance(lost.error, FilaConnectionError), lost
    assert events.of("reconnected")[0].address == addr
    sub_lost = events.of("subscription_lost")[0]
    assert (sub_lost.address, sub_lost.queue) == (addr, QUEUE) and sub_lost.error is not None, sub_lost
    resub = events.of("resubscribed")[0]
    assert (resub.address, resub.queue) == (addr, QUEUE)
    kinds = events.kinds()
    assert kinds.index("subscription_lost") < kinds.index("resubscribed")
    assert kinds.index("disconnected") < kinds.index("reconnected")
    for kind in ("disconnected", "reconnected", "subscription_lost", "resubscribed"):
        _logged(caplog, kind, addr)
    _logged(caplog, "subscription_lost", repr(QUEUE))


def test_sync_reconnect_and_resubscribe_seen(broker: Any, caplog: pytest.LogCaptureFixture) -> None:
    # Fails if a reconnect or resubscription happens without its event (with address, queue, cause) or its INFO log
    # line.
    caplog.set_level(logging.INFO, logger="fila")
    broker.create_queue(QUEUE)
    events = Events()

    def body() -> None:
        with Client(broker.address, on_event=events, reconnect_initial_delay=0.01) as client:
            consumer = client.consume(QUEUE)
            broker.faults.close_all()
            events.wait("disconnected")
            events.wait("resubscribed")
            client.enqueue(QUEUE, None, b"after")  # reconnects
            msg = consumer.get(timeout=10)
            assert msg is not None and msg.payload == b"after"
            consumer.close()

    watchdog(body, 60)
    _check_connection_events(events, caplog, broker.address)


def test_async_reconnect_and_resubscribe_seen(broker: Any, caplog: pytest.LogCaptureFixture) -> None:
    # Fails if a reconnect or resubscription happens without its event (with address, queue, cause) or its INFO log
    # line.
    caplog.set_level(logging.INFO, logger="fila")
    broker.create_queue(QUEUE)
    events = Events()

    async def body() -> None:
        async with AsyncClient(broker.address, on_event=events, reconnect_initial_delay=0.01) as client:
            consumer = await client.consume(QUEUE)
            await client.get_stats(QUEUE)  # the request connection exists before the drop
            broker.faults.close_all()
            await events.await_kind("disconnected")
            await events.await_kind("resubscribed")
            await client.enqueue(QUEUE, None, b"after")
            msg = await consumer.get(timeout=10)
            assert msg is not None and msg.payload == b"after"
            await consumer.close()

    run_async(body, 60)
    _check_connection_events(events, caplog, broker.address)


def _check_redirect(events: Events, caplog: pytest.LogCaptureFixture, leader: Any) -> None:
    red = events.of("redirected")
    assert red and (red[0].address, red[0].queue) == (leader.address, QUEUE), red
    assert red[0].error is not None and type(red[0].error).__name__ == "NotLeaderError"
    _logged(caplog, "redirected", leader.address, repr(QUEUE))


def test_sync_redirect_seen(broker_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fila")
    follower, leader = broker_factory(), broker_factory()
    for b in (follower, leader):
        b.create_queue(QUEUE)
    follower.faults.not_leader(leader_addr=leader)
    events = Events()

    def body() -> None:
        with Client(follower.address, on_event=events) as client:
            with client.consume(QUEUE) as consumer:
                with Client(leader.address) as at_leader:
                    at_leader.enqueue(QUEUE, None, b"from the leader")
                msg = consumer.get(timeout=10)
                # Fails if the consumer did not follow the redirect to the leader.
                assert msg is not None and msg.payload == b"from the leader"

    watchdog(body, 60)
    _check_redirect(events, caplog, leader)


def test_async_redirect_seen(broker_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    # Fails if the consumer does not follow NotLeader to the named leader, or does so without a 'redirected' event and
    # INFO line.
    caplog.set_level(logging.INFO, logger="fila")
    follower, leader = broker_factory(), broker_factory()
    for b in (follower, leader):
        b.create_queue(QUEUE)
    follower.faults.not_leader(leader_addr=leader)
    events = Events()

    async def body() -> None:
        async with AsyncClient(follower.address, on_event=events) as client:
            async with client.consume(QUEUE) as consumer:
                async with AsyncClient(leader.address) as at_leader:
                    await at_leader.enqueue(QUEUE, None, b"from the leader")
                msg = await consumer.get(timeout=10)
                assert msg is not None and msg.payload == b"from the leader"

    run_async(body, 60)
    _check_redirect(events, caplog, leader)


def _check_gave_up(events: Events, caplog: pytest.LogCaptureFixture, broker: Any, raised: BaseException) -> None:
    failed = events.of("consumer_failed")
    assert len(failed) == 1 and failed[0].queue == QUEUE and failed[0].address == broker.address, failed
    assert isinstance(failed[0].error, ChannelFullError) and raised is failed[0].error
    _logged(caplog, "consumer_failed", broker.address, repr(QUEUE))
    # 6 refused attempts: from the 5th on, each is a WARNING (a consumer stuck retrying is not silent).
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "subscribe to" in r.getMessage()]
    assert len(warnings) >= 2, [r.getMessage() for r in caplog.records]


def test_sync_consumer_gave_up_seen(broker: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fila")
    broker.create_queue(QUEUE)
    events = Events()

    def body() -> BaseException:
        with Client(
            broker.address,
            on_event=events,
            reconnect_initial_delay=0.01,
            reconnect_max_delay=0.05,
            resubscribe_attempts=6,
        ) as client:
            consumer = client.consume(QUEUE)
            broker.faults.fail_next(100, ErrorCode.CHANNEL_FULL, Opcode.CONSUME)
            broker.faults.close_all()
            with pytest.raises(FilaError) as info:
                consumer.get(timeout=30)
            consumer.close()
            return info.value

    raised = watchdog(body, 60)
    _check_gave_up(events, caplog, broker, raised)


def test_async_consumer_gave_up_seen(broker: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fila")
    broker.create_queue(QUEUE)
    events = Events()

    async def body() -> BaseException:
        async with AsyncClient(
            broker.address,
            on_event=events,
            reconnect_initial_delay=0.01,
            reconnect_max_delay=0.05,
            resubscribe_attempts=6,
        ) as client:
            consumer = await client.consume(QUEUE)
            broker.faults.fail_next(100, ErrorCode.CHANNEL_FULL, Opcode.CONSUME)
            broker.faults.close_all()
            with pytest.raises(FilaError) as info:
                await consumer.get(timeout=30)
            await consumer.close()
            return info.value

    raised = run_async(body, 60)
    _check_gave_up(events, caplog, broker, raised)
