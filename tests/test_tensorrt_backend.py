"""TensorRT backend: what a CPU machine can check honestly, and what needs a GPU.

* API contract: every TensorRT attribute the backend uses exists on the real
  runtime module (``tensorrt_lean`` here) with the parameter names used.
  Nothing is executed: existence and pybind signatures only.
* No Runtime without a device: loading a model on a machine without a GPU
  raises Unavailable and never constructs ``trt.Runtime`` (in a subprocess,
  since using a Runtime made without a GPU crashes the process).
* Config auto-complete and profile selection from *engine metadata*, read
  through the few ICudaEngine methods the backend uses, from a fake engine:
  no TensorRT engine is deserialized or run by these tests.
* The instance pipeline (profile choice, staging into one pinned buffer,
  bound addresses, D2H, numpy views of pinned memory, CUDA graph capture per
  shape, TensorRT's log in errors, parallel staging) against a fake CUDA layer
  and a fake TensorRT: orchestration only, no CUDA and no TensorRT involved.
* GPU-marked: a garbage plan under the real runtime on a GPU.
"""
from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from google.protobuf import text_format

from triton_grpc_server import gpu
from triton_grpc_server._proto import model_config_pb2 as mc
from triton_grpc_server.backends import tensorrt as trt_backend
from triton_grpc_server.errors import InvalidArgument, Unavailable

ROOT = Path(__file__).resolve().parent.parent
GPU_REASON = gpu.unavailable_reason()


def _runtime_module():
    try:
        return trt_backend.import_runtime_module()
    except Unavailable as exc:
        pytest.skip(f"no TensorRT runtime module installed (pip install tensorrt-lean-cu13): {exc}")


# ---------------------------------------------------------------- API contract

def _signature_params(member) -> list[list[str]]:
    """Parameter names of each pybind overload, from the docstring's signature lines."""
    doc = getattr(member, "__doc__", "") or ""
    overloads = []
    for match in re.finditer(r"^(?:\d+\. )?\w+\((.*?)\) ->", doc, flags=re.M):
        names = [p.split(":")[0].strip() for p in re.split(r",\s*(?![^\[]*\])", match.group(1))]
        overloads.append([n.split("=")[0].strip() for n in names if n and n != "self"])
    return overloads


def test_every_tensorrt_member_the_backend_uses_exists_on_the_real_module():
    trt = _runtime_module()
    missing, wrong = [], []
    for cls_name, members in trt_backend.TRT_API.items():
        owner = trt if cls_name == "" else getattr(trt, cls_name, None)
        if owner is None:
            missing.append(cls_name)
            continue
        for member_name, params in members.items():
            member = getattr(owner, member_name, None)
            if member is None:
                missing.append(f"{cls_name}.{member_name}")
                continue
            if params and cls_name:
                overloads = _signature_params(member)
                if not any(list(params) == o[:len(params)] for o in overloads):
                    wrong.append(f"{cls_name}.{member_name}{params} vs {overloads}")
    assert not missing, f"missing on {trt.__name__}: {missing}"
    assert not wrong, f"signature mismatch on {trt.__name__}: {wrong}"


def test_python_subclass_hooks_match_tensorrt_documentation():
    trt = _runtime_module()
    # IOutputAllocator's documented hooks (its docstring shows the method signatures).
    doc = trt.IOutputAllocator.__doc__
    for hook in ("reallocate_output_async(self, tensor_name, memory, size, alignment, stream)",
                 "notify_shape(self, tensor_name, shape)"):
        assert hook in doc
    assert "def log(self, severity, msg)" in trt.ILogger.__doc__
    # Our subclasses define exactly those hooks (constructing the allocator needs a GPU).
    source = inspect.getsource(trt_backend)
    assert "def reallocate_output_async(self, tensor_name, memory, size, alignment, stream):" in source
    assert "def notify_shape(self, tensor_name, shape):" in source
    assert "def log(self, severity, msg):" in source
    assert "trt.IOutputAllocator.__init__(self)" in source and "trt.ILogger.__init__(self)" in source


# Variable names in backends/tensorrt.py -> the TensorRT class they hold.
_RECEIVERS = {"trt": "", "self.trt": "", "runtime": "Runtime", "engine": "ICudaEngine",
              "self.engine": "ICudaEngine", "ctx": "IExecutionContext"}


