"""``--workers N``: several server processes on the same ports under one supervisor.

Real supervisor and worker processes on loopback ports, driven by tritonclient
(gRPC and HTTP). Each fresh client opens its own connection, and SO_REUSEPORT
spreads connections over the workers; the tests check through each worker's
coordination service (listed at ``/workers`` on the supervisor's metrics port)
that what one worker's API did reached the others.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

import models
from conftest import free_port
from triton_grpc_server.workers.coordination import PeerClient, merge_stats, ping, stats_to_json
from triton_grpc_server.workers.metrics_merge import merge_expositions

WORKERS = 2


def _simple_inputs(value: int):
    a = np.full([1, 16], value, np.int32)
    inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"),
              grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(np.ones([1, 16], np.int32))
    return inputs


def _infer_once(url: str, value: int) -> None:
    """One ModelInfer on a connection of its own; checks the answer."""
    client = grpcclient.InferenceServerClient(url)
    try:
        result = client.infer("simple", _simple_inputs(value))
        assert (result.as_numpy("OUTPUT0") == value + 1).all()
        assert (result.as_numpy("OUTPUT1") == value - 1).all()
    finally:
        client.close()


def _workers(metrics_port: int) -> list[dict]:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/workers", timeout=5) as r:
        return json.loads(r.read())


def _wait_workers(metrics_port: int, count: int = WORKERS, timeout: float = 60.0,
                  restarts: int = 0) -> list[dict]:
    """The supervisor's worker list once ``count`` workers answer (after ``restarts``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            rows = _workers(metrics_port)
        except OSError:
            rows = []
        if (len(rows) == count and sum(r["restarts"] for r in rows) >= restarts
                and all(r["alive"] and (ping(r["coordination"]) or {}).get("pid") == r["pid"]
                        for r in rows)):
            return rows
        time.sleep(0.1)
    raise AssertionError(f"workers not up after {timeout}s")


def _call(row: dict, op: str, **arguments):
    peer = PeerClient(row["coordination"])
    try:
        return peer.call(op, **arguments)
    finally:
        peer.close()


def _states(row: dict) -> dict:
    return {name: state for name, _, state, _ in _call(row, "index")}


def _start(repo, *flags, **kwargs):
    metrics_port = free_port()
    handle = models.start(repo, "--workers", WORKERS, "--metrics-port", metrics_port,
                          *flags, **kwargs)
    return handle, metrics_port, _wait_workers(metrics_port)


@pytest.fixture
def simple_repo(tmp_path):
    repo = tmp_path / "models"
    models.simple_model(repo)
    return repo


def test_model_control_statistics_and_metrics_cover_every_worker(simple_repo):
    handle, metrics_port, rows = _start(simple_repo, "--model-control-mode", "explicit")
    try:
        assert len({r["pid"] for r in rows}) == WORKERS
        assert all(_states(r).get("simple") != "READY" for r in rows)

        # A load through one worker's gRPC API returns once every worker has the model.
        with handle.client() as client:
            client.load_model("simple")
        assert all(_states(r)["simple"] == "READY" for r in rows)

        count = 40
        for i in range(count):
            _infer_once(handle.url, i)
        local = [_call(r, "statistics", name="simple", version="")[0][2]["inference_count"]
                 for r in rows]
        assert sum(local) == count
        assert all(n > 0 for n in local), local  # the connections reached both workers

        # Whichever worker answers, the statistics are the whole server's.
        for _ in range(6):
            with handle.client() as client:
                stats = client.get_inference_statistics("simple").model_stats[0]
            assert stats.inference_count == count
            assert stats.inference_stats.success.count == count
        http = httpclient.InferenceServerClient(handle.http_url)
        assert http.get_inference_statistics("simple")["model_stats"][0]["inference_count"] == count

        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        assert f'nv_inference_count{{model="simple",version="1"}} {count}' in text

        # An unload through the HTTP API reaches every worker too.
        http.unload_model("simple")
        http.close()
        assert all(_states(r)["simple"] == "UNAVAILABLE" for r in rows)
        with handle.client() as client:
            assert not client.is_model_ready("simple")
    finally:
        assert handle.stop() == 0


def test_killed_worker_is_replaced_while_clients_get_answers(simple_repo):
    handle, metrics_port, rows = _start(simple_repo, "--model-control-mode", "explicit")
    answered, retried, failures = [0], [0], []
    stop = threading.Event()

    def clients():
        value = 0
        while not stop.is_set():
            value += 1
            # The requests in flight on the killed worker (and connections the kernel
            # had queued for it) fail with UNAVAILABLE: a client retries those.
            for attempt in range(50):
                try:
                    _infer_once(handle.url, value)
                    answered[0] += 1
                    break
                except InferenceServerException as exc:
                    if "UNAVAILABLE" not in str(exc.status()):
                        failures.append(exc)
                        return
                    retried[0] += 1
                    time.sleep(0.05)
            else:
                failures.append(RuntimeError("no answer after 50 attempts"))
                return

    try:
        with handle.client() as client:
            client.load_model("simple")  # after start-up: a replacement must copy it
        thread = threading.Thread(target=clients)
        thread.start()
        while answered[0] < 10 and thread.is_alive():
            time.sleep(0.05)
        victim = rows[0]
        os.kill(victim["pid"], signal.SIGKILL)
        new_rows = _wait_workers(metrics_port, restarts=1)
        replacement = next(r for r in new_rows if r["index"] == victim["index"])
        assert replacement["pid"] != victim["pid"]
        assert _states(replacement)["simple"] == "READY"
        before = answered[0]
        while answered[0] < before + 20 and thread.is_alive():
            time.sleep(0.05)
        stop.set()
        thread.join(30)
        assert not failures, failures
        assert answered[0] >= before + 20
        # The replacement serves: its own counters move as fresh connections reach it.
        for i in range(20):
            _infer_once(handle.url, i)
        assert _call(replacement, "statistics", name="simple", version="")[0][2][
            "inference_count"] > 0
    finally:
        stop.set()
        assert handle.stop() == 0


