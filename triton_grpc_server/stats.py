"""Per-model-version inference statistics, as Triton's ModelStatistics reports them.

The data plane opens a :class:`RequestTiming` when a request reaches its model;
the scheduler fills in the queue and compute durations and records each
execution (one batch) with :meth:`ModelStats.executed`; the data plane closes
the request with :meth:`ModelStats.succeeded` or :meth:`ModelStats.failed`.
Everything is timed with ``time.monotonic_ns``; only ``last_inference`` is a
wall-clock timestamp (milliseconds since the epoch), as Triton defines it.

The Prometheus collector (:mod:`metrics`) reads the same counters at scrape
time, so the hot path pays for one lock per event and nothing more.
"""
from __future__ import annotations

import threading
import time
from typing import Optional

# nv_inference_request_failure{reason=...}: Triton's failure reasons.
REJECTED, CANCELED, BACKEND, OTHER = "REJECTED", "CANCELED", "BACKEND", "OTHER"
FAILURE_REASONS = (REJECTED, CANCELED, BACKEND, OTHER)

# Set by the metrics module when latency summaries are enabled: makes the object each
# version's stats feed with every successful request's durations (``observe``).
summary_factory = None


class RequestTiming:
    """One request's durations in nanoseconds, filled in as it moves through the server."""

    __slots__ = ("start_ns", "queue_ns", "compute_input_ns", "compute_infer_ns",
                 "compute_output_ns", "failure")

    def __init__(self, start_ns: Optional[int] = None):
        self.start_ns = time.monotonic_ns() if start_ns is None else start_ns
        self.queue_ns = self.compute_input_ns = self.compute_infer_ns = self.compute_output_ns = 0
        self.failure: Optional[str] = None  # a FAILURE_REASONS value set by the scheduler


class Duration:
    """A ``StatisticDuration``: how many, and their total nanoseconds."""

    __slots__ = ("count", "ns")

    def __init__(self, count: int = 0, ns: int = 0):
        self.count, self.ns = count, ns

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns


class BatchStats:
    __slots__ = ("compute_input", "compute_infer", "compute_output")

    def __init__(self):
        self.compute_input = Duration()
        self.compute_infer = Duration()
        self.compute_output = Duration()


class ModelStats:
    """Counters of one loaded model version; thread-safe, cheap to update."""

    def __init__(self):
        self._lock = threading.Lock()
        self.success = Duration()
        self.fail = Duration()
        self.queue = Duration()
        self.compute_input = Duration()
        self.compute_infer = Duration()
        self.compute_output = Duration()
        self.inference_count = 0   # items (a batch of 8 counts 8)
        self.execution_count = 0   # executions (batches)
        self.last_inference_ms = 0
        self.batch_stats: dict[int, BatchStats] = {}
        self.failures = dict.fromkeys(FAILURE_REASONS, 0)
        self.pending = 0           # requests queued, not yet executing
        self.summaries = summary_factory() if summary_factory is not None else None

    # -- scheduler events ------------------------------------------------
    def enqueued(self, count: int = 1) -> None:
        with self._lock:
            self.pending += count

    def dequeued(self, count: int = 1) -> None:
        with self._lock:
            self.pending -= count

    def executed(self, batch_size: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        """One execution of ``batch_size`` items (0 for models without a batch dimension)."""
        items = batch_size or 1
        with self._lock:
            self.inference_count += items
            self.execution_count += 1
            self.last_inference_ms = time.time_ns() // 1_000_000
            stats = self.batch_stats.get(items)
            if stats is None:
                stats = self.batch_stats[items] = BatchStats()
            # Duration.add inlined (hot path).
            stats.compute_input.count += 1
            stats.compute_input.ns += input_ns
            stats.compute_infer.count += 1
            stats.compute_infer.ns += infer_ns
            stats.compute_output.count += 1
            stats.compute_output.ns += output_ns

    # -- data plane events -----------------------------------------------
    def succeeded(self, timing: RequestTiming) -> None:
        duration = time.monotonic_ns() - timing.start_ns
        # Duration.add inlined: five method calls per request add up on the hot path.
        success, queue = self.success, self.queue
        compute_input, compute_infer, compute_output = (
            self.compute_input, self.compute_infer, self.compute_output)
        with self._lock:
            success.count += 1
            success.ns += duration
            queue.count += 1
            queue.ns += timing.queue_ns
            compute_input.count += 1
            compute_input.ns += timing.compute_input_ns
            compute_infer.count += 1
            compute_infer.ns += timing.compute_infer_ns
            compute_output.count += 1
            compute_output.ns += timing.compute_output_ns
        if self.summaries is not None:
            self.summaries.observe(duration, timing.queue_ns, timing.compute_input_ns,
                                   timing.compute_infer_ns, timing.compute_output_ns)

    def failed(self, timing: RequestTiming) -> None:
        duration = time.monotonic_ns() - timing.start_ns
        reason = timing.failure or OTHER
        with self._lock:
            self.fail.add(duration)
            self.failures[reason] += 1

    def snapshot(self) -> "ModelStats":
        """A consistent copy, for readers (the statistics RPC, a metrics scrape)."""
        copy = ModelStats.__new__(ModelStats)
        with self._lock:
            for name in ("success", "fail", "queue", "compute_input", "compute_infer",
                         "compute_output"):
                value = getattr(self, name)
                setattr(copy, name, Duration(value.count, value.ns))
            copy.inference_count = self.inference_count
            copy.execution_count = self.execution_count
            copy.last_inference_ms = self.last_inference_ms
            copy.failures = dict(self.failures)
            copy.pending = self.pending
            copy.batch_stats = {}
            for size, stats in self.batch_stats.items():
                clone = copy.batch_stats[size] = BatchStats()
                for name in ("compute_input", "compute_infer", "compute_output"):
                    value = getattr(stats, name)
                    setattr(clone, name, Duration(value.count, value.ns))
        return copy


def select_statistics(repository, name: str = "",
                      version: str = "") -> list[tuple[str, int, ModelStats]]:
    """``(model, version, snapshot)`` rows the ModelStatistics RPC reports, with Triton's errors.

    No name: every READY version of every model. A name: its READY versions, or
    only ``version`` when one is given (parsed as Triton parses version strings).
    """
    from .errors import InvalidArgument
    from .repository.manager import parse_version

    number = parse_version(version) if name else -1
    rows = []
    for model, entry in sorted(repository.entries().items()):
        if name and model != name:
            continue
        for found, model_version in sorted(entry.versions.items()):
            if model_version.ready and (number == -1 or found == number):
                rows.append((model, found, model_version.stats.snapshot()))
    if not rows:
        if name and number != -1 and any(v.ready for v in _versions(repository, name)):
            raise InvalidArgument(f"requested model version is not available for model '{name}'")
        raise InvalidArgument(f"requested model '{name}' is not available")
    return rows


def _versions(repository, name: str):
    entry = repository.entries().get(name)
    return entry.versions.values() if entry is not None else ()
