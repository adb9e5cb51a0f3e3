"""Version swaps under load: reloads and new versions fail no request.

Requests in flight finish on the version they started on, new requests go to
the new one, old instances close only when idle, and loading one model never
stalls inference on another.
"""
from __future__ import annotations

import io
import json
import os
import sys
import threading
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper, numpy_helper

import models
from test_model_control import add_const, index, onnx_bytes, wait_for

ONE_THREAD = {"intra_op_thread_count": {"string_value": "1"}}


def _bytes(graph) -> bytes:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    buffer = io.BytesIO()
    onnx.save(model, buffer)
    return buffer.getvalue()


def slow_infer_onnx(value: int, n: int = 1536, matmuls: int = 4) -> bytes:
    """OUTPUT0 = INPUT0 + value, after ``matmuls`` input-dependent n x n products (slow to run)."""
    nodes = [helper.make_node("Cast", ["INPUT0"], ["X"], to=T.FLOAT),
             helper.make_node("ReduceSum", ["X"], ["S"], keepdims=0),
             helper.make_node("Expand", ["S", "shape"], ["E0"])]
    for i in range(matmuls):
        nodes.append(helper.make_node("MatMul", [f"E{i}", "W"], [f"E{i + 1}"]))
    nodes += [helper.make_node("ReduceSum", [f"E{matmuls}"], ["R"], keepdims=0),
              helper.make_node("Mul", ["R", "zero"], ["Z"]),
              helper.make_node("Cast", ["Z"], ["Zi"], to=T.INT32),
              helper.make_node("Add", ["INPUT0", "const"], ["A"]),
              helper.make_node("Add", ["A", "Zi"], ["OUTPUT0"])]
    initializers = [numpy_helper.from_array(np.full((n, n), 1.0 / n, np.float32), "W"),
                    numpy_helper.from_array(np.array([n, n], np.int64), "shape"),
                    numpy_helper.from_array(np.array(0, np.float32), "zero"),
                    numpy_helper.from_array(np.array(value, np.int32), "const")]
    return _bytes(helper.make_graph(
        nodes, "slow_infer", [helper.make_tensor_value_info("INPUT0", T.INT32, ["batch", 4])],
        [helper.make_tensor_value_info("OUTPUT0", T.INT32, ["batch", 4])], initializers))


def slow_load_onnx(n: int = 2000, matmuls: int = 2) -> bytes:
    """OUTPUT0 = INPUT0, with a constant n x n product chain that ONNX Runtime folds at load."""
    nodes = [helper.make_node("MatMul", ["W" if i == 0 else f"M{i - 1}", "W"], [f"M{i}"])
             for i in range(matmuls)]
    nodes += [helper.make_node("ReduceSum", [f"M{matmuls - 1}"], ["R"], keepdims=0),
              helper.make_node("Mul", ["R", "zero"], ["Z"]),
              helper.make_node("Cast", ["Z"], ["Zi"], to=T.INT32),
              helper.make_node("Add", ["INPUT0", "Zi"], ["OUTPUT0"])]
    initializers = [numpy_helper.from_array(np.full((n, n), 1.0 / n, np.float32), "W"),
                    numpy_helper.from_array(np.array(0, np.float32), "zero")]
    return _bytes(helper.make_graph(
        nodes, "slow_load", [helper.make_tensor_value_info("INPUT0", T.INT32, ["batch", 4])],
        [helper.make_tensor_value_info("OUTPUT0", T.INT32, ["batch", 4])], initializers))


def override_config(**extra) -> str:
    return json.dumps({"backend": "onnxruntime", "max_batch_size": 4, **extra})


# max_batch_size 1: no dynamic batcher (auto-complete adds one above 1), so
# whatever the scheduler's close() does, these tests see the version
# lifecycle's own waiting for in-flight requests.
SLOW_CONFIG = {"max_batch_size": 1, "parameters": ONE_THREAD}


class Clients:
    """``count`` threads sending add_const requests to ``model`` until stopped.

    Each records (constant seen, version, start, end) per request and any error.
    """

    def __init__(self, server, model: str, count: int = 4, rows: int = 2):
        self.model = model
        self.rows = rows
        self.results: list[list[tuple]] = [[] for _ in range(count)]
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i, server), daemon=True)
                         for i in range(count)]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _run(self, index_: int, server):
        client = server.client()
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    value, version = add_const(client, self.model, rows=self.rows)
                except Exception as exc:  # every failure counts
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                self.results[index_].append((value, version, started, time.monotonic()))
        finally:
            client.close()

    def total(self) -> int:
        return sum(len(r) for r in self.results)


