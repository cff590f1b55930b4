"""Parity: Client / AsyncClient and Consumer / AsyncConsumer are twins, name by name.

Same public names, same signatures (parameters and annotations; async-ness
aside), same non-empty docstrings. What an async twin may add or return
differently is listed here, on purpose, so any other drift fails.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from fila import AsyncClient
from fila import AsyncConsumer
from fila import Client
from fila import Consumer

# Names only the asyncio twin has (documented there).
ASYNC_ONLY: dict[type, set[str]] = {AsyncClient: set(), AsyncConsumer: {"aclose", "start"}}

# Return annotations that differ between the twins, and why.
RETURNS_DIFFER = {
    ("Client", "consume"): ("Consumer", "_ConsumeCall"),  # awaitable, and an async context manager
    ("Client", "enqueue_nowait"): ("Future[str]", "asyncio.Future[str]"),  # concurrent vs asyncio future
}

# Async twin methods that are deliberately not coroutine functions.
NOT_COROUTINES = {
    ("Client", "consume"),  # returns an awaitable (_ConsumeCall), so `await` and `async with` both work
    ("Client", "enqueue_nowait"),  # returns an asyncio.Future at once
    ("Consumer", "ack"),  # queued for the batched sender; never waits
    ("Consumer", "nack"),
}

# Protocol dunders that must pair up: sync name -> async name.
PROTOCOLS = {
    Client: {"__enter__": "__aenter__", "__exit__": "__aexit__"},
    Consumer: {"__enter__": "__aenter__", "__exit__": "__aexit__", "__iter__": "__aiter__", "__next__": "__anext__"},
}

TWINS = [(Client, AsyncClient), (Consumer, AsyncConsumer)]


def public(cls: type) -> set[str]:
    return {n for n in dir(cls) if not n.startswith("_")}


def member(cls: type, name: str) -> Any:
    return inspect.getattr_static(cls, name)


def pairs() -> list[tuple[type, type, str]]:
    return [(s, a, n) for s, a in TWINS for n in sorted(public(s))]


@pytest.mark.parametrize(("sync_cls", "async_cls"), TWINS, ids=lambda c: c.__name__)
def test_same_public_names(sync_cls: type, async_cls: type) -> None:
    assert public(async_cls) - public(sync_cls) == ASYNC_ONLY[async_cls]
    assert public(sync_cls) - public(async_cls) == set()


@pytest.mark.parametrize(("sync_cls", "async_cls", "name"), pairs(), ids=lambda v: getattr(v, "__name__", v))
def test_same_signature(sync_cls: type, async_cls: type, name: str) -> None:
    s, a = member(sync_cls, name), member(async_cls, name)
    if isinstance(s, property):
        assert isinstance(a, property), f"{async_cls.__name__}.{name} must be a property"
        assert (s.fset is None) == (a.fset is None)
        return
    ss, sa = inspect.signature(s), inspect.signature(a)
    assert list(ss.parameters.values()) == list(sa.parameters.values()), (
        f"{name}: {sync_cls.__name__}{ss} vs {async_cls.__name__}{sa}"
    )
    expected = RETURNS_DIFFER.get((sync_cls.__name__, name), (ss.return_annotation, ss.return_annotation))
    assert (ss.return_annotation, sa.return_annotation) == expected


@pytest.mark.parametrize(("sync_cls", "async_cls", "name"), pairs(), ids=lambda v: getattr(v, "__name__", v))
def test_same_docstring(sync_cls: type, async_cls: type, name: str) -> None:
    s, a = member(sync_cls, name), member(async_cls, name)
    doc = inspect.getdoc(s)
    assert doc and doc.strip(), f"{sync_cls.__name__}.{name} has no docstring"
    assert inspect.getdoc(a) == doc, (
        f"{async_cls.__name__}.{name} does not share {sync_cls.__name__}.{name}'s docstring"
    )


@pytest.mark.parametrize(("sync_cls", "async_cls", "name"), pairs(), ids=lambda v: getattr(v, "__name__", v))
def test_async_twin_is_awaitable(sync_cls: type, async_cls: type, name: str) -> None:
    s, a = member(sync_cls, name), member(async_cls, name)
    if isinstance(s, property):
        return
    assert not inspect.iscoroutinefunction(s), f"{sync_cls.__name__}.{name} must not be async"
    if (sync_cls.__name__, name) in NOT_COROUTINES:
        assert not inspect.iscoroutinefunction(a)
    else:
        assert inspect.iscoroutinefunction(a), f"{async_cls.__name__}.{name} must be a coroutine function"


@pytest.mark.parametrize("async_cls", [AsyncClient, AsyncConsumer], ids=lambda c: c.__name__)
def test_async_only_names_are_documented(async_cls: type) -> None:
    for name in ASYNC_ONLY[async_cls]:
        assert inspect.getdoc(member(async_cls, name)), f"{async_cls.__name__}.{name} has no docstring"


@pytest.mark.parametrize(("sync_cls", "async_cls"), TWINS, ids=lambda c: c.__name__)
def test_protocols_pair_up(sync_cls: type, async_cls: type) -> None:
    for sync_name, async_name in PROTOCOLS[sync_cls].items():
        assert callable(getattr(sync_cls, sync_name, None)), f"{sync_cls.__name__}.{sync_name}"
        assert callable(getattr(async_cls, async_name, None)), f"{async_cls.__name__}.{async_name}"
        assert getattr(async_cls, sync_name, None) is None, f"{async_cls.__name__} must not offer {sync_name}"
    assert inspect.iscoroutinefunction(async_cls.__aenter__) and inspect.iscoroutinefunction(async_cls.__aexit__)


def test_constructors_match() -> None:
    assert inspect.signature(Client) == inspect.signature(AsyncClient)
    params = list(inspect.signature(Client).parameters.values())
    assert params[0].name == "addr" and params[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[1:])
    assert inspect.getdoc(Client) and inspect.getdoc(AsyncClient)
    assert inspect.getdoc(Consumer) and inspect.getdoc(AsyncConsumer)
