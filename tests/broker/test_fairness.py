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
