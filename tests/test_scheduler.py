"""The scheduler through a real server (tritonclient over gRPC): dynamic batching,
preferred sizes and queue delay, and requests in flight holding no threads. Queue
policies, priorities, ordering, cancellation and instance concurrency are tested
in-process with gated fakes (tests/test_scheduler_inprocess.py)."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import free_port
from scheduling_models import (NO_AUTO_COMPLETE, Completions, add_inputs, delay_for,
                               model_stats, slow_inputs, wait_until, write_model)

grpcclient = pytest.importorskip("tritonclient.grpc")


def _repo(tmp_path, *models):
    repo = tmp_path / "models"
    for name, kind, config in models:
        write_model(repo, name, kind, config)
    return repo


def _client(server):
    client = server.client()
    assert client.is_server_ready()  # connect now, so later sends are not held up by it
    return client


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


# Queue policies, priorities, ordering, cancellation and instance concurrency are
# tested in-process with gated fake instances: tests/test_scheduler_inprocess.py.


def _threads(pid: int) -> int:
    """The server's thread count, the least of a few readings (a metrics scrape's thread
    may still be winding down)."""
    readings = []
    for _ in range(20):
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("Threads:"):
                readings.append(int(line.split()[1]))
        time.sleep(0.01)
    return min(readings)


def _pending(port: int) -> float:
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith("nv_inference_pending_request_count{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_thousand_in_flight_requests_hold_no_server_threads(tmp_path, start_server):
    pytest.importorskip("prometheus_client")
    repo = _repo(tmp_path, ("slow", "slow", "max_batch_size: 8\n"
                            "instance_group [ { kind: KIND_CPU count: 1 } ]\n"))
    port = free_port()
    server = start_server(repo, "--metrics-port", port, NO_AUTO_COMPLETE)
    client = _client(server)
    client.infer("slow", slow_inputs(grpcclient, 0, 1))  # warm: the instance's worker exists
    _pending(port)
    idle = _threads(server.process.pid)
    done = Completions()
    client.async_infer("slow", slow_inputs(grpcclient, 0, delay_for(3.0)), done.callback("busy"))
    for i in range(1000):
        client.async_infer("slow", slow_inputs(grpcclient, i, 1), done.callback(i))
    wait_until(lambda: _pending(port) == 1000, timeout=60)  # all queued behind "busy"
    during = _threads(server.process.pid)
    still_queued = _pending(port)
    done.wait(1001, timeout=120)
    assert not done.errors, list(done.errors.items())[:3]
    assert still_queued > 0  # the reading was taken with the requests in flight
    # the instance's worker already existed; a waiting request holds no thread
    assert during <= idle, (idle, during)
    client.close()


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
