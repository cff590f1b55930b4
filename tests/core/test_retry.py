"""Retry: the one retry policy (refusals that applied nothing), its backoff, retry_after_ms and the deadline."""

from __future__ import annotations

import random

import pytest

from fila._core import Backoff
from fila._core import Retry
from fila._core import item_retryable
from fila._core import retryable
from fila.errors import ChannelFullError
from fila.errors import ConnectionLostError
from fila.errors import InternalServerError
from fila.errors import NodeNotReadyError
from fila.errors import NotLeaderError
from fila.errors import QueueNotFoundError
from fila.errors import RequestTimeoutError
from fila.protocol import ErrorCode


def channel_full(retry_after_ms: str | None = None) -> ChannelFullError:
    meta = {} if retry_after_ms is None else {"retry_after_ms": retry_after_ms}
    return ChannelFullError("scheduler overloaded", metadata=meta)


@pytest.mark.parametrize(
    "exc",
    [
        QueueNotFoundError("q"),
        NotLeaderError("x", "h:1"),
        InternalServerError("boom"),
        ConnectionLostError("lost", may_have_been_applied=True),
        RequestTimeoutError("slow"),
        ValueError("not a FilaError"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_final_or_maybe_applied_errors_are_not_retried(exc: BaseException) -> None:
    # Anything that may have been applied (or is final) is never sent again.
    assert Retry(deadline=1e9).delay(exc, now=0.0) is None


@pytest.mark.parametrize(
    "exc",
    [
        ChannelFullError("overloaded"),
        NodeNotReadyError("no leader yet"),
        InternalServerError("forward error: connect to node 2 refused"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_refusals_that_applied_nothing_are_retried(exc: BaseException) -> None:
    assert retryable(exc)
    d = Retry(deadline=1e9).delay(exc, now=0.0)
    assert d is not None and 0.005 <= d <= 0.01


def test_per_item_retryable_codes() -> None:
    assert item_retryable(ErrorCode.NOT_LEADER, "")
    assert item_retryable(ErrorCode.INTERNAL_ERROR, "forward error: connect: refused")
    assert not item_retryable(ErrorCode.INTERNAL_ERROR, "forward error: timeout")  # may have been applied
    assert not item_retryable(ErrorCode.QUEUE_NOT_FOUND, "")
    # items accepted by item_retryable are retried with the same backoff and deadline
    assert Retry(deadline=10.0).delay(None, now=0.0) is not None
    assert Retry(deadline=10.0).delay(None, now=9.9999) is None


def test_channel_full_backs_off_exponentially_up_to_one_second() -> None:
    random.seed(1)
    retry = Retry(deadline=1e9)
    bounds = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0, 1.0, 1.0]
    for bound in bounds:
        d = retry.delay(channel_full(), now=0.0)
        assert d is not None and bound / 2 <= d <= bound


def test_retry_after_ms_is_honoured() -> None:
    retry = Retry(deadline=100.0)
    d = retry.delay(channel_full("250"), now=0.0)
    assert d is not None and d >= 0.25
    # a hint shorter than the backoff does not shorten it
    retry = Retry(deadline=100.0)
    for _ in range(8):
        retry.delay(channel_full(), now=0.0)
    d = retry.delay(channel_full("1"), now=0.0)
    assert d is not None and d >= 0.5


def test_unreadable_retry_after_ms_is_ignored() -> None:
    assert channel_full("soon").retry_after_ms is None
    d = Retry(deadline=100.0).delay(channel_full("soon"), now=0.0)
    assert d is not None and 0.005 <= d <= 0.01


def test_deadline_is_never_overslept() -> None:
    # A pause that would end at or after the deadline means: give up now.
    assert Retry(deadline=10.0).delay(channel_full(), now=9.9999) is None
    assert Retry(deadline=10.0).delay(channel_full("5000"), now=6.0) is None
    assert Retry(deadline=10.0).delay(channel_full("5000"), now=4.0) == 5.0


def test_retry_keeps_trying_until_the_deadline() -> None:
    random.seed(2)
    retry = Retry(deadline=3.0)
    now = 0.0
    tries = 0
    while True:
        d = retry.delay(channel_full(), now)
        if d is None:
            break
        assert now + d < 3.0
        now += d
        tries += 1
    assert tries >= 5 and now >= 2.0  # it used most of the time it had, not just one attempt


def test_backoff_reset() -> None:
    b = Backoff(0.1, 0.4)
    for _ in range(5):
        b.next()
    assert b.current == 0.4
    b.reset()
    assert b.current == 0.1 and 0.05 <= b.next() <= 0.1


# ------------------------------------------------------------- Retry.after


def test_after_follows_one_leader_redirect_then_raises() -> None:
    retry = Retry(deadline=100.0)
    first = NotLeaderError("not the leader", "10.0.0.2:5555")
    assert retry.after(first, now=0.0) == ("redirect", "10.0.0.2:5555")
    second = NotLeaderError("not the leader", "10.0.0.3:5555")
    with pytest.raises(NotLeaderError) as info:
        retry.after(second, now=0.0)  # a request is redirected once, never bounced around
    assert info.value is second


def test_after_raises_not_leader_without_an_address() -> None:
    exc = NotLeaderError("not the leader")
    with pytest.raises(NotLeaderError) as info:
        Retry(deadline=100.0).after(exc, now=0.0)
    assert info.value is exc


def test_after_waits_on_channel_full_until_the_deadline() -> None:
    retry = Retry(deadline=1.0)
    action, delay = retry.after(channel_full("100"), now=0.0)
    assert action == "wait" and delay >= 0.1
    exc = channel_full("5000")
    with pytest.raises(ChannelFullError) as info:
        retry.after(exc, now=0.0)
    assert info.value is exc


def test_after_raises_final_errors_unchanged() -> None:
    exc = QueueNotFoundError("no such queue")
    with pytest.raises(QueueNotFoundError) as info:
        Retry(deadline=100.0).after(exc, now=0.0)
    assert info.value is exc
