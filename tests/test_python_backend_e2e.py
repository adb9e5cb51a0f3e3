"""The Python backend end to end: a real server, real tritonclient, real instance processes.

One server serves every model of this module (Python models take a process
start each to load). ONNX models built with the onnx helper API are the BLS
targets, as a Python model's pre/post-processing would call them.
"""
from __future__ import annotations

import os
import queue
import threading
import time
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from onnx import TensorProto

from conftest import free_port
from models import add_sub_onnx, config_text, error_of, serve
from python_models import (ADD_SUB, AUTO_COMPLETE, BATCH_COUNT, BLS_ASYNC, BLS_DECOUPLED,
                           BLS_SYNC, F32x4, F32x4_OUT, FAULTY, IDENTITY, INIT_RAISES, METRICS,
                           REPEAT, python_model)

METRICS_PORT = free_port()
REPEAT_OUT = [("OUT", "TYPE_INT32", [1]), ("IDX", "TYPE_UINT32", [1])]
DECOUPLED = "model_transaction_policy { decoupled: true }\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("python_repo")
    python_model(repo, "add_sub_py", ADD_SUB, F32x4, F32x4_OUT)
    add_sub_onnx(repo / "add_sub_onnx" / "1" / "model.onnx", TensorProto.FLOAT, dims=(4,),
                 batch_dim=None)
    (repo / "add_sub_onnx" / "config.pbtxt").write_text(config_text(
        "add_sub_onnx", 0, [t + ("",) for t in F32x4], [t + ("",) for t in F32x4_OUT]))
    python_model(repo, "identity_bytes", IDENTITY, [("INPUT0", "TYPE_STRING", [-1])],
                 [("OUTPUT0", "TYPE_STRING", [-1])], max_batch_size=8)
    python_model(repo, "batched", BATCH_COUNT, [("IN", "TYPE_INT32", [1])], [("OUT", "TYPE_INT32", [1])],
                 max_batch_size=8,
                 extra="dynamic_batching { preferred_batch_size: [ 4 ] "
                       "max_queue_delay_microseconds: 5000000 }\n")
    python_model(repo, "repeat", REPEAT, [("IN", "TYPE_INT32", [-1])], REPEAT_OUT, extra=DECOUPLED)
    python_model(repo, "bls_sync", BLS_SYNC, [("MODEL_NAME", "TYPE_STRING", [1])] + F32x4, F32x4_OUT)
    python_model(repo, "bls_async", BLS_ASYNC, F32x4, F32x4_OUT)
    python_model(repo, "bls_decoupled", BLS_DECOUPLED, [("IN", "TYPE_INT32", [-1])],
                 [("SUM", "TYPE_INT32", [1]), ("COUNT", "TYPE_INT32", [1])])
    python_model(repo, "auto", AUTO_COMPLETE, config='backend: "python"\n')
    python_model(repo, "metered", METRICS, [("INPUT0", "TYPE_FP32", [-1])],
                 [("OUTPUT0", "TYPE_FP32", [-1])], count=2)
    python_model(repo, "broken", INIT_RAISES, F32x4, F32x4_OUT)
    mode = [("MODE", "TYPE_INT32", [1])]
    out = [("OUT", "TYPE_INT64", [1])]
    python_model(repo, "faulty", FAULTY, mode, out, count=2)
    python_model(repo, "hangs", FAULTY, mode, out, max_batch_size=1,
                 extra="dynamic_batching { default_queue_policy { timeout_action: REJECT "
                       "default_timeout_microseconds: 300000 } }\n")
    python_model(repo, "slow", FAULTY, mode, out)
    python_model(repo, "doomed", FAULTY, mode, out)
    yield from serve(repo, "--metrics-port", METRICS_PORT, "--model-control-mode", "explicit",
                     "--load-model", "*", "--exit-on-error", "false",
                     "--exit-timeout-secs", "3")  # the hung model's request must not hold teardown


@pytest.fixture(scope="module")
def client(server):
    c = server.client()
    yield c
    c.close()


def infer_inputs(**arrays):
    inputs = []
    for name, array in arrays.items():
        datatype = "BYTES" if array.dtype == object else grpcclient.np_to_triton_dtype(array.dtype)
        tensor = grpcclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def f32x4(seed):
    return np.random.default_rng(seed).random(4, dtype=np.float32)


