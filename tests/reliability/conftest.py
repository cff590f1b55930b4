"""Fixtures of the reliability suite: brokers (in-process and in a child process), certificates, slow tests.

Slow variants are marked ``@pytest.mark.slow`` and deselected by default in
this directory. Run them with ``--run-slow`` (when pytest is pointed at this
directory: ``python -m pytest tests/reliability --run-slow``), with
``FILA_RUN_SLOW=1`` (works from any invocation), or select them explicitly
with ``-m slow`` (any ``-m`` expression disables the default deselection).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fila.testing import Broker

from .rel_helpers import ProcBroker

_HERE = Path(__file__).resolve().parent


def pytest_addoption(parser: pytest.Parser) -> None:
    try:
        parser.addoption(
            "--run-slow",
            action="store_true",
            default=False,
            help="also run the @pytest.mark.slow reliability tests (long variants)",
        )
    except ValueError:  # pragma: no cover - another conftest registered it
        pass


def _run_slow(config: pytest.Config) -> bool:
    if getattr(config.option, "run_slow", False):
        return True
    return os.environ.get("FILA_RUN_SLOW", "").strip() not in ("", "0")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mine = {id(item) for item in items if _HERE in Path(str(item.fspath)).resolve().parents}
    for item in items:
        if id(item) in mine:
            # Fault injection and broker-state inspection: always the in-process double (never FILA_SERVER).
            item.add_marker(pytest.mark.fila_double)
    if _run_slow(config) or (config.option.markexpr or "").strip():
        return
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        (dropped if id(item) in mine and item.get_closest_marker("slow") is not None else keep).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture
def broker_factory() -> Iterator[Callable[..., Broker]]:
    """In-process brokers, stopped after the test. Nagle is off by default here (speed, not fidelity)."""
    brokers: list[Broker] = []

    def make(**options: Any) -> Broker:
        options.setdefault("nagle", False)
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


@pytest.fixture
def proc_broker() -> Iterator[ProcBroker]:
    """A broker in a child process (``python -m fila.testing``): its memory is not the client's."""
    with ProcBroker() as b:
        yield b


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    pytest.importorskip("cryptography")
    from fila.testing import make_test_pki

    return make_test_pki(tmp_path_factory.mktemp("reliability-pki"))
