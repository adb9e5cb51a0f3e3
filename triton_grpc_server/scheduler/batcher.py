"""Triton's dynamic batcher: gather compatible requests into one execution.

``enqueue`` puts the request in a :class:`~.queues.PriorityQueue` and returns.
One batcher thread per model version forms a batch whenever an instance is
free: it takes the first queued request and every later one whose inputs
agree beyond the batch dimension (and whose parameters are equal), up to
``max_batch_size`` items. The batch goes out at once when it is full, or when
it reaches the largest ``preferred_batch_size`` the queue can make, or when its
oldest request has waited ``max_queue_delay_microseconds``. Each instance has a
worker thread, so N instances run N batches at once. A request that finds the
queue empty and an instance free (and no queue delay configured) goes straight
to that instance's worker, saving the hand-off through the batcher thread.

The instance concatenates the inputs (``ArrayBackendInstance``: one copy per
request; a batch of one goes through untouched) and answers each request with
views of its rows. With ``preserve_ordering`` answers are held and released
in arrival order. A queued request whose client goes away leaves the queue
through its cancel callback, at once.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Mapping, Optional, Sequence

from ..backends.base import BackendInstance
from ..errors import TritonError, Unavailable
from ..stats import ModelStats
from .base import RequestCancelled, ScheduledRequest
from .instance_pool import InstanceWorker
from .base import DROPPED, QUEUED, TAKEN, QueueFull, QueueTimeout
from .queues import PriorityQueue

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
    """Releases requests' answers strictly in arrival (sequence) order."""

    def __init__(self):
        self._lock = threading.Lock()
        self._next = 0
        self._held: dict[int, "_OrderedSender"] = {}

    def complete(self, sender: "_OrderedSender") -> None:
        ready = []
        with self._lock:
            self._held[sender.seq] = sender
            while self._next in self._held:
                ready.append(self._held.pop(self._next))
                self._next += 1
        for done in ready:
            done.flush()


class _OrderedSender:
    """Holds a request's answers until every earlier request has been answered."""

    streaming = False

    def __init__(self, gate: _OrderGate, seq: int, sender):
        self.gate, self.seq, self.sender = gate, seq, sender
        self.streaming = getattr(sender, "streaming", False)
        self.items: list = []

    def send(self, response, *, final: bool) -> None:
        self.items.append((False, response, final))
        if final:
            self.gate.complete(self)

    def send_error(self, error, *, final: bool = True) -> None:
        self.items.append((True, error, final))
        if final:
            self.gate.complete(self)

    def flush(self) -> None:
        for is_error, value, final in self.items:
            if is_error:
                self.sender.send_error(value, final=final)
            else:
                self.sender.send(value, final=final)
        self.items = []


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
        # a request that finds the queue empty and an instance free goes to it directly
        # unless it should wait for company (a queue delay)
        self._direct = self.delay_ns == 0
        self.queue = PriorityQueue(batching)
        self._cond = threading.Condition(threading.Lock())
        self._seq = 0
        self._closing = False
        self._order = _OrderGate() if batching.preserve_ordering else None
        self._workers = [InstanceWorker(instance, f"instance-{self.name}-{i}", self._worker_idle)
                         for i, instance in enumerate(self.instances)]
        self._free = list(self._workers)
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"batcher-{self.name}")
        self._thread.start()

    # -- enqueue (the frontend's thread) ---------------------------------------
    def enqueue(self, work: ScheduledRequest) -> None:
        work.key = batch_key(work.inputs, work.parameters)
        worker = None
        error = None
        with self._cond:
            if self._closing:
                error = Unavailable(f"model '{self.name}' is unloading")
            elif self._direct and not self.queue.size and self._free:
                # Nothing to batch with and nothing to wait for: straight to the instance
                # (what the batcher would do at once, without its thread's hand-off).
                worker = self._free.pop()
                work.state = TAKEN
                work.enqueue_ns = _now()
            else:
                try:
                    self.queue.put(work, work.priority, work.timeout_us, _now())
                except QueueFull as exc:
                    error = exc
                else:
                    self.stats.enqueued()
                    self._cond.notify()
            if error is None:
                work.seq = self._seq
                self._seq += 1
                if self._order is not None:
                    work.sender = _OrderedSender(self._order, work.seq, work.sender)
        if error is not None:
            work.respond_error(error)
        elif worker is not None:
            worker.jobs.put([work])
        else:
            work.request.add_cancel_callback(lambda: self._drop(work))

    def _drop(self, work: ScheduledRequest) -> None:
        """A queued request's client went away: out of the queue, answered CANCELLED."""
        with self._cond:
            if work.state != QUEUED:
                return  # taken meanwhile; the worker checks the flag before running it
            work.state = DROPPED
            self.queue.remove_marked(1)
            self.stats.dequeued()
            self._cond.notify()
        work.respond_error(RequestCancelled())

    def _worker_idle(self, worker: InstanceWorker) -> None:
        """A worker finished its batch: it is free again, and the batcher may form the next."""
        with self._cond:
            self._free.append(worker)
            self._cond.notify()
        return None

    # -- the batcher thread ----------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                work = self._next()
                if work is _STOP:
                    return
                worker, batch, failed, error_type = work
                for request in failed:
                    request.respond_error(error_type())
                if batch:
                    worker.jobs.put(batch)
        except BaseException:  # never expected; fail what is queued rather than strand it
            log.exception("batcher for model '%s' stopped", self.name)
            with self._cond:
                self._closing = True
                stranded = [r for r in self.queue if r.state == QUEUED]
                for request in stranded:
                    request.state = DROPPED
                self.queue.remove_marked(len(stranded))
            for request in stranded:
                request.respond_error(TritonError(f"batcher for model '{self.name}' stopped"))

    def _next(self):
        """Under the lock: wait until there is a batch to run or requests to fail."""
        cond = self._cond
        with cond:
            while True:
                now = _now()
                if self.queue.has_timeouts and self.queue.size:
                    expired = self.queue.expire(now)
                    if expired:
                        for request in expired:
                            request.state = DROPPED
                        self.stats.dequeued(len(expired))
                        return None, None, expired, QueueTimeout
                if self._closing and not self.queue.size and len(self._free) == len(self._workers):
                    return _STOP
                wake = self.queue.next_deadline()
                if self.queue.size and self._free:
                    batch, ready_at, dropped = self._form(now)
                    if dropped:
                        for request in dropped:
                            request.state = DROPPED
                        self.queue.remove_marked(len(dropped))
                        self.stats.dequeued(len(dropped))
                        return None, None, dropped, RequestCancelled
                    if batch:
                        for request in batch:
                            request.state = TAKEN
                        self.queue.remove_marked(len(batch))
                        self.stats.dequeued(len(batch))
                        return self._free.pop(), batch, (), None
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
            if request.request.cancelled:  # its callback is on the way; don't batch it
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

    def close(self, timeout: float = 30.0) -> None:
        """Finish what is queued, stop the threads and close the instances."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        for worker in self._workers:
            worker.stop()
        for worker in self._workers:
            worker.thread.join(timeout)
        for instance in self.instances:
            instance.close()