def test_add_sub(client):
    a, b = f32x4(1), f32x4(2)
    result = client.infer("add_sub_py", infer_inputs(INPUT0=a, INPUT1=b))
    np.testing.assert_allclose(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_allclose(result.as_numpy("OUTPUT1"), a - b)


def test_bytes_round_trip(client):
    data = np.array([[b"\x00\xffhello", b"", "é".encode()] * 3] * 2, dtype=object)
    result = client.infer("identity_bytes", infer_inputs(INPUT0=data))
    assert result.as_numpy("OUTPUT0").tolist() == data.tolist()


def test_dynamic_batching_gives_the_model_several_requests(client):
    results = queue.Queue()
    for i in range(4):
        client.async_infer("batched", infer_inputs(IN=np.array([[i]], np.int32)),
                           lambda result, error: results.put((result, error)))
    counts = []
    for _ in range(4):
        result, error = results.get(timeout=30)
        assert error is None, error
        counts.append(int(result.as_numpy("OUT")[0, 0]))
    assert counts == [4, 4, 4, 4]


def stream_responses(server, model, inputs, count_final=True):
    answers = queue.Queue()
    with server.client() as stream_client:
        stream_client.start_stream(lambda result, error: answers.put((result, error)))
        stream_client.async_stream_infer(model, inputs, request_id="7",
                                         enable_empty_final_response=True)
        got = []
        while True:
            result, error = answers.get(timeout=30)
            assert error is None, error
            response = result.get_response()
            if response.parameters["triton_final_response"].bool_param:
                break
            got.append(result)
        stream_client.stop_stream()
    return got


@pytest.mark.parametrize("values", [[], [5], [4, 2, 0, 1]])
def test_decoupled_repeat(server, values):
    got = stream_responses(server, "repeat", infer_inputs(IN=np.array(values, np.int32)))
    assert [int(r.as_numpy("OUT")[0]) for r in got] == values
    assert [int(r.as_numpy("IDX")[0]) for r in got] == list(range(len(values)))
    assert all(r.get_response().id == "7" for r in got)


def test_decoupled_model_refused_on_unary_infer(client):
    code, message = error_of(client.infer, "repeat", infer_inputs(IN=np.array([1], np.int32)))
    assert code == "UNIMPLEMENTED" and "decoupled" in message


def test_bls_sync_to_onnx_and_python(client):
    a, b = f32x4(3), f32x4(4)
    for target in ("add_sub_onnx", "add_sub_py"):
        result = client.infer("bls_sync", infer_inputs(
            MODEL_NAME=np.array([target.encode()], object), INPUT0=a, INPUT1=b))
        np.testing.assert_allclose(result.as_numpy("OUTPUT0"), a + b)
        np.testing.assert_allclose(result.as_numpy("OUTPUT1"), a - b)
    code, message = error_of(client.infer, "bls_sync", infer_inputs(
        MODEL_NAME=np.array([b"undefined_model"], object), INPUT0=a, INPUT1=b))
    assert code == "INTERNAL"
    assert "Model 'undefined_model' is not ready" in message


def test_bls_async(client):
    a, b = f32x4(5), f32x4(6)
    result = client.infer("bls_async", infer_inputs(INPUT0=a, INPUT1=b))
    np.testing.assert_allclose(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_allclose(result.as_numpy("OUTPUT1"), a - b)


@pytest.mark.parametrize("values", [[], [3], [4, 2, 0, 1]])
def test_bls_decoupled(client, values):
    result = client.infer("bls_decoupled", infer_inputs(IN=np.array(values, np.int32)))
    assert int(result.as_numpy("SUM")[0]) == sum(values)
    assert int(result.as_numpy("COUNT")[0]) == len(values)


def test_auto_complete_config(client):
    config = client.get_model_config("auto", as_json=True)["config"]
    assert int(config["max_batch_size"]) == 4
    assert [t["name"] for t in config["input"]] == ["INPUT0", "INPUT1"]
    assert "dynamic_batching" in config
    a, b = f32x4(7)[None], f32x4(8)[None]
    result = client.infer("auto", infer_inputs(INPUT0=a, INPUT1=b))
    np.testing.assert_allclose(result.as_numpy("OUTPUT0"), a + b)


def test_custom_metrics_scraped(client, server):
    for size in (1, 5):
        client.infer("metered", infer_inputs(INPUT0=np.zeros(size, np.float32)))
    text = urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10).read().decode()
    assert "# HELP requests_seen Requests seen" in text
    assert "# TYPE requests_seen counter" in text
    assert 'requests_seen{model="metered",version="1"} 2.0' in text
    assert "# TYPE request_elements histogram" in text
    assert 'request_elements_count{model="metered"} 2' in text
    assert "nv_inference_request_success" in text  # the server's own families still there
    assert "model.py" in server.log() and "seen 2.0" in server.log()


def test_initialize_raising_makes_the_model_unavailable(client):
    assert not client.is_model_ready("broken")
    (row,) = [m for m in client.get_model_repository_index(as_json=True)["models"]
              if m["name"] == "broken"]
    assert row["state"] == "UNAVAILABLE"
    assert "TritonModelException: weights file missing" in row["reason"]
    assert client.is_model_ready("add_sub_py")


def test_execute_raising_fails_only_that_request(client):
    mode = lambda m: infer_inputs(MODE=np.array([m], np.int32))  # noqa: E731
    code, message = error_of(client.infer, "faulty", mode(1))
    assert code == "INTERNAL"
    assert "Failed to process the request(s) for model instance 'faulty_" in message
    assert "execute failed on purpose" in message
    code, message = error_of(client.infer, "faulty", mode(2))
    assert (code, message) == ("INVALID_ARGUMENT", "bad value")
    assert client.infer("faulty", mode(0)).as_numpy("OUT")[0] > 0


def test_crash_fails_the_request_restarts_and_others_keep_serving(client):
    mode = lambda m: infer_inputs(MODE=np.array([m], np.int32))  # noqa: E731
    pids = {int(client.infer("faulty", mode(0)).as_numpy("OUT")[0]) for _ in range(4)}
    code, message = error_of(client.infer, "faulty", mode(3))
    assert code == "INTERNAL"
    assert "is not healthy: the instance process exited with code 3" in message
    # The other models never noticed; this one serves again from a fresh process.
    a, b = f32x4(9), f32x4(10)
    np.testing.assert_allclose(client.infer("add_sub_py", infer_inputs(INPUT0=a, INPUT1=b))
                               .as_numpy("OUTPUT0"), a + b)
    after = {int(client.infer("faulty", mode(0)).as_numpy("OUT")[0]) for _ in range(4)}
    assert after - pids  # a new process answers
    assert client.is_model_ready("faulty")


def test_crashing_on_every_request_makes_the_model_unavailable(client):
    for _ in range(3):
        code, message = error_of(client.infer, "doomed", infer_inputs(MODE=np.array([3], np.int32)))
        assert "exited with code 3" in message
    assert not client.is_model_ready("doomed")
    (row,) = [m for m in client.get_model_repository_index(as_json=True)["models"]
              if m["name"] == "doomed"]
    assert row["state"] == "UNAVAILABLE" and "3 times in a row" in row["reason"]
    assert client.is_model_ready("faulty")


def test_hang_times_out_the_queued_request(server, client):
    hung = queue.Queue()
    client.async_infer("hangs", infer_inputs(MODE=np.array([[4]], np.int32)),
                       lambda result, error: hung.put(error), client_timeout=3)
    time.sleep(0.5)  # let the first request reach the instance
    code, message = error_of(client.infer, "hangs", infer_inputs(MODE=np.array([[0]], np.int32)))
    assert (code, message) == ("UNAVAILABLE", "Request timeout expired")
    np.testing.assert_allclose(client.infer("add_sub_py", infer_inputs(
        INPUT0=f32x4(1), INPUT1=f32x4(1))).as_numpy("OUTPUT1"), np.zeros(4))
    assert "Deadline" in str(hung.get(timeout=30))  # the hung one ends when its client gives up


def test_unload_with_a_request_in_flight(client):
    mode = lambda m: infer_inputs(MODE=np.array([m], np.int32))  # noqa: E731
    pid = int(client.infer("slow", mode(0)).as_numpy("OUT")[0])
    done = queue.Queue()
    client.async_infer("slow", mode(5), lambda result, error: done.put((result, error)))
    time.sleep(0.3)
    client.unload_model("slow")
    result, error = done.get(timeout=30)
    assert error is None, error
    assert int(result.as_numpy("OUT")[0]) == pid
    for _ in range(100):  # the process ends once the request is done
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"instance process {pid} still running after unload")


def test_add_sub_and_bls_over_http(server):
    import tritonclient.http as httpclient

    a, b = f32x4(11), f32x4(12)
    with server.http_client() as http:
        inputs = []
        for name, array in (("INPUT0", a), ("INPUT1", b)):
            tensor = httpclient.InferInput(name, [4], "FP32")
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        result = http.infer("add_sub_py", inputs)
        np.testing.assert_allclose(result.as_numpy("OUTPUT1"), a - b)
        name = httpclient.InferInput("MODEL_NAME", [1], "BYTES")
        name.set_data_from_numpy(np.array([b"add_sub_onnx"], object))
        result = http.infer("bls_sync", inputs + [name])
        np.testing.assert_allclose(result.as_numpy("OUTPUT0"), a + b)
        assert http.get_model_config("auto")["max_batch_size"] == 4
