"""Module-scoped brokers for the command-line tests (helpers: ``cli_helpers``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fila.testing import Broker


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    """One plain broker for a whole test module."""
    b = Broker()
    b.start()
    try:
        yield b
    finally:
        b.stop()
