"""Sequence models served for real: a server process driven by tritonclient.grpc.

One server per module holds Triton's two example sequence models, the string
dyna-sequence accumulator (implicit state, STRING ids) and a copy of
simple_sequence with a short idle timeout. Requests go over ModelInfer and
ModelStreamInfer.
"""
from __future__ import annotations

import queue
import time
from functools import partial

import numpy as np
import pytest

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from conftest import ServerHandle
from models import _examples
from python_models import python_model

IDLE_US = 200_000

# A Python-backend accumulator: the running sum is implicit state kept by the server.
PY_ACCUMULATE = '''
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "INPUT").as_numpy()
            start = pb_utils.get_input_tensor_by_name(r, "START").as_numpy()
            state = pb_utils.get_input_tensor_by_name(r, "INPUT_STATE").as_numpy()
            total = (x + state * (1 - start)).astype(np.int32)
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("OUTPUT", total), pb_utils.Tensor("OUTPUT_STATE", total)]))
        return responses
'''
PY_SEQUENCE = (
    'sequence_batching { control_input [ '
    '{ name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] }, '
    '{ name: "READY" control [ { kind: CONTROL_SEQUENCE_READY int32_false_true: [ 0, 1 ] } ] } ] '
    'state [ { input_name: "INPUT_STATE" output_name: "OUTPUT_STATE" data_type: TYPE_INT32 '
    'dims: [ 1 ] } ] }\n')


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("sequence_repo")
    _examples.generate(repo, ["simple_sequence", "simple_dyna_sequence"])
    _examples.make_string_dyna_sequence(repo / "simple_string_dyna_sequence")
    idle = repo / "short_idle"
    _examples.make_sequence_model(idle / "1" / "model.onnx")
    config = (repo / "simple_sequence" / "config.pbtxt").read_text()
    config = config.replace('name: "simple_sequence"', 'name: "short_idle"').replace(
        "sequence_batching {", f"sequence_batching {{\n  max_sequence_idle_microseconds: {IDLE_US}")
    (idle / "config.pbtxt").write_text(config)
    python_model(repo, "py_accumulate", PY_ACCUMULATE, [("INPUT", "TYPE_INT32", [1])],
                 [("OUTPUT", "TYPE_INT32", [1])], max_batch_size=8, extra=PY_SEQUENCE)
    handle = ServerHandle(repo, ["--allow-metrics", "false"])
    yield handle
    handle.stop()


@pytest.fixture
def client(server):
    with server.client() as c:
        yield c


def value_input(value):
    tensor = grpcclient.InferInput("INPUT", [1, 1], "INT32")
    tensor.set_data_from_numpy(np.full([1, 1], value, np.int32))
    return tensor


def infer(client, model, sequence_id, value, start=False, end=False, **kwargs):
    result = client.infer(model, [value_input(value)], sequence_id=sequence_id,
                          sequence_start=start, sequence_end=end, **kwargs)
    return int(result.as_numpy("OUTPUT")[0][0])


def run_sequence(client, model, sequence_id, values):
    return [infer(client, model, sequence_id, v, start=i == 0, end=i == len(values) - 1)
            for i, v in enumerate(values)]


VALUES = [0, 11, 7, 5, 3, 2, 0, 1]


def test_simple_sequence_over_model_infer(client):
    assert run_sequence(client, "simple_sequence", 1000, VALUES) == [1] + VALUES[1:]


def test_interleaved_sequences(client):
    a = [infer(client, "simple_sequence", 11, 100, start=True)]
    b = [infer(client, "simple_sequence", "seq-b", 200, start=True)]
    for i, v in enumerate(VALUES[1:]):
        last = i == len(VALUES) - 2
        a.append(infer(client, "simple_sequence", 11, v, end=last))
        b.append(infer(client, "simple_sequence", "seq-b", -v, end=last))
    assert a == [101] + VALUES[1:] and b == [201] + [-v for v in VALUES[1:]]


