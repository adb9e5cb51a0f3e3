"""The RPCs besides the error paths, through tritonclient against one real server.

Health, metadata, config and index RPCs; ModelInfer's outputs, request id,
versions, batching, classification and request parameters.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2

import models
from models import error_of, pb_input, pb_request, stub_infer
from models import client  # noqa: F401  (the module-scoped client fixture)

LABELS = ["cat", "dog", "bird", "fish"]  # 4 labels for 5 classes: index 4 has none

# Triton's extensions (core server.cc), in its order
TRITON_EXTENSIONS = ["classification", "sequence", "model_repository",
                     "model_repository(unload_dependents)", "schedule_policy",
                     "model_configuration", "system_shared_memory", "cuda_shared_memory",
                     "binary_tensor_data", "parameters", "statistics", "trace", "logging"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("rpcs")
    repo = base / "models"
    repo.mkdir()
    models.simple_model(repo, "simple")
    models.versioned_model(repo, "adder", [1, 2, 3], policy="all {}")
    cls_dir = models.identity_model(repo, "cls_fp32", "FP32", max_batch_size=8, dims=[5],
                                    output_extra='label_filename: "labels.txt"')
    models.labels_file(cls_dir, LABELS)
    models.identity_model(repo, "cls_int32", "INT32", max_batch_size=0, dims=[4])
    env = models.echo_params_model(repo, base / "plugins")
    yield from models.serve(repo, env=env)


def simple_inputs(a, b, datatype="INT32"):
    inputs = [grpcclient.InferInput("INPUT0", list(a.shape), datatype),
              grpcclient.InferInput("INPUT1", list(b.shape), datatype)]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    return inputs


def one_input(array, datatype, name="INPUT0"):
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return [tensor]


# -- health and metadata ------------------------------------------------------------------------

def test_server_live_and_ready(client):
    assert client.is_server_live() is True
    assert client.is_server_ready() is True


def test_server_metadata(client):
    from triton_grpc_server import _version

    meta = client.get_server_metadata()
    assert meta.name == "triton"
    assert meta.version == _version.TRITON_COMPAT_VERSION
    assert meta.version.count(".") == 2 and all(p.isdigit() for p in meta.version.split("."))
    extensions = list(meta.extensions)
    # The extensions of this issue, in Triton's order, and nothing Triton lacks.
    for name in ("classification", "model_repository", "model_configuration", "parameters"):
        assert name in extensions
    assert extensions == [e for e in TRITON_EXTENSIONS if e in extensions]


# An RPC per extension: claimed -> it answers; not claimed -> UNIMPLEMENTED (honest list).
EXTENSION_PROBES = {
    "system_shared_memory": ("get_system_shared_memory_status", "SystemSharedMemoryStatus"),
    "cuda_shared_memory": ("get_cuda_shared_memory_status", "CudaSharedMemoryStatus"),
    "statistics": ("get_inference_statistics", "ModelStatistics"),
    "trace": ("get_trace_settings", "TraceSetting"),
    "logging": ("get_log_settings", "LogSettings"),
}


# Answered even where not claimed: without a GPU the CUDA RPCs behave as a GPU build of
# Triton's do on a machine without one (empty status; register fails with invalid args).
ANSWERED_UNCLAIMED = {"cuda_shared_memory"}


@pytest.mark.parametrize("extension", sorted(EXTENSION_PROBES))
def test_extension_rpc_answers_or_is_unimplemented(client, extension):
    method, rpc = EXTENSION_PROBES[extension]
    claimed = extension in client.get_server_metadata().extensions
    if claimed or extension in ANSWERED_UNCLAIMED:
        getattr(client, method)()
    else:
        code, message = error_of(getattr(client, method))
        assert code == "UNIMPLEMENTED"
        assert rpc in message


def test_unimplemented_rpc_system_shared_memory_status(server):
    """An RPC of a later issue answers UNIMPLEMENTED with a clear message (raw stub)."""
    client = server.client()
    try:
        if "system_shared_memory" in client.get_server_metadata().extensions:
            pytest.skip("system shared memory is implemented now")
        code, message = error_of(client._client_stub.SystemSharedMemoryStatus,
                                 service_pb2.SystemSharedMemoryStatusRequest(name=""))
        assert code == "UNIMPLEMENTED"
        assert "SystemSharedMemoryStatus" in message
    finally:
        client.close()


def test_model_ready(client):
    assert client.is_model_ready("simple") is True
    assert client.is_model_ready("simple", "1") is True
    assert client.is_model_ready("adder", "2") is True
    # unknown model / version: false with an OK status, as released Triton
    assert client.is_model_ready("no_such_model") is False
    assert client.is_model_ready("simple", "2") is False
    assert client.is_model_ready("adder", "9") is False


def test_model_ready_bad_version_string(client):
    assert error_of(client.is_model_ready, "simple", "abc") == (
        "INVALID_ARGUMENT",
        "failed to get model version from specified version string 'abc' (details: stol), "
        "version should be an integral value > 0")
    assert error_of(client.is_model_ready, "simple", "-1") == (
        "INVALID_ARGUMENT",
        "invalid model version specified '-1' , version should be an integral value > 0")


def test_model_metadata_batched(client):
    meta = client.get_model_metadata("simple")
    assert meta.name == "simple"
    assert list(meta.versions) == ["1"]
    assert meta.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("INPUT0", "INT32", [-1, 16]), ("INPUT1", "INT32", [-1, 16])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [
        ("OUTPUT0", "INT32", [-1, 16]), ("OUTPUT1", "INT32", [-1, 16])]


def test_model_metadata_unbatched(client):
    meta = client.get_model_metadata("cls_int32")
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("INPUT0", "INT32", [4])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [("OUTPUT0", "INT32", [4])]


def test_model_metadata_versions_all_ready(client):
    assert list(client.get_model_metadata("adder").versions) == ["1", "2", "3"]


def test_model_metadata_requested_version_only(client):
    assert list(client.get_model_metadata("adder", "2").versions) == ["2"]


def test_model_metadata_errors(client):
    assert error_of(client.get_model_metadata, "nope") == (
        "NOT_FOUND", "Request for unknown model: 'nope' is not found")
    assert error_of(client.get_model_metadata, "simple", "4") == (
        "NOT_FOUND", "Request for unknown model: 'simple' version 4 is not found")
    assert error_of(client.get_model_metadata, "simple", "x1") == (
        "INVALID_ARGUMENT",
        "failed to get model version from specified version string 'x1' (details: stol), "
        "version should be an integral value > 0")


def test_model_config(client):
    config = client.get_model_config("simple").config
    assert config.name == "simple"
    assert config.platform == "onnxruntime_onnx"
    assert config.backend == "onnxruntime"
    assert config.max_batch_size == 8
    assert config.default_model_filename == "model.onnx"
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [
        ("INPUT0", 8, [16]), ("INPUT1", 8, [16])]  # 8 = TYPE_INT32
    assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == [
        ("OUTPUT0", 8, [16]), ("OUTPUT1", 8, [16])]
    assert config.version_policy.WhichOneof("policy_choice") == "latest"
    assert config.version_policy.latest.num_versions == 1
    assert len(config.instance_group) == 1
    assert config.instance_group[0].kind == 2  # KIND_CPU
    assert config.instance_group[0].name == "simple"


def test_model_config_default_instance_group(client):
    groups = client.get_model_config("simple").config.instance_group
    assert [(g.name, g.kind, g.count) for g in groups] == [("simple", 2, 2)]


def test_model_config_full_config_not_auto_completed(client):
    config = client.get_model_config("simple").config
    assert not config.HasField("dynamic_batching")
    assert config.WhichOneof("scheduling_choice") is None


def test_model_config_as_json_and_errors(client):
    config = client.get_model_config("cls_fp32", as_json=True)["config"]
    assert config["output"][0]["label_filename"] == "labels.txt"
    assert config["max_batch_size"] == 8
    assert error_of(client.get_model_config, "nope") == (
        "NOT_FOUND", "Request for unknown model: 'nope' is not found")


def test_repository_index(client):
    index = client.get_model_repository_index()
    rows = sorted((m.name, m.version, m.state, m.reason) for m in index.models)
    assert rows == [
        ("adder", "1", "READY", ""), ("adder", "2", "READY", ""), ("adder", "3", "READY", ""),
        ("cls_fp32", "1", "READY", ""), ("cls_int32", "1", "READY", ""),
        ("echo_params", "1", "READY", ""), ("simple", "1", "READY", "")]
    ready = client._client_stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(ready=True))
    assert sorted((m.name, m.version) for m in ready.models) == [r[:2] for r in rows]


def test_repository_index_named_repository_unimplemented(client):
    assert error_of(client._client_stub.RepositoryIndex,
                    service_pb2.RepositoryIndexRequest(repository_name="other")) == (
        "UNIMPLEMENTED", "'repository_name' specification is not supported")


# -- ModelInfer ---------------------------------------------------------------------------------

def test_infer_simple_all_outputs_when_none_requested(client):
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 3, dtype=np.int32)
    result = client.infer("simple", simple_inputs(a, b))
    response = result.get_response()
    assert [o.name for o in response.outputs] == ["OUTPUT0", "OUTPUT1"]
    assert len(response.raw_output_contents) == 2
    assert [list(o.shape) for o in response.outputs] == [[1, 16], [1, 16]]
    assert [o.datatype for o in response.outputs] == ["INT32", "INT32"]
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    assert result.as_numpy("OUTPUT0").dtype == np.int32
    assert response.model_name == "simple"
    assert response.model_version == "1"
    assert response.id == ""


@pytest.mark.parametrize("requested", [["OUTPUT1"], ["OUTPUT0"], ["OUTPUT1", "OUTPUT0"]])
def test_infer_requested_output_subset_in_order(client, requested):
    a = np.arange(16, dtype=np.int32).reshape(1, 16) * 7
    b = np.arange(16, dtype=np.int32).reshape(1, 16)
    outputs = [grpcclient.InferRequestedOutput(n) for n in requested]
    result = client.infer("simple", simple_inputs(a, b), outputs=outputs)
    response = result.get_response()
    assert [o.name for o in response.outputs] == requested
    assert len(response.raw_output_contents) == len(requested)
    expected = {"OUTPUT0": a + b, "OUTPUT1": a - b}
    for name in requested:
        np.testing.assert_array_equal(result.as_numpy(name), expected[name])


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_infer_batching(client, batch):
    rng = np.random.default_rng(batch)
    a = rng.integers(-1000, 1000, (batch, 16), dtype=np.int32)
    b = rng.integers(-1000, 1000, (batch, 16), dtype=np.int32)
    result = client.infer("simple", simple_inputs(a, b))
    assert list(result.get_output("OUTPUT0").shape) == [batch, 16]
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


def test_infer_request_id_echoed(client):
    a = np.ones((1, 16), dtype=np.int32)
    result = client.infer("simple", simple_inputs(a, a), request_id="my-request 42")
    assert result.get_response().id == "my-request 42"


@pytest.mark.parametrize("version, added", [("", 3), ("1", 1), ("2", 2), ("3", 3)])
def test_infer_version_selection_echoes_actual_version(client, version, added):
    x = np.array([[10, 20, 30, 40]], dtype=np.int32)
    result = client.infer("adder", one_input(x, "INT32"), model_version=version)
    response = result.get_response()
    assert response.model_version == str(added)
    assert response.model_name == "adder"
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x + added)


def test_infer_typed_contents_request(client):
    """Explicit ``contents`` (grpc_explicit_int_content_client.py's way)."""
    a = list(range(16))
    b = [2] * 16
    request = pb_request("simple", [pb_input("INPUT0", "INT32", [1, 16], int_contents=a),
                                    pb_input("INPUT1", "INT32", [1, 16], int_contents=b)],
                         id="typed")
    result = stub_infer(client, request)
    response = result.get_response()
    assert response.id == "typed"
    assert [o.name for o in response.outputs] == ["OUTPUT0", "OUTPUT1"]
    assert len(response.raw_output_contents) == 2
    # typed contents are never used in responses
    assert not response.outputs[0].HasField("contents")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), [[x + 2 for x in a]])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), [[x - 2 for x in a]])


