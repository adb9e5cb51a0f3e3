"""Build small ONNX models (onnx helper API) into temporary Triton repositories.

The builders of ``examples/make_models.py`` are reused when that script is
importable; the few graphs it does not have (a constant adder for version
tests, a two-input model with an optional input) are written here.
"""
from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
OPSET = 17
IR_VERSION = 8


def _load_examples():
    path = ROOT / "examples" / "make_models.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("_example_make_models", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_examples = _load_examples()

# wire datatype -> (ONNX element type, config data_type, numpy dtype for tritonclient)
DATATYPES = {
    "BOOL": (TensorProto.BOOL, "TYPE_BOOL", np.bool_),
    "UINT8": (TensorProto.UINT8, "TYPE_UINT8", np.uint8),
    "UINT16": (TensorProto.UINT16, "TYPE_UINT16", np.uint16),
    "UINT32": (TensorProto.UINT32, "TYPE_UINT32", np.uint32),
    "UINT64": (TensorProto.UINT64, "TYPE_UINT64", np.uint64),
    "INT8": (TensorProto.INT8, "TYPE_INT8", np.int8),
    "INT16": (TensorProto.INT16, "TYPE_INT16", np.int16),
    "INT32": (TensorProto.INT32, "TYPE_INT32", np.int32),
    "INT64": (TensorProto.INT64, "TYPE_INT64", np.int64),
    "FP16": (TensorProto.FLOAT16, "TYPE_FP16", np.float16),
    "FP32": (TensorProto.FLOAT, "TYPE_FP32", np.float32),
    "FP64": (TensorProto.DOUBLE, "TYPE_FP64", np.float64),
    "BYTES": (TensorProto.STRING, "TYPE_STRING", np.object_),
    "BF16": (TensorProto.BFLOAT16, "TYPE_BF16", np.float32),
}


def _model(graph) -> onnx.ModelProto:
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                             ir_version=IR_VERSION, producer_name="triton_grpc_server.tests")


