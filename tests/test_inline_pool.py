"""The instance pool runs a short execution on the enqueueing thread (no hand-off).

In-process, with the gated fake instances of ``scheduler_fakes``: an instance that
may run inline (``may_run_inline``) runs on the caller once the pool has measured
its executions as short; one that may not, or whose executions are long, keeps its
worker thread; a request that queues behind an inline run goes to the worker thread.
"""
from __future__ import annotations

import threading

import pytest
from scheduler_fakes import Answers, GatedInstance, wait_until, work

from triton_grpc_server.scheduler import InstancePool, instance_pool
from triton_grpc_server.scheduler.instance_pool import INLINE_AFTER_RUNS
from triton_grpc_server.stats import ModelStats


@pytest.fixture(autouse=True)
def short_is_anything(monkeypatch):
    """Every fake execution counts as short (a test sets the bound lower to make it long),
    so no test depends on how fast this machine runs them."""
    monkeypatch.setattr(instance_pool, "INLINE_BELOW_NS", 10**12)
    monkeypatch.setattr(instance_pool, "INLINE_WALL_BELOW_NS", 10**12)


class InlineInstance(GatedInstance):
    may_run_inline = True

    def __init__(self, name="inline"):
        super().__init__(name)
        self.run_threads = []

    def run(self, inputs, output_names, parameters):
        self.run_threads.append(threading.current_thread())
        return super().run(inputs, output_names, parameters)


def _one_at_a_time(pool, answers, count, start=0):
    for i in range(start, start + count):
        pool.enqueue(work(answers, i, float(i)))
        answers.wait(i + 1)
        # the run's timing is recorded after its answer (only where inline is possible)
        wait_until(lambda: pool._runs >= i + 1 or not pool._inline_capable)


def test_short_executions_run_on_the_enqueueing_thread():
    instance = InlineInstance()
    pool = InstancePool([instance], ModelStats())
    answers = Answers()
    try:
        _one_at_a_time(pool, answers, INLINE_AFTER_RUNS)  # measured on the worker thread
        assert threading.current_thread() not in instance.run_threads
        assert pool.runs_inline
        _one_at_a_time(pool, answers, 4, start=INLINE_AFTER_RUNS)
        assert instance.run_threads[-4:] == [threading.current_thread()] * 4
        values = [float(answers.of(i)["OUTPUT0"][0][0]) for i in range(INLINE_AFTER_RUNS + 4)]
        assert values == [2.0 * i for i in range(INLINE_AFTER_RUNS + 4)]
    finally:
        pool.close()


def test_instances_that_may_not_run_inline_keep_their_thread():
    instance = GatedInstance()
    pool = InstancePool([instance], ModelStats())
    answers = Answers()
    try:
        _one_at_a_time(pool, answers, 3 * INLINE_AFTER_RUNS)
        assert not pool.runs_inline
        assert threading.current_thread().name not in instance.threads
    finally:
        pool.close()


def test_long_executions_keep_the_worker_thread(monkeypatch):
    monkeypatch.setattr(instance_pool, "INLINE_BELOW_NS", 1)  # every execution is "long"
    instance = InlineInstance()
    pool = InstancePool([instance], ModelStats())
    answers = Answers()
    try:
        _one_at_a_time(pool, answers, 2 * INLINE_AFTER_RUNS)
        assert not pool.runs_inline
        assert threading.current_thread() not in instance.run_threads
    finally:
        pool.close()


def test_request_queued_behind_an_inline_run_goes_to_the_worker_thread():
    instance = InlineInstance()
    pool = InstancePool([instance], ModelStats())
    answers = Answers()
    try:
        _one_at_a_time(pool, answers, INLINE_AFTER_RUNS)
        instance.hold()
        caller = threading.Thread(target=pool.enqueue, args=(work(answers, "a", 1.0),),
                                  name="caller")
        caller.start()
        instance.wait_started(INLINE_AFTER_RUNS + 1)  # running inline on "caller", held
        pool.enqueue(work(answers, "b", 2.0))          # no free instance: it waits
        assert len(answers.items) == INLINE_AFTER_RUNS
        instance.release()
        caller.join(30)
        answers.wait(INLINE_AFTER_RUNS + 2)
        assert answers.order[-2:] == ["a", "b"]
        assert instance.run_threads[-2].name == "caller"
        assert instance.run_threads[-1].name.startswith("instance-")
        assert float(answers.of("b")["OUTPUT0"][0][0]) == 4.0
    finally:
        pool.close()


