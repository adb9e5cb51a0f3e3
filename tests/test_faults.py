"""Fault injection against real servers driven by the real tritonclient.

Each fault is injected into one model (or one connection) of a server that
serves others; every test then checks that the other models still answer
with exact results and that every request the server accepted got an answer
(a result or an error, never silence).
"""
from __future__ import annotations

import os
import queue
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

import fault_backend
import repeat_backend
from models import error_of, serve, start
from python_models import FAULTY, python_model
from scheduling_models import wait_until, write_model

# 1,000 sockets here and as many in the server: lift a 1024 soft limit (CI's default) before
# the module's server starts, so it inherits the higher limit too.
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if _soft != resource.RLIM_INFINITY and _soft < 4096:
    resource.setrlimit(resource.RLIMIT_NOFILE, (
        4096 if _hard == resource.RLIM_INFINITY else min(4096, _hard), _hard))

QUEUE_TIMEOUT = ("dynamic_batching { default_queue_policy { timeout_action: REJECT "
                 "default_timeout_microseconds: 300000 } }\n")


def _repository(repo: Path) -> None:
    write_model(repo, "add", "add", "max_batch_size: 8\n")
    write_model(repo, "strings", "strings", "max_batch_size: 8\n")
    write_model(repo, "victim", "add", "max_batch_size: 8\n")
    fault_backend.write_model(repo, "faults")
    fault_backend.write_model(repo, "hangs", max_batch_size=1, extra=QUEUE_TIMEOUT)
    repeat_backend.write_model(repo, "repeat_int32")
    python_model(repo, "faulty_py", FAULTY, [("MODE", "TYPE_INT32", [1])],
                 [("OUT", "TYPE_INT64", [1])])


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    path = tmp_path_factory.mktemp("faults_repo")
    _repository(path)
    return path


@pytest.fixture(scope="module")
def server(repo, tmp_path_factory):
    env = fault_backend.plugin_env(tmp_path_factory.mktemp("faults_plugin"))
    yield from serve(repo, "--model-control-mode", "explicit", "--load-model", "*", env=env)


@pytest.fixture(scope="module")
def client(server):
    c = server.client()
    yield c
    c.close()


def tensors(module, **arrays):
    out = []
    for name, array in arrays.items():
        datatype = "BYTES" if array.dtype == object else module.np_to_triton_dtype(array.dtype)
        tensor = module.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        out.append(tensor)
    return out


def fault_inputs(mode: int, value: int, module=grpcclient, batched=False):
    shape = (1, 1) if batched else (1,)
    return tensors(module, MODE=np.full(shape, mode, np.int32),
                   VALUE=np.full(shape, value, np.int32))


def others_serve_exactly(server, seed: int = 0) -> None:
    """The models nobody injected a fault into answer exactly, over gRPC and HTTP."""
    rng = np.random.default_rng(seed)
    data = rng.random((3, 4), dtype=np.float32)
    words = np.array([[f"w{seed}-{i}".encode()] for i in range(3)], dtype=object)
    with server.client() as grpc_c, server.http_client() as http_c:
        for module, c in ((grpcclient, grpc_c), (httpclient, http_c)):
            np.testing.assert_array_equal(
                c.infer("add", tensors(module, INPUT0=data)).as_numpy("OUTPUT0"), data + 1)
            got = c.infer("strings", tensors(module, INPUT0=words)).as_numpy("OUTPUT0")
            assert got.tolist() == words.tolist()


def test_backend_instance_that_raises(server, client):
    code, message = error_of(client.infer, "faults", fault_inputs(1, 5))
    assert code == "INTERNAL"
    assert "instance failed on purpose" in message
    # The instance that raised takes the next request.
    assert client.infer("faults", fault_inputs(0, 21)).as_numpy("OUT").tolist() == [42]
    others_serve_exactly(server, 1)


def test_instance_hanging_past_the_queue_timeout(server, client):
    held = queue.Queue()
    client.async_infer("hangs", fault_inputs(2, 7, batched=True),
                       lambda result, error: held.put((result, error)))
    time.sleep(0.5)  # the first request holds the only instance
    code, message = error_of(client.infer, "hangs", fault_inputs(0, 8, batched=True))
    assert (code, message) == ("UNAVAILABLE", "Request timeout expired")
    others_serve_exactly(server, 2)
    result, error = held.get(timeout=30)  # the held request is answered, not dropped
    assert error is None, error
    assert result.as_numpy("OUT").tolist() == [[14]]