def explicit_server_with_slow_model(tmp_path, start_server, value: int, matmuls: int = 8):
    """A server in explicit mode with model ``slow`` (adds ``value``, slowly) loaded; ``(server, client)``."""
    repo = tmp_path / "models"
    repo.mkdir()
    server = start_server(repo, "--model-control-mode", "explicit")
    client = server.client()
    client.load_model("slow", config=override_config(**SLOW_CONFIG),
                      files={"file:1/model.onnx": slow_infer_onnx(value, matmuls=matmuls)})
    return server, client


def request_in_background(server, model: str):
    """One add_const request to ``model`` on its own client and thread, started now.

    Returns ``(thread, outcome)``; ``outcome`` gets ``result`` or ``error``, then
    ``ended`` (``time.monotonic()``), so ``"ended" not in outcome`` while it runs.
    """
    outcome = {}

    def run():
        own = server.client()
        try:
            outcome["result"] = add_const(own, model)
        except Exception as exc:
            outcome["error"] = exc
        outcome["ended"] = time.monotonic()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_reload_20_times_under_load_fails_no_request(tmp_path, start_server):
    repo = tmp_path / "models"
    models.versioned_model(repo, "swap", [1])  # the repository's version adds 1
    server = start_server(repo, "--model-control-mode", "explicit", "--load-model", "swap")
    client = server.client()
    loaded_at = {}  # constant -> time its load returned
    with Clients(server, "swap", rows=1) as clients:
        assert wait_for(lambda: clients.total() >= 8)
        for constant in range(100, 120):
            # Alternately without and with the dynamic batcher.
            batching = {} if constant % 2 else {"max_batch_size": 1}
            client.load_model("swap", config=override_config(**batching),
                              files={"file:1/model.onnx": onnx_bytes(constant)})
            loaded_at[constant] = time.monotonic()
            # New requests go to the new model at once.
            assert add_const(client, "swap") == (constant, "1")
            time.sleep(0.05)
        time.sleep(0.3)
        clients.stop()

    assert clients.errors == []
    assert clients.total() >= 40
    for results in clients.results:
        previous = 1
        for value, version, started, ended in results:
            assert version == "1"
            assert value == 1 or value in loaded_at
            # A request started after load N returned never sees an older model...
            newest_loaded = max([c for c, t in loaded_at.items() if t <= started], default=1)
            assert value >= newest_loaded
            # ...and, per client, the constants never go backwards.
            assert value >= previous
            previous = value
    # Every replaced model was closed once idle (20 swaps -> 20 closes, the last still serving).
    assert wait_for(lambda: server.log().count("successfully unloaded 'swap' version 1") == 20)
    assert index(client)["swap"] == [("1", "READY", "")]


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_replaced_version_gives_its_threads_back_at_once(tmp_path, start_server):
    """Each version's ONNX Runtime sessions (and their intra-op threads) end when it unloads,
    not when the garbage collector gets round to the scheduler's reference cycles."""
    repo = tmp_path / "models"
    model_dir = models.versioned_model(repo, "swap", [1], policy="latest: { num_versions: 1 }")
    # Three intra-op threads: each session runs two pool threads besides the caller's,
    # so each version's two instances hold four threads of their own.
    with open(model_dir / "config.pbtxt", "a") as config:
        config.write('parameters { key: "intra_op_thread_count" value { string_value: "3" } }\n'
                     "instance_group [ { kind: KIND_CPU count: 2 } ]\n")
    server = start_server(repo, "--model-control-mode", "explicit", "--load-model", "swap")
    client = server.client()
    pid = server.process.pid
    with Clients(server, "swap", count=2, rows=1) as clients:
        assert wait_for(lambda: clients.total() >= 8)
        before = _threads(pid)
        for version in range(2, 8):
            models.add_const_onnx(model_dir / str(version) / "model.onnx", version)
            client.load_model("swap")
            assert add_const(client, "swap") == (version, str(version))
            assert wait_for(lambda: server.log().count("successfully unloaded 'swap'") == version - 1)
            # An unload's own thread ends just after it logs; a leaked version holds 4 more.
            assert wait_for(lambda: _threads(pid) <= before + 1, timeout=5), (
                version, before, _threads(pid))
    assert clients.errors == []


