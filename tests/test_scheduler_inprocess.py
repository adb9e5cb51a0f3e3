"""The schedulers in-process: queue policies, priorities, ordering, cancellation and
instance concurrency, driven with gated fake instances (tests/scheduler_fakes.py).

The instance holds an execution until the test opens its gate, so "busy" is a
state the test controls rather than a duration; nothing here waits on a
wall-clock gap or asserts a timing.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

from scheduler_fakes import Answers, GatedInstance, wait_until, work

from triton_grpc_server._proto import model_config_pb2 as mc
from triton_grpc_server.errors import Status
from triton_grpc_server.scheduler import DynamicBatcher, InstancePool, create_scheduler
from triton_grpc_server.stats import ModelStats


def batcher(batching: str = "", max_batch: int = 8, count: int = 1):
    config = mc.ModelConfig(name="gated", max_batch_size=max_batch)
    config.dynamic_batching.SetInParent()
    if batching:
        from google.protobuf import text_format
        text_format.Merge(batching, config.dynamic_batching)
    instances = [GatedInstance(f"gated_{i}") for i in range(count)]
    stats = ModelStats()
    return DynamicBatcher(config, instances, stats), instances, stats


def pool(count: int = 1):
    instances = [GatedInstance(f"gated_{i}") for i in range(count)]
    stats = ModelStats()
    return InstancePool(instances, stats), instances, stats


def check_error(error, status: Status, message: str) -> None:
    assert isinstance(error, Exception), error
    assert (error.status, error.message) == (status, message)


def busy(scheduler, instance, answers, stats, tag="busy"):
    """Occupy ``instance`` with a held request."""
    instance.hold([-1.0])
    scheduler.enqueue(work(answers, tag, -1.0, stats=stats))
    instance.wait_started(instance.started + 1)


def test_create_scheduler_picks_by_config():
    config = mc.ModelConfig(name="m", max_batch_size=4)
    assert isinstance(create_scheduler(config, []), InstancePool)
    config.dynamic_batching.SetInParent()
    scheduler = create_scheduler(config, [])
    assert isinstance(scheduler, DynamicBatcher)
    scheduler.close()


def test_max_queue_size_rejects_at_once():
    scheduler, (instance,), stats = batcher("default_queue_policy { max_queue_size: 2 }")
    answers = Answers()
    try:
        busy(scheduler, instance, answers, stats)
        for tag in (1, 2, 3):
            scheduler.enqueue(work(answers, tag, tag, stats=stats))
        answers.wait(1)                        # the rejection, while the instance is held
        assert answers.order == [3]
        check_error(answers.of(3), Status.UNAVAILABLE, "Exceeds maximum queue size")
        assert stats.pending == 2
        instance.release()
        answers.wait(4)
    finally:
        scheduler.close()
    for tag in (1, 2):
        np.testing.assert_array_equal(answers.of(tag)["OUTPUT0"], np.full([1, 2], tag * 2.0))
    assert (stats.success.count, stats.fail.count, stats.failures["REJECTED"]) == (3, 1, 1)


@pytest.mark.parametrize("policy, timeout_us", [
    ("default_queue_policy { timeout_action: REJECT default_timeout_microseconds: 1000 }", 0),
    ("default_queue_policy { timeout_action: REJECT allow_timeout_override: true }", 1000)],
    ids=["default_timeout", "override"])
def test_queue_timeout_rejects_while_the_instance_is_busy(policy, timeout_us):
    scheduler, (instance,), stats = batcher(policy)
    answers = Answers()
    try:
        busy(scheduler, instance, answers, stats)
        scheduler.enqueue(work(answers, "late", 1, timeout_us=timeout_us, stats=stats))
        answers.wait(1)                        # rejected before the busy one is released
        assert answers.order == ["late"]
        check_error(answers.of("late"), Status.UNAVAILABLE, "Request timeout expired")
        instance.release()
        answers.wait(2)
    finally:
        scheduler.close()
    assert instance.finished == [-1.0]         # the late one never ran
    assert stats.failures["REJECTED"] == 1 and stats.pending == 0


def test_without_a_timeout_an_override_queue_just_waits():
    scheduler, (instance,), stats = batcher(
        "default_queue_policy { timeout_action: REJECT allow_timeout_override: true }")
    answers = Answers()
    try:
        busy(scheduler, instance, answers, stats)
        scheduler.enqueue(work(answers, "patient", 1, stats=stats))
        assert stats.pending == 1
        instance.release()
        answers.wait(2)
    finally:
        scheduler.close()
    assert answers.order == ["busy", "patient"]
    assert not isinstance(answers.of("patient"), Exception)


def test_queue_timeout_delay_moves_the_request_back():
    scheduler, (instance,), stats = batcher(
        "default_queue_policy { timeout_action: DELAY allow_timeout_override: true }",
        max_batch=1)
    answers = Answers()
    try:
        busy(scheduler, instance, answers, stats)
        timed_out = work(answers, "timed_out", 1, timeout_us=1000, stats=stats)
        scheduler.enqueue(timed_out)
        wait_until(lambda: timed_out in scheduler.queue.levels[0].delayed)
        scheduler.enqueue(work(answers, "on_time", 2, stats=stats))
        instance.release()
        answers.wait(3)
    finally:
        scheduler.close()
    assert answers.order == ["busy", "on_time", "timed_out"]
    assert not any(isinstance(v, Exception) for _, v, _ in answers.items)


def test_priority_levels():
    scheduler, (instance,), stats = batcher("priority_levels: 2 default_priority_level: 2",
                                            max_batch=1)
    answers = Answers()
    try:
        busy(scheduler, instance, answers, stats)
        for tag, priority in (("default", 0), ("low", 2), ("high", 1), ("out_of_range", 7)):
            scheduler.enqueue(work(answers, tag, 1, priority=priority, stats=stats))
        instance.release()
        answers.wait(5)
    finally:
        scheduler.close()
    assert answers.order == ["busy", "high", "default", "low", "out_of_range"]


@pytest.mark.parametrize("ordered", [True, False], ids=["preserve_ordering", "unordered"])
def test_preserve_ordering_holds_a_fast_answer_behind_a_slow_one(ordered):
    scheduler, instances, stats = batcher("preserve_ordering: true" if ordered else "",
                                          count=2)
    answers = Answers()
    try:
        for instance in instances:
            instance.hold([-1.0])              # only the "slow" request is held
        scheduler.enqueue(work(answers, "slow", -1.0, stats=stats))
        wait_until(lambda: sum(i.started for i in instances) == 1)
        scheduler.enqueue(work(answers, "fast", 1, stats=stats))
        wait_until(lambda: any(1.0 in i.finished for i in instances))  # it has run
        if ordered:
            assert answers.items == []         # held until "slow" is answered
        else:
            answers.wait(1)
            assert answers.order == ["fast"]
        for instance in instances:
            instance.release()
        answers.wait(2)
    finally:
        scheduler.close()
    assert answers.order == (["slow", "fast"] if ordered else ["fast", "slow"])


@pytest.mark.parametrize("make", [batcher, pool], ids=["dynamic_batching", "instance_pool"])
def test_cancelled_queued_request_leaves_at_once_and_never_runs(make):
    scheduler, (instance,), stats = make()
    answers = Answers()
    try:
        busy(scheduler, instance, answers, stats)
        gone = work(answers, "gone", 1, stats=stats)
        scheduler.enqueue(gone)
        assert stats.pending == 1
        gone.request.cancel()                  # the transport's cancel: no polling
        answers.wait(1)
        assert answers.order == ["gone"]
        check_error(answers.of("gone"), Status.CANCELLED, "Request cancelled")
        assert stats.pending == 0
        instance.release()
        answers.wait(2)
    finally:
        scheduler.close()
    assert instance.finished == [-1.0]
    assert (stats.success.count, stats.fail.count, stats.failures["CANCELED"]) == (1, 1, 1)
    assert stats.execution_count == 1


@pytest.mark.parametrize("make", [batcher, pool], ids=["dynamic_batching", "instance_pool"])
def test_request_cancelled_before_its_turn_is_not_executed(make):
    scheduler, (instance,), stats = make()
    answers = Answers()
    try:
        early = work(answers, "early", 1, stats=stats)
        early.request.cancel()
        scheduler.enqueue(early)
        answers.wait(1)
    finally:
        scheduler.close()
    check_error(answers.of("early"), Status.CANCELLED, "Request cancelled")
    assert instance.started == 0


@pytest.mark.parametrize("make, count, expected", [
    (batcher, 1, ["slow", "fast"]), (batcher, 2, ["fast", "slow"]), (pool, 2, ["fast", "slow"]),
    (pool, 1, ["slow", "fast"])], ids=["batcher-1", "batcher-2", "pool-2", "pool-1"])
def test_instances_run_concurrently(make, count, expected):
    scheduler, instances, stats = make(count=count)
    answers = Answers()
    try:
        for instance in instances:
            instance.hold([-1.0])
        scheduler.enqueue(work(answers, "slow", -1.0, stats=stats))
        wait_until(lambda: sum(i.started for i in instances) == 1)
        scheduler.enqueue(work(answers, "fast", 1, stats=stats))
        if count > 1:
            answers.wait(1)                    # answered while "slow" is still held
        for instance in instances:
            instance.release()
        answers.wait(2)
    finally:
        scheduler.close()
    assert answers.order == expected
    assert stats.execution_count == 2


def test_a_thousand_waiting_requests_hold_no_threads():
    baseline = threading.active_count()
    scheduler, instances, stats = pool(count=2)
    answers = Answers()
    try:
        assert threading.active_count() == baseline + 2   # one worker per instance
        for instance in instances:
            instance.hold()
        for i in range(1000):
            scheduler.enqueue(work(answers, i, i, stats=stats))
        wait_until(lambda: sum(i.started for i in instances) == 2)
        assert stats.pending == 998
        assert threading.active_count() == baseline + 2   # and nothing per request
        for instance in instances:
            instance.release()
        answers.wait(1000)
    finally:
        scheduler.close()
    assert stats.success.count == 1000
    assert sorted(answers.order) == list(range(1000))


def test_backend_exception_fails_each_request_of_the_batch_with_its_own_error():
    scheduler, (instance,), stats = batcher()
    answers = Answers()

    def broken(inputs, output_names, parameters):
        raise RuntimeError("boom")
    instance.run = broken
    try:
        scheduler.enqueue(work(answers, "a", 1, stats=stats))
        scheduler.enqueue(work(answers, "b", 1, stats=stats))
        answers.wait(2)
    finally:
        scheduler.close()
    errors = [answers.of("a"), answers.of("b")]
    assert errors[0] is not errors[1]
    assert all(e.message == "RuntimeError: boom" for e in errors)
    assert stats.failures["BACKEND"] == 2


def test_unloading_scheduler_refuses_new_requests():
    for make in (batcher, pool):
        scheduler, _, stats = make()
        scheduler.close()
        answers = Answers()
        scheduler.enqueue(work(answers, "late", 1, stats=stats))
        answers.wait(1)
        assert answers.of("late").status == Status.UNAVAILABLE
