"""Queue hooks: ``on_enqueue`` and ``on_failure`` (SERVER.md §9.4–§9.6, §16.2).

A hook is Lua source, run through the optional ``lupa`` package the way the
server runs it, or a plain Python callable with the same contract:

* ``on_enqueue(msg)`` gets ``{"headers": dict, "payload_size": int, "queue": str}``
  and returns ``{"fairness_key": str, "weight": int, "throttle_keys": [str, ...]}``
  (each field optional; anything unusable falls back to ``"default"``, 1, ``[]``).
* ``on_failure(msg)`` gets ``{"headers", "id", "attempts", "queue", "error"}``
  and returns ``{"action": "retry" | "dlq", "delay_ms": n}`` (``delay_ms`` is
  ignored, as by the server).

Lua, as on the server: one Lua 5.4 state per broker for every queue's
scripts, so globals are shared across queues and hooks; each call re-runs
the script's top-level code, then takes the global ``on_enqueue`` (or
``on_failure``), clears it and calls it; the globals are the base library
without ``load``/``loadfile``/``dofile`` (``collectgarbage`` and ``warn``
included) plus ``math``, ``string``, ``table``, ``utf8`` and ``fila.get``;
each call may run about 100 000 instructions (counted in steps of 100) and
allocate 1 MiB above what the state held before it. Results are converted
inside Lua exactly as the server's Rust binding converts them.

Any error, a missing function or a non-table result means the defaults (or a
retry). After 3 consecutive failures the queue's hooks are skipped for 10 s.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import math
import re
import time
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

__all__ = [
    "DEFAULT_FAIRNESS_KEY",
    "Hook",
    "LuaCompilationFailed",
    "LuaVM",
    "QueueHooks",
    "lua_available",
    "lua_number",
    "lua_tostring",
]

log = logging.getLogger("fila")

DEFAULT_FAIRNESS_KEY = "default"
INSTRUCTION_LIMIT = 100_000  # the server's 10 ms at 10 000 instructions per ms
MEMORY_LIMIT = 1 << 20
BREAKER_FAILURES = 3
BREAKER_COOLDOWN_S = 10.0
_MAX_U32 = 0xFFFF_FFFF
_I64_MIN, _I64_END = -(1 << 63), 1 << 63

Hook = Callable[[dict[str, Any]], Any]


class LuaCompilationFailed(Exception):
    """A hook script does not compile; ``str()`` is the server's error text."""


class HookError(Exception):
    """A hook failed at run time (the caller falls back to defaults)."""


def lua_available() -> bool:
    """True when ``lupa`` is installed, so Lua hook scripts can run."""
    return importlib.util.find_spec("lupa") is not None


# --------------------------------------------------------------------- Lua

