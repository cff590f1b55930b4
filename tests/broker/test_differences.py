"""The README's "Where it deliberately differs from the real server", one test per entry.

Entries tested next to their subject: throttle refill (test_config_throttle),
Lua (test_hooks), a failed CreateQueue (test_hooks), names and keys too long
(test_stats, test_hooks), cluster simulation (test_stats).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import pytest

from fila.protocol.constants import ErrorCode
from fila.protocol.constants import Opcode
from fila.testing import Broker
from fila.testing import lua_available

from .conftest import Wire
from .conftest import wait_until


def test_state_lives_in_the_broker_object_and_a_restart_resets_nothing() -> None:
    """README: state survives stop()/start() of the same Broker (as the server's survives a
    restart), but throttle tokens, DRR rounds and Lua globals carry on where the server
    rebuilds them (buckets full again from config: SERVER.md §13.3, [s-rec])."""
    b = Broker().start()
    try:
        b.create_queue("q", on_enqueue=lambda m: {"throttle_keys": ["t"]})
        b.set_config("throttle.t", "0,2")
        w = Wire(b)
        rid = w.consume("q")
        w.enqueue("q")
        w.delivery()
        w.send_msg("CancelConsume", rid)
        mid = w.enqueue("q")
        w.close()
        b.stop()
        b.start()
        w = Wire(b)
        assert b.queue_names() == ["q", "q.dlq"] and b.get_config("throttle.t") == "0,2"
        (bucket,) = w.stats("q")["per_throttle_stats"]
        assert bucket["tokens"] == 1.0  # the server would start the bucket full again
        w.consume("q")
        assert w.delivery()["message_id"] == mid
        w.close()
    finally:
        b.stop()


def test_an_abnormal_close_unregisters_the_consumer(connect: Callable[..., Wire]) -> None:
    """README: every close unregisters (the server leaves a ghost consumer, SERVER.md §13.6)."""
    consumer, admin = connect(), connect()
    admin.create_queue("q")
    consumer.consume("q")
    admin.enqueue("q")
    consumer.delivery()
    consumer.send(struct.pack(">I", 16_777_217))  # oversize: a fatal frame error
    consumer.assert_closed()
    wait_until(lambda: admin.stats("q")["active_consumers"] == 0, what="unregister")
    assert admin.stats("q")["in_flight"] == 1  # the lease waits for its timeout


def test_api_keys_are_not_config_entries(fila_broker_factory: Callable[..., Broker]) -> None:
    """README: the server stores API keys as ``auth:key:<id>`` config entries (SERVER.md §10.4)."""
    b = fila_broker_factory(api_key="boot")
    key_id, _ = b.create_api_key("svc")
    w = Wire(b, api_key="boot")
    try:
        assert w.ok("ListConfigRequest", {"prefix": ""})["entries"] == []
        assert w.ok("GetConfigRequest", {"key": f"auth:key:{key_id}"})["value"] == ""
        if lua_available():
            get = f'tostring(fila.get("auth:key:{key_id}"))'
            w.create_queue("q", on_enqueue=f"function on_enqueue(m) return {{fairness_key = {get}}} end")
            w.consume("q")
            w.enqueue("q")
            assert w.delivery()["fairness_key"] == "nil"
    finally:
        w.close()


def test_injected_failures_win_over_decoding_and_acl(fila_broker_factory: Callable[..., Broker]) -> None:
    """README: an injected failure is taken before the request is decoded or checked."""
    b = fila_broker_factory(api_key="boot")
    _, token = b.create_api_key("nobody")
    w = Wire(b, api_key=token)
    try:
        b.faults.fail_next(2)
        w.send(struct.pack(">IBBI", 6 + 2, Opcode.ENQUEUE, 0, 7) + b"\x00\x00")  # truncated body
        f = w.response(7)
        assert f.opcode == Opcode.ERROR and f.payload[0] == ErrorCode.CHANNEL_FULL
        body = w.error("EnqueueRequest", {"messages": [{"queue": "q", "headers": {}, "payload": b""}]})
        assert body["error_code"] == ErrorCode.CHANNEL_FULL  # not Forbidden
    finally:
        w.close()


def test_a_fatal_framing_error_drops_earlier_frames_of_the_same_read(wire: Wire) -> None:
    """README: a Ping and an oversize frame in one write: the server answers the Ping first."""
    wire.send(bytes.fromhex("00000006030000000001") + struct.pack(">I", 16_777_217))
    assert wire.assert_closed() == []


def test_python_hooks_have_no_limits_and_share_no_state(broker: Broker, wire: Wire) -> None:
    """README: Python-callable hooks run unbounded; Lua limits apply to Lua only."""
    state: dict[str, Any] = {}

    def heavy(msg: dict[str, Any]) -> dict[str, Any]:
        total = sum(range(2_000_000))  # far beyond 100,000 Lua instructions' worth
        state["blob"] = bytearray(4 << 20)  # more than 1 MiB
        return {"fairness_key": str(total % 7)}

    broker.create_queue("q", on_enqueue=heavy)
    wire.consume("q")
    wire.enqueue("q")
    assert wire.delivery()["fairness_key"] == str(sum(range(2_000_000)) % 7)


@pytest.mark.skipif(not lua_available(), reason="lupa is not installed")
def test_reading_a_lua_result_counts_toward_the_instruction_limit(wire: Wire) -> None:
    """README: the double reads a hook's result in Lua, under the script's instruction budget
    (the server reads it in Rust): a very long throttle_keys list exhausts it."""
    script = """function on_enqueue(m)
      local t = {}
      for i = 1, tonumber(m.headers.n) do t[i] = "k" end
      return {fairness_key = "read", throttle_keys = t}
    end"""
    wire.create_queue("q", on_enqueue=script)
    wire.consume("q")
    wire.enqueue("q", headers={"n": "1000"})
    m = wire.delivery()
    assert (m["fairness_key"], len(m["throttle_keys"])) == ("read", 1000)
    wire.enqueue("q", headers={"n": "10000"})  # ~40,000 instructions to build, more to read
    assert wire.delivery()["fairness_key"] == "default"


def test_consumers_take_turns_in_registration_order(connect: Callable[..., Wire]) -> None:
    """README: plain round-robin in registration order (the server's order is a hash map's)."""
    c1, c2, producer = connect(), connect(), connect()
    producer.create_queue("q")
    c1.consume("q")
    c2.consume("q")
    producer.enqueue_many([("q", bytes([i])) for i in range(4)])
    assert [c1.delivery()["payload"] for _ in range(2)] == [b"\x00", b"\x02"]
    assert [c2.delivery()["payload"] for _ in range(2)] == [b"\x01", b"\x03"]
