"""SERVER.md §9.4–§9.6, §6.8: on_enqueue / on_failure as Python callables and Lua."""

from __future__ import annotations

from typing import Any

import pytest

from fila.protocol.constants import ErrorCode
from fila.testing import Broker
from fila.testing import BrokerError
from fila.testing import lua_available

from .conftest import Wire

needs_lua = pytest.mark.skipif(not lua_available(), reason="lupa is not installed")


def test_python_on_enqueue_contract(broker: Broker, wire: Wire) -> None:
    seen: list[dict[str, Any]] = []

    def hook(msg: dict[str, Any]) -> dict[str, Any]:
        seen.append(msg)
        return {"fairness_key": "tenant-" + msg["headers"]["t"], "weight": 5, "throttle_keys": ["a", 1, True, "b"]}

    broker.create_queue("q", on_enqueue=hook)
    wire.consume("q")
    wire.enqueue("q", b"12345", {"t": "7"})
    m = wire.delivery()
    assert (m["fairness_key"], m["weight"], m["throttle_keys"]) == ("tenant-7", 5, ["a", "1", "b"])
    assert seen == [{"headers": {"t": "7"}, "payload_size": 5, "queue": "q"}]


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (None, ("default", 1, [])),
        ("nope", ("default", 1, [])),
        ({}, ("default", 1, [])),
        ({"fairness_key": 12, "weight": 2.0}, ("12", 2, [])),
        ({"fairness_key": 2.0}, ("2.0", 1, [])),
        ({"fairness_key": ["x"], "weight": -1}, ("default", 1, [])),
        ({"fairness_key": True, "weight": True}, ("default", 1, [])),
        ({"weight": 2.5}, ("default", 2, [])),
        ({"weight": "4"}, ("default", 4, [])),
        ({"weight": 2**32}, ("default", 1, [])),
        ({"weight": 0}, ("default", 0, [])),
        ({"throttle_keys": ["a", None, "c"]}, ("default", 1, ["a"])),
        ({"throttle_keys": "ab"}, ("default", 1, [])),
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

    @pytest.mark.parametrize(
        ("source", "text"),
        [
            ("x =", '[string "lua_script"]:1: unexpected symbol near <eof>'),
            ("function on_failure(", """[string "lua_script"]:1: <name> or '...' expected near <eof>"""),
            ("\x1bLua", "lua_script: bad binary format (truncated chunk)"),
            ("\x1bfoo", "lua_script: bad binary format (not a binary chunk)"),
        ],
    )
    def test_compilation_error_text(self, wire: Wire, source: str, text: str) -> None:
        """SERVER.md §16.2, §6.8: mlua compiles the source as chunk ``lua_script`` (text or
        binary) and reports ``lua compilation error: syntax error: <Lua's message>``."""
        body = self._create(wire, on_failure=source)
        assert body == {
            "error_code": ErrorCode.LUA_COMPILATION_ERROR,
            "queue_id": f"lua compilation error: syntax error: {text}",
        }
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
        assert (m["fairness_key"], m["weight"], m["throttle_keys"]) == ("q:z:3", 2, ["x", "3", "y"])
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


def _lua_fields(wire: Wire, body: str, headers: dict[str, str] | None = None) -> tuple[str, int, list[str]]:
    """Create queue ``q`` whose on_enqueue returns ``body`` (a Lua expression); one message's fields."""
    wire.create_queue("q", on_enqueue=f"function on_enqueue(m) local h = m.headers return {body} end")
    wire.consume("q")
    wire.enqueue("q", headers=headers)
    m = wire.delivery()
    return m["fairness_key"], m["weight"], m["throttle_keys"]