def test_new_version_becomes_latest_under_load_in_poll_mode(tmp_path, start_server):
    repo = tmp_path / "models"
    models.versioned_model(repo, "grow", [1])
    server = start_server(repo, "--model-control-mode", "poll", "--repository-poll-secs", "0.5")
    client = server.client()
    with Clients(server, "grow") as clients:
        assert wait_for(lambda: clients.total() >= 8)
        staging = tmp_path / "staging"
        models.add_const_onnx(staging / "model.onnx", 2)
        staging.rename(repo / "grow" / "2")
        assert wait_for(lambda: add_const(client, "grow") == (2, "2"))
        time.sleep(0.5)
        clients.stop()
    assert clients.errors == []
    seen = [(v, ver) for results in clients.results for v, ver, *_ in results]
    assert (1, "1") in seen and (2, "2") in seen
    assert set(seen) == {(1, "1"), (2, "2")}
    assert wait_for(lambda: index(client)["grow"] == [("2", "READY", "")])
    assert "successfully unloaded 'grow' version 1" in server.log()


def test_in_flight_request_finishes_on_the_version_it_started_on(tmp_path, start_server):
    server, client = explicit_server_with_slow_model(tmp_path, start_server, 1)
    started = time.monotonic()
    assert add_const(client, "slow") == (1, "1")
    duration = time.monotonic() - started

    thread, outcome = request_in_background(server, "slow")
    time.sleep(min(0.2, duration / 4))
    in_flight_at_reload = "ended" not in outcome
    client.load_model("slow", config=override_config(**SLOW_CONFIG),
                      files={"file:1/model.onnx": onnx_bytes(2)})
    closed_early = "successfully unloaded 'slow' version 1" in server.log()
    still_running = "ended" not in outcome
    assert add_const(client, "slow") == (2, "1")  # new requests: the new model
    thread.join(60)
    assert "error" not in outcome, outcome.get("error")
    assert in_flight_at_reload, f"the slow request ({duration:.2f}s) ended before the reload"
    assert outcome["result"] == (1, "1")  # the request in flight: the old model
    # The old instance closed only after that request was done.
    assert still_running, "the slow request ended before the reload returned"
    assert not closed_early
    assert wait_for(lambda: "successfully unloaded 'slow' version 1" in server.log())


def test_unload_returns_at_once_and_lets_requests_finish(tmp_path, start_server):
    # A long request (seconds even on a quiet, fast box), so it is surely still running
    # when the index is read.
    server, client = explicit_server_with_slow_model(tmp_path, start_server, 5, matmuls=48)
    thread, outcome = request_in_background(server, "slow")
    time.sleep(0.3)
    started = time.monotonic()
    client.unload_model("slow")
    assert time.monotonic() - started < 0.5
    assert not client.is_model_ready("slow")
    states = index(client)["slow"]
    assert "ended" not in outcome, "the request finished before the index was read"
    thread.join(60)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["result"] == (5, "1")
    assert states == [("1", "UNLOADING", "")]  # closes only once the request is done
    assert wait_for(lambda: index(client)["slow"] == [("1", "UNAVAILABLE", "unloaded")])


def test_loading_a_slow_model_does_not_block_inference_on_others(tmp_path, start_server):
    repo = tmp_path / "models"
    models.versioned_model(repo, "fast", [1])
    server = start_server(repo, "--model-control-mode", "explicit", "--load-model", "fast")
    client = server.client()
    payload = slow_load_onnx()
    done = threading.Event()
    states = []
    load = {}

    def load_slow():
        own = server.client()
        started = time.monotonic()
        try:
            own.load_model("big", config=override_config(**SLOW_CONFIG),
                           files={"file:1/model.onnx": payload})
        except Exception as exc:
            load["error"] = exc
        load["seconds"] = time.monotonic() - started
        done.set()

    thread = threading.Thread(target=load_slow)
    thread.start()
    latencies = []
    while not done.is_set():
        started = time.monotonic()
        assert add_const(client, "fast") == (1, "1")
        latencies.append(time.monotonic() - started)
        if not states:
            row = index(client).get("big")
            if row:
                states.append(row[0][1])
                ready_during_load = client.is_server_ready()
        time.sleep(0.01)
    thread.join()
    assert "error" not in load, load.get("error")
    assert load["seconds"] > 0.5, "the slow model loaded too fast to show anything"
    assert len(latencies) >= 10
    assert max(latencies) < max(0.5, load["seconds"] / 3), (max(latencies), load["seconds"])
    assert states == ["LOADING"]
    assert ready_during_load  # a model still loading does not make the server unready
    assert client.is_model_ready("big")
