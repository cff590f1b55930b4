"""SERVER.md §9.4–§9.6, §6.8: on_enqueue / on_failure as Python callables and Lua."""

from __future__ import annotations

from typing import Any

import pytest

from fila.protocol.constants import ErrorCode
from fila.testing import Broker, BrokerError, lua_available

from .conftest import Wire

needs_lua = pytest.mark.skipif(not lua_available(), reason="lupa is not installed")


def test_python_on_enqueue_contract(broker: Broker, wire: Wire) -> None:
    seen: list[dict[str, Any]] = []

    def hook(msg: dict[str, Any]) -> dict[str, Any]:
        seen.append(msg)
        return {"fairness_key": "tenant-" + msg["headers"]["t"], "weight": 5, "throttle_keys": ["a", 1, "b"]}

    broker.create_queue("q", on_enqueue=hook)
    wire.consume("q")
    wire.enqueue("q", b"12345", {"t": "7"})
    m = wire.delivery()
    assert (m["fairness_key"], m["weight"], m["throttle_keys"]) == ("tenant-7", 5, ["a", "b"])
    assert seen == [{"headers": {"t": "7"}, "payload_size": 5, "queue": "q"}]


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (None, ("default", 1, [])),
        ("nope", ("default", 1, [])),
        ({}, ("default", 1, [])),
        ({"fairness_key": 12, "weight": 2.0}, ("12", 2, [])),
        ({"fairness_key": ["x"], "weight": -1}, ("default", 1, [])),
        ({"weight": 2.5}, ("default", 1, [])),
        ({"weight": 2**32}, ("default", 1, [])),
        ({"weight": 0}, ("default", 0, [])),
    ],
)
def test_invalid_hook_results_fall_back_to_defaults(
    broker: Broker, wire: Wire, result: Any, expected: tuple[Any, ...]
) -> None:
    broker.create_queue("q", on_enqueue=lambda m: result)
    wire.consume("q")
    wire.enqueue("q")
    m = wire.delivery()
    assert (m["fairness_key"], m["weight"], m["throttle_keys"]) == expected