def test_python_backend_process_killed_mid_request(server, client):
    mode = lambda m: tensors(grpcclient, MODE=np.array([m], np.int32))  # noqa: E731
    pid = int(client.infer("faulty_py", mode(0)).as_numpy("OUT")[0])
    answered = queue.Queue()
    client.async_infer("faulty_py", mode(4), lambda result, error: answered.put((result, error)))
    time.sleep(0.5)  # the request is inside execute(), which sleeps
    os.kill(pid, signal.SIGKILL)
    result, error = answered.get(timeout=30)
    assert result is None
    assert error.status() == "StatusCode.INTERNAL"
    assert "is not healthy" in error.message()
    others_serve_exactly(server, 3)
    new_pid = int(client.infer("faulty_py", mode(0)).as_numpy("OUT")[0])
    assert new_pid != pid
    assert client.is_model_ready("faulty_py")


def test_model_file_deleted_while_loaded_then_reloaded(server, client, repo):
    data = np.arange(8, dtype=np.float32).reshape(2, 4)
    model_file = repo / "victim" / "1" / "model.onnx"
    saved = model_file.read_bytes()
    model_file.unlink()
    try:
        # The loaded session does not need the file.
        np.testing.assert_array_equal(
            client.infer("victim", tensors(grpcclient, INPUT0=data)).as_numpy("OUTPUT0"), data + 1)
        # A reload that cannot read the model leaves the loaded one serving, as Triton does.
        code, _ = error_of(client.load_model, "victim")
        assert code in ("INTERNAL", "INVALID_ARGUMENT", "UNAVAILABLE")
        assert client.is_model_ready("victim")
        np.testing.assert_array_equal(
            client.infer("victim", tensors(grpcclient, INPUT0=data)).as_numpy("OUTPUT0"), data + 1)
    finally:
        model_file.write_bytes(saved)
    client.load_model("victim")
    np.testing.assert_array_equal(
        client.infer("victim", tensors(grpcclient, INPUT0=data)).as_numpy("OUTPUT0"), data + 1)
    others_serve_exactly(server, 4)


DISCONNECTING_CLIENT = '''
import sys, numpy as np, tritonclient.grpc as g
c = g.InferenceServerClient(sys.argv[1])
t = [g.InferInput("MODE", [1, 1], "INT32"), g.InferInput("VALUE", [1, 1], "INT32")]
t[0].set_data_from_numpy(np.array([[2]], np.int32)); t[1].set_data_from_numpy(np.array([[1]], np.int32))
print("sending", flush=True)
c.infer("hangs", t)
'''


