"""At-least-once when consuming: a consumer's connection dropped mid-stream.

The queue has a short visibility timeout (1 s); the consumer holds at most 16
messages. Half the messages are enqueued and consumed; after a quarter is
handled the fault is armed, then the second half is enqueued:

* ``cut_delivery`` (``faults.close_mid_frame(Delivery)``): the next Delivery
  written — a first delivery of the second half — is cut in the middle of its
  frame and the connection closed; that message was leased, so it must come
  back after the visibility timeout with ``attempt_count`` 1;
* ``close_all``: every connection is closed abruptly (the request
  connection too). What the kernel had already taken is still read by the
  client; anything the broker still held in its own buffers comes back later.

Once the consumer has resubscribed, every fourth message is deliberately
left unacked on its first delivery; it must come back with exactly its
attempt count + 1 (no fault happens after the resubscription, so no delivery
of it can be lost). Acks go through ``client.ack``, which raises unless the
broker confirmed the ack: "acked" below means confirmed.

Proved, sync and asyncio:

* the consumer reports ``subscription_lost`` then ``resubscribed``;
* a message is never delivered again once its ack was confirmed;
* every message is acked exactly once (one confirmed ack per id);
* the attempt counts seen for one id strictly increase; a message left
  unacked comes back with exactly its attempt count + 1; with the cut, a
  message first seen with attempt_count >= 1 proves the lost delivery came back;
* the broker ends with depth 0 and nothing in flight.

Slow variant: 3,000 messages.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

import pytest

from fila import AsyncClient
from fila import Client
from fila.errors import FilaError
from fila.protocol.constants import Opcode

from .rel_helpers import Events
from .rel_helpers import broker_messages
from .rel_helpers import report
from .rel_helpers import run_async
from .rel_helpers import watchdog

QUEUE = "alo"
VT_MS = 1000
SIZES = [pytest.param(300, id="300"), pytest.param(3_000, id="3k", marks=pytest.mark.slow)]
FAULTS = ["close_all", "cut_delivery"]


def batch(start: int, stop: int) -> list[tuple[str, None, bytes]]:
    return [(QUEUE, None, str(i).encode()) for i in range(start, stop)]


class Ledger:
    """What the consumer saw and did, and the assertions on it."""

    def __init__(self, m: int, events: Events) -> None:
        self.m = m
        self.events = events
        self.seen: dict[str, list[int]] = defaultdict(list)  # id -> attempt counts, in delivery order
        self.acks: dict[str, int] = defaultdict(int)  # id -> confirmed acks
        self.uncertain: set[str] = set()  # acks that failed after being sent
        self.skipped: dict[str, int] = {}  # id -> attempt count when it was left unacked
        self.seq: dict[str, int] = {}
        self.handled = 0

    def delivered(self, msg: Any) -> bool:
        """Record a delivery; True if it must be acked now (False: left unacked on purpose)."""
        # Fails if a message whose ack the broker confirmed is delivered again.
        assert self.acks[msg.id] == 0, f"{msg.id} came back after its ack was confirmed"
        self.seen[msg.id].append(msg.attempt_count)
        self.seq[msg.id] = int(msg.payload)
        self.handled += 1
        eligible = bool(self.events.of("resubscribed"))  # no fault can hit it any more
        if eligible and int(msg.payload) % 4 == 0 and msg.id not in self.skipped:
            self.skipped[msg.id] = msg.attempt_count
            return False
        return True

    def acked(self, mid: str, ok: bool) -> None:
        if ok:
            self.acks[mid] += 1
            self.uncertain.discard(mid)
        else:
            self.uncertain.add(mid)

    def done(self, broker: Any, idle: bool) -> bool:
        confirmed = sum(1 for v in self.acks.values() if v)
        if confirmed == self.m:
            return True
        if idle and confirmed + len(self.uncertain) == self.m:
            # An ack that failed after it was sent may have been applied: then the message is gone.
            return not (self.uncertain & set(broker_messages(broker, QUEUE)))
        return False

    def check(self, broker: Any, fault: str, flavour: str) -> None:
        report(
            "consume",
            flavour=flavour,
            fault=fault,
            m=self.m,
            deliveries=sum(len(a) for a in self.seen.values()),
            redelivered=sum(1 for a in self.seen.values() if len(a) > 1),
            left_unacked=len(self.skipped),
            first_seen_redelivered=sum(1 for a in self.seen.values() if a[0] >= 1),
            uncertain=len(self.uncertain),
        )
        assert sorted(self.seq.values()) == list(range(self.m)), "a message was never delivered"
        # Fails on a message acked twice (it came back after a confirmed ack).
        assert max(self.acks.values()) == 1
        assert len([v for v in self.acks.values() if v]) + len(self.uncertain) == self.m
        for mid, attempts in self.seen.items():
            # Fails if a redelivery did not count the attempt.
            assert attempts == sorted(set(attempts)), (mid, attempts)
        assert self.skipped, "no message was left unacked (the test proved nothing)"
        for mid, first in self.skipped.items():
            attempts = self.seen[mid]
            i = attempts.index(first)
            # Fails unless the unacked message came back, with its attempt count + 1.
            assert attempts[i + 1 : i + 2] == [first + 1], (mid, attempts)
        if fault == "cut_delivery":
            lost = [mid for mid, a in self.seen.items() if a[0] >= 1]
            # Fails if the message of the cut Delivery never came back.
            assert lost, "the message of the cut delivery never came back"
        kinds = self.events.kinds()
        assert "subscription_lost" in kinds and "resubscribed" in kinds, kinds
        assert kinds.index("subscription_lost") < kinds.index("resubscribed")
        stats = broker.stats(QUEUE)
        assert (stats["depth"], stats["in_flight"]) == (0, 0), stats


def _arm(broker: Any, fault: str) -> None:
    if fault == "close_all":
        broker.faults.close_all()
    else:
        broker.faults.close_mid_frame(Opcode.DELIVERY)


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("m", SIZES)
def test_sync_consumer_drop(broker: Any, m: int, fault: str) -> None:
    # Fails if an acked message comes back, a message is never acked, an unacked one does not come back with
    # attempt_count + 1, or the consumer does not resubscribe (Ledger.check).
    broker.create_queue(QUEUE, visibility_timeout_ms=VT_MS)
    events = Events()
    ledger = Ledger(m, events)

    def body() -> None:
        with Client(broker.address, on_event=events, reconnect_initial_delay=0.01) as client:
            client.enqueue_many(batch(0, m // 2))
            consumer = client.consume(QUEUE, buffer_size=16)
            armed = False
            deadline = time.monotonic() + 60
            while True:
                assert time.monotonic() < deadline, f"not every message was acked: {len(ledger.acks)}/{m}"
                msg = consumer.get(timeout=0.3)
                if msg is None:
                    if ledger.done(broker, idle=True):
                        break
                    continue
                if ledger.delivered(msg):
                    try:
                        client.ack(QUEUE, msg.id)
                        ledger.acked(msg.id, True)
                    except FilaError:
                        ledger.acked(msg.id, False)  # unconfirmed: it may come back
                if not armed and ledger.handled >= m // 4:
                    armed = True
                    _arm(broker, fault)
                    if fault == "close_all":  # the request connection went too: see that first
                        events.wait("disconnected")
                    client.enqueue_many(batch(m // 2, m))
                if ledger.done(broker, idle=False):
                    break
            consumer.close()

    watchdog(body)
    ledger.check(broker, fault, "sync")


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("m", SIZES)
def test_async_consumer_drop(broker: Any, m: int, fault: str) -> None:
    # Fails if an acked message comes back, a message is never acked, an unacked one does not come back with
    # attempt_count + 1, or the consumer does not resubscribe (Ledger.check).
    broker.create_queue(QUEUE, visibility_timeout_ms=VT_MS)
    events = Events()
    ledger = Ledger(m, events)

    async def body() -> None:
        async with AsyncClient(broker.address, on_event=events, reconnect_initial_delay=0.01) as client:
            await client.enqueue_many(batch(0, m // 2))
            consumer = await client.consume(QUEUE, buffer_size=16)
            armed = False
            deadline = time.monotonic() + 60
            while True:
                assert time.monotonic() < deadline, f"not every message was acked: {len(ledger.acks)}/{m}"
                msg = await consumer.get(timeout=0.3)
                if msg is None:
                    if await asyncio.to_thread(ledger.done, broker, True):
                        break
                    continue
                if ledger.delivered(msg):
                    try:
                        await client.ack(QUEUE, msg.id)
                        ledger.acked(msg.id, True)
                    except FilaError:
                        ledger.acked(msg.id, False)
                if not armed and ledger.handled >= m // 4:
                    armed = True
                    await asyncio.to_thread(_arm, broker, fault)
                    if fault == "close_all":  # the request connection went too: see that first
                        await events.await_kind("disconnected")
                    await client.enqueue_many(batch(m // 2, m))
                if ledger.done(broker, idle=False):
                    break
            await consumer.close()

    run_async(body)
    ledger.check(broker, fault, "asyncio")