def test_every_tensorrt_attribute_in_backend_source_is_listed_in_contract():
    tree = ast.parse(Path(trt_backend.__file__).read_text())
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            receiver = ast.unparse(node.value)
            if receiver in _RECEIVERS:
                used.add((_RECEIVERS[receiver], node.attr))
    listed = {(cls, m) for cls, members in trt_backend.TRT_API.items() for m in members}
    listed |= {("", cls) for cls in trt_backend.TRT_API if cls}
    unlisted = sorted(u for u in used - listed if not u[1].startswith("_"))
    assert not unlisted, f"add to TRT_API (and check on the real module): {unlisted}"
    assert ("IExecutionContext", "execute_async_v3") in used


# ---------------------------------------------------------------- no Runtime without a device

_NO_RUNTIME_SCRIPT = textwrap.dedent("""
    import importlib, sys
    from pathlib import Path
    from google.protobuf import text_format
    from triton_grpc_server._proto import model_config_pb2 as mc
    from triton_grpc_server.backends import tensorrt as b
    from triton_grpc_server.backends.base import BackendContext
    from triton_grpc_server.errors import Unavailable

    created = []
    if sys.argv[1] == "spy":
        for name in b.RUNTIME_MODULES:
            try:
                mod = importlib.import_module(name)
            except ImportError:
                continue
            class SpyRuntime:
                def __init__(self, *a, **k):
                    created.append(name)
                    raise SystemExit("Runtime constructed")
            mod.Runtime = SpyRuntime
    plan = Path(sys.argv[2])
    config = text_format.Parse('name: "m" platform: "tensorrt_plan" '
                               'instance_group { kind: KIND_GPU count: 2 }', mc.ModelConfig())
    for step in ("auto_complete", "load"):
        try:
            if step == "auto_complete":
                b.TensorRTBackend.auto_complete_config(config, plan)
            else:
                b.TensorRTBackend(config, 1, plan, BackendContext("m"))
        except Unavailable as exc:
            print(step, "UNAVAILABLE", exc.message)
        else:
            print(step, "LOADED")
    print("runtimes created:", created)
""")


@pytest.mark.skipif(GPU_REASON is None, reason="checks the no-GPU path; this machine has a GPU")
@pytest.mark.parametrize("mode", ["spy", "real"])
def test_loading_without_gpu_is_unavailable_and_never_creates_runtime(tmp_path, mode):
    _runtime_module()
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"definitely not a TensorRT plan" * 10)
    proc = subprocess.run([sys.executable, "-c", _NO_RUNTIME_SCRIPT, mode, str(plan)],
                          capture_output=True, text=True, timeout=120, cwd=str(ROOT))
    # "real": the unpatched module; a Runtime made without a GPU would crash here.
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("auto_complete UNAVAILABLE") and "needs a GPU" in lines[0], proc.stdout
    assert lines[1].startswith("load UNAVAILABLE") and "needs a GPU" in lines[1], proc.stdout
    assert lines[2] == "runtimes created: []"


def test_runtime_module_order_and_clear_error_when_none_imports():
    assert trt_backend.RUNTIME_MODULES[:3] == ("tensorrt", "tensorrt_lean", "tensorrt_dispatch")
    with pytest.raises(Unavailable, match="no TensorRT runtime module"):
        trt_backend.import_runtime_module(("no_such_tensorrt_module",))


# ---------------------------------------------------------------- metadata through a fake engine

class FakeEngine:
    """Implements only ENGINE_METADATA_METHODS, with enum values as objects having ``.name``."""

    def __init__(self, tensors, profiles):
        # tensors: [(name, "INPUT"/"OUTPUT", dtype name, shape)]
        # profiles: [{input name: (min, opt, max)}]
        self._tensors = tensors
        self._profiles = profiles
        self.num_io_tensors = len(tensors)
        self.num_optimization_profiles = len(profiles)

    def _get(self, name):
        return next(t for t in self._tensors if t[0] == name)

    def get_tensor_name(self, i):
        return self._tensors[i][0]

    def get_tensor_mode(self, name):
        return SimpleNamespace(name=self._get(name)[1])

    def get_tensor_dtype(self, name):
        return SimpleNamespace(name=self._get(name)[2])

    def get_tensor_shape(self, name):
        return self._get(name)[3]

    def get_tensor_location(self, name):
        return SimpleNamespace(name="DEVICE")

    def get_tensor_profile_shape(self, name, p):
        return [list(d) for d in self._profiles[p][name]]


