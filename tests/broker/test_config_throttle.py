"""SERVER.md §6.12–§6.14, §8.4, §10.4: runtime config and throttles."""

from __future__ import annotations

import time
from typing import Any

import pytest

from fila.protocol.constants import ErrorCode
from fila.testing import Broker

from .conftest import Wire


def _set(w: Wire, key: str, value: str) -> int:
    return w.ok("SetConfigRequest", {"key": key, "value": value})["error_code"]  # type: ignore[no-any-return]


def _get(w: Wire, key: str) -> dict[str, Any]:
    return w.ok("GetConfigRequest", {"key": key})


def test_set_get_list_and_delete(wire: Wire) -> None:
    assert _set(wire, "b.x", "2") == 0
    assert _set(wire, "a.y", "1") == 0
    assert _set(wire, "c", " kept verbatim ") == 0
    assert _get(wire, "c") == {"error_code": 0, "value": " kept verbatim "}
    assert _get(wire, "missing") == {"error_code": 0, "value": ""}
    body = wire.ok("ListConfigRequest", {"prefix": ""})
    assert body["entries"] == [
        {"key": "a.y", "value": "1"},
        {"key": "b.x", "value": "2"},
        {"key": "c", "value": " kept verbatim "},
    ]
    assert wire.ok("ListConfigRequest", {"prefix": "b."})["entries"] == [{"key": "b.x", "value": "2"}]
    assert _set(wire, "b.x", "") == 0  # empty value deletes
    assert [e["key"] for e in wire.ok("ListConfigRequest", {"prefix": ""})["entries"]] == ["a.y", "c"]


@pytest.mark.parametrize(
    "value",
    [
        "1", "1,2,3", "a,1", "1,b", "-1,2", "1,-2", "nan,1", "1,inf", "NaN,1", "1,", ",1", "1_0,2", "1;2",
        "0x10,1", "1e,1", ".,1", "1e400,1",
        "\u0661,2", "1,\u0662", "\uff11,2", "1,\uff12",  # Arabic-Indic and full-width digits
        "\x1c1,2", "1,2\x1f", "1\x1d,2", "\x1e1,2",  # separators: Python's strip() takes them, Rust's trim() not
    ],
)  # fmt: skip
def test_invalid_throttle_values_are_refused_and_not_stored(wire: Wire, value: str) -> None:
    """SERVER.md §10.4, §16.2: each part is Rust-trimmed and parsed as a Rust f64 (ASCII digits)."""
    assert _set(wire, "throttle.t", value) == ErrorCode.INVALID_CONFIG_VALUE
    assert _get(wire, "throttle.t")["value"] == ""


@pytest.mark.parametrize(
    "value", ["1,2", " 1.5 , 2 ", "0,0", "1e3,5", "+1,2", "1.,.5", "1E+2,2", "\t1\n,\x0b2\x0c", "\u00a01,2\u3000"]
)
def test_valid_throttle_values(wire: Wire, value: str) -> None:
    """Rust's ``str::trim`` strips Unicode White_Space (tabs, NBSP, ideographic space…)."""
    assert _set(wire, "throttle.t", value) == 0
    assert _get(wire, "throttle.t")["value"] == value


def test_throttle_with_an_empty_name(wire: Wire) -> None:
    assert _set(wire, "throttle.", "1,1") == ErrorCode.INVALID_CONFIG_VALUE
    assert _set(wire, "throttle.", "") == 0


def test_deleting_a_throttle_removes_its_bucket(wire: Wire) -> None:
    wire.create_queue("q")
    _set(wire, "throttle.t", "1,1")
    assert len(wire.stats("q")["per_throttle_stats"]) == 1
    _set(wire, "throttle.t", "")
    assert wire.stats("q")["per_throttle_stats"] == []


def test_changing_a_rate_keeps_tokens_capped_at_the_new_burst(wire: Wire) -> None:
    wire.create_queue("q")
    _set(wire, "throttle.t", "0,10")
    _set(wire, "throttle.t", "0,3")
    (b,) = wire.stats("q")["per_throttle_stats"]
    assert (b["tokens"], b["burst"]) == (3.0, 3.0)


def _throttled_queue(broker: Broker) -> None:
    broker.create_queue(
        "q",
        on_enqueue=lambda m: {
            "fairness_key": m["headers"].get("k", "default"),
            "throttle_keys": m["headers"]["t"].split(","),
        },
    )


def test_throttle_limits_deliveries(broker: Broker, wire: Wire) -> None:
    _throttled_queue(broker)
    _set(wire, "throttle.slow", "0,2")  # two tokens, never refilled
    wire.consume("q")
    for i in range(4):
        wire.enqueue("q", bytes([i]), {"t": "slow,unbucketed,slow"})
    assert [wire.delivery()["payload"] for _ in range(2)] == [b"\x00", b"\x01"]
    wire.no_delivery(0.3)
    assert wire.stats("q")["depth"] == 4
    _set(wire, "throttle.slow", "")  # no bucket: passes
    assert [wire.delivery()["payload"] for _ in range(2)] == [b"\x02", b"\x03"]


def test_a_throttled_key_does_not_block_other_keys(broker: Broker, wire: Wire) -> None:
    _throttled_queue(broker)
    _set(wire, "throttle.none", "0,0")
    wire.consume("q")
    wire.enqueue("q", b"stuck", {"k": "a", "t": "none"})
    wire.enqueue("q", b"free", {"k": "b", "t": "other"})
    assert wire.delivery()["payload"] == b"free"
    wire.no_delivery(0.2)


def test_throttle_refills(broker: Broker, wire: Wire) -> None:
    _throttled_queue(broker)
    _set(wire, "throttle.t", "50,1")
    wire.consume("q")
    wire.enqueue_many([("q", b"x")] * 3, {"t": "t"})
    assert len([wire.delivery(timeout=5) for _ in range(3)]) == 3


def test_lua_hook_reads_config_through_fila_get(broker: Broker, wire: Wire) -> None:
    pytest.importorskip("lupa")
    wire.create_queue("q", on_enqueue='function on_enqueue(m) return {fairness_key = fila.get("fk") or "none"} end')
    wire.consume("q")
    wire.enqueue("q")
    assert wire.delivery()["fairness_key"] == "none"
    _set(wire, "fk", "from-config")
    wire.enqueue("q")
    assert wire.delivery()["fairness_key"] == "from-config"


def test_buckets_refill_continuously(broker: Broker, wire: Wire) -> None:
    """Deliberate difference (README): tokens are refilled whenever a bucket is looked at,
    GetStats included; the server refills once per scheduler loop iteration, so 50 ms after
    a delivery on an idle server its stats still show the tokens of that iteration."""
    _throttled_queue(broker)
    _set(wire, "throttle.t", "10,1")
    wire.consume("q")
    wire.enqueue("q", headers={"t": "t"})
    wire.delivery()
    time.sleep(0.05)
    (b,) = wire.stats("q")["per_throttle_stats"]
    assert 0.3 < b["tokens"] <= 1.0