# Runs once per broker. Library functions are captured as locals first, so a
# script that replaces ``string.format`` or ``tonumber`` cannot change how
# its own results are read (the server reads them in Rust).
_VM_LUA = """
local limit, config_get = ...
local load, pcall, error, type, tonumber, select = load, pcall, error, type, tonumber, select
local sethook, dump, utf8len = debug.sethook, string.dump, utf8.len
local tointeger, floor, ceil = math.tointeger, math.floor, math.ceil
local rawget, pack, unpack = rawget, table.pack, table.unpack

local G = {}
for _, name in ipairs({"assert", "collectgarbage", "error", "getmetatable", "ipairs", "next",
                       "pairs", "pcall", "print", "rawequal", "rawget", "rawlen", "rawset",
                       "select", "setmetatable", "tonumber", "tostring", "type", "warn",
                       "xpcall"}) do
  G[name] = _G[name]
end
G._G, G._VERSION = G, _VERSION
G.math, G.string, G.table, G.utf8 = math, string, table, utf8
G.fila = {get = function(key)
  local t = type(key)
  if t == "number" then key = key .. ""
  elseif t ~= "string" or not utf8len(key) then
    error("bad argument #1: error converting Lua " .. t .. " to String", 2)
  end
  return config_get(key)
end}

-- mlua's FromLua for String: a UTF-8 string, or a number as lua_tolstring writes it.
local function as_string(v)
  local t = type(v)
  if t == "string" then
    if utf8len(v) then return v end
    return nil
  elseif t == "number" then
    return v .. ""
  end
  return nil
end

-- mlua's FromLua for i64: lua_tointegerx (strings coerced), else the number
-- (strings coerced) truncated toward zero if it fits.
local function as_i64(v)
  if type(v) == "string" then v = tonumber(v) end
  if type(v) ~= "number" then return nil end
  local i = tointeger(v)
  if i then return i end
  if v >= 0 then i = floor(v) else i = ceil(v) end
  return tointeger(i)
end

-- mlua's Table::get: honours __index; an error reads as a missing field.
local function index(t, k) return t[k] end
local function field(t, k)
  local ok, v = pcall(index, t, k)
  if ok then return v end
  return nil
end

local count = 0
local function counter()
  count = count + 100
  if count >= limit then error("instruction limit exceeded", 0) end
end

local function guarded(body, ...)
  count = 0
  sethook(counter, "", 100)
  local res = pack(pcall(body, ...))
  sethook()
  return unpack(res, 1, res.n)
end

local function compile(source)
  sethook()
  local fn, err = load(source, "lua_script", "bt", G)
  if not fn then return nil, err end
  return {dump(fn, true)}  -- stripped, like the server's cached bytecode
end

local function prepare(script, name)
  load(script[1], "=?", "b", G)()  -- the top-level code runs on every call
  local fn = G[name]
  G[name] = nil
  if type(fn) ~= "function" then error(name .. " is not a function", 0) end
  return fn
end

local function enqueue_body(script, headers, payload_size, queue)
  local fn = prepare(script, "on_enqueue")
  local result = fn({headers = headers, payload_size = payload_size, queue = queue})
  if type(result) ~= "table" then error("on_enqueue did not return a table", 0) end
  local key = as_string(field(result, "fairness_key"))
  local weight = as_i64(field(result, "weight"))
  local keys, n = {}, 0
  local list = field(result, "throttle_keys")
  if type(list) == "table" then
    local i = 1
    while true do
      local v = rawget(list, i)
      if v == nil then break end
      v = as_string(v)
      if v ~= nil then n = n + 1; keys[n] = v end
      i = i + 1
    end
  end
  return key, weight, keys, n
end

local function failure_body(script, headers, id, attempts, queue, err)
  local fn = prepare(script, "on_failure")
  local result = fn({headers = headers, id = id, attempts = attempts, queue = queue, error = err})
  if type(result) ~= "table" then error("on_failure did not return a table", 0) end
  return as_string(field(result, "action"))
end

return compile,
  function(...) return guarded(enqueue_body, ...) end,
  function(...) return guarded(failure_body, ...) end,
  function() sethook() end
"""


class LuaScript:
    """A compiled hook script: the stripped bytecode, held in its broker's Lua state."""

    __slots__ = ("handle", "vm")

    def __init__(self, vm: LuaVM, handle: Any) -> None:
        self.vm = vm
        self.handle = handle