assert set(m for m in dir(FakeEngine) if not m.startswith("_")) | {"num_io_tensors", "num_optimization_profiles"} \
    == set(trt_backend.ENGINE_METADATA_METHODS)


def _dynamic_engine():
    return FakeEngine(
        [("images", "INPUT", "HALF", (-1, 3, -1, -1)), ("scale", "INPUT", "FLOAT", (-1, 1)),
         ("boxes", "OUTPUT", "FLOAT", (-1, 100, 4)), ("labels", "OUTPUT", "INT64", (-1, 100))],
        [{"images": ((1, 3, 64, 64), (4, 3, 224, 224), (8, 3, 320, 320)),
          "scale": ((1, 1), (4, 1), (16, 1))},
         {"images": ((1, 3, 320, 320), (16, 3, 640, 640), (32, 3, 640, 640)),
          "scale": ((1, 1), (16, 1), (32, 1))}])


def _config(text=""):
    return text_format.Parse('name: "det" platform: "tensorrt_plan" ' + text, mc.ModelConfig())


def test_autocomplete_from_engine_metadata_without_tensorrt():
    meta = trt_backend.read_engine_metadata(_dynamic_engine())
    config = _config()
    trt_backend.auto_complete_from_metadata(config, meta, gpu_available=True)
    assert config.max_batch_size == 32  # profile 1 admits 32 for every input
    got = {t.name: (mc.DataType.Name(t.data_type), list(t.dims)) for t in config.input}
    assert got == {"images": ("TYPE_FP16", [3, -1, -1]), "scale": ("TYPE_FP32", [1])}
    got = {t.name: (mc.DataType.Name(t.data_type), list(t.dims)) for t in config.output}
    assert got == {"boxes": ("TYPE_FP32", [100, 4]), "labels": ("TYPE_INT64", [100])}
    assert [(g.kind, g.count) for g in config.instance_group] == [(mc.ModelInstanceGroup.KIND_GPU, 1)]


def test_autocomplete_keeps_stated_fields_and_rejects_contradictions():
    meta = trt_backend.read_engine_metadata(_dynamic_engine())
    config = _config('max_batch_size: 8 input { name: "images" data_type: TYPE_FP16 dims: [3, 320, 320] }')
    trt_backend.auto_complete_from_metadata(config, meta)
    assert config.max_batch_size == 8
    assert list(config.input[0].dims) == [3, 320, 320] and len(config.input) == 2
    with pytest.raises(InvalidArgument, match="unexpected datatype TYPE_FP32 for 'images'"):
        trt_backend.auto_complete_from_metadata(
            _config('input { name: "images" data_type: TYPE_FP32 }'), meta)
    with pytest.raises(InvalidArgument, match="maximum batch size of 32"):
        trt_backend.auto_complete_from_metadata(_config("max_batch_size: 64"), meta)


def test_autocomplete_static_engine_does_not_batch():
    engine = FakeEngine([("x", "INPUT", "INT32", (2, 5)), ("y", "OUTPUT", "BOOL", (2, 5))], [{}])
    meta = trt_backend.read_engine_metadata(engine)
    config = _config()
    trt_backend.auto_complete_from_metadata(config, meta, gpu_available=False)
    assert config.max_batch_size == 0
    assert [(t.name, list(t.dims)) for t in config.input] == [("x", [2, 5])]
    assert mc.DataType.Name(config.output[0].data_type) == "TYPE_BOOL"
    assert not config.instance_group
    with pytest.raises(InvalidArgument, match="does not support batching"):
        trt_backend.auto_complete_from_metadata(_config("max_batch_size: 4"), meta)


def test_profile_selection_from_engine_metadata_without_tensorrt():
    meta = trt_backend.read_engine_metadata(_dynamic_engine())
    assert meta.select_profile({"images": (2, 3, 128, 128), "scale": (2, 1)}) == 0
    assert meta.select_profile({"images": (2, 3, 640, 640), "scale": (2, 1)}) == 1
    assert meta.select_profile({"images": (20, 3, 320, 320), "scale": (20, 1)}) == 1
    assert meta.select_profile({"images": (2, 3, 320, 320), "scale": (2, 1)}, allowed=[1]) == 1
    with pytest.raises(InvalidArgument, match="no optimization profile"):
        meta.select_profile({"images": (64, 3, 64, 64), "scale": (64, 1)})
    with pytest.raises(InvalidArgument):
        meta.select_profile({"images": (2, 3, 64), "scale": (2, 1)})  # wrong rank
    assert meta.max_shape("images", [0, 1]) == (32, 3, 640, 640)


