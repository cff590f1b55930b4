"""SERVER.md §8.1–§8.3: DRR fairness across fairness keys."""

from __future__ import annotations

from typing import Any

import pytest

from fila.testing import Broker

from .conftest import Wire

LUA_KEYED = """
function on_enqueue(msg)
  return {fairness_key = msg.headers.key, weight = tonumber(msg.headers.weight)}
end
"""


def _keyed(msg: dict[str, Any]) -> dict[str, Any]:
    return {"fairness_key": msg["headers"]["key"], "weight": int(msg["headers"]["weight"])}


def _order(wire: Wire, spec: list[tuple[str, int, int]]) -> list[str]:
    for key, weight, count in spec:
        wire.enqueue_many([("q", b"")] * count, {"key": key, "weight": str(weight)})
    total = sum(c for _, _, c in spec)
    wire.consume("q")
    return [wire.delivery()["fairness_key"] for _ in range(total)]


def test_weights_three_and_one(broker: Broker, wire: Wire) -> None:
    broker.create_queue("q", on_enqueue=_keyed)
    assert "".join(_order(wire, [("A", 3, 9), ("B", 1, 3)])) == "AAABAAABAAAB"


def test_equal_weights_alternate(broker: Broker, wire: Wire) -> None:
    broker.create_queue("q", on_enqueue=_keyed)
    assert "".join(_order(wire, [("A", 1, 4), ("B", 1, 2)])) == "ABABAA"


def test_three_keys(broker: Broker, wire: Wire) -> None:
    broker.create_queue("q", on_enqueue=_keyed)
    assert "".join(_order(wire, [("A", 2, 4), ("B", 1, 2), ("C", 1, 2)])) == "AABCAABC"


def test_weight_zero_counts_as_one_but_is_delivered_raw(broker: Broker, wire: Wire) -> None:
    broker.create_queue("q", on_enqueue=_keyed)
    wire.enqueue_many([("q", b"")] * 2, {"key": "Z", "weight": "0"})
    wire.enqueue_many([("q", b"")] * 2, {"key": "Y", "weight": "1"})
    wire.consume("q")
    got = [wire.delivery() for _ in range(4)]
    assert "".join(m["fairness_key"] for m in got) == "ZYZY"
    assert [m["weight"] for m in got] == [0, 1, 0, 1]


def test_fifo_within_a_key(broker: Broker, wire: Wire) -> None:
    broker.create_queue("q", on_enqueue=_keyed)
    ids = [r["message_id"] for r in wire.enqueue_many([("q", b"")] * 5, {"key": "A", "weight": "1"})]
    wire.consume("q")
    assert [wire.delivery()["message_id"] for _ in range(5)] == ids


def test_deficits_show_in_stats_once_a_round_started(broker: Broker, wire: Wire) -> None:
    broker.create_queue("q", on_enqueue=_keyed)
    wire.enqueue_many([("q", b"")] * 5, {"key": "A", "weight": "3"})
    assert wire.stats("q")["per_key_stats"][0]["current_deficit"] == 0
    rid = wire.consume("q")
    for _ in range(5):
        wire.delivery()
    wire.send_msg("CancelConsume", rid)
    wire.enqueue("q", headers={"key": "A", "weight": "3"})
    (entry,) = wire.stats("q")["per_key_stats"]
    assert entry["key"] == "A" and entry["pending_count"] == 1 and entry["weight"] == 3


def test_weights_three_and_one_with_lua(wire: Wire) -> None:
    pytest.importorskip("lupa")
    wire.create_queue("q", on_enqueue=LUA_KEYED)
    assert "".join(_order(wire, [("A", 3, 6), ("B", 1, 2)])) == "AAABAAAB"


def _set(w: Wire, key: str, value: str) -> None:
    assert w.ok("SetConfigRequest", {"key": key, "value": value}) == {"error_code": 0}


def _keyed_throttled(msg: dict[str, Any]) -> dict[str, Any]:
    t = msg["headers"].get("t")
    return {"fairness_key": msg["headers"]["key"], "throttle_keys": [t] if t else []}