class LuaVM:
    """The broker's single Lua state, shared by every queue's scripts (SERVER.md §16.2)."""

    def __init__(self, config_get: Callable[[str], str | None]) -> None:
        try:
            lupa_mod: Any = importlib.import_module("lupa.lua54")  # the server embeds Lua 5.4
        except ImportError:
            lupa_mod = importlib.import_module("lupa")
        self._runtime = lupa_mod.LuaRuntime(
            register_eval=False, register_builtins=False, unpack_returned_tuples=True, max_memory=0
        )
        self._compile, self._enqueue, self._failure, self._unhook = self._runtime.execute(
            _VM_LUA, INSTRUCTION_LIMIT, config_get
        )

    def compile(self, source: str) -> LuaScript:
        """Compile as the server does (chunk name ``lua_script``, text or binary)."""
        if not isinstance(source, str):
            raise TypeError(f"a Lua hook must be source text (str), got {type(source).__name__}")
        result = self._compile(source)
        if isinstance(result, tuple):  # nil, message
            raise LuaCompilationFailed(f"lua compilation error: syntax error: {result[1]}")
        return LuaScript(self, result)

    def _call(self, fn: Any, *args: Any) -> tuple[Any, ...]:
        rt = self._runtime
        rt.set_max_memory(rt.get_memory_used() + MEMORY_LIMIT, total=True)
        try:
            result = fn(*args)
        except Exception as exc:  # LuaMemoryError outside the script's pcall; an undecodable error value
            rt.set_max_memory(0)
            self._unhook()
            raise HookError(str(exc)) from None
        rt.set_max_memory(0)
        values: tuple[Any, ...] = result if isinstance(result, tuple) else (result,)
        if values[0] is not True:
            raise HookError(str(values[1]) if len(values) > 1 else "error")
        return values[1:]

    def on_enqueue(
        self, script: LuaScript, headers: Mapping[str, str], payload_size: int, queue: str
    ) -> tuple[str, int, tuple[str, ...]]:
        key, weight, keys, n = self._call(
            self._enqueue, script.handle, self._runtime.table_from(dict(headers)), payload_size, queue
        )
        return (
            DEFAULT_FAIRNESS_KEY if key is None else key,
            weight if isinstance(weight, int) and 0 <= weight <= _MAX_U32 else 1,
            tuple(keys[i] for i in range(1, n + 1)),
        )

    def on_failure(
        self, script: LuaScript, headers: Mapping[str, str], msg_id: str, attempts: int, queue: str, error: str
    ) -> str | None:
        (action,) = self._call(
            self._failure, script.handle, self._runtime.table_from(dict(headers)), msg_id, attempts, queue, error
        )
        return action if isinstance(action, str) else None


# ------------------------------------------- Python hooks: Lua's conversions

_C_SPACE = " \t\n\v\f\r"
_LUA_INT = re.compile(r"([+-]?)(?:0[xX]([0-9a-fA-F]+)|([0-9]+))", re.ASCII)
_LUA_DEC = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_LUA_HEX = re.compile(r"[+-]?0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?[0-9]+)?", re.ASCII)


def lua_number(text: str) -> int | float | None:
    """``text`` read as a Lua 5.4 numeral (``luaO_str2num``), or None.

    Surrounding C whitespace is allowed; integers (decimal, or hexadecimal
    wrapping modulo 2**64) stay integers unless a decimal one overflows;
    otherwise ``strtod`` rules, without ``inf`` and ``nan``.
    """
    if "\0" in text:
        return None
    t = text.strip(_C_SPACE)
    m = _LUA_INT.fullmatch(t)
    if m is not None:
        sign, hexa, dec = m.groups()
        if hexa is not None:
            value = int(hexa[-16:], 16)  # wraps modulo 2**64
            if sign == "-":
                value = (-value) % (1 << 64)
            return value - (1 << 64) if value >= _I64_END else value
        if len(dec.lstrip("0")) <= 19:  # longer ones overflow (and int() would refuse huge ones)
            value = -int(dec) if sign == "-" else int(dec)
            if _I64_MIN <= value < _I64_END:
                return value
    if "n" in t or "N" in t:
        return None
    if _LUA_DEC.fullmatch(t):
        return float(t)
    if _LUA_HEX.fullmatch(t):
        return float.fromhex(t)
    return None


def lua_tostring(value: int | float) -> str:
    """A number as Lua writes it: integers in decimal, floats as ``%.14g`` (``2.0``, not ``2``)."""
    if isinstance(value, int):
        if _I64_MIN <= value < _I64_END:
            return str(value)
        value = float(value)
    if math.isnan(value):
        return "-nan" if math.copysign(1.0, value) < 0 else "nan"
    text = f"{value:.14g}"
    if text.lstrip("-").isdigit():
        text += ".0"
    return text


def _as_string(value: Any) -> str | None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return None
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return lua_tostring(value)
    return None


