"""One error root with Triton's status, and one table to gRPC codes.

Errors travel as values of :class:`TritonError` from any layer and become a
transport status in exactly one place per frontend (see ``frontends/grpc.py``).
"""
from __future__ import annotations

import enum
from urllib.parse import quote

import grpc

# A client string (a model, tensor or file name) echoed in an error text is cut to
# this many characters: the text travels in a response header, and an unbounded
# one makes gRPC reset the call instead of returning the error.
MAX_ECHO_CHARS = 1024
# The whole status text, as gRPC percent-encodes it into ``grpc-message``; clients
# refuse response headers beyond 8 KiB by default, so stay well under.
MAX_STATUS_MESSAGE_BYTES = 4096
_TRUNCATED = "...(truncated)"


def clip(text: str, limit: int = MAX_ECHO_CHARS) -> str:
    """``text`` cut to ``limit`` characters, marked when cut (for echoing client strings)."""
    text = str(text)
    return text if len(text) <= limit else text[:limit] + _TRUNCATED


def status_message(message: str) -> str:
    """``message`` cut so its percent-encoded form fits in ``MAX_STATUS_MESSAGE_BYTES``.

    Every frontend passes error texts through this once, so an error that echoes
    a long client string still reaches the client as an error.
    """
    if len(message) * 9 <= MAX_STATUS_MESSAGE_BYTES:  # short enough even if all non-ASCII
        return message
    budget = MAX_STATUS_MESSAGE_BYTES - len(_TRUNCATED)
    if len(quote(message, safe=" ")) <= MAX_STATUS_MESSAGE_BYTES:
        return message
    low, high = 0, min(len(message), budget)
    while low < high:  # the longest prefix whose encoding fits
        middle = (low + high + 1) // 2
        if len(quote(message[:middle], safe=" ")) <= budget:
            low = middle
        else:
            high = middle - 1
    return message[:low] + _TRUNCATED


class Status(enum.Enum):
    """TRITONSERVER_Error codes (core ``tritonserver.h``)."""

    UNKNOWN = "UNKNOWN"
    INTERNAL = "INTERNAL"
    NOT_FOUND = "NOT_FOUND"
    INVALID_ARG = "INVALID_ARG"
    UNAVAILABLE = "UNAVAILABLE"
    UNSUPPORTED = "UNSUPPORTED"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    CANCELLED = "CANCELLED"


class TritonError(Exception):
    """An error with the status Triton would report for it."""

    status: Status = Status.INTERNAL

    def __init__(self, message: str, status: Status | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status

    def __reduce__(self):
        return (TritonError, (self.message, self.status))


class InvalidArgument(TritonError):
    status = Status.INVALID_ARG


class NotFound(TritonError):
    status = Status.NOT_FOUND


class Unavailable(TritonError):
    status = Status.UNAVAILABLE


class Unsupported(TritonError):
    status = Status.UNSUPPORTED


class AlreadyExists(TritonError):
    status = Status.ALREADY_EXISTS


class InternalError(TritonError):
    status = Status.INTERNAL


# One table from status to gRPC code; UNSUPPORTED is UNIMPLEMENTED, as in Triton.
GRPC_CODES = {
    Status.UNKNOWN: grpc.StatusCode.UNKNOWN,
    Status.INTERNAL: grpc.StatusCode.INTERNAL,
    Status.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Status.INVALID_ARG: grpc.StatusCode.INVALID_ARGUMENT,
    Status.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Status.UNSUPPORTED: grpc.StatusCode.UNIMPLEMENTED,
    Status.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    Status.CANCELLED: grpc.StatusCode.CANCELLED,
}


def grpc_code(status: Status) -> grpc.StatusCode:
    return GRPC_CODES[status]


def http_status(status: Status) -> int:
    """The HTTP status Triton's REST frontend uses for a status."""
    return {Status.INTERNAL: 500, Status.NOT_FOUND: 404, Status.UNAVAILABLE: 503,
            Status.UNSUPPORTED: 501}.get(status, 400)
