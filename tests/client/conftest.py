"""Fixtures for the client suites: test brokers over real TCP, certificates, async runner."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fila.testing import Broker


@pytest.fixture
def broker_factory() -> Iterator[Callable[..., Broker]]:
    """Started brokers, stopped at the end of the test: ``broker_factory(api_key="k")``."""
    brokers: list[Broker] = []

    def make(**options: Any) -> Broker:
        b = Broker(**options)
        b.start()
        brokers.append(b)
        return b

    yield make
    for b in reversed(brokers):
        b.stop()


@pytest.fixture
def broker(broker_factory: Callable[..., Broker]) -> Broker:
    return broker_factory()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    pytest.importorskip("cryptography")
    from fila.testing import make_test_pki

    return make_test_pki(tmp_path_factory.mktemp("client-pki"))
