"""Fixtures of the cluster suite: the cluster double with short delays, and client options to match.

Every test here runs against :class:`fila.testing.Cluster` (in-process, never
a real server) with both clients; the directory runs on both codec twins like
the rest of the suite (``FILA_NO_EXTENSIONS=1`` for the pure one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fila.testing import Cluster

#: Seconds a dead leader's queues wait for a new leader here (the server's ~2 s, shortened).
FAILOVER = 0.5


@pytest.fixture
def make_cluster(fila_cluster_factory: Callable[..., Cluster]) -> Callable[..., Cluster]:
    """``make_cluster(**options)``: a started cluster double with this suite's defaults (stopped after the test)."""

    def make(**options: Any) -> Cluster:
        options.setdefault("failover_delay", FAILOVER)
        options.setdefault("nagle", False)  # speed, not wire timing, is what these tests need
        return fila_cluster_factory(**options)

    return make


@pytest.fixture
def cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    return make_cluster()
