"""PyTorch backend: Triton's naming rules, datatypes and loading, then end to end through tritonclient.

The CPU tests run the backend directly and through a real server process
(``start_server``); the GPU-marked tests run KIND_GPU instances (pinned
staging, H2D on the instance stream, D2H, event wait) against the CPU
result, bit for bit.
"""
from __future__ import annotations

import textwrap
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

torch = pytest.importorskip("torch", reason="torch not installed (pip install -e '.[pytorch]')")

from triton_grpc_server import gpu  # noqa: E402
from triton_grpc_server._proto import model_config_pb2 as mc  # noqa: E402
from triton_grpc_server.backends.base import BackendContext  # noqa: E402
from triton_grpc_server.backends.pytorch import PyTorchBackend  # noqa: E402
from triton_grpc_server.errors import InternalError, InvalidArgument, Unavailable, Unsupported  # noqa: E402

GPU_REASON = gpu.unavailable_reason()
if GPU_REASON is None and not torch.cuda.is_available():
    GPU_REASON = f"torch {torch.__version__} has no CUDA"


class AddSub(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor):
        return a + b, a - b


class Mixed(torch.nn.Module):
    """Integer, boolean and bfloat16 paths: exact on any device."""

    def forward(self, x: torch.Tensor, flags: torch.Tensor, h: torch.Tensor):
        return x * 3 + 1, torch.logical_not(flags), h * 2


def save_torchscript(module: torch.nn.Module, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript
        torch.jit.script(module).save(str(path))
    return path


ADD_SUB_CONFIG = """
name: "add_sub"
platform: "pytorch_libtorch"
max_batch_size: 8
input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 16 ] },
        { name: "INPUT__1" data_type: TYPE_FP32 dims: [ 16 ] } ]
output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 16 ] },
         { name: "OUTPUT__1" data_type: TYPE_FP32 dims: [ 16 ] } ]
"""


def make_backend(tmp_path, config_text, module, filename="model.pt"):
    path = save_torchscript(module, tmp_path / "1" / filename)
    config = text_format.Parse(config_text, mc.ModelConfig())
    PyTorchBackend.auto_complete_config(config, path)
    return PyTorchBackend(config, 1, path, BackendContext(config.name)), config


# ---------------------------------------------------------------- naming and types (direct, CPU)

def test_named_index_inputs_and_outputs(tmp_path):
    backend, _ = make_backend(tmp_path, ADD_SUB_CONFIG, AddSub())
    assert backend.input_convention == "NAMED_INDEX"
    inst = backend.create_instance(0, "KIND_CPU", 0)
    a = np.arange(32, dtype=np.float32).reshape(2, 16)
    b = np.full((2, 16), 0.5, dtype=np.float32)
    a.flags.writeable = False  # the server hands read-only views of request bytes
    out = inst.run({"INPUT__1": b, "INPUT__0": a}, ["OUTPUT__1", "OUTPUT__0"], {})
    np.testing.assert_array_equal(out["OUTPUT__0"], a + b)
    np.testing.assert_array_equal(out["OUTPUT__1"], a - b)
    assert set(inst.run({"INPUT__0": a, "INPUT__1": b}, [], {})) == {"OUTPUT__0", "OUTPUT__1"}


def test_forward_argument_names_and_config_order_outputs(tmp_path):
    config = """name: "m" platform: "pytorch_libtorch"
      input [ { name: "b" data_type: TYPE_FP32 dims: [ 3 ] }, { name: "a" data_type: TYPE_FP32 dims: [ 3 ] } ]
      output [ { name: "sum" data_type: TYPE_FP32 dims: [ 3 ] }, { name: "diff" data_type: TYPE_FP32 dims: [ 3 ] } ]"""
    backend, _ = make_backend(tmp_path, config, AddSub())
    assert backend.input_convention == "FORWARD_ARGUMENT"
    assert backend.output_convention == "STRICT_CONFIG_ORDERING"
    out = backend.create_instance(0, "KIND_CPU", 0).run(
        {"a": np.array([5, 5, 5], np.float32), "b": np.array([1, 2, 3], np.float32)}, ["diff"], {})
    np.testing.assert_array_equal(out["diff"], [4, 3, 2])  # a - b: bound by name, not config order


def test_integer_bool_and_bf16_tensors(tmp_path):
    config = """name: "mixed" platform: "pytorch_libtorch"
      input [ { name: "INPUT__0" data_type: TYPE_INT32 dims: [ 4 ] },
              { name: "INPUT__1" data_type: TYPE_BOOL dims: [ 4 ] },
              { name: "INPUT__2" data_type: TYPE_BF16 dims: [ 4 ] } ]
      output [ { name: "OUTPUT__0" data_type: TYPE_INT32 dims: [ 4 ] },
               { name: "OUTPUT__1" data_type: TYPE_BOOL dims: [ 4 ] },
               { name: "OUTPUT__2" data_type: TYPE_BF16 dims: [ 4 ] } ]"""
    backend, _ = make_backend(tmp_path, config, Mixed())
    x = np.array([-2, 0, 7, 2**20], np.int32)
    flags = np.array([True, False, True, False])
    h = torch.tensor([1.5, -2.0, 3.25, 0.0], dtype=torch.bfloat16)
    h_bits = h.view(torch.int16).numpy().view(np.uint16)
    out = backend.create_instance(0, "KIND_CPU", 0).run(
        {"INPUT__0": x, "INPUT__1": flags, "INPUT__2": h_bits}, [], {})
    np.testing.assert_array_equal(out["OUTPUT__0"], x * 3 + 1)
    np.testing.assert_array_equal(out["OUTPUT__1"], ~flags)
    assert out["OUTPUT__2"].dtype == np.uint16
    np.testing.assert_array_equal(out["OUTPUT__2"], (h * 2).view(torch.int16).numpy().view(np.uint16))


def test_output_datatype_mismatch_is_an_error(tmp_path):
    config = ADD_SUB_CONFIG.replace('name: "OUTPUT__1" data_type: TYPE_FP32',
                                    'name: "OUTPUT__1" data_type: TYPE_INT64')
    backend, _ = make_backend(tmp_path, config, AddSub())
    x = np.ones((1, 16), np.float32)
    with pytest.raises(InternalError, match="unexpected datatype"):
        backend.create_instance(0, "KIND_CPU", 0).run({"INPUT__0": x, "INPUT__1": x}, ["OUTPUT__1"], {})


def test_bad_inputs_and_unsupported_types(tmp_path):
    backend, _ = make_backend(tmp_path, ADD_SUB_CONFIG, AddSub())
    inst = backend.create_instance(0, "KIND_CPU", 0)
    x = np.ones((1, 16), np.float32)
    with pytest.raises(InvalidArgument):
        inst.run({"INPUT__0": x}, [], {})
    with pytest.raises(InvalidArgument):
        inst.run({"INPUT__0": x, "INPUT__1": x, "EXTRA": x}, [], {})
    with pytest.raises(Unsupported, match="TYPE_STRING"):
        make_backend(tmp_path / "s", ADD_SUB_CONFIG.replace("TYPE_FP32", "TYPE_STRING", 1), AddSub())


def test_garbage_model_file_is_unavailable_with_torch_message(tmp_path):
    path = tmp_path / "1" / "model.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a torchscript archive")
    config = text_format.Parse(ADD_SUB_CONFIG, mc.ModelConfig())
    with pytest.raises(Unavailable, match="unable to load TorchScript model"):
        PyTorchBackend(config, 1, path, BackendContext("add_sub"))


