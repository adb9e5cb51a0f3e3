"""Triton's dynamic batcher: gather compatible requests into one execution.

Calling RPC threads put their request in a :class:`~.queues.PriorityQueue`
and block on an event. One batcher thread per model version forms a batch
whenever an instance is free: it takes the first queued request and every
later one whose inputs agree beyond the batch dimension (and whose parameters
are equal), up to ``max_batch_size`` items. The batch goes out at once when it
is full, or when it reaches the largest ``preferred_batch_size`` the queue can
make, or when its oldest request has waited ``max_queue_delay_microseconds``.
Each instance has a worker thread, so N instances run N batches at once. A
request that finds the queue empty and an instance free (and no queue delay
configured) runs on its own RPC thread instead, saving two thread hand-offs.

Inputs are concatenated along dimension 0 (one copy per request; a batch of
one goes through untouched) and each request gets views of its rows of the
outputs. With ``preserve_ordering`` responses are released in arrival order.
"""
from __future__ import annotations

import logging
import queue as queue_module
import threading
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from .. import logs
from ..backends.base import BackendInstance
from ..errors import TritonError, Unavailable
from ..stats import BACKEND, REJECTED, ModelStats, RequestTiming
from .base import CANCEL_POLL_SECS, QueueFull, QueueTimeout, RequestCancelled, backend_error
from .queues import DROPPED, QUEUED, TAKEN, PriorityQueue, QueuedRequest

log = logging.getLogger(__name__)
_now = time.monotonic_ns
_STOP = object()


def batch_key(inputs: Mapping[str, Any], parameters: Mapping[str, Any]) -> tuple:
    """Requests with equal keys can share a batch."""
    key = tuple(sorted((name, array.shape[1:]) for name, array in inputs.items()))
    if parameters:
        key += (tuple(sorted(parameters.items())),)
    return key


class _OrderGate:
    """Releases finished requests strictly in arrival (sequence) order."""

    def __init__(self):
        self._lock = threading.Lock()
        self._next = 0
        self._held: dict[int, QueuedRequest] = {}

    def complete(self, request: QueuedRequest) -> None:
        ready = []
        with self._lock:
            self._held[request.seq] = request
            while self._next in self._held:
                ready.append(self._held.pop(self._next))
                self._next += 1
        for done in ready:
            done.done.set()


class _Worker:
    """One instance and the thread that runs its batches."""

    def __init__(self, batcher: "DynamicBatcher", instance: BackendInstance, index: int):
        self.instance = instance
        self.index = index
        self.jobs: "queue_module.SimpleQueue" = queue_module.SimpleQueue()
        self.thread = threading.Thread(target=self._run, args=(batcher,), daemon=True,
                                       name=f"instance-{batcher.name}-{index}")
        self.thread.start()

    def _run(self, batcher: "DynamicBatcher") -> None:
        while True:
            batch = self.jobs.get()
            if batch is None:
                return
            batcher._execute(self, batch)


