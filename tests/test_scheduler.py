"""The scheduler through a real server: dynamic batching, queue policies, priorities,
ordering, cancellation and instance groups (tritonclient over gRPC)."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import free_port
from scheduling_models import (NO_AUTO_COMPLETE, Completions, add_inputs, delay_for,
                               model_stats, slow_inputs, wait_until, write_model)

grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

# How long the request holding the only instance runs; others are queued behind it.
BUSY_SECONDS = 5.0  # outlasts every run of GAPs below, even on a loaded 2-core box
# Gap between sends whose arrival order matters.
GAP = 0.4  # generous: the 2-core CI box runs the clients and the server too


def _slow(name: str, extra: str = "", max_batch: int = 8, count: int = 1) -> tuple:
    config = (f"max_batch_size: {max_batch}\n"
              f"instance_group [ {{ kind: KIND_CPU count: {count} }} ]\n"
              f"dynamic_batching {{ {extra} }}\n")
    return name, "slow", config


def _repo(tmp_path, *models):
    repo = tmp_path / "models"
    for name, kind, config in models:
        write_model(repo, name, kind, config)
    return repo


def _client(server):
    client = server.client()
    assert client.is_server_ready()  # connect now, so later sends are not held up by it
    return client


def _check_error(error, code: str, message: str) -> None:
    assert isinstance(error, InferenceServerException), error
    assert error.status() == code
    assert error.message() == message


@pytest.fixture(scope="module")
def busy():
    return delay_for(BUSY_SECONDS)


@pytest.fixture(scope="module")
def step():
    """Queued requests whose execution order is checked run this long, so that the
    order responses arrive in is the order they executed in."""
    return delay_for(0.1)


def test_batches_form_under_concurrency_and_results_are_per_request(tmp_path, start_server):
    one = "instance_group [ { kind: KIND_CPU count: 1 } ]\n"
    # A short queue delay: without it a tiny model on an idle instance can keep up
    # with 16 clients on a loaded 2-core box, and nothing ever waits to be batched.
    batching = "max_batch_size: 8\ndynamic_batching { max_queue_delay_microseconds: 20000 }"
    repo = _repo(tmp_path,
                 ("add", "add", one + batching),
                 ("strings", "strings", one + batching),
                 ("add2", "add", "max_batch_size: 8\ndynamic_batching { }\n"
                                 "instance_group [ { kind: KIND_CPU count: 2 } ]"))
    server = start_server(repo, "--metrics-port", free_port())
    client = _client(server)

    def one(i):
        data = np.arange(4 * (1 + i % 3), dtype=np.float32).reshape(-1, 4) + 100 * i
        result = client.infer("add", add_inputs(grpcclient, data))
        text = np.array([[f"request {i}".encode()]], dtype=object)
        tensor = grpcclient.InferInput("INPUT0", [1, 1], "BYTES")
        tensor.set_data_from_numpy(text)
        strings = client.infer("strings", [tensor]).as_numpy("OUTPUT0")
        two = client.infer("add2", add_inputs(grpcclient, data)).as_numpy("OUTPUT0")
        return data, result.as_numpy("OUTPUT0"), text, strings, two

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(48)))
    for data, output, text, strings, two in results:
        np.testing.assert_array_equal(output, data + 1)
        np.testing.assert_array_equal(two, data + 1)
        assert strings.tolist() == text.tolist()

    items = sum(len(r[0]) for r in results)
    for name, expected_items in (("add", items), ("add2", items), ("strings", 48)):
        stats = model_stats(client, name)
        assert stats.inference_count == expected_items
        assert stats.inference_stats.success.count == 48
        items_run = sum(b.batch_size * b.compute_infer.count for b in stats.batch_stats)
        assert items_run == expected_items
        assert sum(b.compute_infer.count for b in stats.batch_stats) == stats.execution_count
        assert all(b.batch_size <= 8 for b in stats.batch_stats)
    # 16 concurrent clients on one instance: requests queue, so batches form
    assert model_stats(client, "add").execution_count < 48
    assert model_stats(client, "strings").execution_count < 48


def test_preferred_batch_size_and_queue_delay(tmp_path, start_server):
    repo = _repo(tmp_path,
                 ("preferred", "add", "max_batch_size: 8\ndynamic_batching { "
                  "preferred_batch_size: [ 4 ] max_queue_delay_microseconds: 30000000 }"),
                 ("delayed", "add", "max_batch_size: 8\ndynamic_batching { "
                  "max_queue_delay_microseconds: 1000000 }"))
    server = start_server(repo, "--metrics-port", free_port())
    client = _client(server)
    data = np.ones([1, 4], np.float32)
    # a batch of the preferred size leaves at once, long before the 30 s delay
    with ThreadPoolExecutor(4) as pool:
        outputs = list(pool.map(lambda _: client.infer("preferred", add_inputs(grpcclient, data)),
                                range(4)))
    assert all((o.as_numpy("OUTPUT0") == 2).all() for o in outputs)
    stats = model_stats(client, "preferred")
    assert [(b.batch_size, b.compute_infer.count) for b in stats.batch_stats] == [(4, 1)]
    # below any preferred or maximum size, requests wait for the delay and leave together
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda _: client.infer("delayed", add_inputs(grpcclient, data)), range(3)))
    stats = model_stats(client, "delayed")
    assert [(b.batch_size, b.compute_infer.count) for b in stats.batch_stats] == [(3, 1)]
    assert stats.inference_stats.queue.ns > 0


def test_preserve_ordering(tmp_path, start_server, busy):
    repo = _repo(tmp_path, _slow("ordered", "preserve_ordering: true", count=2),
                 _slow("unordered", "", count=2))
    server = start_server(repo, "--metrics-port", free_port())
    client = _client(server)
    runs = {}
    for name in ("ordered", "unordered"):
        done = Completions()
        client.async_infer(name, slow_inputs(grpcclient, 0, busy), done.callback("slow"))
        time.sleep(GAP)  # the slow one runs on instance 0; the fast one goes to instance 1
        client.async_infer(name, slow_inputs(grpcclient, 1, 1), done.callback("fast"))
        done.wait(2)
        assert not done.errors
        assert (done.results["fast"].as_numpy("OUTPUT0") == 2).all()
        runs[name] = done
    # the control: without ordering the fast response overtakes the slow one
    assert runs["unordered"].order == ["fast", "slow"]
    # with it, the fast response is held until the slow one is done; both are then
    # released together, in order, and may still cross on the wire (two RPCs)
    ordered = runs["ordered"]
    assert ordered.order == ["slow", "fast"] or \
        ordered.times["slow"] - ordered.times["fast"] < BUSY_SECONDS / 3


def test_max_queue_size(tmp_path, start_server, busy):
    repo = _repo(tmp_path, _slow("bounded", "default_queue_policy { max_queue_size: 2 }"))
    server = start_server(repo, "--metrics-port", free_port())
    client = _client(server)
    done = Completions()
    client.async_infer("bounded", slow_inputs(grpcclient, 0, busy), done.callback(0))
    time.sleep(GAP)  # 0 is executing, not queued
    for tag in (1, 2, 3):
        client.async_infer("bounded", slow_inputs(grpcclient, tag, 1), done.callback(tag))
        time.sleep(GAP)
    done.wait(4)
    assert list(done.errors) == [3]
    _check_error(done.errors[3], "StatusCode.UNAVAILABLE", "Exceeds maximum queue size")
    for tag in (0, 1, 2):
        assert (done.results[tag].as_numpy("OUTPUT0") == tag + 1).all()
    stats = model_stats(client, "bounded")
    assert stats.inference_stats.success.count == 3
    assert stats.inference_stats.fail.count == 1
    assert stats.inference_count == 3


def test_queue_timeout_reject_and_override(tmp_path, start_server, busy):
    repo = _repo(tmp_path,
                 _slow("reject", "default_queue_policy { timeout_action: REJECT "
                                 "default_timeout_microseconds: 100000 }"),
                 _slow("override", "default_queue_policy { timeout_action: REJECT "
                                   "allow_timeout_override: true }"))
    server = start_server(repo, "--metrics-port", free_port())
    client = _client(server)
    for name, timeout in (("reject", None), ("override", 100000)):
        done = Completions()
        client.async_infer(name, slow_inputs(grpcclient, 0, busy), done.callback("busy"))
        time.sleep(GAP)
        client.async_infer(name, slow_inputs(grpcclient, 1, 1), done.callback("late"),
                           timeout=timeout)
        done.wait(2)
        # rejected while the instance is still busy: the error comes back first
        assert done.order == ["late", "busy"], name
        _check_error(done.errors["late"], "StatusCode.UNAVAILABLE", "Request timeout expired")
        assert "busy" in done.results
    # without a timeout (override allowed, none given) the request just waits
    done = Completions()
    client.async_infer("override", slow_inputs(grpcclient, 0, delay_for(0.3)), done.callback(0))
    client.async_infer("override", slow_inputs(grpcclient, 1, 1), done.callback(1))
    done.wait(2)
    assert not done.errors


def test_queue_timeout_delay_moves_request_back(tmp_path, start_server, busy, step):
    repo = _repo(tmp_path, _slow("delay", "default_queue_policy { timeout_action: DELAY "
                                          "allow_timeout_override: true }", max_batch=1))
    server = start_server(repo, "--metrics-port", free_port())
    client = _client(server)
    done = Completions()
    client.async_infer("delay", slow_inputs(grpcclient, 0, busy), done.callback("busy"))
    time.sleep(GAP)
    client.async_infer("delay", slow_inputs(grpcclient, 1, step), done.callback("timed_out"),
                       timeout=20000)
    time.sleep(GAP)
    client.async_infer("delay", slow_inputs(grpcclient, 2, step), done.callback("on_time"))
    done.wait(3)
    assert not done.errors
    assert done.order == ["busy", "on_time", "timed_out"]


def test_priority_levels(tmp_path, start_server, busy, step):
    repo = _repo(tmp_path, _slow("prio", "priority_levels: 2 default_priority_level: 2",
                                 max_batch=1))
    server = start_server(repo, "--metrics-port", free_port())
    client = _client(server)
    done = Completions()
    client.async_infer("prio", slow_inputs(grpcclient, 0, busy), done.callback("busy"))
    time.sleep(GAP)
    for tag, priority in (("default", 0), ("low", 2), ("high", 1), ("out_of_range", 7)):
        client.async_infer("prio", slow_inputs(grpcclient, 1, step), done.callback(tag),
                           priority=priority)
        time.sleep(GAP)
    done.wait(5)
    assert not done.errors
    assert done.order == ["busy", "high", "default", "low", "out_of_range"]


@pytest.mark.parametrize("batching", [True, False], ids=["dynamic_batching", "instance_pool"])
def test_cancelled_requests_are_not_executed(tmp_path, start_server, busy, batching):
    name, kind, config = _slow("cancel", "", max_batch=4)
    if not batching:
        config = config.replace("dynamic_batching { }", "")
    repo = _repo(tmp_path, (name, kind, config))
    server = start_server(repo, "--metrics-port", free_port(), NO_AUTO_COMPLETE)
    client = _client(server)
    done = Completions()
    client.async_infer("cancel", slow_inputs(grpcclient, 0, busy), done.callback("busy"))
    time.sleep(GAP)
    client.async_infer("cancel", slow_inputs(grpcclient, 1, 1), done.callback("gone"),
                       client_timeout=0.2)
    done.wait(2)
    assert done.order == ["gone", "busy"]
    # the client's deadline; CANCELLED if the server's drop overtakes it on the wire
    assert done.errors["gone"].status() in ("StatusCode.DEADLINE_EXCEEDED", "StatusCode.CANCELLED")
    # the server drops it from the queue: it fails and never executes
    stats = wait_until(lambda: (lambda s: s if s.inference_stats.fail.count else None)(
        model_stats(client, "cancel")))
    assert stats.inference_stats.fail.count == 1
    assert stats.inference_stats.success.count == 1
    assert stats.execution_count == 1 and stats.inference_count == 1


def test_instances_run_concurrently(tmp_path, start_server, busy):
    one = _slow("one", "", count=1)
    two = _slow("two", "", count=2)
    repo = _repo(tmp_path, one, two,
                 ("pool", "slow", two[2].replace("dynamic_batching { }", "")))
    server = start_server(repo, "--metrics-port", free_port(), NO_AUTO_COMPLETE)
    client = _client(server)
    orders = {}
    for name in ("one", "two", "pool"):
        done = Completions()
        client.async_infer(name, slow_inputs(grpcclient, 0, busy), done.callback("slow"))
        time.sleep(GAP)
        client.async_infer(name, slow_inputs(grpcclient, 1, 1), done.callback("fast"))
        done.wait(2)
        assert not done.errors
        assert model_stats(client, name).execution_count == 2
        orders[name] = done.order
    # one instance: the fast request waits for the slow one; two: it runs beside it
    assert orders == {"one": ["slow", "fast"], "two": ["fast", "slow"], "pool": ["fast", "slow"]}


# -- in-process: the batcher's data handling, with an instance under the test's control --

def test_batcher_concatenates_inputs_and_returns_views():
    from scheduler_fakes import Answers, GatedInstance, work

    from triton_grpc_server._proto import model_config_pb2 as mc
    from triton_grpc_server.scheduler import DynamicBatcher
    from triton_grpc_server.stats import ModelStats

    config = mc.ModelConfig(name="gated", max_batch_size=8)
    config.dynamic_batching.SetInParent()
    instance, stats, answers = GatedInstance(), ModelStats(), Answers()
    batcher = DynamicBatcher(config, [instance], stats)
    names = ["OUTPUT0", "BYTES_OUT"]
    sent = {}
    try:
        instance.hold()
        sent[0] = work(answers, 0, 0, 1, stats=stats, text=True, names=names)
        batcher.enqueue(sent[0])      # runs alone, holds the instance
        instance.wait_started(1)
        for i, rows in ((1, 2), (2, 1), (3, 3)):
            sent[i] = work(answers, i, i, rows, stats=stats, text=True, names=names)
            batcher.enqueue(sent[i])
        assert stats.pending == 3
        instance.release()
        answers.wait(4)
    finally:
        batcher.close()
    assert [len(b["INPUT0"]) for b in instance.batches] == [1, 6]
    batch_out = instance.outputs[1]["OUTPUT0"]
    for i, w in sent.items():
        outputs = answers.of(i)
        data = w.inputs["INPUT0"]
        np.testing.assert_array_equal(outputs["OUTPUT0"], data * 2)
        assert outputs["BYTES_OUT"].tolist() == [[f"r{i}".encode()]] * len(data)
        if i:  # rows of the one batch output, not copies
            assert np.shares_memory(outputs["OUTPUT0"], batch_out)
    assert (stats.inference_count, stats.execution_count) == (7, 2)
    assert sorted(stats.batch_stats) == [1, 6]
