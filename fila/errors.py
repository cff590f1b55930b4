"""The exception tree (fila-python 0.3.0's classes, mapped to the server's real codes).

Every exception this package raises on purpose is a :class:`FilaError`, with
``code`` (the FIBP error code, or None when the client detected the problem),
``message`` (the server's own text, or the client's) and ``metadata`` (every
key/value an Error frame carried, unknown keys kept). ``str(err)`` says what
failed and, where the client knows it, on which queue or key.

The 0.3.0 classes keep their 0.3.0 bases (direct subclasses of
:class:`FilaError`; ``RPCError`` is ``ProtocolError``). The classes added here
refine one of them:

==========  ============================  ===============================
code        class                         base
==========  ============================  ===============================
0x01        QueueNotFoundError            FilaError
0x02        MessageNotFoundError          FilaError
0x03        QueueAlreadyExistsError       FilaError
0x04        LuaCompilationError           LuaError
0x05        StorageError                  InternalServerError
0x06        NotADLQError                  InvalidArgumentError
0x07        ParentQueueNotFoundError      QueueNotFoundError
0x08        InvalidConfigValueError       InvalidArgumentError
0x09        ChannelFullError              FilaError
0x0A        UnauthorizedError             FilaError
0x0B        ForbiddenError                FilaError
0x0C        NotLeaderError                FilaError
0x0D        UnsupportedVersionError       ProtocolError
0x0E        InvalidFrameError             InvalidArgumentError
0x0F        ApiKeyNotFoundError           FilaError
0x10        NodeNotReadyError             UnavailableError
0xFF, else  InternalServerError           ProtocolError
==========  ============================  ===============================

Transport failures are :class:`FilaConnectionError` — an
:class:`UnavailableError` and also a built-in ``ConnectionError`` (so code
that caught ``OSError`` keeps working). ``PermissionDeniedError``,
``ResourceExhaustedError``, ``AclNotFoundError`` and ``EnqueueError`` have no
server code; they stay exported for code written against 0.3.0.

This module imports nothing from the codec.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .protocol.constants import ErrorCode
from .protocol.constants import normalize_error_code

__all__ = [
    "ERROR_CLASSES",
    "AclNotFoundError",
    "ApiKeyNotFoundError",
    "ChannelFullError",
    "ClientClosedError",
    "ConnectError",
    "ConnectionLostError",
    "DecodeError",
    "EncodeError",
    "EnqueueError",
    "ErrorCode",
    "FilaConnectionError",
    "FilaError",
    "ForbiddenError",
    "InternalServerError",
    "InvalidArgumentError",
    "InvalidConfigValueError",
    "InvalidFrameError",
    "LuaCompilationError",
    "LuaError",
    "MessageNotFoundError",
    "NodeNotReadyError",
    "NotADLQError",
    "NotLeaderError",
    "ParentQueueNotFoundError",
    "PermissionDeniedError",
    "ProtocolError",
    "QueueAlreadyExistsError",
    "QueueNotFoundError",
    "RPCError",
    "RequestTimeoutError",
    "ResourceExhaustedError",
    "StorageError",
    "UnauthorizedError",
    "UnavailableError",
    "UnsupportedVersionError",
    "error_for_code",
]


class FilaError(Exception):
    """Base class of every error this package raises on purpose.

    ``code`` is the FIBP error code (None for errors the client detected),
    ``message`` the server's text (or the client's), ``metadata`` the Error
    frame's key/values. ``str(err)`` is ``message`` unless a subclass or the
    raising call gave more context.
    """

    code: int | None = None
    #: Whether the server may have acted on the request although it failed
    #: (a connection lost after sending it, or a cluster forward that broke).
    may_have_been_applied: bool = False

    def __init__(self, message: str = "", *, metadata: Mapping[str, str] | None = None, text: str | None = None):
        super().__init__(message if text is None else text)
        self.message = message
        self.metadata: dict[str, str] = dict(metadata) if metadata else {}

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), dict(self.__dict__), self.args))


def _rebuild(cls: type[FilaError], state: dict[str, Any], args: tuple[Any, ...]) -> FilaError:
    exc = cls.__new__(cls)
    Exception.__init__(exc, *args)
    exc.__dict__.update(state)
    return exc


# ----------------------------------------------------------- 0.3.0's classes


class QueueNotFoundError(FilaError):
    """The queue does not exist (0x01)."""

    code = ErrorCode.QUEUE_NOT_FOUND


class MessageNotFoundError(FilaError):
    """No such message is leased: already acked or nacked, expired, or never delivered (0x02)."""

    code = ErrorCode.MESSAGE_NOT_FOUND


class QueueAlreadyExistsError(FilaError):
    """A queue of that name exists already (0x03)."""

    code = ErrorCode.QUEUE_ALREADY_EXISTS


class InvalidArgumentError(FilaError):
    """A request the server refused as malformed or invalid (base of 0x06, 0x08, 0x0E)."""


class PermissionDeniedError(FilaError):
    """Kept from 0.3.0; the server has no such code (an ACL denial is :class:`ForbiddenError`)."""


class UnauthorizedError(FilaError):
    """Missing or invalid API key: the handshake was refused (0x0A)."""

    code = ErrorCode.UNAUTHORIZED


class ForbiddenError(FilaError):
    """The API key's ACL does not allow this operation, or the key was revoked (0x0B)."""

    code = ErrorCode.FORBIDDEN