# SERVER.md §9.4, §16.2: the server reads the result with mlua: ``weight`` as an i64
# (lua_tointegerx, so strings are coerced; otherwise the number, strings coerced,
# truncated toward zero), then u32 (else 1); strings are UTF-8 strings or numbers
# as Lua writes them (integers, or %.14g with ".0" for integral floats);
# ``throttle_keys`` is read raw from index 1 up to the first nil, dropping values
# that are not strings or numbers; a field whose __index fails reads as missing.
LUA_CONVERSIONS = [
    ('{weight = "4"}', ("default", 4, [])),
    ('{weight = "4.0"}', ("default", 4, [])),
    ('{weight = " 5 "}', ("default", 5, [])),
    ("{weight = 2.5}", ("default", 2, [])),
    ('{weight = "2.5"}', ("default", 2, [])),
    ("{weight = -0.5}", ("default", 0, [])),
    ("{weight = -1.5}", ("default", 1, [])),
    ('{weight = "0x10"}', ("default", 16, [])),
    ('{weight = "1e2"}', ("default", 100, [])),
    ("{weight = 4294967295.9}", ("default", 4294967295, [])),
    ("{weight = 2^32}", ("default", 1, [])),
    ("{weight = 0/0}", ("default", 1, [])),
    ('{weight = "abc"}', ("default", 1, [])),
    ('{weight = "inf"}', ("default", 1, [])),
    ("{weight = true}", ("default", 1, [])),
    ("{weight = h.w}", ("default", 7, [])),
    ('{throttle_keys = {1, "a", 2.5}}', ("default", 1, ["1", "a", "2.5"])),
    ('{throttle_keys = {"a", nil, "c"}}', ("default", 1, ["a"])),
    ('{throttle_keys = {"a", true, {}, 2^53}}', ("default", 1, ["a", "9.007199254741e+15"])),
    ('{throttle_keys = "a"}', ("default", 1, [])),
    ("{fairness_key = 1/3}", ("0.33333333333333", 1, [])),
    ("{fairness_key = 2.0}", ("2.0", 1, [])),
    ("{fairness_key = 10}", ("10", 1, [])),
    ("{fairness_key = 1e100}", ("1e+100", 1, [])),
    ("{fairness_key = 2^63}", ("9.2233720368548e+18", 1, [])),
    ('{fairness_key = "\\255"}', ("default", 1, [])),
    ('{fairness_key = "\\u{D800}"}', ("default", 1, [])),
    ("{fairness_key = false}", ("default", 1, [])),
    ('setmetatable({}, {__index = function(t, k) return k == "weight" and 3 or nil end})', ("default", 3, [])),
    ('setmetatable({weight = 3}, {__index = function() error("x") end})', ("default", 3, [])),
]


@needs_lua
@pytest.mark.parametrize(("body", "expected"), LUA_CONVERSIONS)
def test_lua_results_are_converted_as_mlua_converts(wire: Wire, body: str, expected: tuple[Any, ...]) -> None:
    assert _lua_fields(wire, body, {"w": "7"}) == expected


PYTHON_EQUIVALENTS: list[tuple[Any, Any]] = [
    ("4", 4),
    ("4.0", 4),
    (" 5 ", 5),
    (2.5, 2),
    ("2.5", 2),
    (-0.5, 0),
    (-1.5, 1),
    ("0x10", 16),
    ("1e2", 100),
    ("0x1p4", 16),
    ("-0x1", 1),
    (4294967295.9, 4294967295),
    (2.0**32, 1),
    (float("nan"), 1),
    ("abc", 1),
    ("inf", 1),
    ("1_0", 1),
    ("١", 1),
    ("", 1),
    (True, 1),
]


@pytest.mark.parametrize(("value", "weight"), PYTHON_EQUIVALENTS)
def test_python_hook_weights_follow_the_lua_rules(broker: Broker, wire: Wire, value: Any, weight: int) -> None:
    """A Python hook's ``weight`` is converted as a Lua value would be (the cases above)."""
    broker.create_queue("q", on_enqueue=lambda m: {"weight": value})
    wire.consume("q")
    wire.enqueue("q")
    assert wire.delivery()["weight"] == weight