def test_dyna_sequence_adds_the_correlation_id_at_end(client):
    big = 2**40 + 7  # beyond 32 bits (tritonclient sends ids as int64_param)
    results = run_sequence(client, "simple_dyna_sequence", big, [4, 5, 6])
    assert results == [5, 5, 6 + big % 2**32]   # the model casts CORRID to INT32


def test_string_ids_and_implicit_state(client):
    results = run_sequence(client, "simple_string_dyna_sequence", "1002", [20, -11, -7, 1])
    assert results == [20, 9, 2, 3 + 1002]
    # a new START resets the state
    assert run_sequence(client, "simple_string_dyna_sequence", "1002", [5, 5]) == [5, 10 + 1002]


def test_python_backend_sequence_with_implicit_state(client):
    assert run_sequence(client, "py_accumulate", 41, [3, 4, 5]) == [3, 7, 12]
    assert run_sequence(client, "py_accumulate", 41, [10, 1]) == [10, 11]   # START resets


def test_sequences_over_model_stream_infer(server):
    answers = queue.Queue()
    with server.client() as client:
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        for i, v in enumerate(VALUES):
            for sequence_id, sign in ((21, 1), (22, -1)):
                client.async_stream_infer(
                    "simple_sequence", [value_input(sign * v)], request_id=f"{sequence_id}-{i}",
                    sequence_id=sequence_id, sequence_start=i == 0,
                    sequence_end=i == len(VALUES) - 1)
        got = {}
        for _ in range(2 * len(VALUES)):
            result, error = answers.get(timeout=30)
            assert error is None, error
            response = result.get_response()
            got[response.id] = int(result.as_numpy("OUTPUT")[0][0])
        client.stop_stream()
    assert [got[f"21-{i}"] for i in range(len(VALUES))] == [1] + VALUES[1:]
    assert [got[f"22-{i}"] for i in range(len(VALUES))] == [1] + [-v for v in VALUES[1:]]


def error_of(call):
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value.status(), caught.value.message()


def test_missing_start(client):
    assert error_of(partial(infer, client, "simple_sequence", 555, 1)) == (
        "StatusCode.INVALID_ARGUMENT",
        "inference request for sequence 555 to model 'simple_sequence' must specify the START "
        "flag on the first request of the sequence")


def test_missing_correlation_id(client):
    assert error_of(partial(client.infer, "simple_sequence", [value_input(1)])) == (
        "StatusCode.INVALID_ARGUMENT",
        "inference request to model 'simple_sequence' must specify a non-zero or non-empty "
        "correlation ID")


def test_string_id_on_a_uint64_corrid(client):
    status, message = error_of(partial(infer, client, "simple_dyna_sequence", "abc", 1,
                                       start=True, request_id="r7"))
    assert status == "StatusCode.INVALID_ARGUMENT"
    assert message == ("[request id: r7] sequence batching control 'CORRID' data-type is 'BYTES', "
                       "but model 'simple_dyna_sequence' expects 'UINT64'")


def test_batch_of_two(client):
    tensor = grpcclient.InferInput("INPUT", [2, 1], "INT32")
    tensor.set_data_from_numpy(np.ones([2, 1], np.int32))
    status, message = error_of(partial(client.infer, "simple_sequence", [tensor],
                                       sequence_id=9, sequence_start=True))
    assert status == "StatusCode.INVALID_ARGUMENT"
    assert message == ("inference request to model 'simple_sequence' must specify batch-size 1 "
                       "due to requirements of sequence batcher")


def test_idle_sequence_is_released(client):
    assert infer(client, "short_idle", 31, 5, start=True) == 6
    assert infer(client, "short_idle", 31, 5) == 5      # still live
    deadline = time.monotonic() + 30
    while True:  # released once idle for longer than the timeout; no timing is asserted
        time.sleep(IDLE_US / 1e6)
        try:
            infer(client, "short_idle", 31, 1)
        except InferenceServerException as exc:
            assert exc.message() == ("inference request for sequence 31 to model 'short_idle' "
                                     "must specify the START flag on the first request of the "
                                     "sequence")
            break
        assert time.monotonic() < deadline, "idle sequence never released"


