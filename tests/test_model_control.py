"""Model control through tritonclient against real servers: the none / poll /
explicit modes, RepositoryModelLoad with config and file overrides,
RepositoryModelUnload, RepositoryIndex states, and Triton's texts."""
from __future__ import annotations

import io
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2

import models
from models import error_of

NOT_ALLOWED = "explicit model load / unload is not allowed if polling is enabled"


def onnx_bytes(value: int) -> bytes:
    """An ONNX model computing OUTPUT0 = INPUT0 + value (INT32 [batch, 4])."""
    buffer = io.BytesIO()
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Add", ["INPUT0", "const"], ["OUTPUT0"])], "add_const",
        [onnx.helper.make_tensor_value_info("INPUT0", onnx.TensorProto.INT32, ["batch", 4])],
        [onnx.helper.make_tensor_value_info("OUTPUT0", onnx.TensorProto.INT32, ["batch", 4])],
        initializer=[onnx.numpy_helper.from_array(np.array(value, np.int32), "const")])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)],
                                   ir_version=8)
    onnx.save(model, buffer)
    return buffer.getvalue()


def add_const(client, model: str, version: str = "", rows: int = 1):
    """Infer INPUT0 = [[0, 1, 2, 3]] * rows; return (OUTPUT0 - INPUT0 constant, version)."""
    data = np.tile(np.arange(4, dtype=np.int32), (rows, 1))
    tensor = grpcclient.InferInput("INPUT0", list(data.shape), "INT32")
    tensor.set_data_from_numpy(data)
    result = client.infer(model, [tensor], model_version=version)
    delta = result.as_numpy("OUTPUT0") - data
    assert (delta == delta.flat[0]).all()
    return int(delta.flat[0]), result.get_response().model_version


def index(client) -> dict:
    """name -> [(version, state, reason)] from RepositoryIndex."""
    rows = {}
    for model in client.get_model_repository_index().models:
        rows.setdefault(model.name, []).append((model.version, model.state, model.reason))
    return rows


