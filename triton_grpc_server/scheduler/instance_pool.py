"""The scheduler without dynamic batching: each request runs on the next free instance.

The calling RPC thread takes a free instance and runs the request itself, so
N instances serve N requests at once and one instance never runs two. While
all instances are busy callers wait in arrival order (a freed instance is
handed to the longest waiter, as Triton's FIFO queue would), and a caller
whose client goes away leaves the line without running.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable, Mapping, Optional, Sequence

from ..backends.base import BackendInstance
from ..errors import Unavailable
from ..stats import BACKEND, ModelStats, RequestTiming
from .base import CANCEL_POLL_SECS, RequestCancelled

_now = time.monotonic_ns


class _Waiter:
    __slots__ = ("event", "instance")

    def __init__(self):
        self.event = threading.Event()
        self.instance: Optional[BackendInstance] = None


class InstancePool:
    def __init__(self, instances: Sequence[BackendInstance], stats: Optional[ModelStats] = None):
        self.instances = list(instances)
        self.stats = stats if stats is not None else ModelStats()
        self._lock = threading.Lock()
        self._free = list(reversed(self.instances))
        self._waiters: deque[_Waiter] = deque()
        self._closed = False

    def execute(self, inputs: Mapping[str, Any], output_names: Sequence[str],
                parameters: Mapping[str, Any], *, batch: int = 0,
                timing: Optional[RequestTiming] = None, priority: int = 0, timeout_us: int = 0,
                cancelled: Optional[Callable[[], bool]] = None) -> Mapping[str, Any]:
        if self._closed:
            raise Unavailable("model is unloading")
        enqueued = _now()
        instance = self._acquire(cancelled, timing)
        try:
            if cancelled is not None and cancelled():
                if timing is not None:
                    timing.failure = RequestCancelled.failure
                raise RequestCancelled()
            start = _now()
            try:
                outputs = instance.execute(inputs, output_names, parameters)
            except BaseException:
                if timing is not None:
                    timing.failure = BACKEND
                raise
            end = _now()
        finally:
            self._release(instance)
        self.stats.executed(batch, 0, end - start, 0)
        if timing is not None:
            timing.queue_ns = start - enqueued
            timing.compute_infer_ns = end - start
        return outputs

    def _acquire(self, cancelled, timing) -> BackendInstance:
        with self._lock:
            if self._free and not self._waiters:
                return self._free.pop()
            waiter = _Waiter()
            self._waiters.append(waiter)
        stats = self.stats
        stats.enqueued()
        try:
            if cancelled is None:
                waiter.event.wait()
                return waiter.instance
            while not waiter.event.wait(CANCEL_POLL_SECS):
                if cancelled():
                    with self._lock:
                        if waiter.instance is None:  # still in line: leave it
                            self._waiters.remove(waiter)
                            if timing is not None:
                                timing.failure = RequestCancelled.failure
                            raise RequestCancelled()
                    break  # an instance arrived meanwhile; execute() checks again
            return waiter.instance
        finally:
            stats.dequeued()

    def _release(self, instance: BackendInstance) -> None:
        with self._lock:
            if self._waiters:
                waiter = self._waiters.popleft()
                waiter.instance = instance
                waiter.event.set()
            else:
                self._free.append(instance)

    def close(self) -> None:
        self._closed = True
        for instance in self.instances:
            instance.close()