def _deficits(wire: Wire) -> list[tuple[str, int, int]]:
    return [(k["key"], k["pending_count"], k["current_deficit"]) for k in wire.stats("q")["per_key_stats"]]


def test_round_after_a_lifted_throttle_restarts_from_the_first_key(broker: Broker, wire: Wire) -> None:
    """SERVER.md §8.2, §8.4, §16.2: a throttled key loses its deficit; the round ends once
    every key is out of credit or throttled, and the pass ends with it. The next round
    credits every active key and starts again from the first key (activation order)."""
    broker.create_queue("q", on_enqueue=_keyed_throttled)
    _set(wire, "throttle.t", "0,0")
    rid = wire.consume("q")
    wire.enqueue("q", b"a1", {"key": "A", "t": "t"})
    wire.no_delivery(0.2)  # throttled
    assert _deficits(wire) == [("A", 1, 0)]
    wire.send_msg("CancelConsume", rid)
    wire.enqueue_many([("q", b"c1"), ("q", b"c2")], {"key": "C"})
    assert _deficits(wire) == [("A", 1, 0), ("C", 2, 0)]  # C joined between rounds: 0
    _set(wire, "throttle.t", "")
    wire.consume("q")
    assert [wire.delivery()["payload"] for _ in range(3)] == [b"a1", b"c1", b"c2"]


def test_throttled_key_gives_up_its_turn_but_keeps_its_place(broker: Broker, wire: Wire) -> None:
    """SERVER.md §8.4: the throttled key is skipped for the round; unthrottled keys go on;
    the key stays first in the active list."""
    broker.create_queue("q", on_enqueue=_keyed_throttled)
    _set(wire, "throttle.t", "0,1")  # one token, never refilled
    wire.enqueue_many([("q", b"a1"), ("q", b"a2")], {"key": "A", "t": "t"})
    wire.enqueue_many([("q", b"b1"), ("q", b"b2")], {"key": "B"})
    wire.consume("q")
    assert [wire.delivery()["payload"] for _ in range(3)] == [b"a1", b"b1", b"b2"]
    wire.no_delivery(0.2)
    assert [k["key"] for k in wire.stats("q")["per_key_stats"]] == ["A"]


def test_a_keys_weight_is_that_of_the_message_added_last(broker: Broker, wire: Wire) -> None:
    """SERVER.md §8.1, [drr] add_key: every stored, retried, reclaimed or redriven message
    sets its key's weight, so a retried older message sets it back."""
    broker.create_queue("q", on_enqueue=_keyed)
    wire.enqueue("q", headers={"key": "A", "weight": "3"})
    rid = wire.consume("q")
    first = wire.delivery()["message_id"]
    wire.send_msg("CancelConsume", rid)
    wire.enqueue("q", headers={"key": "A", "weight": "2"})
    assert [k["weight"] for k in wire.stats("q")["per_key_stats"]] == [2]
    assert wire.nack("q", first) == [0]
    assert [k["weight"] for k in wire.stats("q")["per_key_stats"]] == [3]


def test_drr_steps_like_the_server() -> None:
    """SERVER.md §8.1–§8.2 ([drr]): a key that joins mid-round has deficit 0 and waits for
    the next round; a key with nothing pending stays active until a pass reaches it."""
    from fila.testing.drr import Drr

    drr: Drr[str] = Drr(quantum=2)
    drr.push("A", "a1", 1)
    drr.push("A", "a2", 1)
    assert drr.start_round() and drr.deficit == {"A": 2}
    assert drr.next_key() == "A"
    drr.pop("A")
    drr.consume("A")
    drr.push("B", "b1", 1)  # mid-round
    assert drr.deficit == {"A": 1, "B": 0}
    assert not drr.start_round()  # a round is running
    assert drr.next_key() == "A"
    drr.pop("A")
    drr.consume("A")
    assert list(drr.keys()) == ["A", "B"] and drr.peek("A") is None  # A: nothing pending, still active
    assert drr.next_key() is None and not drr.round_active  # nobody has credit: the round is over
    assert drr.start_round() and drr.deficit == {"A": 2, "B": 2}
    assert drr.next_key() == "A" and drr.peek("A") is None
    drr.drop_empty("A")
    assert drr.next_key() == "B"
