"""The exception tree.

Everything the package raises on purpose derives from :class:`FilaError`:

* :class:`ServerError` and one subclass per FIBP error code, raised for Error
  frames and used for per-item results (see :func:`error_for_code`);
* :class:`ProtocolError` / :class:`DecodeError` for malformed frames and
  :class:`EncodeError` for values that cannot be put on the wire;
* :class:`FilaConnectionError` and its subclasses for transport failures.
"""

from __future__ import annotations

from collections.abc import Mapping

from .protocol.constants import ErrorCode, normalize_error_code

__all__ = [
    "ERROR_CLASSES",
    "ApiKeyNotFoundError",
    "ChannelFullError",
    "ClientClosedError",
    "ConnectError",
    "ConnectionLostError",
    "DecodeError",
    "EncodeError",
    "FilaConnectionError",
    "FilaError",
    "ForbiddenError",
    "InternalServerError",
    "InvalidConfigValueError",
    "InvalidFrameError",
    "LuaCompilationError",
    "MessageNotFoundError",
    "NodeNotReadyError",
    "NotADLQError",
    "NotLeaderError",
    "OkError",
    "ParentQueueNotFoundError",
    "ProtocolError",
    "QueueAlreadyExistsError",
    "QueueNotFoundError",
    "RequestTimeoutError",
    "ServerError",
    "StorageError",
    "UnauthorizedError",
    "UnsupportedVersionError",
    "error_for_code",
]


class FilaError(Exception):
    """Base class of every error this package raises on purpose."""


# --------------------------------------------------------------------------- codec


class ProtocolError(FilaError):
    """The peer broke the FIBP protocol (malformed or unexpected frames)."""


class DecodeError(ProtocolError):
    """Bytes that are not a valid FIBP frame or body.

    ``kind`` names the failure the way the server's codec does
    (``IncompleteFrame``, ``InvalidUtf8``, ``CountExceedsLimit``,
    ``FrameTooLarge``, ``ContinuationOpcodeMismatch``,
    ``TooManyContinuationStreams``, ``ReassembledTooLarge``); ``detail`` is the
    server codec's own wording (what the server puts after ``invalid <op>
    frame:``); ``str(err)`` adds what was being read and at which offset.
    """

    def __init__(self, message: str, kind: str = "Malformed", detail: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.detail = message if detail is None else detail


class EncodeError(FilaError, ValueError):
    """A value that cannot be encoded (too long, too many entries, wrong type).

    Raised before anything is written; the message names the field and the
    offending size or type.
    """


# --------------------------------------------------------------------- transport


class FilaConnectionError(FilaError, ConnectionError):
    """The connection to the server failed or was lost.

    ``may_have_been_applied`` tells whether the server might have acted on the
    request before the failure (it was fully written, no answer arrived).
    """

    def __init__(self, message: str, *, may_have_been_applied: bool = False) -> None:
        super().__init__(message)
        self.may_have_been_applied = may_have_been_applied


class ConnectError(FilaConnectionError):
    """Could not connect, set up TLS or complete the handshake."""


class ConnectionLostError(FilaConnectionError):
    """The connection dropped while the request was pending."""


class RequestTimeoutError(FilaConnectionError, TimeoutError):
    """No answer within the request timeout (the request may have been applied)."""

    def __init__(self, message: str, *, may_have_been_applied: bool = True) -> None:
        super().__init__(message, may_have_been_applied=may_have_been_applied)


class ClientClosedError(FilaConnectionError):
    """The client was closed; create a new one to go on."""


# ------------------------------------------------------------------------ server


class ServerError(FilaError):
    """The server answered with a non-zero error code.

    ``code`` is the :class:`ErrorCode`, ``message`` the server's text and
    ``metadata`` every key/value the Error frame carried (unknown keys kept).
    """

    code: ErrorCode = ErrorCode.INTERNAL_ERROR

    def __init__(self, message: str = "", metadata: Mapping[str, str] | None = None) -> None:
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})
        text = f"{self.code.name} (0x{int(self.code):02x})"
        if message:
            text += f": {message}"
        super().__init__(text)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.message, self.metadata))


