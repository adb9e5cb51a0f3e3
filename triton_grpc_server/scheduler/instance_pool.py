"""The scheduler without dynamic batching: each request runs on the next free instance.

``enqueue`` returns at once. Every instance has a worker thread; a request
that finds an instance free goes straight to its worker, otherwise it waits in
one FIFO line (a freed instance takes the longest waiter, as Triton's FIFO
queue would). N instances serve N requests at once and one instance never runs
two. A waiting request whose client goes away is taken out of the line by its
cancel callback and answered CANCELLED without running.

A request that finds an instance free runs on the enqueueing thread itself (the
event loop) when the instance says it may (``may_run_inline``: computes on the
calling thread, waits on nothing) and the pool's recent executions are short
(:data:`INLINE_BELOW_NS`): handing a 20 µs ONNX Runtime run to a worker thread and
the answer back costs two thread wake-ups and GIL hand-offs, more than the run.
Long executions (large tensors, big models) keep the worker threads, so the loop
goes on reading other connections while they run.
"""
from __future__ import annotations

import logging
import queue as queue_module
import threading
import time
from collections import deque
from typing import Optional, Sequence

from ..backends.base import BackendInstance
from ..errors import Unavailable
from ..stats import ModelStats
from .base import DROPPED, QUEUED, TAKEN, RequestCancelled, ScheduledRequest, run_batch

log = logging.getLogger(__name__)
_now = time.monotonic_ns

# Inline only while the average execution (exponential moving averages over the
# pool's runs, inline or threaded) costs less CPU than this, and only after a few
# threaded runs have measured it: a slow model never blocks the loop for long. CPU
# time of the running thread, not wall time, because on a busy machine wall time
# mostly measures the neighbours; the wall-time bound catches a run that waits.
INLINE_BELOW_NS = 100_000
INLINE_WALL_BELOW_NS = 1_000_000
INLINE_AFTER_RUNS = 8
# Nor for requests with more input than this: while a large tensor is copied through
# the model, the loop could be reading other connections (4 MiB inline measured at
# about half the throughput of the worker thread).
INLINE_MAX_INPUT_BYTES = 64 * 1024
_EMA_WEIGHT = 1 / 8
# A sample counts at most this many times its bound: one run preempted by the neighbours
# (or, on a worker thread, kept waiting for the GIL) then moves an average by at most a
# quarter of the bound, so it alone can't end inline running (unclipped, 2% of add_sub's
# runs under a profiler flipped the pool to its worker threads, and each flip sent about
# ten requests through the hand-off queue), while a model whose runs all take longer
# still crosses the bound within six runs.
_SAMPLE_CLIP = 2
_cpu_now = time.thread_time_ns


def _input_bytes(work: ScheduledRequest) -> int:
    return sum(getattr(array, "nbytes", 0) for array in work.inputs.values())


class InstanceWorker:
    """One instance and the thread that runs its work, one batch at a time.

    ``take_next()`` (the scheduler's) returns the next batch for this worker or
    ``None``, in which case the worker is idle until ``jobs`` gets one.
    """

    def __init__(self, instance: BackendInstance, name: str, take_next, execute=run_batch):
        self.instance = instance
        self._execute = execute
        self.jobs: "queue_module.SimpleQueue" = queue_module.SimpleQueue()
        self._take_next = take_next
        self.thread = threading.Thread(target=self._run, daemon=True, name=name)
        self.thread.start()

    def _run(self) -> None:
        while True:
            batch = self.jobs.get()
            if batch is None:
                return
            while batch is not None:
                try:
                    self._execute(self.instance, batch)
                except BaseException:  # never expected: keep the instance serving
                    log.exception("worker %s", self.thread.name)
                batch = self._take_next(self)

    def stop(self) -> None:
        """Exit once the batch running now (if any) is done."""
        self.jobs.put(None)