def test_unsupported_engine_datatype_is_reported():
    engine = FakeEngine([("x", "INPUT", "FP8", (4,)), ("y", "OUTPUT", "FLOAT", (4,))], [{}])
    with pytest.raises(Exception, match="FP8"):
        trt_backend.read_engine_metadata(engine)


# ---------------------------------------------------------------- on a GPU

@pytest.mark.gpu
@pytest.mark.skipif(GPU_REASON is not None, reason=f"no GPU: {GPU_REASON}")
def test_garbage_plan_is_unavailable_with_tensorrt_message(tmp_path):
    _runtime_module()
    from triton_grpc_server.backends.base import BackendContext

    plan = tmp_path / "model.plan"
    plan.write_bytes(b"\x00garbage plan\x00" * 64)
    config = _config("instance_group { kind: KIND_GPU count: 1 }")
    with pytest.raises(Unavailable) as info:
        trt_backend.TensorRTBackend(config, 1, plan, BackendContext("det"))
    message = info.value.message
    assert "unable to load TensorRT engine" in message
    assert "TensorRT gave no message" not in message, message


# ---------------------------------------------------------------- pipeline with fakes (CPU)
#
# The orchestration in TensorRTInstance (profile choice, set_input_shape,
# staging offsets in one pinned buffer, bound addresses, D2H into one pinned
# buffer, numpy views, graph capture per shape, TensorRT's log in errors) run
# against a fake CUDA layer whose "device" memory is host memory and a fake
# TensorRT whose engine computes y = 2x + 1 at the bound addresses. The real
# pinned pool runs on its host fallback. Nothing here touches CUDA or TensorRT.

import ctypes  # noqa: E402

import numpy as np  # noqa: E402


class _FakeCuda:
    class Stream:
        def __init__(self, device=-1, priority=0, non_blocking=True):
            self.ptr = 0x5000 + id(self) % 4096
            self.capture = None

        def synchronize(self):
            pass

        def begin_capture(self):
            self.capture = []

        def end_capture(self, instantiate=True):
            work, self.capture = self.capture, None
            return _FakeCuda.Graph(work) if instantiate else None

    class Graph:
        def __init__(self, work):
            self.work = work
            self.launches = 0

        def launch(self, stream):
            self.launches += 1
            for fn in self.work:
                fn()

    class Event:
        def __init__(self, device=-1, blocking_sync=True, timing=False):
            self.ptr = 0x7000
            self.synced = 0

        def record(self, stream):
            pass

        def synchronize(self):
            self.synced += 1

    class DeviceBuffer:
        def __init__(self, size, device=-1):
            self.size = size
            self.mem = np.zeros(max(size, 1), np.uint8)
            self.ptr = self.mem.ctypes.data

    @staticmethod
    def set_device(device):
        pass

    @staticmethod
    def get_last_error():
        return 0

    @staticmethod
    def memcpy_d2h_async(dst, src, nbytes, stream):
        ctypes.memmove(dst, src, nbytes)

    @staticmethod
    def stage_h2d(dst, staging, offset, src, stream, chunk=1 << 20):
        staging.copy_from(src, offset)
        ctypes.memmove(dst, staging.ptr + offset, len(src))
        return len(src)


def _floats_at(ptr, count):
    return np.ctypeslib.as_array((ctypes.c_float * count).from_address(ptr))


class _FakeContext:
    def __init__(self, engine):
        self.engine = engine
        self.shapes = {}
        self.addresses = {}
        self.profile = None
        self.runs = 0

    def set_optimization_profile_async(self, profile_index, stream_handle):
        self.profile = profile_index
        return True

    def set_input_shape(self, name, shape):
        lo, _, hi = self.engine._profiles[self.profile][name]
        if not all(a <= s <= b for s, a, b in zip(shape, lo, hi)):
            self.engine.logger.log(SimpleNamespace(name="ERROR"), f"shape {tuple(shape)} outside profile")
            return False
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        return self.shapes["x"] if name in ("x", "y") else ()

    def get_max_output_size(self, name):
        return 0

    def set_tensor_address(self, name, memory):
        self.addresses[name] = memory
        return True

    def set_input_consumed_event(self, event):
        return True

    def set_output_allocator(self, name, output_allocator):
        return True

    def execute_async_v3(self, stream_handle):
        def run():
            n = int(np.prod(self.shapes["x"]))
            _floats_at(self.addresses["y"], n)[:] = 2 * _floats_at(self.addresses["x"], n) + 1
            self.runs += 1

        stream = self.engine.streams.get(stream_handle)
        if stream is not None and stream.capture is not None:
            stream.capture.append(run)
        else:
            run()
        return True