def wait_for(predicate, timeout=20.0, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except Exception:
            pass
        time.sleep(interval)
    return predicate()


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    models.simple_model(root, "simple")
    models.versioned_model(root, "adder", [1])
    return root


# -- none and poll: the RPCs are refused ----------------------------------------------------

def test_none_mode_loads_everything_and_refuses_rpcs(repo, start_server):
    server = start_server(repo)
    client = server.client()
    assert client.is_model_ready("simple") and client.is_model_ready("adder")
    assert error_of(client.load_model, "adder") == ("UNAVAILABLE", NOT_ALLOWED)
    assert error_of(client.unload_model, "adder") == ("UNAVAILABLE", NOT_ALLOWED)
    assert error_of(client.load_model, "nope") == ("UNAVAILABLE", NOT_ALLOWED)
    assert client.is_model_ready("adder")


def test_poll_mode_picks_up_added_changed_and_removed(repo, start_server):
    server = start_server(repo, "--model-control-mode", "poll", "--repository-poll-secs", "0.5")
    client = server.client()
    assert error_of(client.load_model, "adder") == ("UNAVAILABLE", NOT_ALLOWED)
    assert error_of(client.unload_model, "simple") == ("UNAVAILABLE", NOT_ALLOWED)
    assert add_const(client, "adder") == (1, "1")

    # An added version becomes the latest (policy latest 1).
    models.add_const_onnx(repo / "adder" / "2" / "model.onnx", 2)
    assert wait_for(lambda: add_const(client, "adder") == (2, "2"))
    assert wait_for(lambda: not client.is_model_ready("adder", "1"))

    # An added model loads.
    models.versioned_model(repo, "late", [1])
    assert wait_for(lambda: client.is_model_ready("late"))
    assert add_const(client, "late") == (1, "1")

    # A removed model unloads and leaves the index.
    shutil.rmtree(repo / "simple")
    assert wait_for(lambda: "simple" not in index(client))
    assert not client.is_model_ready("simple")
    assert error_of(client.get_model_metadata, "simple")[0] == "NOT_FOUND"

    # A changed config reloads (max_batch_size 8 -> 2).
    config = repo / "late" / "config.pbtxt"
    write_atomically(config, config.read_text().replace("max_batch_size: 8",
                                                        "max_batch_size: 2").encode())
    assert wait_for(lambda: client.get_model_config("late").config.max_batch_size == 2)

    # A new version that fails to load: the old one keeps serving.
    (repo / "adder" / "3").mkdir()
    write_atomically(repo / "adder" / "3" / "model.onnx", b"not an onnx model")
    assert wait_for(lambda: "failed to reload 'adder'" in server.log())
    time.sleep(1.0)  # a few more polls: nothing retried, nothing swapped
    assert add_const(client, "adder") == (2, "2")
    assert client.is_model_ready("adder")

    # Fixing it loads it.
    write_atomically(repo / "adder" / "3" / "model.onnx", (repo / "adder" / "2" / "model.onnx")
                     .read_bytes())
    assert wait_for(lambda: add_const(client, "adder")[1] == "3")


# -- explicit --------------------------------------------------------------------------------

def test_explicit_loads_only_the_named_models(repo, start_server):
    server = start_server(repo, "--model-control-mode", "explicit", "--load-model", "adder")
    client = server.client()
    rows = index(client)
    assert rows["adder"] == [("1", "READY", "")]
    assert rows["simple"] == [("", "", "")]
    assert client.is_model_ready("adder") and not client.is_model_ready("simple")
    assert client.is_server_ready()


def test_explicit_star_loads_all(repo, start_server):
    server = start_server(repo, "--model-control-mode", "explicit", "--load-model", "*")
    client = server.client()
    assert client.is_model_ready("adder") and client.is_model_ready("simple")


def test_explicit_with_nothing_loaded(repo, start_server):
    server = start_server(repo, "--model-control-mode", "explicit")
    client = server.client()
    assert not client.is_model_ready("adder") and not client.is_model_ready("simple")
    assert client.is_server_ready()
    assert set(index(client)) == {"adder", "simple"}


def test_load_unload_cycle(repo, start_server):
    server = start_server(repo, "--model-control-mode", "explicit")
    client = server.client()
    client.load_model("adder")
    assert client.is_model_ready("adder")
    assert add_const(client, "adder") == (1, "1")
    assert index(client)["adder"] == [("1", "READY", "")]

    # Reload of a loaded model (sync): still ready afterwards.
    client.load_model("adder")
    assert add_const(client, "adder") == (1, "1")

    client.unload_model("adder")
    assert not client.is_model_ready("adder")
    assert not client.is_model_ready("adder", "1")
    assert wait_for(lambda: index(client)["adder"] == [("1", "UNAVAILABLE", "unloaded")])
    code, message = error_of(add_const, client, "adder")
    assert (code, message) == ("NOT_FOUND",
                               "Request for unknown model: 'adder' has no available versions")
    assert client.is_server_ready()  # an unloaded model does not make the server unready

    # Unloading again, or an unknown model, is not an error (as Triton).
    client.unload_model("adder")
    client.unload_model("never_there", unload_dependents=True)

    # Load it back.
    client.load_model("adder")
    assert add_const(client, "adder") == (1, "1")
    assert index(client)["adder"] == [("1", "READY", "")]


def test_unload_dependents_and_extension(repo, start_server):
    server = start_server(repo, "--model-control-mode", "explicit", "--load-model", "simple")
    client = server.client()
    extensions = list(client.get_server_metadata().extensions)
    position = extensions.index("model_repository")
    assert extensions[position + 1] == "model_repository(unload_dependents)"
    client.unload_model("simple", unload_dependents=True)
    assert not client.is_model_ready("simple")


def test_load_errors(repo, start_server, tmp_path):
    models.versioned_model(repo, "broken", [1])
    (repo / "broken" / "1" / "model.onnx").write_bytes(b"garbage")
    server = start_server(repo, "--model-control-mode", "explicit", "--load-model", "adder")
    client = server.client()

    assert error_of(client.load_model, "wrong_model_name") == (
        "INTERNAL", "failed to load 'wrong_model_name', failed to poll from model repository")
    # Triton's model-control example: a config that is not JSON fails to load.
    code, message = error_of(
        client.load_model, "adder", config='"parameters": {"config": {{"max_batch_size": "16"}}}')
    assert code == "INTERNAL" and "failed to load" in message
    assert error_of(client.load_model, "adder", config='{"no_such_field": 1}') == (
        "INTERNAL", "failed to load 'adder', failed to poll from model repository")
    assert error_of(client.load_model, "../adder") == (
        "INVALID_ARGUMENT",
        "invalid model name '../adder', model name must not contain path traversal characters")
    assert error_of(client.load_model, "") == ("INVALID_ARGUMENT", "model name must not be empty")
    assert error_of(client.load_model, "adder", files={"file:1/model.onnx": onnx_bytes(3)}) == (
        "INVALID_ARGUMENT", "Load parameter 'config' must be specified for model file override")

    # A broken model file: Triton's aggregated load error.
    code, message = error_of(client.load_model, "broken")
    assert code == "INVALID_ARGUMENT"
    assert message.startswith("load failed for model 'broken': ")
    assert message.count("load failed") == 1 and "Protobuf parsing failed" in message
    assert message.endswith("\n")
    assert index(client)["broken"][0][1] == "UNAVAILABLE"

    # Parameters tritonclient cannot send: through the stub.
    stub = client._client_stub

    def raw_load(name, **params):
        request = service_pb2.RepositoryModelLoadRequest(model_name=name)
        for key, (kind, value) in params.items():
            setattr(request.parameters[key.replace("__", ":")], kind, value)
        return stub.RepositoryModelLoad(request)

    assert error_of(raw_load, "adder", bogus=("int64_param", 3)) == (
        "INVALID_ARGUMENT", "Unrecognized load parameter 'bogus' with type 'INT'")
    assert error_of(raw_load, "adder", config=("bytes_param", b"{}")) == (
        "INVALID_ARGUMENT", "Unrecognized load parameter 'config' with type 'BYTES'")
    assert error_of(raw_load, "adder", config=("string_param", "{}"),
                    **{"file__1/model.onnx": ("string_param", "x")}) == (
        "INVALID_ARGUMENT", "File parameter 'file:1/model.onnx' must have bytes type for its value")
    assert error_of(stub.RepositoryModelLoad, service_pb2.RepositoryModelLoadRequest(
        model_name="adder", repository_name="r")) == (
        "UNIMPLEMENTED", "'repository_name' specification is not supported")
    assert error_of(stub.RepositoryModelUnload, service_pb2.RepositoryModelUnloadRequest(
        model_name="adder", repository_name="r")) == (
        "UNIMPLEMENTED", "'repository_name' specification is not supported")

    # None of it disturbed the loaded model.
    assert add_const(client, "adder") == (1, "1")
    assert client.is_server_live()


def test_failed_reload_keeps_the_old_versions(repo, start_server):
    server = start_server(repo, "--model-control-mode", "explicit", "--load-model", "adder")
    client = server.client()
    good = (repo / "adder" / "1" / "model.onnx").read_bytes()
    (repo / "adder" / "1" / "model.onnx").write_bytes(b"garbage")
    code, message = error_of(client.load_model, "adder")
    assert code == "INVALID_ARGUMENT" and "load failed for model 'adder'" in message
    assert client.is_model_ready("adder")
    assert add_const(client, "adder") == (1, "1")
    assert index(client)["adder"] == [("1", "READY", "")]
    (repo / "adder" / "1" / "model.onnx").write_bytes(good)
    client.load_model("adder")
    assert add_const(client, "adder") == (1, "1")


def test_config_override_is_auto_completed(repo, start_server):
    """Triton's simple_grpc_model_control: {"max_batch_size":"16"} replaces config.pbtxt."""
    server = start_server(repo, "--model-control-mode", "explicit", "--load-model", "simple")
    client = server.client()
    assert client.get_model_config("simple").config.max_batch_size == 8
    client.load_model("simple", config='{"max_batch_size":"16"}')
    config = client.get_model_config("simple").config
    assert config.max_batch_size == 16
    assert [t.name for t in config.input] == ["INPUT0", "INPUT1"]
    assert [t.name for t in config.output] == ["OUTPUT0", "OUTPUT1"]
    assert list(config.input[0].dims) == [16]
    assert config.platform == "onnxruntime_onnx"
    assert config.HasField("dynamic_batching")

    data = np.ones((16, 16), np.int32)
    inputs = [grpcclient.InferInput(n, [16, 16], "INT32") for n in ("INPUT0", "INPUT1")]
    for tensor in inputs:
        tensor.set_data_from_numpy(data)
    result = client.infer("simple", inputs)
    assert (result.as_numpy("OUTPUT0") == 2).all()

    # A load without override goes back to config.pbtxt.
    client.load_model("simple")
    assert client.get_model_config("simple").config.max_batch_size == 8


def test_config_and_file_override(repo, start_server):
    server = start_server(repo, "--model-control-mode", "explicit", "--load-model", "adder")
    client = server.client()
    config = json.dumps({"backend": "onnxruntime", "max_batch_size": 4})

    # A model that is not in the repository at all.
    client.load_model("fresh", config=config, files={"file:1/model.onnx": onnx_bytes(7)})
    assert add_const(client, "fresh") == (7, "1")
    assert client.get_model_config("fresh").config.max_batch_size == 4

    # Overriding a repository model's files, then going back to the repository.
    client.load_model("adder", config=config, files={"file:5/model.onnx": onnx_bytes(50)})
    assert add_const(client, "adder") == (50, "5")
    client.load_model("adder")
    assert add_const(client, "adder") == (1, "1")
    assert not client.is_model_ready("adder", "5")

    # Several files and versions; a config naming another model is refused.
    client.load_model("fresh", config=json.dumps({"max_batch_size": 4, "version_policy":
                                                  {"all": {}}}),
                      files={"file:1/model.onnx": onnx_bytes(10),
                             "file:2/model.onnx": onnx_bytes(20)})
    assert add_const(client, "fresh", "1") == (10, "1")
    assert add_const(client, "fresh", "2") == (20, "2")
    code, message = error_of(client.load_model, "fresh", config=json.dumps({"name": "other"}),
                             files={"file:1/model.onnx": onnx_bytes(1)})
    assert code == "INVALID_ARGUMENT"
    assert "unexpected directory name 'fresh' for model 'other'" in message
    assert add_const(client, "fresh", "2") == (20, "2")  # the failed load changed nothing


ESCAPES = [
    "file:../escaped.onnx",
    "file:../../escaped.onnx",
    "file:1/../../escaped.onnx",
    "file:/tmp/escaped.onnx",
    "file://tmp/escaped.onnx",
    "file:./..",
    "file:..",
    "file:1/../..",
    "file:",
    "file:.",
    "file:a\0b",
]
# A path component no file system takes: Triton fails the write and reports the
# load's poll as failed (INTERNAL), as its simple_grpc_model_control.py example checks.
OVERLONG = ["file:" + "A" * 256, "file:1/" + "B" * 300 + "/model.onnx"]


def test_file_paths_that_escape_are_rejected(repo, start_server, tmp_path):
    server = start_server(repo, "--model-control-mode", "explicit", "--load-model", "adder")
    client = server.client()
    tmp = Path(os.path.realpath("/tmp"))
    before = sorted(p.name for p in tmp.iterdir() if "escaped" in p.name)
    for escape in ESCAPES:
        code, message = error_of(client.load_model, "adder", config="{}",
                                 files={escape: b"payload", "file:1/model.onnx": onnx_bytes(9)})
        assert code == "INVALID_ARGUMENT", (escape, message)
        assert ("must stay within model directory" in message
                or "Invalid file path" in message), (escape, message)
    for overlong in OVERLONG:
        code, message = error_of(client.load_model, "adder", config="{}",
                                 files={overlong: b"a", "file:1/model.onnx": onnx_bytes(9)})
        assert (code, message) == (
            "INTERNAL", "failed to load 'adder', failed to poll from model repository")
    assert sorted(p.name for p in tmp.iterdir() if "escaped" in p.name) == before
    assert not any(p.name.startswith("escaped") for p in tmp_path.rglob("*"))
    assert add_const(client, "adder") == (1, "1")  # nothing loaded, nothing swapped
    assert client.is_server_live()


def test_file_override_writes_only_inside_a_private_directory(repo, start_server, tmp_path):
    server = start_server(repo, "--model-control-mode", "explicit")
    client = server.client()
    # Allowed: nested names and names that only look odd.
    client.load_model("fresh", config='{"max_batch_size": 4}',
                      files={"file:1/model.onnx": onnx_bytes(4),
                             "file:1/sub/dir/notes.txt": b"x",
                             "file:..hidden": b"y"})
    assert add_const(client, "fresh") == (4, "1")
    # Nothing of it landed in the repository.
    assert not (repo / "fresh").exists()
    assert not any(p.name in ("notes.txt", "..hidden") for p in repo.rglob("*"))