def test_close_waits_for_an_inline_run():
    instance = InlineInstance()
    pool = InstancePool([instance], ModelStats())
    answers = Answers()
    _one_at_a_time(pool, answers, INLINE_AFTER_RUNS)
    instance.hold()
    caller = threading.Thread(target=pool.enqueue, args=(work(answers, "a", 1.0),))
    caller.start()
    instance.wait_started(INLINE_AFTER_RUNS + 1)
    closer = threading.Thread(target=pool.close)
    closer.start()
    wait_until(lambda: pool._closed)
    assert closer.is_alive()  # still waiting for the held inline run
    instance.release()
    closer.join(30)
    caller.join(30)
    assert not closer.is_alive()
    assert answers.of("a") is not None


def test_large_inputs_keep_the_worker_thread(monkeypatch):
    monkeypatch.setattr(instance_pool, "INLINE_MAX_INPUT_BYTES", 16)  # 2 x FP32 = 8 bytes/row
    instance = InlineInstance()
    pool = InstancePool([instance], ModelStats())
    answers = Answers()
    try:
        _one_at_a_time(pool, answers, INLINE_AFTER_RUNS)
        assert pool.runs_inline
        pool.enqueue(work(answers, "small", 1.0, rows=2))   # 16 bytes: inline
        pool.enqueue(work(answers, "large", 1.0, rows=4))   # 32 bytes: the worker thread
        answers.wait(INLINE_AFTER_RUNS + 2)
        assert instance.run_threads[-2] is threading.current_thread()
        assert instance.run_threads[-1].name.startswith("instance-")
    finally:
        pool.close()


class TimedInstance(InlineInstance):
    """Each run takes ``cpu_ns``/``wall_ns`` by the pool's clocks (patched to these), so
    durations are exact whatever the machine is doing."""

    def __init__(self, clocks):
        super().__init__("timed")
        self.clocks = clocks
        self.cpu_ns, self.wall_ns = 1_000, 1_000

    def run(self, inputs, output_names, parameters):
        self.clocks["cpu"] += self.cpu_ns
        self.clocks["wall"] += self.wall_ns
        return super().run(inputs, output_names, parameters)


@pytest.fixture
def timed_pool(monkeypatch):
    monkeypatch.setattr(instance_pool, "INLINE_BELOW_NS", 100_000)
    monkeypatch.setattr(instance_pool, "INLINE_WALL_BELOW_NS", 1_000_000)
    clocks = {"cpu": 0, "wall": 0}
    monkeypatch.setattr(instance_pool, "_cpu_now", lambda: clocks["cpu"])
    monkeypatch.setattr(instance_pool, "_now", lambda: clocks["wall"])
    instance = TimedInstance(clocks)
    pool = InstancePool([instance], ModelStats())
    yield pool, instance, Answers()
    pool.close()


def test_one_preempted_run_does_not_end_inline_running(timed_pool):
    pool, instance, answers = timed_pool
    _one_at_a_time(pool, answers, INLINE_AFTER_RUNS)
    assert pool.runs_inline
    instance.wall_ns = 50_000_000  # 50 ms of wall time: the neighbours had the core
    _one_at_a_time(pool, answers, 1, start=INLINE_AFTER_RUNS)
    assert pool.runs_inline
    instance.cpu_ns = 5_000_000  # and one that also burned 5 ms of CPU
    _one_at_a_time(pool, answers, 1, start=INLINE_AFTER_RUNS + 1)
    assert pool.runs_inline


@pytest.mark.parametrize("cpu_ns,wall_ns", [(1_000, 5_000_000), (500_000, 600_000)])
def test_runs_that_stay_long_end_inline_running(timed_pool, cpu_ns, wall_ns):
    pool, instance, answers = timed_pool
    _one_at_a_time(pool, answers, INLINE_AFTER_RUNS)
    assert pool.runs_inline
    instance.cpu_ns, instance.wall_ns = cpu_ns, wall_ns
    _one_at_a_time(pool, answers, 6, start=INLINE_AFTER_RUNS)
    assert not pool.runs_inline
    count = INLINE_AFTER_RUNS + 6
    _one_at_a_time(pool, answers, 1, start=count)
    assert instance.run_threads[-1].name.startswith("instance-")