@needs_lua
def test_python_and_lua_conversions_agree() -> None:
    """The Python rules for Python hooks give what Lua itself gives (lupa as the oracle)."""
    from fila.testing.hooks import _as_weight
    from fila.testing.hooks import lua_number
    from fila.testing.hooks import lua_tostring

    lupa = pytest.importorskip("lupa.lua54")
    rt = lupa.LuaRuntime()
    lua_num = rt.eval("function(s) return tonumber(s) end")
    lua_str = rt.eval("function(n) return n .. '' end")
    for text in ["4", "4.0", " 5 ", "\t-7\n", "0x10", "0xffffffffffffffff", "0x1p-2", "1e2", ".5", "5.", "1e",
                 "9223372036854775807", "9223372036854775808", "-9223372036854775809", "inf", "nan", "0x", "1 2",
                 "+3", "- 3", "0X1P4", "1_0", "", " ", "9" * 400, "1e400", "1e-400", "0x" + "f" * 40,
                 "0" * 30 + "5", "  0x1.8  "]:  # fmt: skip
        assert lua_number(text) == lua_num(text), text
        if lua_num(text) is not None:
            assert type(lua_number(text)) is type(lua_num(text)), text
    for number in [0, -5, 2**62, 1 / 3, 2.0, -0.0, 1e100, 1e-7, 123456789012345.0, 2.0**63, float("inf")]:
        assert lua_tostring(number) == lua_str(number), number
    to_i64 = rt.eval(
        "function(v) if type(v) == 'string' then v = tonumber(v) end "
        "if type(v) ~= 'number' then return nil end "
        "local i = math.tointeger(v) if i then return i end "
        "if v >= 0 then i = math.floor(v) else i = math.ceil(v) end return math.tointeger(i) end"
    )
    for value, _ in PYTHON_EQUIVALENTS[:-1]:
        i = to_i64(value)
        assert _as_weight(value) == (i if i is not None and 0 <= i <= 0xFFFFFFFF else 1), value


@needs_lua
class TestOneLuaState:
    """SERVER.md §16.2: one Lua VM for every queue; each call re-runs the script's top-level
    code, then takes the global ``on_enqueue``/``on_failure``, sets it to nil and calls it."""

    def test_top_level_code_runs_on_every_call(self, wire: Wire) -> None:
        wire.create_queue(
            "q",
            on_enqueue="""
            n = (n or 0) + 1
            local calls = 0
            function on_enqueue(m)
              calls = calls + 1
              return {fairness_key = n .. ":" .. calls}
            end""",
        )
        wire.consume("q")
        wire.enqueue_many([("q", b"")] * 3)
        assert [wire.delivery()["fairness_key"] for _ in range(3)] == ["1:1", "2:1", "3:1"]

    def test_globals_are_shared_across_queues_and_hooks(self, wire: Wire) -> None:
        wire.create_queue("a", on_failure='function on_failure(m) seen = m.queue .. "/" .. m.error return {} end')
        wire.create_queue("b", on_enqueue="function on_enqueue(m) return {fairness_key = tostring(seen)} end")
        wire.enqueue("b")  # before a's on_failure ran
        wire.consume("a")
        mid = wire.enqueue("a")
        wire.delivery()
        assert wire.nack("a", mid, error="bad") == [0]
        assert wire.delivery()["attempt_count"] == 1
        wire.enqueue("b")  # after
        wire.consume("b")
        assert [wire.delivery()["fairness_key"] for _ in range(2)] == ["nil", "a/bad"]

    def test_the_hook_global_is_cleared_before_the_call(self, wire: Wire) -> None:
        wire.create_queue(
            "a", on_enqueue="function on_enqueue(m) return {fairness_key = type(on_enqueue) .. '/' .. type(x)} end"
        )
        wire.create_queue("b", on_enqueue="x = 1")  # defines no on_enqueue of its own
        wire.consume("a")
        wire.enqueue("a")
        assert wire.delivery()["fairness_key"] == "nil/nil"
        wire.consume("b")
        wire.enqueue("b")
        assert wire.delivery()["fairness_key"] == "default"  # a's function is not reused

    def test_sandbox_globals(self, wire: Wire) -> None:
        names = ["collectgarbage", "warn", "print", "load", "loadfile", "dofile", "require", "os", "io", "debug",
                 "coroutine", "package", "unpack", "math", "string", "table", "utf8", "fila"]  # fmt: skip
        listing = " .. ',' .. ".join(f"type({n})" for n in names)
        key, _, _ = _lua_fields(wire, f"{{fairness_key = {listing} .. ',' .. _VERSION .. ',' .. tostring(_G == _ENV)}}")
        assert key.split(",") == [
            "function", "function", "function", "nil", "nil", "nil", "nil", "nil", "nil", "nil",
            "nil", "nil", "nil", "table", "table", "table", "table", "table", "Lua 5.4", "true",
        ]  # fmt: skip

    def test_runtime_error_messages_carry_no_source_position(self, wire: Wire) -> None:
        """The server runs stripped bytecode: no chunk name or line in runtime errors."""
        arith = "select(2, pcall(function() return nil + 1 end))"
        key, _, _ = _lua_fields(wire, f'{{fairness_key = select(2, pcall(error, "boom")) .. "|" .. {arith}}}')
        assert key == "boom|?:-1: attempt to perform arithmetic on a nil value"


