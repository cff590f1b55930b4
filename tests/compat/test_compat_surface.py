"""fila-python 0.3.0's public surface, without a broker: names, import paths, exception tree,
signatures and result types (SEED_API.md §2, §3.1, §3.3, §4, §5.1).

Every expectation is 0.3.0's; this package's extras are allowed only where a
0.3.0 program cannot notice them (extra names, keyword-only parameters with
defaults after 0.3.0's, extra attributes).
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import inspect
from typing import Any

import pytest

import fila

ALL_030 = [
    "AccumulatorMode", "AclEntry", "AclNotFoundError", "AclPermission", "ApiKeyInfo", "ApiKeyNotFoundError",
    "AsyncClient", "ChannelFullError", "Client", "ConsumeMessage", "CreateApiKeyResult", "EnqueueError",
    "EnqueueResult", "FairnessKeyStat", "FilaError", "ForbiddenError", "InvalidArgumentError", "Linger",
    "LuaError", "MessageNotFoundError", "NotLeaderError", "PermissionDeniedError", "ProtocolError",
    "QueueAlreadyExistsError", "QueueInfo", "QueueNotFoundError", "RPCError", "ResourceExhaustedError",
    "StatsResult", "ThrottleKeyStat", "UnauthorizedError", "UnavailableError",
]  # fmt: skip

# The 16 direct subclasses of FilaError (§5.1); RPCError is ProtocolError.
ERRORS_030 = [
    "QueueNotFoundError", "MessageNotFoundError", "QueueAlreadyExistsError", "InvalidArgumentError",
    "PermissionDeniedError", "UnauthorizedError", "ForbiddenError", "NotLeaderError", "ChannelFullError",
    "ResourceExhaustedError", "UnavailableError", "LuaError", "EnqueueError", "ProtocolError",
    "ApiKeyNotFoundError", "AclNotFoundError",
]  # fmt: skip

TYPES_030 = [
    "AccumulatorMode", "AclEntry", "AclPermission", "ApiKeyInfo", "ConsumeMessage", "CreateApiKeyResult",
    "EnqueueResult", "FairnessKeyStat", "Linger", "QueueInfo", "StatsResult", "ThrottleKeyStat",
]  # fmt: skip

# §3.3: every method's 0.3.0 parameters (after self), all positional-or-keyword.
METHODS_030: dict[str, list[str]] = {
    "enqueue": ["queue", "headers", "payload"],
    "enqueue_many": ["messages"],
    "consume": ["queue"],
    "ack": ["queue", "msg_id"],
    "nack": ["queue", "msg_id", "error"],
    "create_queue": ["name"],
    "delete_queue": ["name"],
    "get_stats": ["queue"],
    "list_queues": [],
    "set_config": ["key", "value"],
    "get_config": ["key"],
    "list_config": ["prefix"],
    "redrive": ["dlq_queue", "count"],
    "create_api_key": ["name"],
    "revoke_api_key": ["key_id"],
    "list_api_keys": [],
    "set_acl": ["key_id", "permissions"],
    "get_acl": ["key_id"],
    "close": [],
}

P = inspect.Parameter


# ------------------------------------------------------------------- names


def test_all_030_names_exported_and_importable() -> None:
    assert len(ALL_030) == 32 and ALL_030 == sorted(ALL_030)
    missing = set(ALL_030) - set(fila.__all__)
    assert not missing, f"fila.__all__ lacks {sorted(missing)}"
    for name in ALL_030:
        assert getattr(fila, name) is not None
    ns: dict[str, Any] = {}
    exec("from fila import *", ns)
    assert set(ALL_030) <= set(ns)


def test_names_counted_as_in_030() -> None:
    # 2 clients, 12 types, 18 error names for 17 classes.
    errors = [n for n in ALL_030 if n.endswith("Error")]
    assert len(errors) == 18
    assert len({id(getattr(fila, n)) for n in errors}) == 17
    assert len(TYPES_030) == 12


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("fila.client", ["Client"]),
        ("fila.async_client", ["AsyncClient"]),
        ("fila.errors", ["FilaError", "RPCError", *ERRORS_030]),
        ("fila.types", TYPES_030),
    ],
)
def test_030_module_paths_importable(module: str, names: list[str]) -> None:
    mod = importlib.import_module(module)
    for name in names:
        assert getattr(mod, name) is getattr(fila, name), f"{module}.{name} is not fila.{name}"


# ------------------------------------------------------------------ errors


def test_exception_bases_exactly_as_030() -> None:
    assert fila.FilaError.__bases__ == (Exception,)
    for name in ERRORS_030:
        cls = getattr(fila, name)
        assert cls.__bases__ == (fila.FilaError,), f"{name}.__bases__ is {cls.__bases__}"
    assert fila.RPCError is fila.ProtocolError
    assert fila.RPCError.__name__ == "ProtocolError"


@pytest.mark.parametrize("name", [n for n in ERRORS_030 if n != "ProtocolError"])
def test_error_built_from_message(name: str) -> None:
    cls = getattr(fila, name)
    err = cls("something went wrong")
    assert str(err) == "something went wrong"
    assert isinstance(err, fila.FilaError) and isinstance(err, Exception)


def test_not_leader_error_signature() -> None:
    err = fila.NotLeaderError("not the leader", "10.0.0.2:5555")
    assert err.leader_addr == "10.0.0.2:5555" and str(err) == "not the leader"
    assert fila.NotLeaderError("x").leader_addr is None
    assert fila.NotLeaderError(message="m", leader_addr="h:1").leader_addr == "h:1"


def test_protocol_error_code_message_and_str() -> None:
    err = fila.ProtocolError(5, "too slow")
    assert (err.code, err.message) == (5, "too slow")
    assert str(err) == "protocol error (code=0x05): too slow"
    assert str(fila.RPCError(0xAB, "x")) == "protocol error (code=0xab): x"
    assert str(fila.ProtocolError(code=0x0E, message="m")) == "protocol error (code=0x0e): m"
    with pytest.raises(fila.RPCError):
        raise fila.ProtocolError(1, "caught as RPCError")


# -------------------------------------------------------------- signatures


def _params(fn: Any) -> list[inspect.Parameter]:
    ps = list(inspect.signature(fn).parameters.values())
    if ps and ps[0].name == "self":
        ps = ps[1:]
    return ps


CTOR_030 = [
    ("tls", False),
    ("ca_cert", None),
    ("client_cert", None),
    ("client_key", None),
    ("api_key", None),
]


@pytest.mark.parametrize("cls_name", ["Client", "AsyncClient"])
def test_constructor_signature(cls_name: str) -> None:
    ps = _params(getattr(fila, cls_name))
    assert ps[0].name == "addr" and ps[0].kind is P.POSITIONAL_OR_KEYWORD and ps[0].default is P.empty
    expected = list(CTOR_030)
    if cls_name == "Client":
        expected += [("accumulator_mode", fila.AccumulatorMode.AUTO), ("max_accumulator_messages", 1000)]
    got = [(p.name, p.default) for p in ps[1 : 1 + len(expected)]]
    assert got == expected
    for p in ps[1:]:
        assert p.kind is P.KEYWORD_ONLY, f"{cls_name}({p.name}) must be keyword-only"
        assert p.default is not P.empty, f"{cls_name}({p.name}) must have a default"


@pytest.mark.parametrize("cls_name", ["Client", "AsyncClient"])
@pytest.mark.parametrize("method", sorted(METHODS_030))
def test_method_signature(cls_name: str, method: str) -> None:
    fn = getattr(getattr(fila, cls_name), method)
    ps = _params(fn)
    names = METHODS_030[method]
    assert [p.name for p in ps[: len(names)]] == names
    for p in ps[: len(names)]:
        assert p.kind is P.POSITIONAL_OR_KEYWORD, f"{method}({p.name}) must be positional-or-keyword"
    for p in ps[len(names) :]:
        assert p.kind is P.KEYWORD_ONLY, f"extra parameter {method}({p.name}) must be keyword-only"
        assert p.default is not P.empty, f"extra parameter {method}({p.name}) must have a default"


@pytest.mark.parametrize("method", sorted(set(METHODS_030) - {"consume"}))
def test_async_methods_are_coroutines(method: str) -> None:
    assert inspect.iscoroutinefunction(getattr(fila.AsyncClient, method))


def test_sync_client_is_a_context_manager_without_async_one() -> None:
    assert hasattr(fila.Client, "__enter__") and hasattr(fila.Client, "__exit__")
    assert hasattr(fila.AsyncClient, "__aenter__") and hasattr(fila.AsyncClient, "__aexit__")
    assert not hasattr(fila.Client, "__aenter__")


# ---------------------------------------------------------------- construction


@pytest.mark.parametrize("cls_name", ["Client", "AsyncClient"])
def test_address_without_colon_is_value_error(cls_name: str) -> None:
    cls = getattr(fila, cls_name)
    with pytest.raises(ValueError, match=r"invalid address \(expected host:port"):
        cls("localhost")
    with pytest.raises(ValueError):
        cls("localhost:http")


@pytest.mark.parametrize("cls_name", ["Client", "AsyncClient"])
def test_client_cert_without_tls_is_value_error_before_io(cls_name: str) -> None:
    cls = getattr(fila, cls_name)
    # 127.0.0.1:1 refuses connections: a ValueError (not a connection error) proves nothing was attempted.
    with pytest.raises(ValueError, match="client_cert and client_key require ca_cert or tls=True"):
        cls("127.0.0.1:1", client_cert=b"-----BEGIN CERTIFICATE-----", client_key=b"-----BEGIN KEY-----")
    with pytest.raises(ValueError):
        cls("127.0.0.1:1", client_cert=b"-----BEGIN CERTIFICATE-----")
    with pytest.raises(ValueError):
        cls("127.0.0.1:1", client_key=b"-----BEGIN KEY-----")


def test_async_client_constructor_does_no_io() -> None:
    # No running loop, unreachable address: 0.3.0 builds it without connecting.
    c = fila.AsyncClient("127.0.0.1:1")
    assert c is not None
    c2 = fila.AsyncClient(addr="127.0.0.1:1", tls=False, api_key="k")
    assert c2 is not None


@pytest.mark.parametrize("mode", [fila.AccumulatorMode.AUTO, fila.AccumulatorMode.DISABLED, None])
def test_async_client_accepts_the_accumulator_keywords(mode: Any) -> None:
    fila.AsyncClient("127.0.0.1:1", accumulator_mode=mode, max_accumulator_messages=10)
    fila.AsyncClient("127.0.0.1:1", accumulator_mode=fila.Linger(5, 10))


# ------------------------------------------------------------------- types

FIELDS_030: dict[str, list[tuple[str, Any]]] = {
    # (field name, default or MISSING)
    "ConsumeMessage": [
        ("id", None), ("headers", None), ("payload", None), ("fairness_key", None), ("attempt_count", None),
        ("queue", None), ("weight", 0), ("throttle_keys", None), ("enqueued_at", 0), ("leased_at", 0),
    ],
    "EnqueueResult": [("message_id", None), ("error", None)],
    "Linger": [("linger_ms", None), ("max_messages", None)],
    "CreateApiKeyResult": [("key_id", None), ("raw_key", None), ("is_superadmin", False)],
    "ApiKeyInfo": [("key_id", None), ("name", None), ("created_at", None), ("expires_at", 0),
                   ("is_superadmin", False)],
    "AclPermission": [("kind", None), ("pattern", None)],
    "AclEntry": [("key_id", None), ("is_superadmin", None), ("permissions", list)],
    "FairnessKeyStat": [("key", None), ("pending_count", None), ("current_deficit", None), ("weight", None)],
    "ThrottleKeyStat": [("key", None), ("tokens", None), ("rate_per_second", None), ("burst", None)],
    "StatsResult": [("depth", None), ("in_flight", None), ("active_fairness_keys", None),
                    ("active_consumers", None), ("quantum", None), ("leader_node_id", 0),
                    ("replication_count", 0), ("per_key_stats", list), ("per_throttle_stats", list)],
    "QueueInfo": [("name", None), ("depth", None), ("in_flight", None), ("active_consumers", None),
                  ("leader_node_id", 0)],
}  # fmt: skip

# Defaults 0.3.0 requires; fields whose 0.3.0 default is "required" may have one here (harmless).
REQUIRED_030 = {
    "ConsumeMessage": 6,
    "EnqueueResult": 2,
    "CreateApiKeyResult": 2,
    "ApiKeyInfo": 3,
    "AclPermission": 2,
    "AclEntry": 2,
    "FairnessKeyStat": 4,
    "ThrottleKeyStat": 4,
    "StatsResult": 5,
    "QueueInfo": 4,
}

SAMPLES: dict[str, tuple[Any, ...]] = {
    "ConsumeMessage": ("id-1", {"h": "v"}, b"p", "fk", 0, "q"),
    "EnqueueResult": ("id-1", None),
    "Linger": (5, 10),
    "CreateApiKeyResult": ("kid", "raw"),
    "ApiKeyInfo": ("kid", "name", 123),
    "AclPermission": ("produce", "orders"),
    "AclEntry": ("kid", False),
    "FairnessKeyStat": ("k", 1, -5, 2),
    "ThrottleKeyStat": ("k", 1.5, 10.0, 20.0),
    "StatsResult": (1, 0, 1, 0, 1000),
    "QueueInfo": ("q", 1, 0, 0),
}


@pytest.mark.parametrize("name", sorted(FIELDS_030))
def test_type_is_frozen_dataclass_with_030_fields(name: str) -> None:
    cls = getattr(fila, name)
    assert dataclasses.is_dataclass(cls)
    fields = dataclasses.fields(cls)
    assert [f.name for f in fields] == [n for n, _ in FIELDS_030[name]]
    for f, (_, default) in zip(fields, FIELDS_030[name], strict=True):
        if default is list:
            assert f.default_factory is list, f"{name}.{f.name} must default to a fresh []"
        elif default is not None:
            assert f.default == default, f"{name}.{f.name} default"
    # Positional construction with 0.3.0's required fields only (where 0.3.0 had defaults).
    required = REQUIRED_030.get(name)
    if required is not None:
        assert len(SAMPLES[name]) == required
    obj = cls(*SAMPLES[name])
    assert obj == cls(*SAMPLES[name])
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(obj, fields[0].name, fields[0].name)
    # The constructor's signature is inspectable on either codec twin (ConsumeMessage is compiled in one).
    params = list(inspect.signature(cls).parameters.values())
    assert [p.name for p in params] == [n for n, _ in FIELDS_030[name]]


def test_type_defaults_and_keywords() -> None:
    m = fila.ConsumeMessage(id="i", headers={}, payload=b"", fairness_key="default", attempt_count=0, queue="q")
    assert (m.weight, m.throttle_keys, m.enqueued_at, m.leased_at) == (0, None, 0, 0)
    s1, s2 = fila.StatsResult(0, 0, 0, 0, 1000), fila.StatsResult(0, 0, 0, 0, 1000)
    assert s1.per_key_stats == [] and s1.per_throttle_stats == [] and s1.per_key_stats is not s2.per_key_stats
    assert (s1.leader_node_id, s1.replication_count) == (0, 0)
    e1, e2 = fila.AclEntry("k", False), fila.AclEntry("k", False)
    assert e1.permissions == [] and e1.permissions is not e2.permissions
    assert fila.CreateApiKeyResult("k", "raw").is_superadmin is False
    info = fila.ApiKeyInfo("k", "n", 1)
    assert (info.expires_at, info.is_superadmin) == (0, False)
    assert fila.QueueInfo("q", 0, 0, 0).leader_node_id == 0
    lg = fila.Linger(linger_ms=5, max_messages=100)
    assert (lg.linger_ms, lg.max_messages) == (5, 100)


def test_enqueue_result_is_success() -> None:
    ok = fila.EnqueueResult(message_id="id", error=None)
    bad = fila.EnqueueResult(None, "error 0x01")
    assert ok.is_success is True and bad.is_success is False
    assert isinstance(inspect.getattr_static(fila.EnqueueResult, "is_success"), property)
    with pytest.raises((AttributeError, dataclasses.FrozenInstanceError)):
        ok.is_success = False  # type: ignore[misc]


def test_enqueue_result_error_text_is_lowercase_hex() -> None:
    from fila import errors as E

    for code in (0x01, 0x0B, 0x0C, 0x0E, 0xFF):
        r = fila.EnqueueResult.failed(E.error_for_code(code, "why"))
        assert r.error is not None and r.error.startswith(f"error 0x{code:02x}") and r.message_id is None
        assert r.error[6:10] == r.error[6:10].lower()


def test_accumulator_mode_is_a_plain_enum() -> None:
    AM = fila.AccumulatorMode
    assert issubclass(AM, enum.Enum) and not issubclass(AM, int)
    assert [m.name for m in AM] == ["AUTO", "DISABLED"]
    assert (AM.AUTO.value, AM.DISABLED.value) == (1, 2)
    assert not hasattr(AM, "LINGER")


def test_acl_entry_permissions_are_acl_permissions() -> None:
    e = fila.AclEntry("k", True, [fila.AclPermission("admin", "*")])
    assert e.permissions[0].kind == "admin" and e.permissions[0].pattern == "*"