def test_client_disconnecting_mid_request(server, client):
    """A client process killed while its request runs: the server drops the answer and goes on."""
    before = client.get_inference_statistics("hangs").model_stats[0]
    proc = subprocess.Popen([sys.executable, "-c", DISCONNECTING_CLIENT, server.url],
                            stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"sending"
    time.sleep(0.5)
    proc.kill()
    proc.wait()
    others_serve_exactly(server, 5)

    def counted():
        stats = client.get_inference_statistics("hangs").model_stats[0]
        done = stats.inference_stats.success.count + stats.inference_stats.fail.count
        return done > (before.inference_stats.success.count + before.inference_stats.fail.count)
    wait_until(counted)  # the orphaned request finished and was counted, once
    # The instance is free again: the next request runs (no queue timeout).
    assert client.infer("hangs", fault_inputs(0, 4, batched=True)).as_numpy("OUT").tolist() == [[8]]


def test_client_disconnecting_mid_stream(server):
    """A stream closed after its first response: the rest is dropped, the next stream is whole."""
    def repeat_inputs(values, delay_ms):
        return tensors(grpcclient, IN=np.array(values, np.int32),
                       DELAY=np.full(len(values), delay_ms, np.uint32),
                       WAIT=np.array([0], np.uint32))

    got = queue.Queue()
    first = server.client()
    first.start_stream(callback=lambda result, error: got.put((result, error)))
    first.async_stream_infer("repeat_int32", repeat_inputs(list(range(20)), 100))
    result, error = got.get(timeout=30)
    assert error is None and result.as_numpy("OUT").tolist() == [0]
    first.close()  # the channel goes while 19 responses are still to come
    others_serve_exactly(server, 6)

    answers = queue.Queue()
    with server.client() as second:
        second.start_stream(callback=lambda result, error: answers.put((result, error)))
        second.async_stream_infer("repeat_int32", repeat_inputs([5, 6, 7], 0),
                                  enable_empty_final_response=True)
        outs = []
        while True:
            result, error = answers.get(timeout=30)
            assert error is None, error
            if result.get_response().parameters["triton_final_response"].bool_param:
                break
            outs.append(int(result.as_numpy("OUT")[0]))
        second.stop_stream()
    assert outs == [5, 6, 7]


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_a_thousand_abandoned_connections(server, client):
    """Half-open gRPC and HTTP connections that never finish: served around, then released."""
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 2100:
        pytest.skip("needs a descriptor limit above 2,100 (RLIMIT_NOFILE)")
    others_serve_exactly(server, 7)
    baseline = _open_fds(server.process.pid)
    sockets = []
    try:
        for index in range(1000):
            port = server.port if index % 2 else server.http_port
            sock = socket.create_connection(("127.0.0.1", port))
            if index % 4 == 1:  # a partial HTTP/2 preface
                sock.sendall(b"PRI * HTTP/2.0\r\n")
            elif index % 4 == 0:  # a partial HTTP request line and headers
                sock.sendall(b"POST /v2/models/add/infer HTTP/1.1\r\nContent-Length: 100\r\n")
            sockets.append(sock)
        others_serve_exactly(server, 8)
    finally:
        for sock in sockets:
            sock.close()
    others_serve_exactly(server, 9)
    # Every abandoned connection's descriptor is released.
    wait_until(lambda: _open_fds(server.process.pid) <= baseline + 10, timeout=30)


def _limit_file_size(limit: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_disk_full_during_a_file_override_load(tmp_path):
    """Writing the override files fails (the kernel refuses past RLIMIT_FSIZE): the load
    fails with a message, nothing is left behind, and the server keeps serving."""
    repo = tmp_path / "repo"
    write_model(repo, "add", "add", "max_batch_size: 8\n")
    write_model(repo, "strings", "strings", "max_batch_size: 8\n")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    server = start(repo, "--model-control-mode", "explicit", "--load-model", "*",
                   env={"TMPDIR": str(scratch)}, preexec_fn=_limit_file_size(4 << 20))
    try:
        with server.client() as c:
            model = (repo / "add" / "1" / "model.onnx").read_bytes()
            padding = bytes(8 << 20)  # past the limit: the write fails with EFBIG
            config = '{"backend":"onnxruntime","max_batch_size":8}'
            code, message = error_of(c.load_model, "big", config=config,
                                     files={"file:1/model.onnx": model, "file:1/pad.bin": padding})
            assert code == "INVALID_ARGUMENT"
            assert "file:1/pad.bin" in message and "too large" in message.lower()
            assert not c.is_model_ready("big")
            assert list(scratch.glob("tgs-override-*")) == []  # the half-written one is removed
            others_serve_exactly(server, 10)
            # The same load that fits succeeds.
            c.load_model("big", config=config, files={"file:1/model.onnx": model})
            data = np.ones((1, 4), np.float32)
            np.testing.assert_array_equal(
                c.infer("big", tensors(grpcclient, INPUT0=data)).as_numpy("OUTPUT0"), data + 1)
    finally:
        server.stop()


def test_sigterm_with_100_requests_in_flight(tmp_path):
    repo = tmp_path / "repo"
    write_model(repo, "add", "add", "max_batch_size: 8\n")
    fault_backend.write_model(repo, "faults")
    seen = tmp_path / "seen"
    env = fault_backend.plugin_env(tmp_path / "plugin")
    env["TGS_FAULTS_SEEN"] = str(seen)
    server = start(repo, "--exit-timeout-secs", "30", env=env)
    try:
        done = queue.Queue()
        with server.client() as c:
            for value in range(100):
                c.async_infer("faults", fault_inputs(3, value),
                              lambda result, error, v=value: done.put((v, result, error)))
            # All 100 accepted by the backend and still running when the signal comes.
            wait_until(lambda: seen.exists() and seen.stat().st_size == 100)
            server.process.send_signal(signal.SIGTERM)
            wait_until(lambda: "Waiting for in-flight requests" in server.log())
            # New requests are refused while the 100 finish.
            with server.client() as late:
                code, _ = error_of(late.infer, "add", tensors(grpcclient, INPUT0=np.ones((1, 4), np.float32)))
                assert code == "UNAVAILABLE"
            answers = [done.get(timeout=60) for _ in range(100)]
        errors = [str(error) for _, _, error in answers if error is not None]
        assert errors == [], f"{len(errors)} of 100 failed: {errors[:3]}"

        assert sorted(int(result.as_numpy("OUT")[0]) for _, result, _ in answers) == \
            [2 * v for v in range(100)]
        assert server.process.wait(60) == 0
    finally:
        server.stop()
