"""What every scheduler shares: the request it queues, how it is answered, its errors.

The core validates a request and hands the scheduler a :class:`ScheduledRequest`;
``scheduler.enqueue(work)`` returns at once. An instance's worker thread later
runs ``instance.execute([work, ...])``, and the backend answers each request
through :meth:`ScheduledRequest.respond` / :meth:`~ScheduledRequest.respond_error`,
which build the response, close the request's statistics on the final answer,
release the model version and hand the answer to the request's sender.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Mapping, Optional, Sequence

from .. import logs
from ..errors import Status, TritonError, Unavailable
from ..responses import build_response
from ..stats import BACKEND, CANCELED, REJECTED, ModelStats, RequestTiming

log = logging.getLogger(__name__)
_now = time.monotonic_ns

# Where a scheduled request is: waiting in a queue, given to an instance, or
# dropped from the queue (cancelled, timed out) and answered with an error.
QUEUED, TAKEN, DROPPED = 0, 1, 2


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
    """A fresh error for one request of a failed execution (each future gets its own)."""
    if isinstance(exc, TritonError):
        error = TritonError(exc.message, exc.status)
    else:
        error = TritonError(f"{type(exc).__name__}: {exc}")
    error.failure = getattr(exc, "failure", BACKEND)
    return error


class ScheduledRequest:
    """A validated request on its way through a scheduler to a backend instance.

    ``model`` is the ``ModelVersion`` (counted in flight until the final
    answer); it may be ``None`` for in-process scheduler tests, in which case
    ``respond`` sends the output mapping itself.
    """

    __slots__ = ("request", "model", "inputs", "output_names", "parameters", "batch", "timing",
                 "stats", "sender", "priority", "timeout_us",
                 # scheduler bookkeeping
                 "key", "enqueue_ns", "deadline_ns", "level", "seq", "state", "executed",
                 "finished")

    def __init__(self, request, model, inputs: Mapping[str, Any], output_names: Sequence[str],
                 parameters: Mapping[str, Any], batch: int = 0,
                 timing: Optional[RequestTiming] = None, stats: Optional[ModelStats] = None):
        self.request = request
        self.model = model
        self.inputs = inputs
        self.output_names = output_names
        self.parameters = parameters
        self.batch = batch
        self.timing = timing if timing is not None else RequestTiming()
        if stats is None:
            stats = model.stats if model is not None else ModelStats()
        self.stats = stats
        self.sender = request.sender
        params = request.parameters
        self.priority = params.get("priority", 0) if params else 0
        self.timeout_us = params.get("timeout", 0) if params else 0
        self.key = None
        self.enqueue_ns = self.deadline_ns = 0
        self.level = self.seq = 0
        self.state = QUEUED
        self.executed = False
        self.finished = False

    @property
    def cancelled(self) -> bool:
        return self.request.cancelled

    def respond(self, outputs: Optional[Mapping[str, Any]], *, final: bool = True) -> None:
        """Answer with the backend's ``outputs`` (``None``: no response, only the final flag)."""
        if self.finished:
            return
        response = None
        if outputs is not None:
            if self.model is None:
                response = outputs
            else:
                try:
                    response = build_response(self.request, self.model, self.output_names,
                                              outputs, self.batch)
                except Exception as exc:
                    self.respond_error(exc if isinstance(exc, TritonError) else
                                       TritonError(f"{type(exc).__name__}: {exc}"), final=final)
                    return
        if final:
            self._close(success=True)
            if logs.STATE.verbose:
                self._log("SUCCESS")
        self.sender.send(response, final=final)

    def respond_error(self, error: BaseException, *, final: bool = True) -> None:
        if self.finished:
            return
        if final:
            if self.timing.failure is None:
                self.timing.failure = getattr(error, "failure", None)
            self._close(success=False)
            if logs.STATE.verbose:
                self._log(error.status.name if isinstance(error, TritonError)
                          else type(error).__name__)
        self.sender.send_error(error, final=final)

    def _log(self, status: str) -> None:
        """--log-verbose: one line per finished request."""
        request = self.request
        name = self.model.name if self.model is not None else request.model_name
        version = self.model.version if self.model is not None else request.model_version
        logs.log_request(log, name, version, request.id, status, _now() - self.timing.start_ns)

    def _close(self, success: bool) -> None:
        self.finished = True
        if success:
            self.stats.succeeded(self.timing)
        else:
            self.stats.failed(self.timing)
        self.request.clear_cancel_callbacks()
        if self.model is not None:
            self.model.release()


def record_execution(requests: Sequence[ScheduledRequest], input_ns: int, infer_ns: int,
                     output_ns: int) -> None:
    """One execution of ``requests`` as a batch: each request's compute timing and the
    model's execution statistics. Call it before responding, so a client that reads the
    statistics after its response sees the execution counted."""
    first = requests[0]
    if first.executed:
        return
    for work in requests:
        work.executed = True
        timing = work.timing
        timing.compute_input_ns = input_ns
        timing.compute_infer_ns = infer_ns
        timing.compute_output_ns = output_ns
    first.stats.executed(sum(r.batch for r in requests), input_ns, infer_ns, output_ns)


def run_batch(instance, requests: list) -> None:
    """Run ``requests`` on ``instance`` (on its worker thread) and make sure each is answered.

    Requests cancelled while they waited are answered here and not executed.
    An exception escaping ``execute`` fails every request it left unanswered.
    """
    live = []
    for work in requests:
        if work.request.cancelled:
            work.respond_error(RequestCancelled())
        else:
            live.append(work)
    if not live:
        return
    start = _now()
    for work in live:
        work.timing.queue_ns = start - work.enqueue_ns
    if logs.STATE.verbose:
        first = live[0]
        logs.verbose(log, 1, "model '%s': %d request(s), %d item(s) to instance %s",
                     first.model.name if first.model is not None else first.request.model_name,
                     len(live), sum(w.batch or 1 for w in live),
                     getattr(instance, "name", "") or type(instance).__name__)
    try:
        instance.execute(live)
    except BaseException as exc:  # a backend's bug must not strand its requests
        if not isinstance(exc, Exception):
            log.error("instance %s raised %r", getattr(instance, "name", instance), exc)
        for work in live:
            if not work.finished:
                work.timing.failure = getattr(exc, "failure", BACKEND)
                work.respond_error(backend_error(exc))
        return
    if not live[0].executed and all(work.finished for work in live):
        # answered inside execute() without recording: count it here. A backend that
        # answers later, from its own threads, records its execution itself.
        record_execution(live, 0, _now() - start, 0)