class _FakeTrt:
    """Module-shaped: Runtime, ILogger, IOutputAllocator."""

    class ILogger:
        def __init__(self):
            pass

    class IOutputAllocator:
        def __init__(self):
            pass

    class Runtime:
        def __init__(self, logger):
            self.logger = logger
            self.engine_host_code_allowed = False

        def deserialize_cuda_engine(self, serialized_engine):
            if bytes(serialized_engine) != b"FAKE PLAN":
                self.logger.log(SimpleNamespace(name="ERROR"), "Serialization assertion magicTag failed")
                return None
            engine = FakeEngine([("x", "INPUT", "FLOAT", (-1, 4)), ("y", "OUTPUT", "FLOAT", (-1, 4))],
                                [{"x": ((1, 4), (2, 4), (4, 4))}, {"x": ((5, 4), (8, 4), (16, 4))}])
            engine.logger = self.logger
            engine.streams = {}
            engine.contexts = []

            def create_execution_context():
                ctx = _FakeContext(engine)
                engine.contexts.append(ctx)
                return ctx

            engine.create_execution_context = create_execution_context
            return engine


@pytest.fixture
def fake_gpu(monkeypatch):
    streams = {}
    original_stream = _FakeCuda.Stream

    class TrackedStream(original_stream):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            streams[self.ptr] = self

    cuda_ns = SimpleNamespace(**{k: getattr(_FakeCuda, k) for k in dir(_FakeCuda) if not k.startswith("_")})
    cuda_ns.Stream = TrackedStream
    try:
        real_pool = gpu.cuda_module().PinnedPool(block_size=1 << 20, host_fallback=True)
    except Unavailable as exc:
        pytest.skip(str(exc))
    monkeypatch.setattr(gpu, "cuda_module", lambda: cuda_ns)
    monkeypatch.setattr(gpu, "require_devices", lambda *a, **k: None)
    monkeypatch.setattr(gpu, "pinned_pool", lambda: real_pool)
    monkeypatch.setattr(trt_backend, "import_runtime_module", lambda *a: _FakeTrt)
    original_runtime = _FakeTrt.Runtime.deserialize_cuda_engine

    def deserialize(self, serialized_engine):
        engine = original_runtime(self, serialized_engine)
        if engine is not None:
            engine.streams = streams
        return engine

    monkeypatch.setattr(_FakeTrt.Runtime, "deserialize_cuda_engine", deserialize)
    return real_pool


def _fake_model(tmp_path, extra=""):
    from triton_grpc_server.backends.base import BackendContext

    plan = tmp_path / "model.plan"
    plan.write_bytes(b"FAKE PLAN")
    config = _config(extra)
    trt_backend.TensorRTBackend.auto_complete_config(config, plan)
    return trt_backend.TensorRTBackend(config, 1, plan, BackendContext("det")), config


def test_execute_pipeline_with_fake_cuda_layer_and_fake_tensorrt(tmp_path, fake_gpu):
    backend, config = _fake_model(tmp_path)
    assert config.max_batch_size == 16 and list(config.input[0].dims) == [4]
    inst = backend.create_instance(0, "KIND_GPU", 0)
    assert set(inst.contexts) == {0, 1}
    for batch, profile in ((3, 0), (9, 1), (1, 0)):
        x = np.arange(batch * 4, dtype=np.float32).reshape(batch, 4)
        out = inst.run({"x": x}, ["y"], {})
        np.testing.assert_array_equal(out["y"], 2 * x + 1)
        assert inst.contexts[profile].shapes["x"] == (batch, 4)
        assert out["y"].base is not None  # a view of pinned memory, not a copy
    del out
    assert fake_gpu.live_buffers == 0
    blocks = fake_gpu.block_allocations
    for _ in range(20):
        inst.run({"x": np.ones((2, 4), np.float32)}, ["y"], {})
    assert fake_gpu.block_allocations == blocks
    with pytest.raises(InvalidArgument, match="no optimization profile"):
        inst.run({"x": np.ones((17, 4), np.float32)}, ["y"], {})
    inst.close()


