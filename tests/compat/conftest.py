"""Fixtures of the fila-python 0.3.0 compatibility suite (``shared/SEED_API.md``).

Brokers come from the ``fila.testing`` pytest plugin (``fila_broker``,
``fila_broker_factory``, ``fila_test_pki``); the suite runs on whichever codec
twin is active (``FILA_NO_EXTENSIONS=1`` for the pure one). Through the
plugin it also honours ``FILA_SERVER`` / ``FILA_SERVER_BIN`` (a real server;
tests needing the double's faults, request spy or internals are skipped).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

import pytest
from compat_helpers import FakeServer
from compat_helpers import RequestSpy

import fila
from fila.testing import Broker


@pytest.fixture
def broker(fila_broker: Broker) -> Broker:
    return fila_broker


@pytest.fixture
def broker_factory(fila_broker_factory: Callable[..., Broker]) -> Callable[..., Broker]:
    return fila_broker_factory


@pytest.fixture
def addr(broker: Broker) -> str:
    return broker.address  # "127.0.0.1:<port>" for the double; FILA_SERVER's own host:port otherwise


@pytest.fixture
def client(addr: str) -> Iterator[fila.Client]:
    """A 0.3.0-style client with default options (closed after the test)."""
    c = fila.Client(addr)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def spy(broker: Broker) -> RequestSpy:
    """Every request the default broker handles, as (opcode, request_id, active Consume's request_id)."""
    return RequestSpy(broker)


@pytest.fixture
def fake_server() -> Iterator[Callable[..., FakeServer]]:
    """A factory of scripted FIBP peers (closed after the test)."""
    servers: list[FakeServer] = []

    def make(respond: Any, **kwargs: Any) -> FakeServer:
        s = FakeServer(respond, **kwargs)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


@pytest.fixture
def pki(fila_test_pki: Any) -> Any:
    return fila_test_pki