def _save(model, path: Path) -> Path:
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def write_text(path: Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


# -- graphs ---------------------------------------------------------------------------------

def identity_onnx(path, onnx_dtype, shape: Sequence, in_name="INPUT0", out_name="OUTPUT0"):
    """OUTPUT0 = INPUT0 with the full ONNX ``shape`` (symbolic names for dynamic dims)."""
    if _examples is not None and shape:
        return _examples.make_identity(path, onnx_dtype, dims=list(shape[1:]),
                                       batch_dim=shape[0], input_name=in_name,
                                       output_name=out_name)
    graph = helper.make_graph(
        [helper.make_node("Identity", [in_name], [out_name])], "identity",
        [helper.make_tensor_value_info(in_name, onnx_dtype, list(shape))],
        [helper.make_tensor_value_info(out_name, onnx_dtype, list(shape))])
    return _save(_model(graph), path)


def add_sub_onnx(path, onnx_dtype=TensorProto.INT32, dims=(16,), batch_dim="batch"):
    """OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1 (Triton's ``simple``)."""
    if _examples is not None:
        return _examples.make_add_sub(path, onnx_dtype, dims=dims, batch_dim=batch_dim)
    shape = ([batch_dim] if batch_dim is not None else []) + list(dims)
    graph = helper.make_graph(
        [helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
         helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"])], "add_sub",
        [helper.make_tensor_value_info(n, onnx_dtype, shape) for n in ("INPUT0", "INPUT1")],
        [helper.make_tensor_value_info(n, onnx_dtype, shape) for n in ("OUTPUT0", "OUTPUT1")])
    return _save(_model(graph), path)


def add_const_onnx(path, value: int, shape=("batch", 4), onnx_dtype=TensorProto.INT32):
    """OUTPUT0 = INPUT0 + value: tells versions apart."""
    np_type = onnx.helper.tensor_dtype_to_np_dtype(onnx_dtype)
    graph = helper.make_graph(
        [helper.make_node("Add", ["INPUT0", "const"], ["OUTPUT0"])], "add_const",
        [helper.make_tensor_value_info("INPUT0", onnx_dtype, list(shape))],
        [helper.make_tensor_value_info("OUTPUT0", onnx_dtype, list(shape))],
        initializer=[numpy_helper.from_array(np.array(value, dtype=np_type), "const")])
    return _save(_model(graph), path)


def reshape_onnx(path, in_shape, out_shape, onnx_dtype=TensorProto.FLOAT):
    """OUTPUT0 = INPUT0 (model shapes ``in_shape``/``out_shape``, same element count)."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["INPUT0", "target"], ["OUTPUT0"])], "reshape",
        [helper.make_tensor_value_info("INPUT0", onnx_dtype, list(in_shape))],
        [helper.make_tensor_value_info("OUTPUT0", onnx_dtype, list(out_shape))],
        initializer=[numpy_helper.from_array(
            np.array([d if isinstance(d, int) else -1 for d in out_shape], np.int64), "target")])
    return _save(_model(graph), path)


# -- config.pbtxt ---------------------------------------------------------------------------

def tensor_block(name, data_type, dims, extra: str = "") -> str:
    dims_text = ", ".join(str(d) for d in dims)
    return f'{{ name: "{name}" data_type: {data_type} dims: [ {dims_text} ] {extra} }}'


def config_text(name, max_batch_size, inputs, outputs, extra: str = "",
                platform="onnxruntime_onnx") -> str:
    ins = ",\n  ".join(tensor_block(*t) for t in inputs)
    outs = ",\n  ".join(tensor_block(*t) for t in outputs)
    return (f'name: "{name}"\nplatform: "{platform}"\nmax_batch_size: {max_batch_size}\n'
            f"input [\n  {ins}\n]\noutput [\n  {outs}\n]\n{extra}\n")


# -- whole models ---------------------------------------------------------------------------

def identity_model(repo: Path, name: str, datatype: str, max_batch_size: int = 8,
                   dims: Sequence[int] = (-1,), versions: Sequence[int] = (1,),
                   extra: str = "", output_extra: str = "") -> Path:
    """An Identity model INPUT0 -> OUTPUT0 of one wire datatype."""
    onnx_dtype, config_type, _ = DATATYPES[datatype]
    model_dims = ["n%d" % i if d == -1 else d for i, d in enumerate(dims)]
    shape = (["batch"] if max_batch_size > 0 else []) + model_dims
    model_dir = Path(repo) / name
    for version in versions:
        identity_onnx(model_dir / str(version) / "model.onnx", onnx_dtype, shape)
    write_text(model_dir / "config.pbtxt", config_text(
        name, max_batch_size, [("INPUT0", config_type, dims)],
        [("OUTPUT0", config_type, dims, output_extra)], extra))
    return model_dir


def simple_model(repo: Path, name: str = "simple", max_batch_size: int = 8,
                 datatype: str = "INT32", dims=(16,)) -> Path:
    """Triton's ``simple``: INPUT0, INPUT1 [16] -> OUTPUT0 sum, OUTPUT1 difference."""
    onnx_dtype, config_type, _ = DATATYPES[datatype]
    model_dir = Path(repo) / name
    add_sub_onnx(model_dir / "1" / "model.onnx", onnx_dtype, dims=dims,
                 batch_dim="batch" if max_batch_size > 0 else None)
    write_text(model_dir / "config.pbtxt", config_text(
        name, max_batch_size,
        [("INPUT0", config_type, dims), ("INPUT1", config_type, dims)],
        [("OUTPUT0", config_type, dims), ("OUTPUT1", config_type, dims)]))
    return model_dir


def versioned_model(repo: Path, name: str, versions: Sequence[int], policy: Optional[str] = None,
                    max_batch_size: int = 8) -> Path:
    """Version N computes OUTPUT0 = INPUT0 + N (INT32 [4])."""
    model_dir = Path(repo) / name
    for version in versions:
        add_const_onnx(model_dir / str(version) / "model.onnx", version)
    extra = f"version_policy: {{ {policy} }}" if policy else ""
    write_text(model_dir / "config.pbtxt", config_text(
        name, max_batch_size, [("INPUT0", "TYPE_INT32", [4])], [("OUTPUT0", "TYPE_INT32", [4])],
        extra))
    return model_dir


def optional_input_model(repo: Path, name: str = "optional_in") -> Path:
    """INPUT0 + INPUT1 where the config marks INPUT1 optional (only the count check is used)."""
    model_dir = Path(repo) / name
    add_sub_onnx(model_dir / "1" / "model.onnx", TensorProto.INT32, dims=(4,), batch_dim="batch")
    write_text(model_dir / "config.pbtxt", config_text(
        name, 8, [("INPUT0", "TYPE_INT32", [4]), ("INPUT1", "TYPE_INT32", [4], "optional: true")],
        [("OUTPUT0", "TYPE_INT32", [4]), ("OUTPUT1", "TYPE_INT32", [4])]))
    return model_dir


def labels_file(model_dir: Path, labels: Sequence[str], filename: str = "labels.txt") -> Path:
    return write_text(Path(model_dir) / filename, "".join(f"{label}\n" for label in labels))


# -- servers, requests and errors -----------------------------------------------------------

# Server flags that inference suites run against: the default server (Cython codec) and the
# protobuf reference codec; both must give the same answers.
INFER_FRONTENDS = {"default": (), "python-codec": ("--infer-codec", "python")}


def start(repo, *flags, **kwargs):
    """A real server on ``repo`` (the caller stops it); see ``conftest.ServerHandle``."""
    from conftest import ServerHandle

    return ServerHandle(repo, flags, **kwargs)


def serve(repo, *flags, **kwargs):
    """Body of a ``server`` fixture, ``yield from models.serve(repo, ...)``: the server, stopped at teardown."""
    handle = start(repo, *flags, **kwargs)
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def client(server):
    """A tritonclient gRPC client of the test module's ``server`` fixture; import it to use it."""
    c = server.client()
    yield c
    c.close()


def error_of(fn, *args, **kwargs) -> tuple[str, str]:
    """Call ``fn``, which must fail; return ``(gRPC code name, message)``.

    Works for tritonclient's ``InferenceServerException`` and raw stub ``grpc.RpcError``.
    """
    import grpc
    from tritonclient.utils import InferenceServerException

    try:
        fn(*args, **kwargs)
    except InferenceServerException as exc:
        return (exc.status() or "").replace("StatusCode.", ""), exc.message()
    except grpc.RpcError as exc:
        return exc.code().name, exc.details()
    raise AssertionError(f"{getattr(fn, '__name__', fn)} succeeded but an error was expected")


def pb_input(name: str, datatype: str, shape, **contents):
    """A ``ModelInferRequest.InferInputTensor``; ``contents`` like ``int_contents=[1, 2]``."""
    from tritonclient.grpc import service_pb2

    tensor = service_pb2.ModelInferRequest().InferInputTensor(
        name=name, datatype=datatype, shape=list(shape))
    for field, values in contents.items():
        getattr(tensor.contents, field).extend(values)
    return tensor


def pb_request(model: str, inputs, raw=(), outputs=(), version: str = "", id: str = "",
               parameters: Optional[dict] = None):
    """A raw ``ModelInferRequest``; ``parameters`` values are ``(kind, value)`` pairs,
    e.g. ``{"priority": ("int64_param", -1)}``."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=model, model_version=version, id=id)
    request.inputs.extend(inputs)
    request.raw_input_contents.extend(raw)
    for name in outputs:
        request.outputs.add(name=name)
    for key, (kind, value) in (parameters or {}).items():
        setattr(request.parameters[key], kind, value)
    return request


def stub_infer(client, request):
    """Send a raw request through the client's own stub; return a tritonclient ``InferResult``."""
    from tritonclient.grpc import InferResult

    return InferResult(client._client_stub.ModelInfer(request))


def bytes_raw(items) -> bytes:
    """Triton's BYTES layout: a little-endian uint32 length before each element."""
    return b"".join(len(item).to_bytes(4, "little") + item for item in items)


# -- a backend that reports what it received ------------------------------------------------

ECHO_BACKEND_SOURCE = '''
"""Test-only backend: PARAMS (BYTES [1]) is the JSON of the request parameters it was given.

Parameters ``marker`` (a path, touched on start) and ``sleep_ms`` make a slow request.
"""
import json
import time

import numpy as np

from triton_grpc_server.backends.base import ArrayBackendInstance, Backend


class EchoParamsInstance(ArrayBackendInstance):
    def run(self, inputs, output_names, parameters):
        if "marker" in parameters:  # lets a test see the request is in flight
            open(parameters["marker"], "w").close()
        if "sleep_ms" in parameters:
            time.sleep(parameters["sleep_ms"] / 1000.0)
        text = json.dumps({"parameters": dict(parameters),
                           "inputs": sorted(inputs)}, sort_keys=True)
        out = {"PARAMS": np.array([text.encode()], dtype=object)}
        return {name: out[name] for name in output_names}


class EchoParamsBackend(Backend):
    default_model_filename = "model.echo"

    def create_instance(self, index, kind, device_id):
        return EchoParamsInstance()
'''

SITECUSTOMIZE_SOURCE = '''
import sys
sys.path.insert(0, %r)
from triton_grpc_server import backends as _backends
_backends.register_backend("echo_params", "echo_params_backend:EchoParamsBackend")
'''


def echo_params_model(repo: Path, plugin_dir: Path, name: str = "echo_params") -> dict:
    """Write the echo model and its plugin; return the env that makes the server load it."""
    import os

    write_text(Path(plugin_dir) / "echo_params_backend.py", ECHO_BACKEND_SOURCE)
    write_text(Path(plugin_dir) / "sitecustomize.py", SITECUSTOMIZE_SOURCE % str(ROOT))
    model_dir = Path(repo) / name
    write_text(model_dir / "1" / "model.echo", "echo\n")
    write_text(model_dir / "config.pbtxt", f'name: "{name}"\nbackend: "echo_params"\n'
               'max_batch_size: 0\n'
               'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
               'output [ { name: "PARAMS" data_type: TYPE_STRING dims: [ 1 ] } ]\n')
    path = os.pathsep.join(p for p in (str(plugin_dir), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path}
