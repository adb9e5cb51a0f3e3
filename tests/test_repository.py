"""The model repository: version policies, auto-complete, reshape, labels, broken models."""
from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from onnx import TensorProto

import models
from models import error_of, write_text
from models import client  # noqa: F401  (the module-scoped client fixture)

TYPE_FP32 = 11


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server (--exit-on-error=false) over good, auto-completed and broken models."""
    repo = tmp_path_factory.mktemp("repository") / "models"
    repo.mkdir()
    # version policies (version N adds N)
    models.versioned_model(repo, "default_policy", [1, 2, 3])
    models.versioned_model(repo, "latest2", [1, 2, 3], policy="latest { num_versions: 2 }")
    models.versioned_model(repo, "all3", [1, 2, 3], policy="all { }")
    models.versioned_model(repo, "specific13", [1, 2, 3], policy="specific { versions: [1, 3] }")
    odd = models.versioned_model(repo, "odd_dirs", [1])
    models.add_const_onnx(odd / "02" / "model.onnx", 2)   # leading zero: ignored
    models.add_const_onnx(odd / "abc" / "model.onnx", 5)  # not a number: ignored
    named = models.versioned_model(repo, "custom_file", [1])
    (named / "1" / "model.onnx").rename(named / "1" / "custom.onnx")
    with open(named / "config.pbtxt", "a") as f:
        f.write('default_model_filename: "custom.onnx"\n')

    # auto-complete: no config at all, batchable and not
    models.identity_onnx(repo / "auto_batch" / "1" / "model.onnx", TensorProto.FLOAT, ["batch", 3])
    models.identity_onnx(repo / "auto_fixed" / "1" / "model.onnx", TensorProto.FLOAT, [2, 3])
    # partial configs
    models.identity_onnx(repo / "partial_mbs0" / "1" / "model.onnx", TensorProto.FLOAT, [2, 3])
    write_text(repo / "partial_mbs0" / "config.pbtxt",
               'platform: "onnxruntime_onnx"\nmax_batch_size: 0\n'
               'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 2, 3 ] } ]\n')
    models.identity_onnx(repo / "partial_platform" / "1" / "model.onnx", TensorProto.FLOAT,
                         ["batch", 3])
    write_text(repo / "partial_platform" / "config.pbtxt", 'platform: "onnxruntime_onnx"\n')
    models.identity_onnx(repo / "partial_io" / "1" / "model.onnx", TensorProto.INT64, ["batch", 5])
    write_text(repo / "partial_io" / "config.pbtxt",
               'backend: "onnxruntime"\nmax_batch_size: 2\n'
               'input [ { name: "INPUT0" data_type: TYPE_INT64 dims: [ 5 ] } ]\n')
    models.identity_onnx(repo / "partial_in_only" / "1" / "model.onnx", TensorProto.FLOAT,
                         ["batch", 3])
    write_text(repo / "partial_in_only" / "config.pbtxt",
               'platform: "onnxruntime_onnx"\n'
               'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 3 ] } ]\n')
    # reshape: config [6] <-> model [2,3]; output model [6] <-> config [2,3]
    models.reshape_onnx(repo / "reshape_nb" / "1" / "model.onnx", [2, 3], [6])
    write_text(repo / "reshape_nb" / "config.pbtxt", models.config_text(
        "reshape_nb", 0, [("INPUT0", "TYPE_FP32", [6], "reshape { shape: [ 2, 3 ] }")],
        [("OUTPUT0", "TYPE_FP32", [2, 3], "reshape { shape: [ 6 ] }")]))
    models.reshape_onnx(repo / "reshape_auto" / "1" / "model.onnx", ["batch", 2, 3], ["batch", 6])
    write_text(repo / "reshape_auto" / "config.pbtxt",
               'platform: "onnxruntime_onnx"\nmax_batch_size: 4\n'
               'input [ { name: "INPUT0" dims: [ 6 ] reshape { shape: [ 2, 3 ] } } ]\n')
    # labels
    labelled = models.identity_model(repo, "labelled", "FP32", max_batch_size=0, dims=[3],
                                     output_extra='label_filename: "names.txt"')
    models.labels_file(labelled, ["zero", "one", "two"], "names.txt")

    # broken models
    write_text(repo / "bad_onnx" / "1" / "model.onnx", "this is not an onnx model")
    write_text(repo / "bad_onnx" / "config.pbtxt", models.config_text(
        "bad_onnx", 0, [("INPUT0", "TYPE_FP32", [1])], [("OUTPUT0", "TYPE_FP32", [1])]))
    models.identity_model(repo, "bad_pbtxt", "FP32")
    write_text(repo / "bad_pbtxt" / "config.pbtxt", "name: \"bad_pbtxt\"\nmax_batch_size: {{{\n")
    models.identity_model(repo, "wrong_name", "FP32")
    write_text(repo / "wrong_name" / "config.pbtxt", models.config_text(
        "other", 8, [("INPUT0", "TYPE_FP32", [-1])], [("OUTPUT0", "TYPE_FP32", [-1])]))
    models.identity_model(repo, "no_file", "FP32")
    (repo / "no_file" / "1" / "model.onnx").unlink()
    models.identity_model(repo, "bad_labels", "FP32", output_extra='label_filename: "missing.txt"')

    # configs that contradict their ONNX model (Triton's ORT backend refuses these at load)
    models.identity_onnx(repo / "type_mismatch" / "1" / "model.onnx", TensorProto.INT32, ["batch", 3])
    write_text(repo / "type_mismatch" / "config.pbtxt", models.config_text(
        "type_mismatch", 4, [("INPUT0", "TYPE_FP32", [3])], [("OUTPUT0", "TYPE_FP32", [3])]))
    models.identity_onnx(repo / "name_mismatch" / "1" / "model.onnx", TensorProto.FLOAT, ["batch", 3])
    write_text(repo / "name_mismatch" / "config.pbtxt", models.config_text(
        "name_mismatch", 4, [("WRONG", "TYPE_FP32", [3])], [("OUTPUT0", "TYPE_FP32", [3])]))
    models.identity_onnx(repo / "dims_mismatch" / "1" / "model.onnx", TensorProto.FLOAT, ["batch", 3])
    write_text(repo / "dims_mismatch" / "config.pbtxt", models.config_text(
        "dims_mismatch", 4, [("INPUT0", "TYPE_FP32", [5])], [("OUTPUT0", "TYPE_FP32", [5])]))
    models.identity_onnx(repo / "batch_on_fixed" / "1" / "model.onnx", TensorProto.FLOAT, [2, 3])
    write_text(repo / "batch_on_fixed" / "config.pbtxt", models.config_text(
        "batch_on_fixed", 8, [("INPUT0", "TYPE_FP32", [3])], [("OUTPUT0", "TYPE_FP32", [3])]))

    yield from models.serve(repo, "--exit-on-error=false")


def add_input(value=10):
    x = np.full((1, 4), value, dtype=np.int32)
    t = grpcclient.InferInput("INPUT0", [1, 4], "INT32")
    t.set_data_from_numpy(x)
    return [t]


def index_rows(client, name):
    return [(m.version, m.state) for m in client.get_model_repository_index().models
            if m.name == name]


# -- version policies ------------------------------------------------------------------------------

@pytest.mark.parametrize("model, loaded", [
    ("default_policy", ["3"]), ("latest2", ["2", "3"]), ("all3", ["1", "2", "3"]),
    ("specific13", ["1", "3"]), ("odd_dirs", ["1"]), ("custom_file", ["1"]),
])
def test_version_policy_loads(client, model, loaded):
    assert sorted(index_rows(client, model)) == [(v, "READY") for v in loaded]
    assert list(client.get_model_metadata(model).versions) == loaded
    for version in ("1", "2", "3"):
        assert client.is_model_ready(model, version) is (version in loaded)
    # "" is the newest ready version, echoed in the response
    result = client.infer(model, add_input())
    assert result.get_response().model_version == loaded[-1]
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.full((1, 4), 10 + int(loaded[-1])))


def test_version_not_loaded_by_policy(client):
    assert error_of(client.infer, "specific13", add_input(), model_version="2") == (
        "NOT_FOUND", "Request for unknown model: 'specific13' version 2 is not found")
    result = client.infer("specific13", add_input(), model_version="1")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.full((1, 4), 11))
    assert result.get_response().model_version == "1"


# -- auto-complete ---------------------------------------------------------------------------------

def io(tensors):
    return [(t.name, t.data_type, list(t.dims)) for t in tensors]


def test_auto_complete_without_config_batchable(client):
    config = client.get_model_config("auto_batch").config
    assert config.name == "auto_batch"
    assert config.platform == "onnxruntime_onnx"
    assert config.backend == "onnxruntime"
    assert config.max_batch_size == 4
    assert io(config.input) == [("INPUT0", TYPE_FP32, [3])]
    assert io(config.output) == [("OUTPUT0", TYPE_FP32, [3])]
    assert config.HasField("dynamic_batching")
    assert config.default_model_filename == "model.onnx"
    assert [g.kind for g in config.instance_group] == [2]  # KIND_CPU
    meta = client.get_model_metadata("auto_batch")
    assert [list(t.shape) for t in meta.inputs] == [[-1, 3]]


def test_auto_complete_batch_limit_enforced(client):
    x = np.ones((5, 3), dtype=np.float32)
    t = grpcclient.InferInput("INPUT0", [5, 3], "FP32")
    t.set_data_from_numpy(x)
    assert error_of(client.infer, "auto_batch", [t]) == (
        "INVALID_ARGUMENT", "inference request batch-size must be <= 4 for 'auto_batch'")
    t = grpcclient.InferInput("INPUT0", [4, 3], "FP32")
    t.set_data_from_numpy(x[:4] * 2)
    np.testing.assert_array_equal(client.infer("auto_batch", [t]).as_numpy("OUTPUT0"), x[:4] * 2)


def test_auto_complete_without_config_fixed_shape(client):
    config = client.get_model_config("auto_fixed").config
    assert config.max_batch_size == 0
    assert io(config.input) == [("INPUT0", TYPE_FP32, [2, 3])]
    assert io(config.output) == [("OUTPUT0", TYPE_FP32, [2, 3])]
    assert not config.HasField("dynamic_batching")


def test_auto_complete_partial_input_given_output_filled(client):
    config = client.get_model_config("partial_mbs0").config
    assert config.max_batch_size == 0
    assert io(config.input) == [("INPUT0", TYPE_FP32, [2, 3])]
    assert io(config.output) == [("OUTPUT0", TYPE_FP32, [2, 3])]
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = grpcclient.InferInput("INPUT0", [2, 3], "FP32")
    t.set_data_from_numpy(x)
    np.testing.assert_array_equal(client.infer("partial_mbs0", [t]).as_numpy("OUTPUT0"), x)


def test_auto_complete_partial_platform_only(client):
    config = client.get_model_config("partial_platform").config
    assert config.max_batch_size == 4
    assert io(config.input) == [("INPUT0", TYPE_FP32, [3])]
    assert io(config.output) == [("OUTPUT0", TYPE_FP32, [3])]
    assert config.backend == "onnxruntime"


def test_auto_complete_inputs_only_still_fills_max_batch_size(client):
    config = client.get_model_config("partial_in_only").config
    assert config.max_batch_size == 4
    assert io(config.input) == [("INPUT0", TYPE_FP32, [3])]
    assert io(config.output) == [("OUTPUT0", TYPE_FP32, [3])]
    assert config.HasField("dynamic_batching")


def test_auto_complete_partial_io(client):
    config = client.get_model_config("partial_io").config
    assert config.max_batch_size == 2
    assert config.platform == "onnxruntime_onnx"
    assert io(config.input) == [("INPUT0", 9, [5])]   # TYPE_INT64, as written
    assert io(config.output) == [("OUTPUT0", 9, [5])]  # filled from the model


def test_reshape_unbatched(client):
    x = np.arange(6, dtype=np.float32)
    t = grpcclient.InferInput("INPUT0", [6], "FP32")
    t.set_data_from_numpy(x)
    result = client.infer("reshape_nb", [t])
    assert list(result.get_output("OUTPUT0").shape) == [2, 3]
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x.reshape(2, 3))
    meta = client.get_model_metadata("reshape_nb")
    assert [list(m.shape) for m in meta.inputs] == [[6]]
    assert [list(m.shape) for m in meta.outputs] == [[2, 3]]


def test_reshape_with_auto_complete_batched(client):
    config = client.get_model_config("reshape_auto").config
    assert config.input[0].data_type == TYPE_FP32  # completed
    assert list(config.input[0].dims) == [6]       # reshape kept, dims untouched
    assert list(config.input[0].reshape.shape) == [2, 3]
    assert io(config.output) == [("OUTPUT0", TYPE_FP32, [6])]
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    t = grpcclient.InferInput("INPUT0", [2, 6], "FP32")
    t.set_data_from_numpy(x)
    result = client.infer("reshape_auto", [t])
    assert list(result.get_output("OUTPUT0").shape) == [2, 6]
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x)


def test_label_file(client):
    x = np.array([0.2, 0.7, 0.1], dtype=np.float32)
    t = grpcclient.InferInput("INPUT0", [3], "FP32")
    t.set_data_from_numpy(x)
    out = [grpcclient.InferRequestedOutput("OUTPUT0", class_count=3)]
    result = client.infer("labelled", [t], outputs=out)
    assert result.as_numpy("OUTPUT0").tolist() == [
        b"0.700000:1:one", b"0.200000:0:zero", b"0.100000:2:two"]


# -- broken models -----------------------------------------------------------------------------------

BROKEN = ["bad_labels", "bad_onnx", "bad_pbtxt", "no_file", "wrong_name"]


def test_broken_models_unavailable_with_reason(client):
    index = {m.name: m for m in client.get_model_repository_index().models if m.name in BROKEN}
    assert sorted(index) == BROKEN
    for name, row in index.items():
        assert row.state == "UNAVAILABLE", name
        assert row.reason.strip(), f"{name} has no reason"
    assert index["wrong_name"].reason == (
        "unexpected directory name 'wrong_name' for model 'other', directory name must equal "
        "model name")
    assert "model.onnx" in index["no_file"].reason
    assert "missing.txt" in index["bad_labels"].reason


@pytest.mark.parametrize("name, tensor", [
    ("type_mismatch", "INPUT0"), ("name_mismatch", "WRONG"), ("dims_mismatch", "INPUT0"),
    ("batch_on_fixed", "INPUT0")])
def test_config_contradicting_model_is_unavailable(client, name, tensor):
    rows = [(m.version, m.state, m.reason) for m in client.get_model_repository_index().models
            if m.name == name]
    assert [r[:2] for r in rows] == [("1", "UNAVAILABLE")]
    assert tensor in rows[0][2] or "max" in rows[0][2]


def test_ready_filter_hides_broken_models(client):
    from tritonclient.grpc import service_pb2

    ready = client._client_stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(ready=True))
    names = {m.name for m in ready.models}
    assert not names & set(BROKEN)
    assert {"all3", "auto_batch", "labelled", "reshape_nb"} <= names
    assert all(m.state == "READY" for m in ready.models)


@pytest.mark.parametrize("name", BROKEN)
def test_broken_model_not_ready_and_not_served(client, name):
    assert client.is_model_ready(name) is False
    code, message = error_of(client.infer, name, add_input())
    assert code in ("NOT_FOUND", "UNAVAILABLE")
    assert message.startswith(f"Request for unknown model: '{name}' ")


def test_broken_version_not_at_ready_state(client):
    assert error_of(client.infer, "no_file", add_input(), model_version="1") == (
        "UNAVAILABLE", "Request for unknown model: 'no_file' version 1 is not at ready state")
    assert error_of(client.infer, "no_file", add_input()) == (
        "NOT_FOUND", "Request for unknown model: 'no_file' has no available versions")


def test_unloadable_model_file_is_a_failed_version(client):
    rows = [(m.version, m.state) for m in client.get_model_repository_index().models
            if m.name == "bad_onnx"]
    assert rows == [("1", "UNAVAILABLE")]
    assert error_of(client.infer, "bad_onnx", add_input(), model_version="1") == (
        "UNAVAILABLE", "Request for unknown model: 'bad_onnx' version 1 is not at ready state")


def test_others_serve_while_server_not_ready(client):
    assert client.is_server_live() is True
    assert client.is_server_ready() is False  # strict readiness: not every model loaded
    result = client.infer("all3", add_input(1), model_version="2")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.full((1, 4), 3))


# -- start-up behaviour ------------------------------------------------------------------------------

def test_exit_on_error_default_exits_nonzero(tmp_path):
    repo = tmp_path / "models"
    models.simple_model(repo, "simple")
    write_text(repo / "broken" / "1" / "model.onnx", "garbage")
    write_text(repo / "broken" / "config.pbtxt", models.config_text(
        "broken", 0, [("INPUT0", "TYPE_FP32", [1])], [("OUTPUT0", "TYPE_FP32", [1])]))
    handle = models.start(repo, wait_ready=False)
    try:
        code = handle.process.wait(60)
        log = handle.log()
    finally:
        handle.stop()
    assert code != 0
    assert "broken" in log


def test_strict_model_config_disables_auto_complete(tmp_path):
    repo = tmp_path / "models"
    models.simple_model(repo, "simple")
    models.identity_onnx(repo / "noconfig" / "1" / "model.onnx", TensorProto.FLOAT, ["batch", 3])
    models.identity_onnx(repo / "partial" / "1" / "model.onnx", TensorProto.FLOAT, ["batch", 3])
    write_text(repo / "partial" / "config.pbtxt",
               'platform: "onnxruntime_onnx"\nmax_batch_size: 4\n'
               'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 3 ] } ]\n')
    handle = models.start(repo, "--disable-auto-complete-config", "--exit-on-error=false")
    client = handle.client()
    try:
        states = {m.name: m.state for m in client.get_model_repository_index().models}
        assert states == {"simple": "READY", "noconfig": "UNAVAILABLE", "partial": "UNAVAILABLE"}
        assert client.get_model_config("simple").config.max_batch_size == 8
    finally:
        client.close()
        handle.stop()
