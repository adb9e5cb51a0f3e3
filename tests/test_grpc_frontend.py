"""The ``grpc.aio`` serving loop through tritonclient, with each codec.

Results, error statuses, metadata, and the scheduler's batching and deadlines
with ModelInfer awaiting its sender on the event loop (no thread per request).
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

import models
from conftest import free_port
from models import error_of
from scheduling_models import (NO_AUTO_COMPLETE, Completions, delay_for, model_stats,
                               slow_inputs, wait_until, write_model)

BIG = 1 << 16  # FP32 elements: 256 KiB


@pytest.fixture
def repo(tmp_path):
    repo = tmp_path / "models"
    repo.mkdir()
    models.simple_model(repo, "simple")
    models.identity_model(repo, "identity", "FP32", max_batch_size=8, dims=[-1])
    return repo


def _codecs():
    try:
        import triton_grpc_server._ext.wire  # noqa: F401
        cython = pytest.param("cython")
    except ImportError:
        cython = pytest.param("cython", marks=pytest.mark.skip(reason="Cython codec not built"))
    return [cython, "python"]


def tensor(name, array, datatype):
    t = grpcclient.InferInput(name, list(array.shape), datatype)
    t.set_data_from_numpy(array)
    return t


@pytest.mark.parametrize("codec", _codecs())
def test_infer_results(start_server, repo, codec):
    server = start_server(repo, "--infer-codec", codec)
    client = server.client()
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 7, dtype=np.int32)
    result = client.infer("simple", [tensor("INPUT0", a, "INT32"), tensor("INPUT1", b, "INT32")],
                          request_id="r1")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    assert result.get_response().id == "r1"

    # concurrent large requests
    arrays = [np.random.default_rng(i).standard_normal((1, BIG)).astype(np.float32)
              for i in range(6)]
    done, lock, finished = {}, threading.Lock(), threading.Event()

    def callback(index, result, error):
        with lock:
            done[index] = error if error is not None else result.as_numpy("OUTPUT0")
            if len(done) == len(arrays):
                finished.set()

    for i, x in enumerate(arrays):
        client.async_infer("identity", [tensor("INPUT0", x, "FP32")],
                           callback=lambda result, error, i=i: callback(i, result, error))
    assert finished.wait(60)
    for i, x in enumerate(arrays):
        assert isinstance(done[i], np.ndarray), done[i]
        np.testing.assert_array_equal(done[i], x)
    client.close()


@pytest.mark.parametrize("codec", _codecs())
def test_error_statuses(start_server, repo, codec):
    server = start_server(repo, "--infer-codec", codec)
    client = server.client()
    a = np.ones((1, 16), dtype=np.int32)
    code, message = error_of(client.infer, "nope", [tensor("INPUT0", a, "INT32")])
    assert (code, message) == ("NOT_FOUND", "Request for unknown model: 'nope' is not found")
    code, _ = error_of(client.infer, "simple", [tensor("INPUT0", a, "INT32")])  # INPUT1 missing
    assert code == "INVALID_ARGUMENT"
    big = np.ones((1, BIG), dtype=np.int32)  # wrong datatype
    code, message = error_of(client.infer, "identity", [tensor("INPUT0", big, "INT32")])
    assert code == "INVALID_ARGUMENT" and "INPUT0" in message
    code, _ = error_of(client.get_model_metadata, "nope")
    assert code == "NOT_FOUND"
    assert client.is_server_live()  # and the server keeps serving
    client.close()


def test_server_metadata_and_health(start_server, repo):
    client = start_server(repo).client()
    metadata = client.get_server_metadata()
    assert metadata.name == "triton"
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("simple")
    assert [t.name for t in client.get_model_metadata("simple").inputs] == ["INPUT0", "INPUT1"]
    assert client.get_model_config("simple").config.name == "simple"
    client.close()


# Signals stopping the server after an in-flight request: tests/test_cli.py
# (test_signal_stops_cleanly_after_in_flight_request).


def _slow_model(tmp_path):
    repo = tmp_path / "models"
    write_model(repo, "slow", "slow", "max_batch_size: 8\n"
                "instance_group [ { kind: KIND_CPU count: 1 } ]\ndynamic_batching { }\n")
    return repo


def test_requests_queued_behind_a_busy_instance_form_one_batch(tmp_path, start_server):
    server = start_server(_slow_model(tmp_path), NO_AUTO_COMPLETE,
                          "--metrics-port", free_port())
    client = server.client()
    assert client.is_server_ready()
    done = Completions()
    client.async_infer("slow", slow_inputs(grpcclient, 0, delay_for(1.5)), done.callback("busy"))
    time.sleep(0.3)
    for i in range(1, 5):
        client.async_infer("slow", slow_inputs(grpcclient, i, 1), done.callback(i))
    done.wait(5)
    assert not done.errors, done.errors
    for i in range(1, 5):
        np.testing.assert_allclose(done.results[i].as_numpy("OUTPUT0"), np.full((1, 4), i + 1.0))
    stats = model_stats(client, "slow")
    assert (stats.inference_count, stats.execution_count) == (5, 2)  # busy + one batch of 4
    client.close()


def test_request_past_its_deadline_is_not_executed(tmp_path, start_server):
    server = start_server(_slow_model(tmp_path), NO_AUTO_COMPLETE,
                          "--metrics-port", free_port())
    client = server.client()
    assert client.is_server_ready()
    done = Completions()
    client.async_infer("slow", slow_inputs(grpcclient, 0, delay_for(2.0)), done.callback("busy"))
    time.sleep(0.5)  # generous: the slow one must be executing, not queued
    client.async_infer("slow", slow_inputs(grpcclient, 1, 1), done.callback("gone"),
                       client_timeout=0.2)
    done.wait(2)  # both responses (the count, not seconds)
    assert done.order == ["gone", "busy"]
    # the client's deadline; CANCELLED if the server's drop overtakes it on the wire
    assert done.errors["gone"].status() in ("StatusCode.DEADLINE_EXCEEDED", "StatusCode.CANCELLED")
    stats = wait_until(lambda: (lambda s: s if s.inference_stats.fail.count else None)(
        model_stats(client, "slow")))
    assert (stats.inference_stats.fail.count, stats.inference_stats.success.count) == (1, 1)
    assert stats.execution_count == 1
    client.close()
