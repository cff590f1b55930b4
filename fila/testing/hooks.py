"""Queue hooks: ``on_enqueue`` and ``on_failure`` (SERVER.md §9.4–§9.6).

A hook is Lua source (run through the optional ``lupa`` package in a sandbox
with only ``math``, ``string``, ``table`` and ``utf8``, a 100 000-instruction
budget and 1 MiB of memory) or a plain Python callable with the same
contract:

* ``on_enqueue(msg)`` gets ``{"headers": dict, "payload_size": int, "queue": str}``
  and returns ``{"fairness_key": str, "weight": int, "throttle_keys": [str, ...]}``
  (each field optional; anything invalid falls back to ``"default"``, 1, ``[]``).
* ``on_failure(msg)`` gets ``{"headers", "id", "attempts", "queue", "error"}``
  and returns ``{"action": "retry" | "dlq", "delay_ms": n}`` (``delay_ms`` is
  ignored, as by the server).

Any error, a missing function or a non-table result means the defaults (or a
retry). After 3 consecutive failures the queue's hooks are skipped for 10 s.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "DEFAULT_FAIRNESS_KEY",
    "Hook",
    "LuaCompilationFailed",
    "QueueHooks",
    "lua_available",
]

log = logging.getLogger("fila")

DEFAULT_FAIRNESS_KEY = "default"
INSTRUCTION_LIMIT = 100_000  # ~10 ms at 10 000 instructions per ms
MEMORY_LIMIT = 1 << 20
BREAKER_FAILURES = 3
BREAKER_COOLDOWN_S = 10.0
_MAX_U32 = 0xFFFF_FFFF

Hook = Callable[[dict[str, Any]], Any]


class LuaCompilationFailed(Exception):
    """A hook script does not compile; ``str()`` is the server's error text."""


class HookError(Exception):
    """A hook failed at run time (the caller falls back to defaults)."""


def lua_available() -> bool:
    """True when ``lupa`` is installed, so Lua hook scripts can run."""
    return importlib.util.find_spec("lupa") is not None


# --------------------------------------------------------------------- Lua


_SANDBOX_LUA = """
local limit, fila_get = ...
local base = {"assert", "error", "ipairs", "next", "pairs", "pcall", "rawequal", "rawget",
              "rawlen", "rawset", "select", "setmetatable", "getmetatable", "tonumber",
              "tostring", "type", "xpcall", "print", "unpack"}
local sethook, load_, pcall_ = debug.sethook, load, pcall
local function copy(t) local c = {} for k, v in pairs(t) do c[k] = v end return c end
local function new_env()
  local env = {}
  for _, name in ipairs(base) do env[name] = _G[name] end
  env._VERSION = _VERSION
  env.math, env.string, env.table, env.utf8 = copy(math), copy(string), copy(table), copy(utf8)
  env.fila = {get = function(key) return fila_get(tostring(key)) end}
  env._G = env
  return env
end
local function abort() error("instruction limit exceeded", 0) end
local function guarded(fn, ...)
  sethook(abort, "", limit)
  local res = table.pack(pcall_(fn, ...))
  sethook()
  return table.unpack(res, 1, res.n)
end
local function compile(source, chunkname)
  local env = new_env()
  local chunk, err = load_(source, chunkname, "t", env)
  if not chunk then return nil, err end
  return env, chunk
end
local function call(env, chunk, loaded, fname, msg)
  if not loaded then
    local ok, err = guarded(chunk)
    if not ok then return false, err end
  end
  local fn = env[fname]
  if type(fn) ~= "function" then return false, "function " .. fname .. " is not defined" end
  return guarded(fn, msg)
end
return compile, call
"""


class _LuaScript:
    """One compiled hook script in its queue's Lua runtime."""

    def __init__(self, sandbox: _LuaSandbox, env: Any, chunk: Any, fname: str) -> None:
        self._sandbox = sandbox
        self._env = env
        self._chunk = chunk
        self._fname = fname
        self._loaded = False

    def __call__(self, msg: dict[str, Any]) -> Any:
        return self._sandbox.call(self, msg)


class _LuaSandbox:
    """A per-queue Lua runtime (one for both hooks, like the server's VM)."""

    def __init__(self, config_get: Callable[[str], str | None]) -> None:
        try:
            lupa_mod: Any = importlib.import_module("lupa.lua54")  # the server embeds Lua 5.4
        except ImportError:
            lupa_mod = importlib.import_module("lupa")
        self._lupa = lupa_mod
        self.runtime = lupa_mod.LuaRuntime(
            register_eval=False, register_builtins=False, unpack_returned_tuples=True, max_memory=0
        )
        self._compile, self._call = self.runtime.execute(_SANDBOX_LUA, INSTRUCTION_LIMIT, config_get)
        self.runtime.set_max_memory(MEMORY_LIMIT)

    def compile(self, source: str, fname: str) -> _LuaScript:
        env, chunk = self._compile(source, "=" + fname)
        if env is None:
            raise LuaCompilationFailed(f"lua compilation error: {chunk}")
        return _LuaScript(self, env, chunk, fname)

    def call(self, script: _LuaScript, msg: dict[str, Any]) -> Any:
        table_from = self.runtime.table_from
        lua_msg = table_from({k: (table_from(v) if isinstance(v, dict) else v) for k, v in msg.items()})
        try:
            result = self._call(script._env, script._chunk, script._loaded, script._fname, lua_msg)
        except self._lupa.LuaError as exc:  # includes LuaMemoryError
            raise HookError(str(exc)) from None
        script._loaded = True
        if not isinstance(result, tuple) or not result or result[0] is not True:
            raise HookError(str(result[1]) if isinstance(result, tuple) and len(result) > 1 else "error")
        value = result[1] if len(result) > 1 else None
        if self._lupa.lua_type(value) != "table":
            raise HookError("hook did not return a table")
        return _table_to_python(value)


