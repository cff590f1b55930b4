"""Subscription: subscribe -> redirect -> resubscribe -> give up, as decisions taken with the time as input."""

from __future__ import annotations

import logging
import random

import pytest

from fila._core import MAX_REDIRECTS
from fila._core import RAFT_GROUP_GRACE
from fila._core import STABLE_AFTER
from fila._core import WARN_AFTER_FAILURES
from fila._core import Decision
from fila._core import Nodes
from fila._core import Settings
from fila._core import Subscription
from fila.errors import ChannelFullError
from fila.errors import ClientClosedError
from fila.errors import ConnectError
from fila.errors import ConnectionLostError
from fila.errors import DecodeError
from fila.errors import ForbiddenError
from fila.errors import NodeNotReadyError
from fila.errors import NotLeaderError
from fila.errors import ProtocolError
from fila.errors import QueueNotFoundError
from fila.errors import RequestTimeoutError
from fila.errors import UnauthorizedError

from .helpers import settings

ORIGIN = "10.0.0.1:5555"


def new(request_timeout: float = 10.0, now: float = 0.0, addr: str = ORIGIN, **kw: object) -> Subscription:
    s = settings(addr, api_key="key", request_timeout=request_timeout, reconnect_initial=0.1, reconnect_max=2.0, **kw)
    return Subscription(Nodes(s), "orders", now)


def origin(sub: Subscription) -> Settings:
    return sub.nodes.origin


def test_starts_at_the_address_given() -> None:
    sub = new()
    assert sub.state == "subscribing" and sub.target is origin(sub) and sub.deadline == 10.0


# ------------------------------------------------------------------ redirects


def test_redirect_with_leader_addr_is_followed_at_once() -> None:
    sub = new()
    d = sub.refused(NotLeaderError("not the leader", "10.0.0.2:6000"), now=1.0)
    assert d.action == "subscribe" and d.delay == 0.0
    assert d.settings is sub.target and d.settings is not origin(sub)
    assert (d.settings.host, d.settings.port) == ("10.0.0.2", 6000)
    # the redirect target is the same client: same API key, same timeouts
    assert d.settings.handshake_frame() == origin(sub).handshake_frame()
    assert d.settings.request_timeout == origin(sub).request_timeout


def test_redirect_without_leader_addr_on_a_single_node_backs_off_and_retries_it() -> None:
    random.seed(3)
    sub = new()
    d = sub.refused(NotLeaderError("not the leader"), now=1.0)
    assert d.action == "subscribe" and d.settings is origin(sub)
    assert 0.05 <= d.delay <= 0.1


def test_unusable_leader_addr_is_not_followed() -> None:
    sub = new()
    d = sub.refused(NotLeaderError("not the leader", "no-port-here"), now=1.0)
    assert d.action == "subscribe" and d.settings is origin(sub) and d.delay > 0


def test_redirect_loop_is_bounded() -> None:
    sub = new()
    for i in range(MAX_REDIRECTS):
        d = sub.refused(NotLeaderError("x", f"10.0.1.{i}:5555"), now=1.0)
        assert d.delay == 0.0 and d.settings is not None and d.settings.host == f"10.0.1.{i}"
    # one more redirect in a row: not followed at once, but backed off
    d = sub.refused(NotLeaderError("x", "10.0.2.0:5555"), now=1.0)
    assert d.action == "subscribe" and d.delay > 0
    # after the pause, redirects are followed again
    d = sub.refused(NotLeaderError("x", "10.0.3.0:5555"), now=2.0)
    assert d.delay == 0.0 and d.settings is not None and d.settings.host == "10.0.3.0"


def test_a_vanished_leader_sends_the_subscription_back_to_the_address_given() -> None:
    sub = new()
    sub.refused(NotLeaderError("x", "10.0.0.2:6000"), now=1.0)
    d = sub.refused(ConnectError("cannot connect to 10.0.0.2:6000"), now=1.0)
    assert d.action == "subscribe" and d.settings is origin(sub) and d.delay > 0


# ---------------------------------------------------------------- retryable?