class InstancePool:
    def __init__(self, instances: Sequence[BackendInstance], stats: Optional[ModelStats] = None,
                 name: str = ""):
        self.instances = list(instances)
        self.stats = stats if stats is not None else ModelStats()
        self._lock = threading.Lock()
        self._waiting: deque[ScheduledRequest] = deque()
        self._closed = False
        self._workers = [InstanceWorker(instance, f"instance-{name or instance.name}-{i}",
                                        self._next_for, self._timed_run)
                         for i, instance in enumerate(self.instances)]
        self._free = list(reversed(self._workers))
        self._inline_capable = bool(self.instances) and all(
            getattr(i, "may_run_inline", False) for i in self.instances)
        self._runs = 0
        self._exec_ns = 0.0  # moving averages of one execution's CPU and wall time
        self._wall_ns = 0.0
        self._inline_running = 0  # close() waits for these as it joins the worker threads

    def _timed_run(self, instance, batch) -> None:
        if not self._inline_capable:
            run_batch(instance, batch)
            return
        start, cpu = _now(), _cpu_now()
        run_batch(instance, batch)
        cpu = min(_cpu_now() - cpu, _SAMPLE_CLIP * INLINE_BELOW_NS)
        wall = min(_now() - start, _SAMPLE_CLIP * INLINE_WALL_BELOW_NS)
        # Updated without the lock: a lost update only nudges a heuristic.
        weight = _EMA_WEIGHT if self._runs else 1.0
        self._exec_ns += (cpu - self._exec_ns) * weight
        self._wall_ns += (wall - self._wall_ns) * weight
        self._runs += 1

    @property
    def runs_inline(self) -> bool:
        """Whether a request that finds an instance free runs on the enqueueing thread."""
        return (self._inline_capable and self._runs >= INLINE_AFTER_RUNS
                and self._exec_ns < INLINE_BELOW_NS and self._wall_ns < INLINE_WALL_BELOW_NS)

    def enqueue(self, work: ScheduledRequest) -> None:
        work.enqueue_ns = _now()
        with self._lock:
            if self._closed:
                worker = None
                closed = True
            else:
                closed = False
                if self._free and not self._waiting:
                    worker = self._free.pop()
                    work.state = TAKEN
                else:
                    worker = None
                    work.state = QUEUED
                    self._waiting.append(work)
                    self.stats.enqueued()
        if closed:
            work.respond_error(Unavailable("model is unloading"))
        elif worker is not None:
            if self.runs_inline and _input_bytes(work) <= INLINE_MAX_INPUT_BYTES:
                with self._lock:
                    self._inline_running += 1
                self._run_inline(worker, work)
            else:
                worker.jobs.put([work])
        else:
            work.request.add_cancel_callback(lambda: self._drop(work))

    def _run_inline(self, worker: InstanceWorker, work: ScheduledRequest) -> None:
        """Run on this thread with ``worker``'s instance, which this thread now holds."""
        try:
            self._timed_run(worker.instance, [work])
        except BaseException:  # run_batch answers the request; keep the instance serving
            log.exception("inline run on %s", worker.thread.name)
        # Requests that queued meanwhile (other threads' enqueues) go to the worker thread.
        batch = self._next_for(worker)
        with self._lock:
            self._inline_running -= 1
        if batch is not None:
            worker.jobs.put(batch)

    def _drop(self, work: ScheduledRequest) -> None:
        """A waiting request's client went away: leave the line without running."""
        with self._lock:
            if work.state != QUEUED:
                return  # already given to an instance; the worker checks the flag
            work.state = DROPPED
            self._waiting.remove(work)
            self.stats.dequeued()
        work.respond_error(RequestCancelled())

    def _next_for(self, worker: InstanceWorker) -> Optional[list]:
        with self._lock:
            if self._waiting:
                work = self._waiting.popleft()
                work.state = TAKEN
                self.stats.dequeued()
                return [work]
            self._free.append(worker)
            return None

    def close(self, timeout: float = 30.0) -> None:
        with self._lock:
            self._closed = True
            stranded = list(self._waiting)
            self._waiting.clear()
            for work in stranded:
                work.state = DROPPED
            self.stats.dequeued(len(stranded))
        for work in stranded:
            work.respond_error(Unavailable("model is unloading"))
        for worker in self._workers:
            worker.stop()
        for worker in self._workers:
            if worker.thread is not threading.current_thread():
                worker.thread.join(timeout)
        deadline = time.monotonic() + timeout
        while self._inline_running and time.monotonic() < deadline:
            time.sleep(0.001)  # an inline run on another thread finishes first
        for instance in self.instances:
            instance.close()
