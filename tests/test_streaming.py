"""ModelStreamInfer through tritonclient.grpc's start_stream / async_stream_infer.

Non-decoupled models answer in request order; the decoupled ``repeat_int32``
test model (tests/repeat_backend.py, Triton's repeat interface) answers 0, 1 or
N times per request, interleaved; errors travel in-band unless the
``triton_grpc_error`` header is set; a cancelled stream stops its requests.
"""
from __future__ import annotations

import queue
import threading

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

import models
import repeat_backend
from models import error_of


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("streaming")
    repo = base / "models"
    repo.mkdir()
    models.simple_model(repo, "simple")
    repeat_backend.write_model(repo, "repeat_int32")
    yield from models.serve(repo, "--disable-auto-complete-config",
                            env=repeat_backend.plugin_env(base / "plugins"))


class Stream:
    """A started stream whose callback results land in a queue."""

    def __init__(self, server, headers=None):
        self.client = server.client()
        self.results: "queue.Queue" = queue.Queue()
        self.client.start_stream(callback=lambda result, error: self.results.put((result, error)),
                                 headers=headers)

    def take(self, count: int, timeout: float = 30.0) -> list:
        return [self.results.get(timeout=timeout) for _ in range(count)]

    def close(self, cancel: bool = False) -> None:
        self.client.stop_stream(cancel_requests=cancel)
        self.client.close()


def simple_inputs(value: int):
    a = np.full((1, 16), value, np.int32)
    b = np.ones((1, 16), np.int32)
    inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"),
              grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    return inputs


def repeat_inputs(values, delays=None, wait: int = 0):
    values = np.asarray(values, np.int32)
    delays = np.zeros(len(values), np.uint32) if delays is None else np.asarray(delays, np.uint32)
    inputs = [grpcclient.InferInput("IN", [len(values)], "INT32"),
              grpcclient.InferInput("DELAY", [len(delays)], "UINT32"),
              grpcclient.InferInput("WAIT", [1], "UINT32")]
    inputs[0].set_data_from_numpy(values)
    inputs[1].set_data_from_numpy(delays)
    inputs[2].set_data_from_numpy(np.array([wait], np.uint32))
    return inputs


def final_flag(result) -> bool:
    return result.get_response().parameters["triton_final_response"].bool_param


def test_non_decoupled_answers_in_request_order(server):
    stream = Stream(server)
    try:
        for i in range(50):
            stream.client.async_stream_infer("simple", simple_inputs(i), request_id=str(i))
        got = stream.take(50)
    finally:
        stream.close()
    assert [e for _, e in got] == [None] * 50
    assert [r.get_response().id for r, _ in got] == [str(i) for i in range(50)]
    for i, (result, _) in enumerate(got):
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.full((1, 16), i + 1))
        assert final_flag(result) is True


@pytest.mark.parametrize("count", [0, 1, 5])
def test_decoupled_sends_n_responses_then_the_empty_final_one(server, count):
    stream = Stream(server)
    try:
        stream.client.async_stream_infer("repeat_int32", repeat_inputs(range(10, 10 + count)),
                                         request_id="r", enable_empty_final_response=True)
        got = stream.take(count + 1)
    finally:
        stream.close()
    assert all(error is None for _, error in got), got
    responses = [result.get_response() for result, _ in got]
    assert [r.id for r in responses] == ["r"] * (count + 1)
    for index, (result, _) in enumerate(got[:count]):
        assert result.as_numpy("OUT").tolist() == [10 + index]
        assert result.as_numpy("IDX").tolist() == [index]
        assert final_flag(result) is False
    last = responses[-1]
    assert final_flag(got[-1][0]) is True and len(last.outputs) == 0
    assert (last.model_name, last.id) == ("repeat_int32", "r")


def test_decoupled_without_empty_final_sends_only_the_responses(server):
    stream = Stream(server)
    try:
        stream.client.async_stream_infer("repeat_int32", repeat_inputs([1, 2, 3]), request_id="a")
        stream.client.async_stream_infer("repeat_int32", repeat_inputs([]), request_id="none")
        stream.client.async_stream_infer("simple", simple_inputs(0), request_id="marker")
        got = stream.take(4)
    finally:
        stream.close()
    ids = [result.get_response().id for result, _ in got]
    assert sorted(ids) == ["a", "a", "a", "marker"]  # nothing at all for "none"
    assert [final_flag(r) for r, _ in got if r.get_response().id == "a"] == [False] * 3