@needs_lua
def test_on_failure_runs_on_a_dlq_queue_and_trips_its_breaker(wire: Wire) -> None:
    """SERVER.md §9.2, §16.2: nacks on ``*.dlq`` queues run its on_failure too (the move
    itself always falls back to retry there); its failures count for the breaker the
    queue's two hooks share (§9.6), so three of them switch off on_enqueue for 10 s."""
    wire.create_queue(
        "x.dlq",
        on_enqueue='function on_enqueue(m) return {fairness_key = "hooked:" .. tostring(failures)} end',
        on_failure='function on_failure(m) failures = (failures or 0) + 1 error("no") end',
    )
    wire.consume("x.dlq")
    mid = wire.enqueue("x.dlq")
    assert wire.delivery()["fairness_key"] == "hooked:nil"
    for attempt in range(1, 4):
        assert wire.nack("x.dlq", mid) == [0]
        assert wire.delivery()["attempt_count"] == attempt  # retried
    wire.enqueue("x.dlq")
    assert wire.delivery()["fairness_key"] == "default"  # breaker open


def test_python_on_failure_runs_on_a_dlq_queue(broker: Broker, wire: Wire) -> None:
    seen: list[str] = []
    broker.create_queue("x.dlq", on_failure=lambda m: seen.append(m["queue"]) or {"action": "dlq"})
    wire.consume("x.dlq")
    mid = wire.enqueue("x.dlq")
    wire.delivery()
    assert wire.nack("x.dlq", mid) == [0]
    assert wire.delivery()["attempt_count"] == 1  # no DLQ of its own: retried
    assert seen == ["x.dlq"]


def test_a_failed_create_queue_leaves_no_script_behind(broker: Broker, wire: Wire) -> None:
    """Deliberate difference (README): the server keeps the on_enqueue of a CreateQueue
    whose on_failure did not compile and runs it for a later queue of that name
    (SERVER.md §13.4, a server bug); here the failed CreateQueue leaves nothing."""
    pytest.importorskip("lupa")
    body = wire.ok(
        "CreateQueueRequest",
        {
            "name": "q",
            "on_enqueue_script": 'function on_enqueue(m) return {fairness_key = "stale"} end',
            "on_failure_script": "function on_failure(",
            "visibility_timeout_ms": 0,
        },
    )
    assert body["error_code"] == ErrorCode.LUA_COMPILATION_ERROR
    wire.create_queue("q")
    wire.consume("q")
    wire.enqueue("q")
    assert wire.delivery()["fairness_key"] == "default"


def test_keys_too_long_for_the_wire_are_refused_at_enqueue(broker: Broker, wire: Wire) -> None:
    """A fairness key over 65,535 bytes: the server's Enqueue fails with ``0xFF scheduler reply
    dropped`` and nothing of the batch is stored (its scheduler panics building the storage key,
    SERVER.md §16.2). Deliberate difference (README): the double's scheduler keeps working, and
    a throttle key that long (stored by the server, whose subscription then goes quiet) is
    answered StorageError."""

    def hook(m: dict[str, Any]) -> dict[str, Any]:
        h = m["headers"]
        return {"fairness_key": h["k"] * int(h["kn"]), "throttle_keys": ["t" * int(h["tn"])]}

    broker.create_queue("q", on_enqueue=hook)
    wire.consume("q")
    ok = {"k": "é", "kn": "32767", "tn": "65535"}
    body = wire.error(
        "EnqueueRequest",
        {
            "messages": [
                {"queue": "q", "headers": ok, "payload": b"first"},
                {"queue": "q", "headers": {"k": "é", "kn": "32768", "tn": "1"}, "payload": b""},
            ]
        },
    )
    assert (body["error_code"], body["message"]) == (ErrorCode.INTERNAL_ERROR, "scheduler reply dropped")
    assert wire.stats("q")["depth"] == 0
    assert wire.enqueue_many([("q", b"")], {"k": "", "kn": "0", "tn": "65536"}) == [
        {"error_code": ErrorCode.STORAGE_ERROR, "message_id": ""}
    ]
    assert wire.enqueue("q", headers=ok)
    assert len(wire.delivery()["fairness_key"]) == 32767
