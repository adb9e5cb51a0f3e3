"""The scheduler without dynamic batching: each request runs on the next free instance.

``enqueue`` returns at once. Every instance has a worker thread; a request
that finds an instance free goes straight to its worker, otherwise it waits in
one FIFO line (a freed instance takes the longest waiter, as Triton's FIFO
queue would). N instances serve N requests at once and one instance never runs
two. A waiting request whose client goes away is taken out of the line by its
cancel callback and answered CANCELLED without running.
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


class InstanceWorker:
    """One instance and the thread that runs its work, one batch at a time.

    ``take_next()`` (the scheduler's) returns the next batch for this worker or
    ``None``, in which case the worker is idle until ``jobs`` gets one.
    """

    def __init__(self, instance: BackendInstance, name: str, take_next):
        self.instance = instance
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
                    run_batch(self.instance, batch)
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
                                        self._next_for)
                         for i, instance in enumerate(self.instances)]
        self._free = list(reversed(self._workers))

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
            worker.jobs.put([work])
        else:
            work.request.add_cancel_callback(lambda: self._drop(work))

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
        for instance in self.instances:
            instance.close()