def test_decoupled_responses_interleave(server):
    stream = Stream(server)
    try:
        # "slow" answers every 300 ms; "fast" (sent after it) finishes in between.
        stream.client.async_stream_infer("repeat_int32", repeat_inputs([1, 2], [300, 300]),
                                         request_id="slow", enable_empty_final_response=True)
        stream.client.async_stream_infer("repeat_int32", repeat_inputs([7, 8]), request_id="fast",
                                         enable_empty_final_response=True)
        got = stream.take(6)
    finally:
        stream.close()
    ids = [result.get_response().id for result, _ in got]
    assert ids.index("fast") < ids.index("slow")
    assert ids.count("fast") == 3 and ids.count("slow") == 3


def test_errors_arrive_in_band_and_the_stream_stays_open(server):
    stream = Stream(server)
    try:
        stream.client.async_stream_infer("nope", simple_inputs(0), request_id="unknown")
        stream.client.async_stream_infer("simple", simple_inputs(0)[:1], request_id="missing")
        stream.client.async_stream_infer("repeat_int32", repeat_inputs([1, 2], [0]),
                                         request_id="mismatch")
        stream.client.async_stream_infer("simple", simple_inputs(3), request_id="fine")
        got = stream.take(4)
    finally:
        stream.close()
    errors = [error for _, error in got if error is not None]
    assert len(errors) == 3
    messages = sorted(e.message() for e in errors)
    assert "Request for unknown model: 'nope' is not found" in messages
    assert any("expected IN and DELAY shape to match" in m for m in messages)
    assert any("[request id: missing]" in m and "INPUT1" in m for m in messages)
    assert all(e.status() is None for e in errors)  # in-band: no gRPC status
    fine = [r for r, e in got if e is None]
    assert [r.get_response().id for r in fine] == ["fine"]


def test_triton_grpc_error_header_closes_the_stream_with_the_status(server):
    stream = Stream(server, headers={"triton_grpc_error": "true"})
    try:
        stream.client.async_stream_infer("simple", simple_inputs(1), request_id="ok")
        stream.client.async_stream_infer("nope", simple_inputs(0), request_id="bad")
        got = stream.take(2)
    finally:
        stream.close()
    assert got[0][1] is None and got[0][0].get_response().id == "ok"
    error = got[1][1]
    assert isinstance(error, InferenceServerException)
    assert error.status() == "StatusCode.NOT_FOUND"
    assert "Request for unknown model: 'nope' is not found" in error.message()


def test_cancelling_the_stream_stops_its_requests(server):
    client = server.client()
    before = client.get_inference_statistics("repeat_int32").model_stats[0]
    stream = Stream(server)
    stream.client.async_stream_infer("repeat_int32", repeat_inputs(range(20), [100] * 20),
                                     request_id="long")
    first = stream.take(1)[0]
    assert first[1] is None and first[0].as_numpy("IDX").tolist() == [0]
    stream.close(cancel=True)

    def cancelled():
        stats = client.get_inference_statistics("repeat_int32").model_stats[0]
        return stats.inference_stats.fail.count > before.inference_stats.fail.count

    from scheduling_models import wait_until
    wait_until(cancelled)  # the backend saw the flag and stopped (counted as a failure)
    assert client.is_server_live()
    client.close()


def test_ten_thousand_requests_on_one_stream(server):
    count = 10_000
    stream = Stream(server)
    done = threading.Event()
    seen = []

    def callback(result, error):
        seen.append(error if error is not None else result.get_response().id)
        if len(seen) == count:
            done.set()

    stream.client.stop_stream()
    stream.client.start_stream(callback=callback)
    inputs = simple_inputs(2)
    for i in range(count):
        stream.client.async_stream_infer("simple", inputs, request_id=str(i))
    assert done.wait(120), f"{len(seen)} of {count} responses"
    stream.close()
    assert seen == [str(i) for i in range(count)]


def test_unary_infer_on_a_decoupled_model_is_refused(server):
    client = server.client()
    code, message = error_of(client.infer, "repeat_int32", repeat_inputs([1]))
    assert code == "UNIMPLEMENTED"
    assert message == "ModelInfer RPC doesn't support models with decoupled transaction policy"
    client.close()