# -- classification -------------------------------------------------------------------------------

def classify(client, model, array, datatype, k, **kwargs):
    outputs = [grpcclient.InferRequestedOutput("OUTPUT0", class_count=k)]
    result = client.infer(model, one_input(array, datatype), outputs=outputs, **kwargs)
    out = result.get_output("OUTPUT0")
    assert out.datatype == "BYTES"
    return list(out.shape), result.as_numpy("OUTPUT0")


def test_classification_with_labels(client):
    x = np.array([[0.1, 0.9, -1.5, 0.7, 0.5]], dtype=np.float32)
    shape, values = classify(client, "cls_fp32", x, "FP32", 3)
    assert shape == [1, 3]
    assert values.tolist() == [[b"0.900000:1:dog", b"0.700000:3:fish", b"0.500000:4"]]


def test_classification_batched_and_clamped(client):
    x = np.array([[0.1, 0.9, -1.5, 0.7, 0.5],
                  [2.25, 0.0, 3.5, -0.125, 1.0]], dtype=np.float32)
    shape, values = classify(client, "cls_fp32", x, "FP32", 10)  # k > classes: clamped to 5
    assert shape == [2, 5]
    assert values.tolist() == [
        [b"0.900000:1:dog", b"0.700000:3:fish", b"0.500000:4", b"0.100000:0:cat",
         b"-1.500000:2:bird"],
        [b"3.500000:2:bird", b"2.250000:0:cat", b"1.000000:4", b"0.000000:1:dog",
         b"-0.125000:3:fish"]]


