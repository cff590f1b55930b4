"""Result and message types handed to users.

``Message`` (a delivered message) comes from the active codec twin. The
other types are plain immutable value objects returned by the clients.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

from .errors import ServerError

if TYPE_CHECKING:  # the active twin's class; both have the same interface
    from .protocol.pure import Message
else:
    from .protocol import Message

__all__ = [
    "Acl",
    "ApiKey",
    "ApiKeyInfo",
    "EnqueueResult",
    "FairnessKeyStats",
    "Message",
    "Permission",
    "QueueInfo",
    "QueueList",
    "Stats",
    "ThrottleStats",
]


class EnqueueResult:
    """The outcome of one message of :meth:`~fila.Client.enqueue_many`.

    Exactly one of ``message_id`` and ``error`` is set; ``ok`` says which.
    """

    __slots__ = ("error", "message_id")

    def __init__(self, message_id: str | None, error: ServerError | None = None) -> None:
        self.message_id = message_id
        self.error = error

    @property
    def ok(self) -> bool:
        return self.error is None

    def unwrap(self) -> str:
        """The message id, or raise the per-item error."""
        if self.error is not None:
            raise self.error
        assert self.message_id is not None
        return self.message_id

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EnqueueResult):
            return NotImplemented
        return self.message_id == other.message_id and repr(self.error) == repr(other.error)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        if self.error is None:
            return f"EnqueueResult(message_id={self.message_id!r})"
        return f"EnqueueResult(error={self.error!r})"


class FairnessKeyStats(NamedTuple):
    """DRR state of one active fairness key (``Stats.per_key``)."""

    key: str
    pending: int
    deficit: int
    weight: int


class ThrottleStats(NamedTuple):
    """Token-bucket state of one throttle key (``Stats.per_throttle``)."""

    key: str
    tokens: float
    rate_per_second: float
    burst: float


class Stats(NamedTuple):
    """What :meth:`~fila.Client.get_stats` reports for one queue.

    ``depth`` counts pending plus in-flight (leased) messages.
    """

    depth: int
    in_flight: int
    active_fairness_keys: int
    active_consumers: int
    quantum: int
    leader_node_id: int
    replication_count: int
    per_key: tuple[FairnessKeyStats, ...]
    per_throttle: tuple[ThrottleStats, ...]


class QueueInfo(NamedTuple):
    """One queue of :class:`QueueList`."""

    name: str
    depth: int
    in_flight: int
    active_consumers: int
    leader_node_id: int


class QueueList(NamedTuple):
    """What :meth:`~fila.Client.list_queues` returns: the queues and the cluster size.

    Iterating it yields the :class:`QueueInfo` items; ``names`` lists the names.
    """

    queues: tuple[QueueInfo, ...]
    cluster_node_count: int

    def __iter__(self) -> Iterator[QueueInfo]:  # type: ignore[override]
        return iter(self.queues)

    def __len__(self) -> int:
        return len(self.queues)

    def __contains__(self, name: object) -> bool:
        return any(q.name == name for q in self.queues)

    @property
    def names(self) -> list[str]:
        return [q.name for q in self.queues]


class ApiKey(NamedTuple):
    """A newly created API key. ``key`` is the plaintext token, shown only once.

    The token never appears in ``repr``.
    """

    key_id: str
    key: str
    is_superadmin: bool

    def __repr__(self) -> str:
        return f"ApiKey(key_id={self.key_id!r}, key=<hidden>, is_superadmin={self.is_superadmin})"


class ApiKeyInfo(NamedTuple):
    """One entry of :meth:`~fila.Client.list_api_keys` (no secret material)."""

    key_id: str
    name: str
    created_at_ms: int
    expires_at_ms: int
    is_superadmin: bool


class Permission(NamedTuple):
    """One ACL grant: ``kind`` is ``"produce"``, ``"consume"`` or ``"admin"``;
    ``pattern`` is a queue name, ``"*"`` or a prefix wildcard like ``"orders.*"``.
    """

    kind: str
    pattern: str

    @classmethod
    def produce(cls, pattern: str) -> Permission:
        return cls("produce", pattern)

    @classmethod
    def consume(cls, pattern: str) -> Permission:
        return cls("consume", pattern)

    @classmethod
    def admin(cls, pattern: str) -> Permission:
        return cls("admin", pattern)


class Acl(NamedTuple):
    """What :meth:`~fila.Client.get_acl` returns; ``permissions`` can be passed to ``set_acl``."""

    key_id: str
    is_superadmin: bool
    permissions: tuple[Permission, ...]
