"""No silent loss when producing: connections dropped while enqueues run with AUTO batching.

Producers: 4 threads on a :class:`fila.Client`, or 100 asyncio tasks on a
:class:`fila.AsyncClient`, each call ``enqueue(queue, None, payload)`` with
the message's sequence number as its payload. Every call must end in exactly
one outcome: an id, or a :class:`~fila.errors.FilaConnectionError`.

With :class:`~.rawnet.DropProxy` the cut is placed exactly: the proxy arms a
connection just before forwarding the k-th EnqueueResult and cuts it on the
client's next Enqueue frame, i.e. on the batch in flight. It records that
batch, so the test can state precisely:

* ``unapplied`` cut (the broker never sees the batch in flight): the broker
  holds exactly the confirmed messages (same ids, same payloads, depth equal
  to their count); the failed calls are exactly the messages of the batches
  in flight, each with ``may_have_been_applied`` True; nothing else fails.
* ``lost_answer`` cut (the broker stored the batch, the answer is lost): the
  failed calls are exactly those batches, each with ``may_have_been_applied``
  True, and the broker holds exactly confirmed ∪ failed — nothing it holds is
  unknown to the producer.

With the broker's own faults: ``close_after_frames`` (the broker answers,
then closes; what comes after is never applied) gives the exact equality
too; ``close_all`` (an abrupt abort at an arbitrary moment) only allows the
inclusions: confirmed ⊆ broker ⊆ confirmed ∪ {failed with
may_have_been_applied}, and no failure with may_have_been_applied False is
in the broker.

Slow variants: 10,000 messages (``--run-slow``).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from fila import AsyncClient
from fila import Client
from fila.errors import FilaConnectionError
from fila.errors import FilaError

from .rawnet import DropProxy
from .rel_helpers import Events
from .rel_helpers import broker_messages
from .rel_helpers import report
from .rel_helpers import run_async
from .rel_helpers import wait_for
from .rel_helpers import watchdog

QUEUE = "produce"
FAST = 2_000
SLOW = 10_000

SIZES = [pytest.param(FAST, id="2k"), pytest.param(SLOW, id="10k", marks=pytest.mark.slow)]


def _client_options(events: Events) -> dict[str, Any]:
    # No keepalive Pings: the only frames on the wire are the ones the test reasons about.
    return {"on_event": events, "keepalive_interval": None, "request_timeout": 30.0, "reconnect_initial_delay": 0.01}


def produce_sync(addr: str, n: int, events: Events, threads: int = 4) -> list[Any]:
    """``n`` enqueues from ``threads`` threads; the outcome (id or exception) of each, by sequence number."""
    outcomes: list[Any] = [None] * n
    with Client(addr, **_client_options(events)) as client:

        def worker(t: int) -> None:
            for i in range(t, n, threads):
                try:
                    outcomes[i] = client.enqueue(QUEUE, None, str(i).encode())
                except FilaError as exc:
                    outcomes[i] = exc

        workers = [threading.Thread(target=worker, args=(t,), name=f"producer-{t}") for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    return outcomes


async def produce_async(addr: str, n: int, events: Events, tasks: int = 100) -> list[Any]:
    outcomes: list[Any] = [None] * n
    async with AsyncClient(addr, **_client_options(events)) as client:

        async def worker(t: int) -> None:
            for i in range(t, n, tasks):
                try:
                    outcomes[i] = await client.enqueue(QUEUE, None, str(i).encode())
                except FilaError as exc:
                    outcomes[i] = exc

        await asyncio.gather(*(worker(t) for t in range(tasks)))
    return outcomes


def split(outcomes: list[Any]) -> tuple[dict[int, str], dict[int, FilaError]]:
    """(seq -> id, seq -> error); fails on a call without an outcome or with a non-FilaError one."""
    assert all(o is not None for o in outcomes), "a call returned without an outcome"
    ok = {i: o for i, o in enumerate(outcomes) if isinstance(o, str)}
    failed = {i: o for i, o in enumerate(outcomes) if not isinstance(o, str)}
    assert all(isinstance(e, FilaError) for e in failed.values()), [type(e) for e in failed.values()]
    return ok, failed


def check_exact_cut(broker: Any, proxy: DropProxy, outcomes: list[Any], mode: str, cuts: int) -> dict[str, int]:
    """The assertions of a DropProxy run (see the module docstring); returns the counts for the report."""
    assert proxy.cuts == cuts, f"the proxy made {proxy.cuts} cuts, expected {cuts}"
    ok, failed = split(outcomes)
    in_flight = {int(p) for batch in proxy.in_flight for p in batch}
    # Fails if a message outside the batches in flight failed, or one of them succeeded.
    assert set(failed) == in_flight, (sorted(set(failed) ^ in_flight)[:20], len(failed), len(in_flight))
    for e in failed.values():
        assert isinstance(e, FilaConnectionError), repr(e)
        # Fails if the client says a written, unanswered batch cannot have been applied.
        assert e.may_have_been_applied is True, repr(e)
    held = broker_messages(broker, QUEUE)
    held_seqs = {int(p) for p in held.values()}
    assert len(ok) == len(set(ok.values())), "an id was returned twice"
    if mode == "unapplied":
        # Fails on silent loss (confirmed but not held) or on a phantom (held but not confirmed).
        assert set(held) == set(ok.values())
        assert held_seqs == set(ok)
        assert broker.stats(QUEUE)["depth"] == len(ok)
    else:
        assert set(ok.values()) <= set(held)
        assert held_seqs == set(ok) | in_flight
        assert broker.stats(QUEUE)["depth"] == len(ok) + len(failed)
    return {"ok": len(ok), "failed": len(failed), "cuts": proxy.cuts}


@pytest.mark.parametrize("mode", ["unapplied", "lost_answer"])
@pytest.mark.parametrize("n", SIZES)
def test_sync_threads_exact_cut(broker: Any, n: int, mode: str) -> None:
    broker.create_queue(QUEUE)
    events = Events()
    drops = [n // 50, n // 10, n // 5]  # batches hold <= 4 messages here, so >= n/4 answers come
    with DropProxy(broker.address, drops, mode) as proxy:
        outcomes = watchdog(lambda: produce_sync(proxy.address, n, events))
    counts = check_exact_cut(broker, proxy, outcomes, mode, len(drops))
    report("produce", test="test_sync_threads_exact_cut", mode=mode, n=n, **counts)
    # Fails if a cut was not reported to on_event or not followed by a reconnect.
    assert len(events.of("disconnected")) >= len(drops)
    assert len(events.of("reconnected")) >= len(drops)
    assert counts["ok"] + counts["failed"] == n


@pytest.mark.parametrize("mode", ["unapplied", "lost_answer"])
@pytest.mark.parametrize("n", SIZES)
def test_async_tasks_exact_cut(broker: Any, n: int, mode: str) -> None:
    # Fails if a confirmed message is missing, a failed one is held (unapplied mode), a failure is outside the batches
    # in flight, or may_have_been_applied is False for one of them.
    broker.create_queue(QUEUE)
    events = Events()
    drops = [3, n // 200, n // 100]  # 100 tasks: >= n/100 answers come
    with DropProxy(broker.address, drops, mode) as proxy:
        outcomes = run_async(lambda: produce_async(proxy.address, n, events))
    counts = check_exact_cut(broker, proxy, outcomes, mode, len(drops))
    report("produce", test="test_async_tasks_exact_cut", mode=mode, n=n, **counts)
    assert len(events.of("disconnected")) >= len(drops)
    assert len(events.of("reconnected")) >= len(drops)
    assert counts["ok"] + counts["failed"] == n


def _rearm_after_disconnects(broker: Any, events: Events, rounds: int, frames: int, stop: threading.Event) -> None:
    """Arm close_after_frames again after each disconnect the client reports (``rounds`` times)."""
    for r in range(1, rounds):
        while len(events.of("disconnected")) < r:
            if stop.wait(0.005):
                return
        broker.faults.close_after_frames(frames)


def check_inclusions(broker: Any, outcomes: list[Any]) -> tuple[dict[int, str], dict[int, FilaError], dict[str, bytes]]:
    ok, failed = split(outcomes)
    for e in failed.values():
        assert isinstance(e, FilaConnectionError), repr(e)
    held = broker_messages(broker, QUEUE)
    held_seqs = {int(p) for p in held.values()}
    maybe = {i for i, e in failed.items() if e.may_have_been_applied}
    # Fails on silent loss: an id the client confirmed that the broker does not hold.
    assert set(ok.values()) <= set(held)
    # Fails if the broker holds a message the client reported as certainly not applied, or never sent.
    assert held_seqs - set(ok) <= maybe
    assert len(held) == broker.stats(QUEUE)["depth"]
    return ok, failed, held


@pytest.mark.parametrize("n", SIZES)
def test_sync_broker_close_after_frames(broker: Any, n: int) -> None:
    # The broker answers a frame, then closes: the batch in flight behind it is never applied.
    # Fails on a confirmed id the broker does not hold, a held message nobody confirmed, or a failure that says it was
    # certainly not applied.
    broker.create_queue(QUEUE)
    events = Events()
    stop = threading.Event()
    broker.faults.close_after_frames(60)
    t = threading.Thread(target=_rearm_after_disconnects, args=(broker, events, 3, 120, stop), daemon=True)
    t.start()
    try:
        outcomes = watchdog(lambda: produce_sync(broker.address, n, events))
    finally:
        stop.set()
        broker.faults.reset()
    ok, failed, held = check_inclusions(broker, outcomes)
    report(
        "produce",
        test="test_sync_broker_close_after_frames",
        n=n,
        ok=len(ok),
        failed=len(failed),
        held=len(held),
        maybe_applied=sum(1 for e in failed.values() if e.may_have_been_applied),
    )
    assert events.of("disconnected"), "no connection was dropped"
    # Exact: a close after an answer leaves nothing applied-but-unanswered.
    assert set(held) == set(ok.values())
    assert all(e.may_have_been_applied for e in failed.values())
    assert len(ok) + len(failed) == n


@pytest.mark.parametrize("n", SIZES)
def test_async_broker_close_after_frames(broker: Any, n: int) -> None:
    # Fails on a confirmed id the broker does not hold, a held message nobody confirmed, or a failure that says it was
    # certainly not applied.
    broker.create_queue(QUEUE)
    events = Events()
    stop = threading.Event()
    broker.faults.close_after_frames(6)
    t = threading.Thread(target=_rearm_after_disconnects, args=(broker, events, 3, 8, stop), daemon=True)
    t.start()
    try:
        outcomes = run_async(lambda: produce_async(broker.address, n, events))
    finally:
        stop.set()
        broker.faults.reset()
    ok, failed, held = check_inclusions(broker, outcomes)
    report(
        "produce",
        test="test_async_broker_close_after_frames",
        n=n,
        ok=len(ok),
        failed=len(failed),
        held=len(held),
        maybe_applied=sum(1 for e in failed.values() if e.may_have_been_applied),
    )
    assert events.of("disconnected"), "no connection was dropped"
    assert set(held) == set(ok.values())
    assert all(e.may_have_been_applied for e in failed.values())
    assert len(ok) + len(failed) == n


def _abort_while_producing(broker: Any, n: int, count: int, stop: threading.Event) -> None:
    """close_all() each time another tenth of the messages is stored (``count`` times)."""
    for k in range(1, count + 1):
        while (broker.stats(QUEUE) or {"depth": 0})["depth"] < k * n // (count + 2):
            if stop.wait(0.002):
                return
        broker.faults.close_all()


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("flavour", ["sync", "asyncio"])
def test_broker_close_all_inclusions(broker: Any, n: int, flavour: str) -> None:
    # Abrupt aborts at arbitrary moments: an applied batch's answer may be lost, so only inclusions hold.
    # Fails on silent loss (confirmed, not held) or on a held message whose call failed with may_have_been_applied
    # False.
    broker.create_queue(QUEUE)
    events = Events()
    stop = threading.Event()
    t = threading.Thread(target=_abort_while_producing, args=(broker, n, 3, stop), daemon=True)
    t.start()
    try:
        if flavour == "sync":
            outcomes = watchdog(lambda: produce_sync(broker.address, n, events))
        else:
            outcomes = run_async(lambda: produce_async(broker.address, n, events))
    finally:
        stop.set()
        t.join(10)
    ok, failed, held = check_inclusions(broker, outcomes)
    report(
        "produce",
        test="test_broker_close_all_inclusions",
        flavour=flavour,
        n=n,
        ok=len(ok),
        failed=len(failed),
        held=len(held),
        maybe_applied=sum(1 for e in failed.values() if e.may_have_been_applied),
    )
    wait_for(lambda: len(events.of("disconnected")) >= 1, 5, "a disconnected event")
    assert len(ok) + len(failed) == n
