"""The scheduler without dynamic batching: each request runs on the next free instance.

The calling RPC thread takes a free instance and runs the request itself, so
N instances serve N requests at once and one instance never runs two. While
all instances are busy the caller waits, and gives up if its client goes.
"""
from __future__ import annotations

import queue
import time
from typing import Any, Callable, Mapping, Optional, Sequence

from ..backends.base import BackendInstance
from ..errors import Unavailable
from ..stats import BACKEND, ModelStats, RequestTiming
from .base import CANCEL_POLL_SECS, RequestCancelled

_now = time.monotonic_ns


class InstancePool:
    def __init__(self, instances: Sequence[BackendInstance], stats: Optional[ModelStats] = None):
        self.instances = list(instances)
        self.stats = stats if stats is not None else ModelStats()
        self._free: "queue.SimpleQueue[BackendInstance]" = queue.SimpleQueue()
        for instance in self.instances:
            self._free.put(instance)
        self._closed = False

    def execute(self, inputs: Mapping[str, Any], output_names: Sequence[str],
                parameters: Mapping[str, Any], *, batch: int = 0,
                timing: Optional[RequestTiming] = None, priority: int = 0, timeout_us: int = 0,
                cancelled: Optional[Callable[[], bool]] = None) -> Mapping[str, Any]:
        if self._closed:
            raise Unavailable("model is unloading")
        stats = self.stats
        enqueued = _now()
        stats.enqueued()
        try:
            instance = self._free.get_nowait()
        except queue.Empty:
            instance = self._wait_for_instance(cancelled, timing)
        stats.dequeued()
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
            self._free.put(instance)
        stats.executed(batch, 0, end - start, 0)
        if timing is not None:
            timing.queue_ns = start - enqueued
            timing.compute_infer_ns = end - start
        return outputs

    def _wait_for_instance(self, cancelled, timing) -> BackendInstance:
        while True:
            try:
                return self._free.get(timeout=CANCEL_POLL_SECS if cancelled else None)
            except queue.Empty:
                if cancelled():
                    self.stats.dequeued()
                    if timing is not None:
                        timing.failure = RequestCancelled.failure
                    raise RequestCancelled() from None

    def close(self) -> None:
        self._closed = True
        for instance in self.instances:
            instance.close()
