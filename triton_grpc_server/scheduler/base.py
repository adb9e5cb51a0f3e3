"""What every scheduler shares: the request it queues and the errors it raises.

A scheduler's ``execute(inputs, output_names, parameters, **request)`` runs on
the calling RPC thread and returns that request's outputs; ``request`` carries
``batch`` (the request's batch size, 0 without a batch dimension), ``timing``
(a :class:`~triton_grpc_server.stats.RequestTiming`), ``priority``,
``timeout_us`` and ``cancelled`` (a callable, true once the client has gone).
"""
from __future__ import annotations

from ..errors import Status, TritonError, Unavailable
from ..stats import BACKEND, CANCELED, REJECTED

# How often a waiting RPC thread asks whether its client has gone.
CANCEL_POLL_SECS = 0.05


class QueueFull(Unavailable):
    failure = REJECTED

    def __init__(self):
        super().__init__("Exceeds maximum queue size")


class QueueTimeout(Unavailable):
    failure = REJECTED

    def __init__(self):
        super().__init__("Request timeout expired")


class RequestCancelled(TritonError):
    status = Status.CANCELLED
    failure = CANCELED

    def __init__(self):
        super().__init__("Request cancelled")


def backend_error(exc: BaseException) -> TritonError:
    """A fresh error for one request of a failed execution (several threads may raise it)."""
    if isinstance(exc, TritonError):
        error = TritonError(exc.message, exc.status)
    else:
        error = TritonError(f"{type(exc).__name__}: {exc}")
    error.failure = getattr(exc, "failure", BACKEND)
    return error
