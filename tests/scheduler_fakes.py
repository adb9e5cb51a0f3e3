"""In-process scheduler tests: gated fake instances and requests answered into a list.

``GatedInstance`` holds every execution until the test opens its gate, so a
test can queue requests behind a busy instance without a slow model or
wall-clock gaps. ``work(...)`` builds a :class:`ScheduledRequest` whose answers
land in a :class:`Answers` the test waits on.
"""
from __future__ import annotations

import threading
import time

import numpy as np

from triton_grpc_server._ext.wire import InferRequest
from triton_grpc_server.backends.base import ArrayBackendInstance
from triton_grpc_server.scheduler.base import ScheduledRequest
from triton_grpc_server.senders import ResponseSender


class GatedInstance(ArrayBackendInstance):
    """``OUTPUT0 = INPUT0 * 2`` (and ``BYTES_OUT = TEXT`` when sent), after the gate opens.

    ``hold(values)`` closes the gate for the executions that start from then on
    (only those whose first ``INPUT0`` value is in ``values``, if given);
    ``started`` counts executions begun; ``batches`` records each one's inputs
    as it finishes, ``finished`` its first ``INPUT0`` value.
    """

    def __init__(self, name: str = "gated"):
        self.name = name
        self.gate = threading.Event()
        self.gate.set()
        self.held_values = None
        self.cond = threading.Condition()
        self.started = 0
        self.batches, self.outputs, self.finished = [], [], []
        self.threads = set()

    def hold(self, values=None) -> None:
        self.held_values = None if values is None else set(values)
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    def wait_started(self, count: int, timeout: float = 30.0) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: self.started >= count, timeout), \
                f"{self.started} of {count} executions started"

    def run(self, inputs, output_names, parameters):
        self.threads.add(threading.current_thread().name)
        with self.cond:
            self.started += 1
            self.cond.notify_all()
        first = float(np.asarray(inputs["INPUT0"]).reshape(-1)[0])
        if self.held_values is None or first in self.held_values:
            assert self.gate.wait(30), "gate never opened"
        self.batches.append({k: np.array(v) for k, v in inputs.items()})
        self.finished.append(first)
        out = {"OUTPUT0": inputs["INPUT0"] * 2}
        if "TEXT" in inputs:
            out["BYTES_OUT"] = inputs["TEXT"]
        self.outputs.append(out)
        return out


class Answers:
    """Every answer of every request, in arrival order: ``(tag, value_or_error, final)``."""

    def __init__(self):
        self.cond = threading.Condition()
        self.items: list[tuple] = []

    def sender(self, tag) -> ResponseSender:
        answers = self

        class _Sender(ResponseSender):
            def send(self, response, *, final):
                answers._add(tag, response, final)

            def send_error(self, error, *, final=True):
                answers._add(tag, error, final)
        return _Sender()

    def _add(self, tag, value, final) -> None:
        with self.cond:
            self.items.append((tag, value, final))
            self.cond.notify_all()

    def wait(self, count: int, timeout: float = 30.0) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.items) >= count, timeout), \
                f"only {len(self.items)} of {count} answers"

    @property
    def order(self) -> list:
        return [tag for tag, _, _ in self.items]

    def of(self, tag):
        for t, value, _ in self.items:
            if t == tag:
                return value
        raise KeyError(tag)


def work(answers: Answers, tag, value: float = 0.0, rows: int = 1, *, priority: int = 0,
         timeout_us: int = 0, stats=None, text: bool = False,
         names=("OUTPUT0",)) -> ScheduledRequest:
    parameters = {}
    if priority:
        parameters["priority"] = priority
    if timeout_us:
        parameters["timeout"] = timeout_us
    request = InferRequest(model_name="gated", id=str(tag), parameters=parameters,
                           sender=answers.sender(tag))
    inputs = {"INPUT0": np.full([rows, 2], value, np.float32)}
    if text:
        inputs["TEXT"] = np.array([[f"r{tag}".encode()]] * rows, dtype=object)
    return ScheduledRequest(request, None, inputs, list(names), {}, rows, stats=stats)


def wait_until(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)
