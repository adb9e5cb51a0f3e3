"""Many concurrent clients (sync threads, callbacks, asyncio) mixing good and bad requests."""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

import models

NOTE = ("NOTE: Setting a non-zero max_batch_size in the model config requires a batch dimension "
        "to be prepended to each input shape. If you want to specify the full shape including "
        "the batch dim in your input dims config, try setting max_batch_size to zero. See the "
        "model configuration docs for more info on max_batch_size.")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("concurrency") / "models"
    repo.mkdir()
    models.simple_model(repo, "simple")
    models.identity_model(repo, "id_bytes", "BYTES", max_batch_size=8, dims=[-1])
    handle = models.start(repo)
    yield handle
    handle.stop()


def make_case(i: int, module=grpcclient):
    """Request ``i``: (model, inputs, kwargs, expected) where expected is a check function
    input for either a result or an error ``(code, message)``."""
    rng = np.random.default_rng(i)
    rid = f"req-{i}"
    kind = i % 6
    if kind == 5:  # BYTES round trip with NUL and non-UTF-8 bytes
        items = [bytes(rng.integers(0, 256, int(rng.integers(0, 12)), dtype=np.uint8))
                 for _ in range(int(rng.integers(1, 6)))]
        data = np.array([items], dtype=np.object_)
        t = module.InferInput("INPUT0", list(data.shape), "BYTES")
        t.set_data_from_numpy(data)
        return "id_bytes", [t], {"request_id": rid}, ("ok", {"OUTPUT0": data}, rid)
    batch = int(rng.integers(1, 9))
    a = rng.integers(-10**6, 10**6, (batch, 16), dtype=np.int32)
    b = rng.integers(-10**6, 10**6, (batch, 16), dtype=np.int32)
    model = "simple"
    expected = ("ok", {"OUTPUT0": a + b, "OUTPUT1": a - b}, rid)
    dtype_b = "INT32"
    if kind == 1:
        model = "no_such_model"
        expected = ("NOT_FOUND", "Request for unknown model: 'no_such_model' is not found")
    elif kind == 2:
        a = np.ones((9, 16), dtype=np.int32)
        b = np.ones((9, 16), dtype=np.int32)
        expected = ("INVALID_ARGUMENT",
                    f"[request id: {rid}] inference request batch-size must be <= 8 for 'simple'")
    elif kind == 3:
        a = a[:, :15]
        expected = ("INVALID_ARGUMENT",
                    f"[request id: {rid}] unexpected shape for input 'INPUT0' for model 'simple'. "
                    f"Expected [-1,16], got [{batch},15]. {NOTE}")
    elif kind == 4 and i % 12 == 4:
        b = b.astype(np.float32)
        dtype_b = "FP32"
        expected = ("INVALID_ARGUMENT",
                    f"[request id: {rid}] inference input 'INPUT1' data-type is 'FP32', but model "
                    "'simple' expects 'INT32'")
    inputs = [module.InferInput("INPUT0", list(a.shape), "INT32"),
              module.InferInput("INPUT1", list(b.shape), dtype_b)]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    return model, inputs, {"request_id": rid}, expected


def check(expected, result=None, error=None):
    if expected[0] == "ok":
        assert error is None, f"unexpected error {error}"
        _, outputs, rid = expected
        assert result.get_response().id == rid
        for name, value in outputs.items():
            got = result.as_numpy(name)
            assert got.shape == value.shape
            assert got.tolist() == value.tolist()
    else:
        assert result is None, "bad request succeeded"
        assert isinstance(error, InferenceServerException)
        assert ((error.status() or "").replace("StatusCode.", ""), error.message()) == expected


N_SYNC = 240


def test_sync_threads_mixed(server):
    local = threading.local()
    clients = []
    lock = threading.Lock()

    def client():
        if not hasattr(local, "client"):
            local.client = server.client()
            with lock:
                clients.append(local.client)
        return local.client

    def run(i):
        model, inputs, kwargs, expected = make_case(i)
        try:
            result = client().infer(model, inputs, **kwargs)
        except InferenceServerException as exc:
            check(expected, error=exc)
        else:
            check(expected, result=result)
        return expected[0]

    try:
        with ThreadPoolExecutor(16) as pool:
            kinds = list(pool.map(run, range(N_SYNC)))
    finally:
        for c in clients:
            c.close()
    assert kinds.count("ok") >= N_SYNC // 3
    assert len(set(kinds)) == 3  # ok, NOT_FOUND and INVALID_ARGUMENT all exercised


def test_async_infer_callbacks_mixed(server):
    client = server.client()
    done = threading.Semaphore(0)
    failures = []
    cases = [make_case(1000 + i) for i in range(60)]

    def callback(expected, result, error):
        try:
            check(expected, result=result, error=error)
        except AssertionError as exc:
            failures.append(exc)
        finally:
            done.release()

    try:
        for model, inputs, kwargs, expected in cases:
            client.async_infer(model, inputs,
                               lambda result, error, exp=expected: callback(exp, result, error), **kwargs)
        for _ in cases:
            assert done.acquire(timeout=60)
    finally:
        client.close()
    assert not failures, failures[:3]


def test_aio_clients_mixed(server):
    async def main():
        clients = [aioclient.InferenceServerClient(server.url) for _ in range(4)]
        try:
            async def one(i):
                model, inputs, kwargs, expected = make_case(2000 + i, aioclient)
                try:
                    result = await clients[i % 4].infer(model, inputs, **kwargs)
                except InferenceServerException as exc:
                    check(expected, error=exc)
                else:
                    check(expected, result=result)

            await asyncio.gather(*(one(i) for i in range(120)))
            assert await clients[0].is_server_live()
        finally:
            for c in clients:
                await c.close()

    asyncio.run(main())


def test_server_healthy_after_the_storm(server):
    client = server.client()
    try:
        assert client.is_server_live() and client.is_server_ready()
        model, inputs, kwargs, expected = make_case(6)  # a good one
        check(expected, result=client.infer(model, inputs, **kwargs))
    finally:
        client.close()
    assert server.process.poll() is None
    assert "Traceback" not in server.log()
