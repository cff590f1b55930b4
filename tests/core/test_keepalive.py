"""Keepalive: the ping / dead decisions of fila._core.Keepalive, given the time (no sockets, no sleeps)."""

from __future__ import annotations

from fila._core import Keepalive
from fila.errors import ConnectionLostError
from fila.errors import FilaConnectionError


def test_disabled_keepalive_never_acts() -> None:
    ka = Keepalive(None, 1.0, now=0.0)
    assert ka.check(0.0) == (None, None)
    assert ka.check(1e9) == (None, None)


def test_idle_until_interval_then_one_ping_then_dead() -> None:
    ka = Keepalive(10.0, 3.0, now=100.0)
    assert ka.check(100.0) == (None, 110.0)
    assert ka.check(109.999) == (None, 110.0)
    assert ka.check(110.0) == (Keepalive.PING, 113.0)
    # no second Ping while the first is unanswered; the next check is the deadline
    assert ka.check(110.5) == (None, 113.0)
    assert ka.check(112.999) == (None, 113.0)
    assert ka.check(113.0) == (Keepalive.DEAD, None)
    assert ka.check(500.0) == (Keepalive.DEAD, None)  # dead stays dead


def test_an_answer_cancels_the_deadline_and_restarts_the_interval() -> None:
    ka = Keepalive(10.0, 3.0, now=0.0)
    assert ka.check(10.0)[0] == Keepalive.PING
    ka.received(11.0)  # the Pong
    assert ka.check(13.5) == (None, 21.0)  # past the old deadline: not dead
    assert ka.check(21.0) == (Keepalive.PING, 24.0)


def test_traffic_postpones_the_ping() -> None:
    ka = Keepalive(10.0, 3.0, now=0.0)
    ka.received(6.0)
    assert ka.check(10.0) == (None, 16.0)
    ka.received(15.0)
    assert ka.check(16.0) == (None, 25.0)
    assert ka.check(25.0)[0] == Keepalive.PING


def test_a_late_check_pings_first_rather_than_declaring_death() -> None:
    # A driver that was not scheduled for a long while must not kill a healthy
    # connection: the first decision after a long silence is a Ping.
    ka = Keepalive(1.0, 2.0, now=0.0)
    assert ka.check(1000.0) == (Keepalive.PING, 1002.0)
    assert ka.check(1001.9) == (None, 1002.0)
    assert ka.check(1002.0)[0] == Keepalive.DEAD


def test_dead_error_names_the_address_and_timeout() -> None:
    err = Keepalive(1.0, 2.5, now=0.0).dead_error("10.0.0.1:5555")
    assert isinstance(err, ConnectionLostError) and isinstance(err, FilaConnectionError)
    assert "10.0.0.1:5555" in str(err) and "2.5" in str(err) and "keepalive" in str(err)