class NotLeaderError(FilaError):
    """This node does not lead the queue (0x0C); ``leader_addr`` names the leader when the server knows it."""

    code = ErrorCode.NOT_LEADER

    def __init__(
        self,
        message: str = "",
        leader_addr: str | None = None,
        *,
        metadata: Mapping[str, str] | None = None,
        text: str | None = None,
    ) -> None:
        super().__init__(message, metadata=metadata, text=text)
        self.leader_addr = leader_addr if leader_addr is not None else (self.metadata.get("leader_addr") or None)


class ChannelFullError(FilaError):
    """Backpressure: the server refused the whole request (0x09); the client retries it with backoff."""

    code = ErrorCode.CHANNEL_FULL

    @property
    def retry_after_ms(self) -> int | None:
        """The ``retry_after_ms`` hint, if the Error frame carried one."""
        value = self.metadata.get("retry_after_ms")
        try:
            return int(value) if value is not None else None
        except ValueError:
            return None


class ResourceExhaustedError(FilaError):
    """Kept from 0.3.0; the server has no such code (backpressure is :class:`ChannelFullError`)."""


class UnavailableError(FilaError):
    """The server or cluster cannot serve the request now; retrying later may work."""


class LuaError(FilaError):
    """A Lua hook problem (base of :class:`LuaCompilationError`)."""


class EnqueueError(FilaError):
    """Kept from 0.3.0; per-message failures now raise the class of their code."""


class ProtocolError(FilaError):
    """A protocol-level failure with a code: ``protocol error (code=0xNN): message``.

    ``RPCError`` is this class. Codes without a class of their own, malformed
    frames from the peer (:class:`DecodeError`) and unexpected answers raise it.
    """

    code: int

    def __init__(
        self,
        code: int = ErrorCode.INTERNAL_ERROR,
        message: str = "",
        *,
        metadata: Mapping[str, str] | None = None,
        text: str | None = None,
    ) -> None:
        code = int(code)
        super().__init__(
            message, metadata=metadata, text=f"protocol error (code=0x{code:02x}): {message}" if text is None else text
        )
        self.code = code


RPCError = ProtocolError


class ApiKeyNotFoundError(FilaError):
    """No API key with that id (0x0F)."""

    code = ErrorCode.API_KEY_NOT_FOUND


class AclNotFoundError(FilaError):
    """Kept from 0.3.0; the server answers an unknown key's ACL with :class:`ApiKeyNotFoundError`."""


# ------------------------------------------------------- refinements (ours)


class LuaCompilationError(LuaError):
    """An on_enqueue / on_failure script did not compile (0x04); the message is Lua's error."""

    code = ErrorCode.LUA_COMPILATION_ERROR


class InternalServerError(ProtocolError):
    """The server failed internally (0xFF); also any code this client does not know."""

    def __init__(
        self,
        message: str = "",
        *,
        metadata: Mapping[str, str] | None = None,
        text: str | None = None,
        code: int = ErrorCode.INTERNAL_ERROR,
    ) -> None:
        super().__init__(code, message, metadata=metadata, text=text)


class StorageError(InternalServerError):
    """The server's storage failed (0x05)."""

    def __init__(
        self, message: str = "", *, metadata: Mapping[str, str] | None = None, text: str | None = None
    ) -> None:
        super().__init__(message, metadata=metadata, text=text, code=ErrorCode.STORAGE_ERROR)


class UnsupportedVersionError(ProtocolError):
    """The server does not speak this protocol version (0x0D); ``metadata['max_version']`` says which it does."""

    def __init__(
        self, message: str = "", *, metadata: Mapping[str, str] | None = None, text: str | None = None
    ) -> None:
        super().__init__(ErrorCode.UNSUPPORTED_VERSION, message, metadata=metadata, text=text)


class NotADLQError(InvalidArgumentError):
    """Redrive was asked of a queue whose name does not end in ``.dlq`` (0x06)."""

    code = ErrorCode.NOT_A_DLQ


class ParentQueueNotFoundError(QueueNotFoundError):
    """The dead-letter queue's parent queue does not exist (0x07)."""

    code = ErrorCode.PARENT_QUEUE_NOT_FOUND


class InvalidConfigValueError(InvalidArgumentError):
    """A config value (``throttle.*``: ``"rate,burst"``) or an ACL permission kind was refused (0x08)."""

    code = ErrorCode.INVALID_CONFIG_VALUE


class InvalidFrameError(InvalidArgumentError):
    """The server could not decode the request or does not know its opcode (0x0E)."""

    code = ErrorCode.INVALID_FRAME


class NodeNotReadyError(UnavailableError):
    """The cluster has no leader for this yet (0x10); retry later."""

    code = ErrorCode.NODE_NOT_READY