def test_torch_export_archive_is_accepted(tmp_path):
    batch = torch.export.Dim("batch", max=8)
    example = (torch.ones(2, 16), torch.ones(2, 16))
    program = torch.export.export(AddSub(), example, dynamic_shapes={"a": {0: batch}, "b": {0: batch}})
    path = tmp_path / "1" / "model.pt2"
    path.parent.mkdir(parents=True)
    torch.export.save(program, str(path))
    config = text_format.Parse(ADD_SUB_CONFIG + 'default_model_filename: "model.pt2"', mc.ModelConfig())
    backend = PyTorchBackend(config, 1, path, BackendContext("add_sub"))
    x = np.arange(48, dtype=np.float32).reshape(3, 16)
    out = backend.create_instance(0, "KIND_CPU", 0).run({"INPUT__0": x, "INPUT__1": x}, [], {})
    np.testing.assert_array_equal(out["OUTPUT__0"], x + x)


@pytest.mark.skipif(GPU_REASON is None, reason="checks behaviour without a GPU")
def test_kind_gpu_without_gpu_is_unavailable_with_reason(tmp_path):
    with pytest.raises(Unavailable, match="needs a GPU"):
        make_backend(tmp_path, ADD_SUB_CONFIG + "instance_group { kind: KIND_GPU count: 1 }", AddSub())


# ---------------------------------------------------------------- end to end through the server (CPU)

def write_repo(root: Path, name: str, config_text: str, module) -> Path:
    model_dir = root / name
    save_torchscript(module, model_dir / "1" / "model.pt")
    (model_dir / "config.pbtxt").write_text(textwrap.dedent(config_text))
    return root