def test_classification_integers_without_labels(client):
    x = np.array([7, -3, 12, 0], dtype=np.int32)
    shape, values = classify(client, "cls_int32", x, "INT32", 2)
    assert shape == [2]
    assert values.tolist() == [b"12:2", b"7:0"]


def test_classification_only_for_requested_output(client):
    """One output classified, the other returned as data, in requested order."""
    a = np.array([[5, 1] + [0] * 14], dtype=np.int32)
    b = np.ones((1, 16), dtype=np.int32)
    outputs = [grpcclient.InferRequestedOutput("OUTPUT1"),
               grpcclient.InferRequestedOutput("OUTPUT0", class_count=1)]
    result = client.infer("simple", simple_inputs(a, b), outputs=outputs)
    response = result.get_response()
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("OUTPUT1", "INT32", [1, 16]), ("OUTPUT0", "BYTES", [1, 1])]
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    assert result.as_numpy("OUTPUT0").tolist() == [[b"6:0"]]


# -- request parameters ---------------------------------------------------------------------------

def echo(client, **kwargs):
    x = np.array([1.0], dtype=np.float32)
    result = client.infer("echo_params", one_input(x, "FP32"), **kwargs)
    return json.loads(result.as_numpy("PARAMS")[0])


def test_custom_parameters_reach_backend_unharmed(client):
    params = {"text": "héllo wörld", "count": -(2**40), "flag": True, "off": False,
              "ratio": 0.25, "empty": ""}
    got = echo(client, parameters=params)
    assert got == {"parameters": params, "inputs": ["INPUT0"]}


def test_scheduling_parameters_not_passed_to_backend(client):
    got = echo(client, parameters={"mine": 1}, priority=3, timeout=1000000)
    assert got["parameters"] == {"mine": 1}


def test_no_parameters(client):
    assert echo(client) == {"parameters": {}, "inputs": ["INPUT0"]}


def test_allowed_triton_parameter_accepted(client):
    request = pb_request("echo_params", [pb_input("INPUT0", "FP32", [1], fp32_contents=[1.0])],
                         parameters={"triton_enable_empty_final_response": ("bool_param", True)})
    result = stub_infer(client, request)
    assert result.as_numpy("PARAMS") is not None