# ------------------------------------------------------------------- codec


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
        super().__init__(ErrorCode.INVALID_FRAME, message, text=message)
        self.kind = kind
        self.detail = message if detail is None else detail


class EncodeError(InvalidArgumentError, ValueError):
    """A value that cannot be put on the wire (too long, too many entries, wrong type).

    Raised before anything is written; the message names the field and the
    offending size or type.
    """


# --------------------------------------------------------------- transport


class FilaConnectionError(UnavailableError, ConnectionError):
    """The connection to the server failed or was lost.

    ``may_have_been_applied`` tells whether the server might have acted on the
    request before the failure (it was fully written and no answer came).
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
    """The client (or consumer) was closed; create a new one to go on."""


# ---------------------------------------------------------------- mapping

#: The class raised for each server error code.
ERROR_CLASSES: dict[int, type[FilaError]] = {
    ErrorCode.QUEUE_NOT_FOUND: QueueNotFoundError,
    ErrorCode.MESSAGE_NOT_FOUND: MessageNotFoundError,
    ErrorCode.QUEUE_ALREADY_EXISTS: QueueAlreadyExistsError,
    ErrorCode.LUA_COMPILATION_ERROR: LuaCompilationError,
    ErrorCode.STORAGE_ERROR: StorageError,
    ErrorCode.NOT_A_DLQ: NotADLQError,
    ErrorCode.PARENT_QUEUE_NOT_FOUND: ParentQueueNotFoundError,
    ErrorCode.INVALID_CONFIG_VALUE: InvalidConfigValueError,
    ErrorCode.CHANNEL_FULL: ChannelFullError,
    ErrorCode.UNAUTHORIZED: UnauthorizedError,
    ErrorCode.FORBIDDEN: ForbiddenError,
    ErrorCode.NOT_LEADER: NotLeaderError,
    ErrorCode.UNSUPPORTED_VERSION: UnsupportedVersionError,
    ErrorCode.INVALID_FRAME: InvalidFrameError,
    ErrorCode.API_KEY_NOT_FOUND: ApiKeyNotFoundError,
    ErrorCode.NODE_NOT_READY: NodeNotReadyError,
    ErrorCode.INTERNAL_ERROR: InternalServerError,
}

#: What a code means, for messages the client writes itself (per-item results carry no text).
DESCRIPTIONS: dict[int, str] = {
    ErrorCode.QUEUE_NOT_FOUND: "queue not found",
    ErrorCode.MESSAGE_NOT_FOUND: "message not found (not leased: already acked or nacked, expired, or unknown id)",
    ErrorCode.QUEUE_ALREADY_EXISTS: "queue already exists",
    ErrorCode.LUA_COMPILATION_ERROR: "Lua script did not compile",
    ErrorCode.STORAGE_ERROR: "storage error on the server",
    ErrorCode.NOT_A_DLQ: "not a dead-letter queue (its name must end in '.dlq')",
    ErrorCode.PARENT_QUEUE_NOT_FOUND: "parent queue not found",
    ErrorCode.INVALID_CONFIG_VALUE: "invalid config value (throttle.<key> takes 'rate,burst': two finite numbers >= 0)",
    ErrorCode.CHANNEL_FULL: "server overloaded (channel full); retry later",
    ErrorCode.UNAUTHORIZED: "unauthorized: missing or invalid API key",
    ErrorCode.FORBIDDEN: "forbidden by the API key's ACL",
    ErrorCode.NOT_LEADER: "this node is not the queue's leader",
    ErrorCode.UNSUPPORTED_VERSION: "unsupported protocol version",
    ErrorCode.INVALID_FRAME: "the server could not decode the request",
    ErrorCode.API_KEY_NOT_FOUND: "API key not found",
    ErrorCode.NODE_NOT_READY: "node not ready; retry later",
    ErrorCode.INTERNAL_ERROR: "internal server error",
}


def error_for_code(
    code: int, message: str = "", metadata: Mapping[str, str] | None = None, *, context: str = ""
) -> FilaError:
    """The exception for a wire error code (unknown codes → :class:`InternalServerError`).

    ``message`` is the server's text (kept as ``err.message``); ``context``
    (e.g. ``"enqueue to 'orders'"``) goes in front of it in ``str(err)``. With
    no server text, the code's description stands in.
    """
    known = normalize_error_code(code)
    cls = ERROR_CLASSES.get(known, InternalServerError)
    shown = message or DESCRIPTIONS.get(known, f"error code 0x{code:02x}")
    text = f"{context}: {shown}" if context else shown
    if cls is InternalServerError:
        exc = InternalServerError(message, metadata=metadata, text=_protocol_text(code, text), code=code)
        # A cluster node lost the forwarded request's answer: it may have been applied.
        exc.may_have_been_applied = "connection closed" in message
        return exc
    if issubclass(cls, ProtocolError):
        text = _protocol_text(code, text)
    return cls(message, metadata=metadata, text=text)


def _protocol_text(code: int, text: str) -> str:
    return f"protocol error (code=0x{code:02x}): {text}"
