"""Fixtures for the client suites: test brokers over real TCP, certificates, async runner.

``FILA_SERVER=host:port`` or ``FILA_SERVER_BIN=/path/to/fila-server`` run the
suite against a real server (``fila.testing.external``): tests that need the
double's fault injection or internals, or a broker the server cannot be
configured as, are skipped with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

import pytest

from fila.testing import Broker
from fila.testing.external import BrokerFactory


@pytest.fixture
def broker_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., Broker]]:
    """Started brokers, stopped at the end of the test: ``broker_factory(api_key="k")``."""
    factory = BrokerFactory(double=request.node.get_closest_marker("fila_double") is not None)
    yield factory
    factory.close()


@pytest.fixture
def broker(broker_factory: Callable[..., Broker]) -> Broker:
    return broker_factory()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    pytest.importorskip("cryptography")
    from fila.testing import make_test_pki

    return make_test_pki(tmp_path_factory.mktemp("client-pki"))