def test_a_raising_hook_still_enqueues(broker: Broker, wire: Wire) -> None:
    def boom(msg: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("hook bug")

    broker.create_queue("q", on_enqueue=boom, on_failure=boom)
    wire.consume("q")
    mid = wire.enqueue("q")
    assert wire.delivery()["fairness_key"] == "default"
    wire.nack("q", mid)
    assert wire.delivery()["attempt_count"] == 1  # on_failure error → retry


def test_circuit_breaker_skips_hooks_after_three_failures(broker: Broker, wire: Wire) -> None:
    calls = []

    def flaky(msg: dict[str, Any]) -> dict[str, Any]:
        calls.append(1)
        raise RuntimeError("down")

    broker.create_queue("q", on_enqueue=flaky)
    wire.enqueue_many([("q", b"")] * 5)
    assert len(calls) == 3


def test_broker_create_queue_reports_errors(broker: Broker) -> None:
    broker.create_queue("q")
    with pytest.raises(BrokerError, match="QUEUE_ALREADY_EXISTS"):
        broker.create_queue("q")


def test_create_queue_exists_is_checked_first(wire: Wire) -> None:
    wire.create_queue("q")
    body = wire.ok(
        "CreateQueueRequest",
        {"name": "q", "on_enqueue_script": "this is not lua(", "on_failure_script": None, "visibility_timeout_ms": 0},
    )
    assert body == {"error_code": ErrorCode.QUEUE_ALREADY_EXISTS, "queue_id": "q"}


def test_create_queue_accepts_any_name(wire: Wire) -> None:
    for name in ("", "a.b.c", "ünïcode ✓"):
        assert wire.create_queue(name)["queue_id"] == name


@pytest.mark.skipif(lua_available(), reason="lupa is installed")
def test_without_lupa_scripts_are_refused_with_a_clear_message(wire: Wire) -> None:
    body = wire.ok(
        "CreateQueueRequest",
        {
            "name": "q",
            "on_enqueue_script": "function on_enqueue(m) end",
            "on_failure_script": None,
            "visibility_timeout_ms": 0,
        },
    )
    assert body["error_code"] == ErrorCode.LUA_COMPILATION_ERROR and "lupa" in body["queue_id"]


@needs_lua
class TestLua:
    def _create(self, w: Wire, on_enqueue: str | None = None, on_failure: str | None = None) -> dict[str, Any]:
        return w.ok(
            "CreateQueueRequest",
            {"name": "q", "on_enqueue_script": on_enqueue, "on_failure_script": on_failure, "visibility_timeout_ms": 0},
        )

    def test_compilation_error(self, wire: Wire) -> None:
        body = self._create(wire, on_failure="function on_failure(")
        assert body["error_code"] == ErrorCode.LUA_COMPILATION_ERROR
        assert body["queue_id"].startswith("lua compilation error: ")
        assert wire.ok("ListQueuesRequest")["queues"] == []

    def test_on_enqueue_and_on_failure(self, wire: Wire) -> None:
        self._create(
            wire,
            on_enqueue="""
              function on_enqueue(msg)
                return {fairness_key = msg.queue .. ":" .. msg.headers.t .. ":" .. msg.payload_size,
                        weight = 2, throttle_keys = {"x", 3, "y"}}
              end""",
            on_failure="""
              function on_failure(msg)
                if msg.error == "fatal" and msg.attempts == 1 and msg.id ~= "" then
                  return {action = "dlq", delay_ms = 500}
                end
                return {action = "retry"}
              end""",
        )
        wire.consume("q")
        mid = wire.enqueue("q", b"abc", {"t": "z"})
        m = wire.delivery()
        assert (m["fairness_key"], m["weight"], m["throttle_keys"]) == ("q:z:3", 2, ["x", "y"])
        wire.nack("q", mid, error="fatal")
        wire.no_delivery(0.1)
        assert wire.stats("q.dlq")["depth"] == 1

    @pytest.mark.parametrize(
        "body",
        [
            "while true do end",  # instruction limit
            "local t = {} for i = 1, 1e8 do t[i] = string.rep('x', 64) .. i end",  # memory limit
            "error('boom')",
            "return os.time()",  # no os
            "return io.open('/etc/passwd')",  # no io
            "return require('os')",  # no require
            "return load('return 1')()",  # no load
            "return 42",  # not a table
        ],
    )
    def test_sandbox_and_limits_fall_back_to_defaults(self, wire: Wire, body: str) -> None:
        self._create(wire, on_enqueue=f"function on_enqueue(msg) {body} end")
        wire.consume("q")
        wire.enqueue("q")
        assert wire.delivery(timeout=10)["fairness_key"] == "default"

    def test_script_without_the_function_uses_defaults(self, wire: Wire) -> None:
        self._create(wire, on_enqueue="x = 1")
        wire.consume("q")
        wire.enqueue("q")
        assert wire.delivery()["fairness_key"] == "default"

    def test_allowed_libraries(self, wire: Wire) -> None:
        self._create(
            wire,
            on_enqueue="""function on_enqueue(msg)
                local s = string.upper("a") .. math.floor(2.5)
                return {fairness_key = s .. table.concat({"b", "c"}) .. utf8.char(72)}
            end""",
        )
        wire.consume("q")
        wire.enqueue("q")
        assert wire.delivery()["fairness_key"] == "A2bcH"

    def test_lua_and_python_hooks_through_broker_api(self, broker: Broker, wire: Wire) -> None:
        broker.create_queue("q", on_enqueue='function on_enqueue(m) return {fairness_key = "lua"} end')
        with pytest.raises(BrokerError, match="LUA_COMPILATION_ERROR"):
            broker.create_queue("bad", on_enqueue="function (")
        wire.consume("q")
        wire.enqueue("q")
        assert wire.delivery()["fairness_key"] == "lua"
