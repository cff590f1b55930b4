"""pytest plugin (entry point ``fila``): fixtures that run a test broker.

* ``fila_broker`` — a started :class:`~fila.testing.Broker` with default
  options, stopped after the test.
* ``fila_broker_factory`` — call it with :class:`~fila.testing.Broker`
  keyword arguments to get more brokers (auth, TLS, cluster simulation …);
  all are stopped after the test.
* ``fila_test_pki`` — a throwaway CA, server and client certificates
  (session-scoped; skips the test when ``cryptography`` is missing).

The brokers run in a background thread, so they serve sync and asyncio
tests alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .broker import Broker
    from .tls import TestPKI


@pytest.fixture
def fila_broker_factory() -> Iterator[Callable[..., Broker]]:
    """A factory of started brokers: ``fila_broker_factory(api_key="k", node_id=2, ...)``."""
    from .broker import Broker

    brokers: list[Broker] = []

    def make(**options: Any) -> Broker:
        broker = Broker(**options)
        broker.start()
        brokers.append(broker)
        return broker

    yield make
    for broker in reversed(brokers):
        broker.stop()


@pytest.fixture
def fila_broker(fila_broker_factory: Callable[..., Broker]) -> Broker:
    """A started broker on 127.0.0.1 with default options."""
    return fila_broker_factory()


@pytest.fixture(scope="session")
def fila_test_pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    """Certificates for TLS tests (see :func:`fila.testing.make_test_pki`)."""
    pytest.importorskip("cryptography", reason="fila_test_pki needs the cryptography package")
    from .tls import make_test_pki

    return make_test_pki(tmp_path_factory.mktemp("fila-pki"))