class DynamicBatcher:
    def __init__(self, config, instances: Sequence[BackendInstance],
                 stats: Optional[ModelStats] = None):
        batching = config.dynamic_batching
        self.name = config.name
        self.instances = list(instances)
        self.stats = stats if stats is not None else ModelStats()
        self.max_batch = config.max_batch_size
        self.preferred = frozenset(s for s in batching.preferred_batch_size
                                   if 0 < s <= self.max_batch)
        self.delay_ns = batching.max_queue_delay_microseconds * 1000
        # a request that finds the queue empty and an instance free runs on its own thread
        # unless it should wait for company (a queue delay) or could be dropped first
        self._direct = self.delay_ns == 0
        self.queue = PriorityQueue(batching)
        self._cond = threading.Condition(threading.Lock())
        self._seq = 0
        self._closing = False
        self._order = _OrderGate() if batching.preserve_ordering else None
        self._workers = [_Worker(self, instance, i) for i, instance in enumerate(self.instances)]
        self._free = list(self._workers)
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"batcher-{self.name}")
        self._thread.start()

    # -- the calling RPC thread -------------------------------------------
    def execute(self, inputs: Mapping[str, Any], output_names: Sequence[str],
                parameters: Mapping[str, Any], *, batch: int = 0,
                timing: Optional[RequestTiming] = None, priority: int = 0, timeout_us: int = 0,
                cancelled: Optional[Callable[[], bool]] = None) -> Mapping[str, Any]:
        if timing is None:
            timing = RequestTiming()
        request = QueuedRequest(inputs, output_names, parameters, batch,
                                batch_key(inputs, parameters), timing, cancelled)
        request.done = threading.Event()
        worker = None
        with self._cond:
            if self._closing:
                raise Unavailable(f"model '{self.name}' is unloading")
            if self._direct and not self.queue.size and self._free:
                # Nothing to batch with and nothing to wait for: run it on this thread
                # (what the batcher would do at once, without two thread hand-offs).
                worker = self._free.pop()
                request.state = TAKEN
                request.enqueue_ns = _now()
            else:
                try:
                    self.queue.put(request, priority, timeout_us, _now())
                except QueueFull:
                    timing.failure = REJECTED
                    raise
                self.stats.enqueued()
                self._cond.notify()
            request.seq = self._seq
            self._seq += 1
        if worker is not None:
            self._execute(worker, [request])
        self._wait(request)
        error = request.error
        if error is not None:
            if not isinstance(error, (QueueTimeout, RequestCancelled)):
                error = backend_error(error)
            timing.failure = getattr(error, "failure", BACKEND)
            raise error
        return request.outputs

    def _wait(self, request: QueuedRequest) -> None:
        done, cancelled = request.done, request.cancelled
        if cancelled is None:
            done.wait()
            return
        while not done.wait(CANCEL_POLL_SECS):
            if cancelled() and self._drop(request):
                request.error = RequestCancelled()
                return

    def _drop(self, request: QueuedRequest) -> bool:
        """Take a request whose client went away out of the queue; false if already taken."""
        with self._cond:
            if request.state != QUEUED:
                return False
            request.state = DROPPED
            self.queue.remove_marked(1)
            self.stats.dequeued()
            self._cond.notify()
        if self._order is not None:
            self._order.complete(request)
        return True

    def _finish(self, request: QueuedRequest) -> None:
        if self._order is not None:
            self._order.complete(request)
        else:
            request.done.set()

    # -- the batcher thread ----------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                work = self._next()
                if work is _STOP:
                    return
                worker, batch, finished = work
                for request in finished:
                    self._finish(request)
                if batch:
                    worker.jobs.put(batch)
        except BaseException:  # never expected; fail what is queued rather than hang callers
            log.exception("batcher for model '%s' stopped", self.name)
            with self._cond:
                self._closing = True
                stranded = [r for r in self.queue if r.state == QUEUED]
                self.queue.remove_marked(len(stranded))
            for request in stranded:
                request.error = TritonError(f"batcher for model '{self.name}' stopped")
                self._finish(request)

    def _next(self):
        """Under the lock: wait until there is a batch to run or requests to finish."""
        cond = self._cond
        with cond:
            while True:
                now = _now()
                if self.queue.has_timeouts and self.queue.size:
                    expired = self.queue.expire(now)
                    if expired:
                        for request in expired:
                            request.state = DROPPED
                            request.error = QueueTimeout()
                        self.stats.dequeued(len(expired))
                        return None, None, expired
                if self._closing and not self.queue.size and len(self._free) == len(self._workers):
                    return _STOP
                wake = self.queue.next_deadline()
                if self.queue.size and self._free:
                    batch, ready_at, dropped = self._form(now)
                    if dropped:
                        for request in dropped:
                            request.state = DROPPED
                            request.error = RequestCancelled()
                        self.queue.remove_marked(len(dropped))
                        self.stats.dequeued(len(dropped))
                        return None, None, dropped
                    if batch:
                        for request in batch:
                            request.state = TAKEN
                        self.queue.remove_marked(len(batch))
                        self.stats.dequeued(len(batch))
                        return self._free.pop(), batch, ()
                    wake = min(wake, ready_at) if wake else ready_at
                cond.wait((wake - now) / 1e9 if wake else None)

    def _form(self, now: int):
        """(batch to send now or None, when to look again, cancelled requests to drop)."""
        head = self.queue.first()
        key, limit = head.key, self.max_batch
        chosen, dropped = [], []
        total = best = 0
        for request in self.queue:
            if request.key != key:
                continue
            if total + request.batch > limit:
                if total >= limit:
                    break
                continue
            if request.cancelled is not None and request.cancelled():
                dropped.append(request)
                continue
            chosen.append(request)
            total += request.batch
            if total in self.preferred:
                best = len(chosen)
            if total >= limit:
                break
        if dropped:
            return None, 0, dropped
        if total >= limit:
            return chosen, 0, ()
        if best:
            return chosen[:best], 0, ()
        if not self.delay_ns:
            return chosen, 0, ()
        oldest = min(r.enqueue_ns for r in chosen)
        if now - oldest >= self.delay_ns:
            return chosen, 0, ()
        return None, oldest + self.delay_ns, ()

    # -- the instance worker threads -------------------------------------------
    def _execute(self, worker: _Worker, batch: list[QueuedRequest]) -> None:
        start = _now()
        if logs.STATE.verbose:
            logs.verbose(log, 1, "model '%s': batch of %d request(s), %d item(s) on instance %d",
                         self.name, len(batch), sum(r.batch for r in batch), worker.index)
        try:
            inputs, output_names, parameters = self._gather(batch)
            gathered = _now()
            outputs = worker.instance.execute(inputs, output_names, parameters)
            executed = _now()
            self._scatter(batch, outputs)
            end = _now()
        except BaseException as exc:
            for request in batch:
                request.error = exc
        else:
            self.stats.executed(sum(r.batch for r in batch), gathered - start,
                                executed - gathered, end - executed)
            for request in batch:
                timing = request.timing
                timing.queue_ns = start - request.enqueue_ns
                timing.compute_input_ns = gathered - start
                timing.compute_infer_ns = executed - gathered
                timing.compute_output_ns = end - executed
        finally:
            with self._cond:
                self._free.append(worker)
                self._cond.notify()
            for request in batch:
                self._finish(request)

    @staticmethod
    def _gather(batch: list[QueuedRequest]):
        first = batch[0]
        if len(batch) == 1:
            return first.inputs, first.output_names, first.parameters
        inputs = {name: np.concatenate([r.inputs[name] for r in batch]) for name in first.inputs}
        output_names = list(dict.fromkeys(n for r in batch for n in r.output_names))
        return inputs, output_names, first.parameters

    def _scatter(self, batch: list[QueuedRequest], outputs: Mapping[str, Any]) -> None:
        if len(batch) == 1:
            batch[0].outputs = outputs
            return
        total = sum(r.batch for r in batch)
        arrays = {}
        for name, value in outputs.items():
            array = value if isinstance(value, np.ndarray) else np.asarray(value)
            if array.ndim == 0 or array.shape[0] != total:
                raise TritonError(
                    f"output '{name}' of model '{self.name}' has batch size "
                    f"{array.shape[0] if array.ndim else 0}, expected {total}")
            arrays[name] = array
        offset = 0
        for request in batch:
            end = offset + request.batch
            request.outputs = {n: arrays[n][offset:end]
                               for n in request.output_names if n in arrays}
            offset = end

    def close(self, timeout: float = 30.0) -> None:
        """Finish what is queued, stop the threads and close the instances."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        for worker in self._workers:
            worker.jobs.put(None)
        for worker in self._workers:
            worker.thread.join(timeout)
        for instance in self.instances:
            instance.close()
