"""Result and message types (fila-python 0.3.0's, field for field).

All are frozen dataclasses except :class:`AccumulatorMode` (an ``Enum``).
:class:`ConsumeMessage` is the active codec twin's message class: a
dataclass-compatible immutable object built by the decoder without running a
Python constructor per message.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from dataclasses import field
from typing import TYPE_CHECKING

from .errors import FilaError
from .errors import error_for_code

if TYPE_CHECKING:  # the active twin's class; both twins have the same interface
    from .protocol.pure import ConsumeMessage
else:
    from .protocol import ConsumeMessage

__all__ = [
    "AccumulatorMode",
    "AclEntry",
    "AclPermission",
    "ApiKeyInfo",
    "ClientEvent",
    "ConsumeMessage",
    "CreateApiKeyResult",
    "EnqueueResult",
    "FairnessKeyStat",
    "Linger",
    "QueueInfo",
    "StatsResult",
    "ThrottleKeyStat",
]

#: Most messages one Enqueue frame may carry (the server refuses counts above 1,000,000).
MAX_BATCH_MESSAGES = 50_000


class AccumulatorMode(enum.Enum):
    """How ``enqueue`` calls are batched into Enqueue frames.

    ``AUTO`` (default): a message goes out at once when nothing is in flight;
    what arrives while a frame is in flight goes out together in the next
    frame (up to ``max_accumulator_messages``). ``DISABLED``: one frame per
    message. For a time-based window pass a :class:`Linger` instead.
    """

    AUTO = enum.auto()
    DISABLED = enum.auto()


@dataclass(frozen=True)
class Linger:
    """Batch for up to ``linger_ms`` milliseconds or ``max_messages`` messages, whichever comes first."""

    linger_ms: float
    max_messages: int = 1000

    def __post_init__(self) -> None:
        if isinstance(self.linger_ms, bool) or not (isinstance(self.linger_ms, (int, float)) and self.linger_ms >= 0):
            raise ValueError(f"Linger.linger_ms must be a number of milliseconds >= 0, got {self.linger_ms!r}")
        if isinstance(self.max_messages, bool) or not (
            isinstance(self.max_messages, int) and 0 < self.max_messages <= MAX_BATCH_MESSAGES
        ):
            raise ValueError(
                f"Linger.max_messages must be an int in 1..{MAX_BATCH_MESSAGES}, got {self.max_messages!r}"
            )


@dataclass(frozen=True)
class EnqueueResult:
    """The outcome of one message of ``enqueue_many``.

    ``message_id`` is set on success; ``error`` on failure, as text that starts
    with ``error 0xNN`` (the code) followed by what went wrong. The typed
    exception is :attr:`exception` and the code :attr:`code`, so nothing needs
    parsing.
    """

    message_id: str | None
    error: str | None

    @property
    def is_success(self) -> bool:
        return self.message_id is not None

    @property
    def exception(self) -> FilaError | None:
        """The failure as a typed exception (:mod:`fila.errors`), or None on success."""
        exc: FilaError | None = self.__dict__.get("_exception")
        if exc is None and self.error is not None:
            code = _code_of(self.error)
            exc = error_for_code(code if code is not None else 0xFF, self.error)
        return exc

    @property
    def code(self) -> int | None:
        """The error code (an :class:`~fila.ErrorCode` value), or None on success."""
        exc = self.exception
        return None if exc is None else exc.code

    @classmethod
    def failed(cls, exc: FilaError) -> EnqueueResult:
        """The result of a message that failed with ``exc``."""
        code = exc.code if exc.code is not None else 0xFF
        result = cls(None, f"error 0x{code:02x}: {exc}")
        object.__setattr__(result, "_exception", exc)
        return result


def _code_of(text: str) -> int | None:
    if text.startswith("error 0x"):
        try:
            return int(text[8:10], 16)
        except ValueError:
            return None
    return None


@dataclass(frozen=True)
class ClientEvent:
    """A recovery step a client took, handed to the ``on_event`` callback (and logged at INFO).

    ``kind`` is one of ``"connected"``, ``"disconnected"``, ``"reconnected"``
    (the request connection), ``"subscription_lost"``, ``"resubscribed"``,
    ``"redirected"`` (a consumer followed a leader), ``"consumer_failed"``
    (a consumer gave up; its iterator raises ``error``). ``address`` is the
    node concerned, ``queue`` the consumer's queue, ``error`` the cause.
    """

    kind: str
    address: str
    queue: str | None = None
    error: BaseException | None = None


@dataclass(frozen=True)
class FairnessKeyStat:
    """DRR state of one active fairness key."""

    key: str
    pending_count: int
    current_deficit: int
    weight: int


@dataclass(frozen=True)
class ThrottleKeyStat:
    """Token-bucket state of one throttle key (buckets are server-wide)."""

    key: str
    tokens: float
    rate_per_second: float
    burst: float


@dataclass(frozen=True)
class StatsResult:
    """What ``get_stats`` reports for one queue. ``depth`` counts pending plus in-flight (leased) messages."""

    depth: int
    in_flight: int
    active_fairness_keys: int
    active_consumers: int
    quantum: int
    leader_node_id: int = 0
    replication_count: int = 0
    per_key_stats: list[FairnessKeyStat] = field(default_factory=list)
    per_throttle_stats: list[ThrottleKeyStat] = field(default_factory=list)


@dataclass(frozen=True)
class QueueInfo:
    """One queue of ``list_queues`` (DLQs included)."""

    name: str
    depth: int
    in_flight: int
    active_consumers: int
    leader_node_id: int = 0


@dataclass(frozen=True)
class CreateApiKeyResult:
    """A new API key. ``raw_key`` is the plaintext token, returned only this once and never shown by ``repr``."""

    key_id: str
    raw_key: str = field(repr=False)
    is_superadmin: bool = False


@dataclass(frozen=True)
class ApiKeyInfo:
    """One entry of ``list_api_keys`` (no secret). Times are Unix ms; ``expires_at`` 0 means never."""

    key_id: str
    name: str
    created_at: int
    expires_at: int = 0
    is_superadmin: bool = False


@dataclass(frozen=True)
class AclPermission:
    """One grant: ``kind`` is ``produce``, ``consume`` or ``admin``; ``pattern`` a queue name, ``*`` or ``prefix.*``."""

    kind: str
    pattern: str


@dataclass(frozen=True)
class AclEntry:
    """What ``get_acl`` returns; ``permissions`` can be passed back to ``set_acl``."""

    key_id: str
    is_superadmin: bool
    permissions: list[AclPermission] = field(default_factory=list)