@pytest.mark.parametrize(
    "exc",
    [
        ConnectError("refused"),
        ConnectionLostError("lost"),
        RequestTimeoutError("slow"),
        NodeNotReadyError("no leader yet"),
        ChannelFullError("overloaded"),
        NotLeaderError("x"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_retryable_refusals_back_off(exc: BaseException) -> None:
    random.seed(4)
    sub = new()
    bound = 0.1
    for attempt in range(4):
        d = sub.refused(exc, now=0.0)
        assert d.action == "subscribe" and bound / 2 <= d.delay <= bound, (attempt, d)
        bound = min(bound * 2, 2.0)
    assert sub.failures == 4


@pytest.mark.parametrize(
    "exc",
    [ForbiddenError("denied"), QueueNotFoundError("no queue"), UnauthorizedError("bad key"), ProtocolError(0x0E, "x")],
    ids=lambda e: type(e).__name__,
)
def test_final_errors_fail_the_first_subscribe_at_once(exc: BaseException) -> None:
    sub = new()
    d = sub.refused(exc, now=0.0)
    assert d == Decision("fail", error=exc)
    assert sub.state == "failed"


def test_first_subscribe_gives_up_at_its_deadline() -> None:
    random.seed(5)
    sub = new(request_timeout=3.0, now=100.0)
    now = 100.0
    attempts = 0
    while True:
        d = sub.refused(ConnectError("refused"), now)
        if d.action == "fail":
            break
        assert now + d.delay < 103.0  # never sleeps past the deadline
        now += d.delay
        attempts += 1
    assert isinstance(d.error, ConnectError)
    assert attempts >= 4 and now >= 101.0  # it retried for most of its time, not once


# ------------------------------------------------------------- resubscribing


def test_resubscribe_never_gives_up_on_retryable_errors() -> None:
    random.seed(6)
    sub = new(request_timeout=1.0)
    assert sub.subscribed() is True
    assert sub.state == "active" and sub.deadline is None
    d = sub.lost(ConnectionLostError("server gone"), now=50.0)
    assert d.action == "subscribe" and sub.state == "resubscribing"
    now = 50.0
    errors = [ConnectError("refused"), NodeNotReadyError("x"), NotLeaderError("x"), RequestTimeoutError("x")]
    for i in range(500):  # hours of outage, far past request_timeout
        now += 60.0
        d = sub.refused(errors[i % len(errors)], now)
        assert d.action == "subscribe", (i, d)
        assert d.delay <= 2.0  # capped at reconnect_max
    # a broken stream while resubscribing is retried on a fresh connection too
    assert sub.refused(DecodeError("garbage"), now).action == "subscribe"


def test_resubscribe_stops_on_a_final_error() -> None:
    sub = new()
    sub.subscribed()
    sub.lost(ConnectionLostError("x"), now=1.0)
    exc = ForbiddenError("key revoked")
    assert sub.refused(exc, now=2.0) == Decision("fail", error=exc)


def test_lost_resubscribes_to_the_current_leader_with_a_fresh_backoff() -> None:
    random.seed(7)
    sub = new()
    sub.refused(NotLeaderError("x", "10.0.0.2:6000"), now=0.0)
    for _ in range(5):
        sub.refused(ChannelFullError("x"), now=0.0)
    sub.subscribed()
    assert sub.failures == 0
    d = sub.lost(ConnectionLostError("x"), now=1.0)
    assert d.settings is sub.target and d.settings is not None and d.settings.host == "10.0.0.2"
    assert 0.05 <= d.delay <= 0.1  # backoff restarted at reconnect_initial


def test_closed_subscription_only_fails() -> None:
    sub = new()
    sub.close()
    assert sub.subscribed() is False  # a Consume accepted after close: the driver drops that connection
    assert sub.state == "closed"
    for d in (sub.refused(ConnectError("x"), 0.0), sub.lost(ConnectionLostError("x"), 0.0)):
        assert d.action == "fail" and isinstance(d.error, ClientClosedError)


def test_repeated_failures_are_logged_at_warning(caplog: pytest.LogCaptureFixture) -> None:
    sub = new()
    sub.subscribed()
    with caplog.at_level(logging.DEBUG, logger="fila"):
        for _ in range(WARN_AFTER_FAILURES + 1):
            sub.refused(ConnectError("refused"), now=0.0)
    levels = [r.levelno for r in caplog.records if "subscribe to 'orders' failed" in r.getMessage()]
    assert len(levels) == WARN_AFTER_FAILURES + 1
    assert levels[: WARN_AFTER_FAILURES - 1] == [logging.DEBUG] * (WARN_AFTER_FAILURES - 1)
    assert levels[WARN_AFTER_FAILURES - 1 :] == [logging.WARNING] * 2


# ---------------------------------------------------------------- clusters


def test_not_leader_without_address_in_a_cluster_asks_to_locate_the_leader() -> None:
    sub = new(addr="10.0.0.1:5555,10.0.0.2:5555")
    d = sub.refused(NotLeaderError("not the leader"), now=0.0)
    assert d.action == "locate" and d.delay > 0
    # the driver's GetStats named node 2; once its address is known, go there at once
    sub.nodes.learned("10.0.0.2:5555", 2)
    d = sub.located(2, now=1.0)
    assert d == Decision("subscribe", 0.0, sub.target) and sub.target.address == "10.0.0.2:5555"


def test_located_an_unknown_leader_tries_a_node_not_met_yet() -> None:
    sub = new(addr="10.0.0.1:5555,10.0.0.2:5555")
    sub.nodes.learned("10.0.0.1:5555", 1)
    d = sub.located(2, now=0.0)
    assert d.action == "subscribe" and d.delay == 0.0 and d.settings.address == "10.0.0.2:5555"


def test_located_no_leader_yet_backs_off() -> None:
    sub = new(addr="10.0.0.1:5555,10.0.0.2:5555")
    d = sub.located(0, now=0.0)
    assert d.action == "subscribe" and d.delay > 0


def test_an_unreachable_node_makes_way_for_the_next_listed_one() -> None:
    sub = new(addr="10.0.0.1:5555,10.0.0.2:5555,10.0.0.3:5555")
    targets = [sub.refused(ConnectError("refused"), now=0.0).settings.address for _ in range(4)]
    assert targets == ["10.0.0.2:5555", "10.0.0.3:5555", "10.0.0.1:5555", "10.0.0.2:5555"]


def test_a_new_queues_missing_raft_group_is_retried_for_a_grace_period() -> None:
    sub = new(request_timeout=60.0)
    exc = QueueNotFoundError("queue has no raft group on this node")
    assert sub.refused(exc, now=0.0).action == "subscribe"
    assert sub.refused(exc, now=RAFT_GROUP_GRACE - 0.5).action == "subscribe"
    assert sub.refused(exc, now=RAFT_GROUP_GRACE + 0.1) == Decision("fail", error=exc)


def test_resubscribe_attempts_bounds_resubscribing() -> None:
    sub = new(resubscribe_attempts=3)
    sub.subscribed()
    sub.lost(ConnectionLostError("x"), now=0.0)
    decisions = [sub.refused(ConnectError("refused"), now=float(i)).action for i in range(4)]
    assert decisions == ["subscribe", "subscribe", "subscribe", "fail"]


def test_lost_with_a_known_new_leader_goes_there_at_once() -> None:
    sub = new(addr="10.0.0.1:5555,10.0.0.2:5555")
    sub.nodes.learned("10.0.0.2:5555", 2)
    assert sub.subscribed(node_id=1)
    d = sub.lost(ConnectionLostError("leadership moved"), now=0.0, leader_node_id=2)
    assert d == Decision("subscribe", 0.0, sub.target) and sub.target.address == "10.0.0.2:5555"


def test_leader_checks_only_on_cluster_nodes() -> None:
    sub = new(leader_check_interval=2.0)
    assert sub.subscribed(node_id=1)
    # Called once per interval with the running count of deliveries: due only when nothing arrived since.
    assert not sub.check_due(node_id=1, delivered=5)  # the first call only takes note
    assert sub.check_due(node_id=1, delivered=5)  # idle for a whole interval
    assert not sub.check_due(node_id=1, delivered=6)  # a delivery came meanwhile
    assert not sub.check_due(node_id=0, delivered=6)  # a single node never loses leadership
    assert sub.leader_moved(node_id=1, leader_node_id=2, ready=3)
    assert not sub.leader_moved(node_id=1, leader_node_id=2, ready=0)  # nothing waiting: no evidence
    assert not sub.leader_moved(node_id=1, leader_node_id=1, ready=3)
    assert not sub.leader_moved(node_id=1, leader_node_id=0, ready=3)


def test_events_are_emitted_for_redirect_loss_resubscribe_and_failure() -> None:
    events: list[tuple] = []
    s = settings(ORIGIN, request_timeout=10.0)
    sub = Subscription(Nodes(s), "orders", 0.0, emit=lambda *a: events.append(a))
    sub.refused(NotLeaderError("x", "10.0.0.2:5555"), now=0.0)
    sub.subscribed()
    sub.lost(ConnectionLostError("x"), now=1.0)
    sub.subscribed()
    sub.lost(ConnectionLostError("y"), now=2.0)
    sub.refused(ForbiddenError("revoked"), now=3.0)
    assert [e[0] for e in events] == [
        "redirected",
        "subscription_lost",
        "resubscribed",
        "subscription_lost",
        "consumer_failed",
    ]
    assert all(e[1] == "10.0.0.2:5555" and e[2] == "orders" for e in events)


def test_a_subscription_lost_at_once_counts_as_a_failed_attempt() -> None:
    # A server that accepts every Consume and then breaks the stream: each loss within STABLE_AFTER
    # of the ConsumeOk counts toward resubscribe_attempts, so the consumer gives up instead of
    # resubscribing forever (this fails if subscribed() resets the count again).
    sub = new(resubscribe_attempts=2)
    assert sub.subscribed(now=0.0)
    decisions = []
    for t in (0.1, 0.2, 0.3):
        d = sub.lost(ConnectionLostError("garbage"), now=t)
        decisions.append(d.action)
        if d.action == "subscribe":
            assert sub.subscribed(now=t)
    assert decisions == ["subscribe", "subscribe", "fail"]


def test_a_subscription_that_served_a_while_starts_afresh_when_lost() -> None:
    sub = new(resubscribe_attempts=1)
    assert sub.subscribed(now=0.0)
    assert sub.lost(ConnectionLostError("blip"), now=0.1).action == "subscribe"  # failure 1 of 1
    assert sub.subscribed(now=0.2)
    # Up for longer than STABLE_AFTER: the next loss resets the count (and the backoff).
    d = sub.lost(ConnectionLostError("later"), now=0.2 + STABLE_AFTER)
    assert d.action == "subscribe" and sub.failures == 0 and d.delay <= origin(sub).reconnect_initial