def test_cuda_graphs_are_captured_once_per_shape_with_fakes(tmp_path, fake_gpu):
    backend, _ = _fake_model(tmp_path, "optimization { cuda { graphs: true } }")
    inst = backend.create_instance(0, "KIND_GPU", 0)
    assert inst.use_graphs
    for _ in range(3):
        for batch in (2, 3):
            x = np.full((batch, 4), batch, np.float32)
            np.testing.assert_array_equal(inst.run({"x": x}, ["y"], {})["y"], 2 * x + 1)
    assert len(inst.graphs) == 2
    assert sorted(g.launches for g in inst.graphs.values()) == [3, 3]


def test_garbage_plan_error_quotes_the_tensorrt_log_with_fakes(tmp_path, fake_gpu):
    from triton_grpc_server.backends.base import BackendContext

    plan = tmp_path / "model.plan"
    plan.write_bytes(b"garbage")
    with pytest.raises(Unavailable, match="unable to load TensorRT engine .*magicTag failed"):
        trt_backend.TensorRTBackend(_config("instance_group { kind: KIND_GPU }"), 1, plan,
                                    BackendContext("det"))


@pytest.mark.parametrize("nbytes", [100, (2 << 20) - 1, 2 << 20, (5 << 20) + 123])
def test_parallel_staging_slices_cover_the_tensor_with_fakes(fake_gpu, nbytes):
    cuda = gpu.cuda_module()  # the fake: device memory is host memory
    src = np.random.default_rng(nbytes).integers(0, 255, nbytes, dtype=np.uint8)
    dev = cuda.DeviceBuffer(nbytes)
    staging = fake_gpu.alloc(nbytes + 512)
    assert gpu.stage_h2d(dev.ptr, staging, 512, src, cuda.Stream()) == nbytes
    assert dev.mem.tobytes() == src.tobytes()
    assert staging.to_bytes()[512:] == src.tobytes()


def test_graph_capture_failure_falls_back_to_plain_enqueue_with_fakes(tmp_path, fake_gpu, monkeypatch):
    original = _FakeContext.execute_async_v3

    def refuse_under_capture(self, stream_handle):
        stream = self.engine.streams.get(stream_handle)
        if stream is not None and stream.capture is not None:
            return False  # as TensorRT does for work it cannot capture
        return original(self, stream_handle)

    monkeypatch.setattr(_FakeContext, "execute_async_v3", refuse_under_capture)
    backend, _ = _fake_model(tmp_path, "optimization { cuda { graphs: true } }")
    inst = backend.create_instance(0, "KIND_GPU", 0)
    x = np.ones((2, 4), np.float32)
    for _ in range(2):
        np.testing.assert_array_equal(inst.run({"x": x}, ["y"], {})["y"], 2 * x + 1)
    assert not inst.use_graphs and not inst.graphs


def test_execute_pipelines_batches_and_answers_from_the_completion_thread_with_fakes(
        tmp_path, fake_gpu, monkeypatch):
    import threading

    from scheduler_fakes import Answers

    from triton_grpc_server._ext.wire import InferRequest
    from triton_grpc_server.scheduler.base import ScheduledRequest

    gpu_done = threading.Event()  # the "GPU" finishes when the test says so
    waiters = []

    def synchronize(event):
        waiters.append(threading.current_thread().name)
        assert gpu_done.wait(30)
    monkeypatch.setattr(_FakeCuda.Event, "synchronize", synchronize)
    backend, _ = _fake_model(tmp_path)
    inst = backend.create_instance(0, "KIND_GPU", 0)
    answers = Answers()

    def request(tag, batch):
        x = np.full((batch, 4), tag, np.float32)
        return ScheduledRequest(InferRequest(sender=answers.sender(tag)), None, {"x": x}, ["y"],
                                {}, batch)

    inst.execute([request(1, 2)])                     # both queued on the stream;
    inst.execute([request(2, 3), request(3, 1)])      # execute returned each time
    third = threading.Thread(target=inst.execute, args=([request(4, 1)],))
    third.start()                                     # PIPELINE_DEPTH in flight: it waits
    third.join(0.2)
    assert third.is_alive() and answers.items == []
    gpu_done.set()
    third.join(30)
    answers.wait(4)
    assert answers.order == [1, 2, 3, 4]
    for tag, batch in ((1, 2), (2, 3), (3, 1), (4, 1)):
        np.testing.assert_array_equal(answers.of(tag)["y"], np.full((batch, 4), 2 * tag + 1.0))
    assert set(waiters) == {"det_0-completion"}       # never the worker that called execute
    inst.close()