class OkError(ServerError):
    """Code 0x00 (Ok). Never raised for a success; exists so every code has a class."""

    code = ErrorCode.OK


class QueueNotFoundError(ServerError):
    """The queue does not exist."""

    code = ErrorCode.QUEUE_NOT_FOUND


class MessageNotFoundError(ServerError):
    """No such message is leased (already acked, expired, or never delivered)."""

    code = ErrorCode.MESSAGE_NOT_FOUND


class QueueAlreadyExistsError(ServerError):
    """A queue of that name exists already."""

    code = ErrorCode.QUEUE_ALREADY_EXISTS


class LuaCompilationError(ServerError):
    """An on_enqueue / on_failure script did not compile."""

    code = ErrorCode.LUA_COMPILATION_ERROR


class StorageError(ServerError):
    """The server's storage failed."""

    code = ErrorCode.STORAGE_ERROR


class NotADLQError(ServerError):
    """Redrive was asked of a queue that is not a dead-letter queue."""

    code = ErrorCode.NOT_A_DLQ


class ParentQueueNotFoundError(ServerError):
    """The dead-letter queue's parent queue does not exist."""

    code = ErrorCode.PARENT_QUEUE_NOT_FOUND


class InvalidConfigValueError(ServerError):
    """A config value was refused."""

    code = ErrorCode.INVALID_CONFIG_VALUE


class ChannelFullError(ServerError):
    """Backpressure: the server refused the whole request; retry with backoff."""

    code = ErrorCode.CHANNEL_FULL

    @property
    def retry_after_ms(self) -> int | None:
        """The server's ``retry_after_ms`` hint, if it sent one."""
        value = self.metadata.get("retry_after_ms")
        try:
            return int(value) if value is not None else None
        except ValueError:
            return None


class UnauthorizedError(ServerError):
    """Missing or invalid API key."""

    code = ErrorCode.UNAUTHORIZED


class ForbiddenError(ServerError):
    """The API key's ACL does not allow this operation."""

    code = ErrorCode.FORBIDDEN


class NotLeaderError(ServerError):
    """This node is not the leader for the queue; ``leader_addr`` says who is, if known."""

    code = ErrorCode.NOT_LEADER

    @property
    def leader_addr(self) -> str | None:
        return self.metadata.get("leader_addr") or None


class UnsupportedVersionError(ServerError):
    """The server does not speak this protocol version."""

    code = ErrorCode.UNSUPPORTED_VERSION


class InvalidFrameError(ServerError):
    """The server could not decode the request, or does not know its opcode."""

    code = ErrorCode.INVALID_FRAME


class ApiKeyNotFoundError(ServerError):
    """No API key with that id."""

    code = ErrorCode.API_KEY_NOT_FOUND


class NodeNotReadyError(ServerError):
    """The cluster has no leader yet; retry later."""

    code = ErrorCode.NODE_NOT_READY


class InternalServerError(ServerError):
    """Code 0xFF, and any code this client does not know."""

    code = ErrorCode.INTERNAL_ERROR


ERROR_CLASSES: dict[int, type[ServerError]] = {
    cls.code: cls
    for cls in (
        OkError,
        QueueNotFoundError,
        MessageNotFoundError,
        QueueAlreadyExistsError,
        LuaCompilationError,
        StorageError,
        NotADLQError,
        ParentQueueNotFoundError,
        InvalidConfigValueError,
        ChannelFullError,
        UnauthorizedError,
        ForbiddenError,
        NotLeaderError,
        UnsupportedVersionError,
        InvalidFrameError,
        ApiKeyNotFoundError,
        NodeNotReadyError,
        InternalServerError,
    )
}


def error_for_code(code: int, message: str = "", metadata: Mapping[str, str] | None = None) -> ServerError:
    """The exception instance for a wire error code (unknown codes → InternalServerError)."""
    return ERROR_CLASSES[normalize_error_code(code)](message, metadata)