def _as_weight(value: Any) -> int:
    if isinstance(value, str):
        value = lua_number(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 1
    if isinstance(value, float):
        if not math.isfinite(value) or not _I64_MIN <= value < _I64_END:
            return 1
        value = math.trunc(value)
    return value if 0 <= value <= _MAX_U32 else 1


def _python_enqueue_fields(result: Mapping[Any, Any]) -> tuple[str, int, tuple[str, ...]]:
    key = _as_string(result.get("fairness_key"))
    keys: list[str] = []
    raw = result.get("throttle_keys")
    if isinstance(raw, Sequence) and not isinstance(raw, (str, bytes)):
        for item in raw:
            if item is None:  # a nil ends a Lua sequence
                break
            text = _as_string(item)
            if text is not None:
                keys.append(text)
    return (DEFAULT_FAIRNESS_KEY if key is None else key), _as_weight(result.get("weight")), tuple(keys)


# --------------------------------------------------------------- contract


class QueueHooks:
    """A queue's two hooks and their shared circuit breaker."""

    def __init__(
        self,
        on_enqueue: str | Hook | None,
        on_failure: str | Hook | None,
        lua: Callable[[], LuaVM],
    ) -> None:
        """Compile Lua sources in the broker's Lua state; raises :class:`LuaCompilationFailed`."""
        self._failures = 0
        self._open_until = 0.0

        def prepare(spec: str | Hook | None) -> LuaScript | Hook | None:
            if spec is None or callable(spec):
                return spec
            if not lua_available():
                raise LuaCompilationFailed(
                    "lua compilation error: Lua hook scripts need the optional 'lupa' package "
                    "(pip install 'fila-python[lua]'), or pass a Python callable"
                )
            return lua().compile(spec)

        self.on_enqueue = prepare(on_enqueue)
        self.on_failure = prepare(on_failure)
        self.sources = (
            on_enqueue if isinstance(on_enqueue, str) else None,
            on_failure if isinstance(on_failure, str) else None,
        )

    # The server's breaker: skipped while open; after the cooldown the count restarts.
    def _allowed(self) -> bool:
        if self._failures >= BREAKER_FAILURES:
            if time.monotonic() < self._open_until:
                return False
            self._failures = 0
        return True

    def _failed(self, exc: BaseException) -> None:
        self._failures += 1
        if self._failures >= BREAKER_FAILURES:
            self._open_until = time.monotonic() + BREAKER_COOLDOWN_S
        log.debug("fila.testing: hook failed: %s", exc)

    def enqueue_fields(
        self, queue: str, headers: dict[str, str], payload_size: int
    ) -> tuple[str, int, tuple[str, ...]]:
        """Fairness key, weight and throttle keys for a new message."""
        hook = self.on_enqueue
        if hook is None or not self._allowed():
            return DEFAULT_FAIRNESS_KEY, 1, ()
        try:
            if isinstance(hook, LuaScript):
                fields = hook.vm.on_enqueue(hook, headers, payload_size, queue)
            else:
                result = hook({"headers": dict(headers), "payload_size": payload_size, "queue": queue})
                if not isinstance(result, Mapping):
                    raise HookError("on_enqueue did not return a table")
                fields = _python_enqueue_fields(result)
        except Exception as exc:
            self._failed(exc)
            return DEFAULT_FAIRNESS_KEY, 1, ()
        self._failures = 0
        return fields

    def failure_action(self, msg_id: str, queue: str, headers: dict[str, str], attempts: int, error: str) -> str:
        """``"dlq"`` or ``"retry"`` for a nacked message."""
        hook = self.on_failure
        if hook is None or not self._allowed():
            return "retry"
        try:
            if isinstance(hook, LuaScript):
                action = hook.vm.on_failure(hook, headers, msg_id, attempts, queue, error)
            else:
                msg = {"headers": dict(headers), "id": msg_id, "attempts": attempts, "queue": queue, "error": error}
                result = hook(msg)
                if not isinstance(result, Mapping):
                    raise HookError("on_failure did not return a table")
                action = _as_string(result.get("action"))
        except Exception as exc:
            self._failed(exc)
            return "retry"
        self._failures = 0
        return "dlq" if action == "dlq" else "retry"