def test_sigterm_drains_every_worker(tmp_path):
    repo = tmp_path / "models"
    repo.mkdir()
    env = models.echo_params_model(repo, tmp_path / "plugins")
    config = repo / "echo_params" / "config.pbtxt"
    config.write_text(config.read_text() + "instance_group [ { count: 4 kind: KIND_CPU } ]\n")
    handle, _, rows = _start(repo, env=env)
    outcomes = []

    def slow_request(marker):
        client = grpcclient.InferenceServerClient(handle.url)
        x = grpcclient.InferInput("INPUT0", [1], "FP32")
        x.set_data_from_numpy(np.array([1.0], dtype=np.float32))
        try:
            client.infer("echo_params", [x], parameters={"marker": str(marker), "sleep_ms": 1500})
            outcomes.append("ok")
        except Exception as exc:  # recorded, asserted below
            outcomes.append(exc)
        finally:
            client.close()

    markers = [tmp_path / f"in-flight-{i}" for i in range(6)]
    threads = [threading.Thread(target=slow_request, args=(m,)) for m in markers]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while not all(m.exists() for m in markers):
        assert time.monotonic() < deadline, "requests never reached the backends"
        time.sleep(0.02)
    handle.process.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(30)
    code = handle.process.wait(30)
    assert outcomes == ["ok"] * len(markers), outcomes
    assert code == 0
    for row in rows:  # every worker is gone
        with pytest.raises(ProcessLookupError):
            os.kill(row["pid"], 0)
    handle.stop()


def test_worker_that_cannot_start_stops_the_supervisor(tmp_path):
    repo = tmp_path / "models"
    models.simple_model(repo)
    (repo / "broken").mkdir()
    (repo / "broken" / "config.pbtxt").write_text('name: "broken"\nbackend: "onnxruntime"\n')
    handle = models.start(repo, "--workers", WORKERS, wait_ready=False)
    assert handle.process.wait(60) == 1
    assert "failed to load 'broken'" in handle.log()
    handle.stop()


def test_merge_expositions_sums_counters_and_keeps_machine_gauges():
    a = ('# HELP nv_inference_count Number of inferences\n# TYPE nv_inference_count untyped\n'
         'nv_inference_count{model="m",version="1"} 3\n'
         '# HELP nv_gpu_memory_total_bytes GPU total memory\n'
         '# TYPE nv_gpu_memory_total_bytes gauge\nnv_gpu_memory_total_bytes{gpu_uuid="g"} 100\n')
    b = a.replace("} 3", "} 4")
    c = ('# HELP nv_inference_request_success successes\n# TYPE nv_inference_request_success '
         'counter\nnv_inference_request_success{model="m",version="1"} 5.0\n'
         '# HELP nv_cpu_utilization CPU\n# TYPE nv_cpu_utilization gauge\nnv_cpu_utilization 0.5\n'
         '# HELP nv_inference_pending_request_count pending\n'
         '# TYPE nv_inference_pending_request_count gauge\n'
         'nv_inference_pending_request_count{model="m",version="1"} 2.0\n')
    merged = merge_expositions([a + c, b + c])
    assert 'nv_inference_count{model="m",version="1"} 7' in merged
    assert 'nv_gpu_memory_total_bytes{gpu_uuid="g"} 100' in merged
    assert "# TYPE nv_inference_count untyped" in merged
    # Triton's counter names stay as they are (no _total); machine gauges are not added
    assert 'nv_inference_request_success{model="m",version="1"} 10' in merged
    assert "nv_inference_request_success_total" not in merged
    assert "nv_cpu_utilization 0.5" in merged
    assert 'nv_inference_pending_request_count{model="m",version="1"} 4' in merged


def test_merge_stats_adds_every_figure():
    from triton_grpc_server.stats import ModelStats, RequestTiming

    one, two = ModelStats(), ModelStats()
    for stats, batches in ((one, (1, 4)), (two, (4,))):
        for size in batches:
            stats.executed(size, 10, 20, 30)
            stats.succeeded(RequestTiming())
    merged = merge_stats([stats_to_json(one), stats_to_json(two)])
    assert merged.inference_count == 9
    assert merged.execution_count == 3
    assert merged.success.count == 3
    assert merged.batch_stats[4].compute_infer.count == 2
    assert merged.batch_stats[4].compute_infer.ns == 40
    assert merged.last_inference_ms == max(one.last_inference_ms, two.last_inference_ms)