def _table_to_python(table: Any) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for key, value in table.items():
        if hasattr(value, "items") and not isinstance(value, (str, bytes)):
            out[key] = [value[i] for i in range(1, len(value) + 1)]
        else:
            out[key] = value
    return out


# --------------------------------------------------------------- contract


def _as_lua_string(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # Lua coerces numbers to strings
    return None


def _as_weight(value: Any) -> int:
    if isinstance(value, bool):
        return 1
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and 0 <= value <= _MAX_U32:
        return value
    return 1


def normalize_enqueue_result(result: Any) -> tuple[str, int, tuple[str, ...]]:
    """``(fairness_key, weight, throttle_keys)`` from an on_enqueue result."""
    if not isinstance(result, Mapping):
        raise HookError("on_enqueue did not return a table")
    key = _as_lua_string(result.get("fairness_key"))
    weight = _as_weight(result.get("weight", 1))
    raw = result.get("throttle_keys")
    keys: tuple[str, ...] = ()
    if isinstance(raw, (list, tuple)):
        keys = tuple(k for k in raw if isinstance(k, str))
    return (DEFAULT_FAIRNESS_KEY if key is None else key), weight, keys


class QueueHooks:
    """A queue's two hooks and their shared circuit breaker."""

    def __init__(
        self,
        on_enqueue: str | Hook | None,
        on_failure: str | Hook | None,
        config_get: Callable[[str], str | None],
    ) -> None:
        """Compile Lua sources; raises :class:`LuaCompilationFailed`."""
        self._failures = 0
        self._open_until = 0.0
        sandbox: _LuaSandbox | None = None

        def prepare(spec: str | Hook | None, fname: str) -> Hook | None:
            nonlocal sandbox
            if spec is None or callable(spec):
                return spec
            if not lua_available():
                raise LuaCompilationFailed(
                    "lua compilation error: Lua hook scripts need the optional 'lupa' package "
                    "(pip install 'fila-python[lua]'), or pass a Python callable"
                )
            if sandbox is None:
                sandbox = _LuaSandbox(config_get)
            return sandbox.compile(spec, fname)

        self.on_enqueue = prepare(on_enqueue, "on_enqueue")
        self.on_failure = prepare(on_failure, "on_failure")
        self.sources = (
            on_enqueue if isinstance(on_enqueue, str) else None,
            on_failure if isinstance(on_failure, str) else None,
        )

    def _run(self, hook: Hook, msg: dict[str, Any]) -> Any:
        if self._failures >= BREAKER_FAILURES:
            if time.monotonic() < self._open_until:
                raise HookError("circuit breaker open")
            self._failures = 0
        try:
            result = hook(msg)
            if not isinstance(result, Mapping):
                raise HookError("hook did not return a table")
        except Exception as exc:
            self._failures += 1
            if self._failures >= BREAKER_FAILURES:
                self._open_until = time.monotonic() + BREAKER_COOLDOWN_S
            log.debug("fila.testing: hook failed: %s", exc)
            raise HookError(str(exc)) from None
        self._failures = 0
        return result

    def enqueue_fields(
        self, queue: str, headers: dict[str, str], payload_size: int
    ) -> tuple[str, int, tuple[str, ...]]:
        """Fairness key, weight and throttle keys for a new message."""
        hook = self.on_enqueue
        if hook is None:
            return DEFAULT_FAIRNESS_KEY, 1, ()
        try:
            result = self._run(hook, {"headers": dict(headers), "payload_size": payload_size, "queue": queue})
            return normalize_enqueue_result(result)
        except HookError:
            return DEFAULT_FAIRNESS_KEY, 1, ()

    def failure_action(self, msg_id: str, queue: str, headers: dict[str, str], attempts: int, error: str) -> str:
        """``"dlq"`` or ``"retry"`` for a nacked message."""
        hook = self.on_failure
        if hook is None:
            return "retry"
        msg = {"headers": dict(headers), "id": msg_id, "attempts": attempts, "queue": queue, "error": error}
        try:
            result = self._run(hook, msg)
        except HookError:
            return "retry"
        return "dlq" if result.get("action") == "dlq" else "retry"
