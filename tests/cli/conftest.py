"""Module-scoped brokers for the command-line tests (helpers: ``cli_helpers``).

With ``FILA_SERVER`` / ``FILA_SERVER_BIN`` set, ``broker`` is a real server
(``fila.testing.external``), one per module.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fila.testing import Broker
from fila.testing.external import BrokerFactory


@pytest.fixture(scope="module")
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    """One plain broker for a whole test module."""
    factory = BrokerFactory(double=request.node.get_closest_marker("fila_double") is not None)
    try:
        yield factory()
    finally:
        factory.close()