def test_statistics(client):
    before = client.get_inference_statistics("simple_dyna_sequence", as_json=True)
    run_sequence(client, "simple_dyna_sequence", 77, [1, 2, 3])
    infer_error = partial(infer, client, "simple_dyna_sequence", 78, 1)  # no START
    error_of(infer_error)
    after = client.get_inference_statistics("simple_dyna_sequence", as_json=True)

    def counts(stats):
        model = stats["model_stats"][0]
        inference = model["inference_stats"]
        return (int(model.get("inference_count", 0)), int(inference["success"].get("count", 0)),
                int(inference["fail"].get("count", 0)))

    (inf0, ok0, fail0), (inf1, ok1, fail1) = counts(before), counts(after)
    assert (inf1 - inf0, ok1 - ok0, fail1 - fail0) == (3, 3, 1)


def test_config_reports_the_sequence_batcher(client):
    config = client.get_model_config("simple_dyna_sequence").config
    batching = config.sequence_batching
    assert batching.oldest.max_candidate_sequences == 1024
    assert list(batching.oldest.preferred_batch_size) == [8]   # Triton's default
    assert [c.name for c in batching.control_input] == ["START", "END", "READY", "CORRID"]
    idle = client.get_model_config("simple_sequence").config.sequence_batching
    assert idle.max_sequence_idle_microseconds == 1_000_000


def test_uint64_id_above_int64(server):
    """tritonclient sends ids as int64_param; Triton also takes uint64_param up to 2**64-1."""
    import grpc
    from tritonclient.grpc import service_pb2

    big = 2**64 - 2

    def message(value, start, end):
        request = service_pb2.ModelInferRequest(model_name="simple_dyna_sequence")
        request.inputs.add(name="INPUT", datatype="INT32", shape=[1, 1])
        request.raw_input_contents.append(np.int32(value).tobytes())
        request.parameters["sequence_id"].uint64_param = big
        request.parameters["sequence_start"].bool_param = start
        request.parameters["sequence_end"].bool_param = end
        return request.SerializeToString()

    with grpc.insecure_channel(server.url) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        answers = [service_pb2.ModelInferResponse.FromString(call(message(v, i == 0, i == 1)))
                   for i, v in enumerate([4, 5])]
    values = [int(np.frombuffer(a.raw_output_contents[0], np.int32)[0]) for a in answers]
    assert values == [5, 5 - 2]   # END adds CORRID cast to INT32: 2**64-2 -> -2


def test_sequences_over_http(server):
    import tritonclient.http as httpclient

    def http_infer(client, model, sequence_id, value, start=False, end=False):
        tensor = httpclient.InferInput("INPUT", [1, 1], "INT32")
        tensor.set_data_from_numpy(np.full([1, 1], value, np.int32))
        result = client.infer(model, [tensor], sequence_id=sequence_id, sequence_start=start,
                              sequence_end=end)
        return int(result.as_numpy("OUTPUT")[0][0])

    client = server.http_client()
    try:
        a = [http_infer(client, "simple_dyna_sequence", 51, 4, start=True)]
        b = [http_infer(client, "simple_string_dyna_sequence", "52", 4, start=True)]
        a.append(http_infer(client, "simple_dyna_sequence", 51, 1, end=True))
        b.append(http_infer(client, "simple_string_dyna_sequence", "52", 1, end=True))
        assert a == [5, 1 + 51] and b == [4, 5 + 52]
        with pytest.raises(InferenceServerException, match="must specify the START flag"):
            http_infer(client, "simple_sequence", 53, 1)
    finally:
        client.close()