def test_end_to_end_through_tritonclient_on_cpu(tmp_path, start_server):
    grpcclient = pytest.importorskip("tritonclient.grpc")
    repo = write_repo(tmp_path / "models", "add_sub",
                      ADD_SUB_CONFIG + "instance_group { kind: KIND_CPU count: 2 }", AddSub())
    gpu_config = ADD_SUB_CONFIG.replace('"add_sub"', '"add_sub_gpu"') + \
        "instance_group { kind: KIND_GPU count: 1 }"
    write_repo(repo, "add_sub_gpu", gpu_config, AddSub())
    server = start_server(repo, "--exit-on-error", "false")  # as Triton: one bad model must not stop the server
    client = server.client()
    try:
        assert client.is_model_ready("add_sub")
        rng = np.random.default_rng(0)

        def infer(seed):
            a = np.random.default_rng(seed).standard_normal((3, 16), dtype=np.float32)
            b = rng.standard_normal((3, 16), dtype=np.float32)
            inputs = [grpcclient.InferInput("INPUT__0", a.shape, "FP32"),
                      grpcclient.InferInput("INPUT__1", b.shape, "FP32")]
            inputs[0].set_data_from_numpy(a)
            inputs[1].set_data_from_numpy(b)
            result = client.infer("add_sub", inputs)
            with torch.inference_mode():
                want = AddSub()(torch.from_numpy(a), torch.from_numpy(b))
            return result, want

        with ThreadPoolExecutor(4) as pool:
            for result, (s, d) in pool.map(infer, range(16)):
                np.testing.assert_array_equal(result.as_numpy("OUTPUT__0"), s.numpy())
                np.testing.assert_array_equal(result.as_numpy("OUTPUT__1"), d.numpy())
        if GPU_REASON is not None:
            # The KIND_GPU model is UNAVAILABLE with the reason; the rest keeps serving.
            assert not client.is_model_ready("add_sub_gpu")
            index = {m.name: m for m in client.get_model_repository_index().models}
            assert index["add_sub_gpu"].state == "UNAVAILABLE"
            assert "GPU" in index["add_sub_gpu"].reason
    finally:
        client.close()


# ---------------------------------------------------------------- on a GPU

@pytest.mark.gpu
@pytest.mark.skipif(GPU_REASON is not None, reason=f"no GPU: {GPU_REASON}")
def test_gpu_instances_match_cpu_bit_exactly_and_reuse_the_pool(tmp_path):
    config = """name: "mixed" platform: "pytorch_libtorch" max_batch_size: 64
      input [ { name: "INPUT__0" data_type: TYPE_INT32 dims: [ -1 ] },
              { name: "INPUT__1" data_type: TYPE_BOOL dims: [ -1 ] },
              { name: "INPUT__2" data_type: TYPE_BF16 dims: [ -1 ] } ]
      output [ { name: "OUTPUT__0" data_type: TYPE_INT32 dims: [ -1 ] },
               { name: "OUTPUT__1" data_type: TYPE_BOOL dims: [ -1 ] },
               { name: "OUTPUT__2" data_type: TYPE_BF16 dims: [ -1 ] } ]
      instance_group { kind: KIND_GPU count: 2 }"""
    backend, _ = make_backend(tmp_path, config, Mixed())
    cpu = backend.create_instance(0, "KIND_CPU", 0)
    gpus = [backend.create_instance(i, "KIND_GPU", 0) for i in (1, 2)]
    pool = gpu.pinned_pool()
    assert pool.pinned

    def request(seed):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(1, 5000))
        return {"INPUT__0": rng.integers(-2**20, 2**20, (4, n), dtype=np.int32),
                "INPUT__1": rng.integers(0, 2, (4, n)).astype(bool),
                # finite, normal bf16 bit patterns (NaN payloads and subnormals may differ by device)
                "INPUT__2": rng.integers(0x0080, 0x7F00, (4, n), dtype=np.uint16)}

    def check(seed):
        inputs = request(seed)
        got = gpus[seed % 2].run(inputs, [], {})
        want = cpu.run(inputs, [], {})
        for name in want:
            assert got[name].dtype == want[name].dtype
            assert got[name].tobytes() == want[name].tobytes(), name

    for seed in range(4):
        check(seed)
    blocks = pool.block_allocations
    with ThreadPoolExecutor(2) as ex:  # each instance used by one thread at a time
        list(ex.map(lambda s: [check(x) for x in range(s, 200, 2)], [0, 1]))
    assert pool.block_allocations == blocks
