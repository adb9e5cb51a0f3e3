"""TensorRT backend (``platform: "tensorrt_plan"``, ``backend: "tensorrt"``, ``model.plan``).

The pipeline follows Triton's tensorrt_backend (see ../shared/GPU.md, section 3):
each instance owns execution contexts (one per optimization profile it may
use), a non-blocking stream, device I/O buffers ``cudaMalloc``ed once at the
profiles' maximum size and bound with ``set_tensor_address`` at load, and
events. A request is gathered into one pinned-pool buffer and copied H2D on
the instance stream (``stage_h2d`` overlaps the host memcpy with the DMA),
then ``execute_async_v3`` (or a captured CUDA graph) runs and outputs come back
D2H into one pinned buffer, all queued on the instance stream, and an event is
recorded after them. ``execute(requests)`` returns as soon as that is queued:
the instance's completion thread waits on the event (blocking sync, GIL
released) and answers the requests, so the worker stages the next batch while
this one runs, as Triton's TensorRT backend does (up to ``PIPELINE_DEPTH``
batches in flight per instance; stream order keeps the shared device buffers
consistent). Outputs are numpy views of the pinned buffer, which returns to
the pool once the response is encoded. Engines with data-dependent output
shapes, whose sizes are known only after the run, take the synchronous path.

Load-time rules:

* the runtime module is imported lazily, first found of ``tensorrt``,
  ``tensorrt_lean``, ``tensorrt_dispatch``, ``tensorrt_lean_bindings``,
  ``tensorrt_dispatch_bindings``;
* no ``trt.Runtime`` is ever created before the CUDA layer has reported a
  usable device (without one a Runtime logs error 35 and then crashes the
  process on use); the model becomes UNAVAILABLE with the reason instead;
* TensorRT's log is captured, so a plan that fails to deserialize yields an
  error carrying TensorRT's own message.

Engine metadata (I/O names, datatypes, shapes, profiles) is read through the
few ``ICudaEngine`` methods listed in :data:`ENGINE_METADATA_METHODS`, so
config auto-complete and profile selection run on CPU against a fake engine.
"""
from __future__ import annotations

import collections
import importlib
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from .. import gpu
from ..errors import InternalError, InvalidArgument, Unavailable, Unsupported
from ..tensors import CONFIG_TO_WIRE, NUMPY_DTYPES, WIRE_TO_CONFIG, shape_str
from .base import ArrayBackendInstance, Backend, BackendContext, gather, scatter

#: Batches one instance may have queued on its stream at once (staging the next
#: while the current one runs).
PIPELINE_DEPTH = 2
_now = time.monotonic_ns

log = logging.getLogger("triton_grpc_server.backends.tensorrt")

#: Runtime modules, in the order they are tried.
RUNTIME_MODULES = ("tensorrt", "tensorrt_lean", "tensorrt_dispatch",
                   "tensorrt_lean_bindings", "tensorrt_dispatch_bindings")

#: The ``ICudaEngine`` methods :func:`read_engine_metadata` uses: the thin
#: interface a fake engine implements in the CPU tests.
ENGINE_METADATA_METHODS = ("num_io_tensors", "get_tensor_name", "get_tensor_mode",
                           "get_tensor_dtype", "get_tensor_shape", "get_tensor_location",
                           "num_optimization_profiles", "get_tensor_profile_shape")

#: Every TensorRT attribute this module uses, by class, with the parameter
#: names the calls rely on (checked against the real module's pybind
#: signatures by tests/test_tensorrt_backend.py).
TRT_API = {
    "": {"Runtime": (), "ILogger": (), "IOutputAllocator": ()},
    "Runtime": {"__init__": ("logger",), "engine_host_code_allowed": None,
                "deserialize_cuda_engine": ("serialized_engine",)},
    "ILogger": {"__init__": (), "log": ("severity", "msg"), "Severity": None},
    "IOutputAllocator": {"__init__": ()},
    "ICudaEngine": {
        "num_io_tensors": None, "get_tensor_name": ("index",), "get_tensor_mode": ("name",),
        "get_tensor_dtype": ("name",), "get_tensor_shape": ("name",),
        "get_tensor_location": ("name",), "num_optimization_profiles": None,
        "get_tensor_profile_shape": ("name", "profile_index"),
        "create_execution_context": ()},
    "IExecutionContext": {
        "set_optimization_profile_async": ("profile_index", "stream_handle"),
        "set_input_shape": ("name", "shape"), "get_tensor_shape": ("name",),
        "get_max_output_size": ("name",), "set_tensor_address": ("name", "memory"),
        "set_input_consumed_event": ("event",), "set_output_allocator": ("name", "output_allocator"),
        "execute_async_v3": ("stream_handle",), "infer_shapes": ()},
    "TensorIOMode": {"INPUT": None, "OUTPUT": None},
    "TensorLocation": {"DEVICE": None, "HOST": None},
    "DataType": {name: None for name in ("FLOAT", "HALF", "BF16", "INT8", "INT32", "INT64",
                                         "BOOL", "UINT8")},
}

# TensorRT DataType name -> wire datatype
TRT_TO_WIRE = {"FLOAT": "FP32", "HALF": "FP16", "BF16": "BF16", "INT8": "INT8",
               "INT32": "INT32", "INT64": "INT64", "BOOL": "BOOL", "UINT8": "UINT8"}

# Engine deserialization is serialised process-wide, as Triton does.
_ENGINE_LOCK = threading.Lock()


def import_runtime_module(names: Sequence[str] = RUNTIME_MODULES):
    """The first TensorRT runtime module that imports, else :class:`Unavailable`."""
    failures = []
    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            failures.append(f"{name}: {exc}")
    raise Unavailable("no TensorRT runtime module could be imported (" + "; ".join(failures)
                      + "): pip install 'triton_grpc_server[tensorrt]'")


# ---------------------------------------------------------------- engine metadata

@dataclass
class TensorInfo:
    name: str
    is_input: bool
    datatype: str                      # wire datatype
    shape: tuple                       # engine shape, -1 where dynamic
    on_host: bool = False              # shape tensors live on the host
    profiles: list = field(default_factory=list)   # inputs: [(min, opt, max)] per profile

    @property
    def dynamic(self) -> bool:
        return any(d < 0 for d in self.shape)


@dataclass
class EngineMetadata:
    tensors: list
    num_profiles: int

    @property
    def inputs(self) -> list:
        return [t for t in self.tensors if t.is_input]

    @property
    def outputs(self) -> list:
        return [t for t in self.tensors if not t.is_input]

    def tensor(self, name: str) -> TensorInfo:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    def supports_batching(self) -> bool:
        """Every I/O tensor has a dynamic first dimension (Triton's test for explicit-batch engines)."""
        return bool(self.tensors) and all(len(t.shape) >= 1 and t.shape[0] == -1
                                          for t in self.tensors)

    def max_batch_size(self) -> int:
        """The largest batch some profile admits for every input (0 when not batching)."""
        if not self.supports_batching():
            return 0
        best = 0
        for p in range(self.num_profiles):
            best = max(best, min(t.profiles[p][2][0] for t in self.inputs))
        return best

    def profile_admits(self, profile: int, shapes: Mapping[str, Sequence[int]]) -> bool:
        for t in self.inputs:
            shape = shapes.get(t.name)
            if shape is None:
                continue
            lo, _opt, hi = t.profiles[profile]
            if len(shape) != len(lo) or any(not (a <= s <= b) for s, a, b in zip(shape, lo, hi)):
                return False
        return True

    def select_profile(self, shapes: Mapping[str, Sequence[int]],
                       allowed: Optional[Sequence[int]] = None) -> int:
        """The first profile (of ``allowed``) whose min/max admit every input shape."""
        for p in (allowed if allowed is not None else range(self.num_profiles)):
            if self.profile_admits(p, shapes):
                return p
        described = ", ".join(f"'{n}' {shape_str(s)}" for n, s in shapes.items())
        raise InvalidArgument(f"no optimization profile of the engine admits the input shapes {described}")

    def max_shape(self, name: str, profiles: Sequence[int]) -> tuple:
        """An input's largest shape, dimension by dimension, over ``profiles``."""
        t = self.tensor(name)
        dims = [0] * len(t.shape)
        for p in profiles:
            for i, d in enumerate(t.profiles[p][2]):
                dims[i] = max(dims[i], d)
        return tuple(dims)


def _enum_name(value) -> str:
    name = getattr(value, "name", None)
    return name if isinstance(name, str) else str(value).rsplit(".", 1)[-1]


def read_engine_metadata(engine) -> EngineMetadata:
    """Read I/O tensors and profiles through :data:`ENGINE_METADATA_METHODS` only.

    ``engine`` is a ``trt.ICudaEngine`` or anything with those members (enum
    values are compared by ``.name``, so no TensorRT module is needed).
    """
    num_profiles = max(1, int(engine.num_optimization_profiles))
    tensors = []
    for i in range(int(engine.num_io_tensors)):
        name = engine.get_tensor_name(i)
        mode = _enum_name(engine.get_tensor_mode(name))
        if mode not in ("INPUT", "OUTPUT"):
            continue
        dtype = _enum_name(engine.get_tensor_dtype(name))
        if dtype not in TRT_TO_WIRE:
            raise Unsupported(f"tensor '{name}' has TensorRT datatype {dtype}, which has no Triton datatype")
        shape = tuple(int(d) for d in engine.get_tensor_shape(name))
        info = TensorInfo(name=name, is_input=mode == "INPUT", datatype=TRT_TO_WIRE[dtype],
                          shape=shape, on_host=_enum_name(engine.get_tensor_location(name)) == "HOST")
        if info.is_input:
            for p in range(num_profiles):
                if info.dynamic:
                    lo, opt, hi = (tuple(int(d) for d in dims)
                                   for dims in engine.get_tensor_profile_shape(name, p))
                else:
                    lo = opt = hi = shape
                info.profiles.append((lo, opt, hi))
        tensors.append(info)
    return EngineMetadata(tensors=tensors, num_profiles=num_profiles)


def _config_type(datatype: str):
    from .._proto import model_config_pb2 as mc

    return mc.DataType.Value(WIRE_TO_CONFIG[datatype])


def auto_complete_from_metadata(config, meta: EngineMetadata, gpu_available: bool = True) -> None:
    """Fill ``config``'s inputs, outputs and ``max_batch_size`` from engine metadata.

    What the config states is kept and checked: a stated datatype or rank that
    contradicts the engine, or a ``max_batch_size`` the engine cannot run,
    raises :class:`InvalidArgument`.
    """
    from .._proto import model_config_pb2 as mc

    name = config.name
    engine_max = meta.max_batch_size()
    if config.max_batch_size == 0 and engine_max > 0:
        config.max_batch_size = engine_max
    elif config.max_batch_size > 0:
        if not meta.supports_batching():
            raise InvalidArgument(
                f"unexpected configuration maximum batch size {config.max_batch_size} for '{name}', "
                "model does not support batching (not every engine tensor has a dynamic first dimension)")
        if config.max_batch_size > engine_max:
            raise InvalidArgument(
                f"unexpected configuration maximum batch size {config.max_batch_size} for '{name}', "
                f"model only supports a maximum batch size of {engine_max}")
    batched = config.max_batch_size > 0
    for infos, entries in ((meta.inputs, config.input), (meta.outputs, config.output)):
        stated = {e.name: e for e in entries}
        for t in infos:
            dims = list(t.shape[1:] if batched else t.shape)
            entry = stated.get(t.name)
            if entry is None:
                entry = entries.add()
                entry.name = t.name
            want = _config_type(t.datatype)
            if entry.data_type in (mc.TYPE_INVALID,):
                entry.data_type = want
            elif entry.data_type != want:
                raise InvalidArgument(
                    f"unexpected datatype {mc.DataType.Name(entry.data_type)} for '{t.name}' of model "
                    f"'{name}', the engine has {WIRE_TO_CONFIG[t.datatype]}")
            if not entry.dims and not entry.HasField("reshape"):
                entry.dims.extend(dims)
            elif not entry.HasField("reshape") and len(entry.dims) != len(dims):
                raise InvalidArgument(
                    f"unexpected shape {shape_str(entry.dims)} for '{t.name}' of model '{name}', "
                    f"the engine has {shape_str(dims)}" + (" (without the batch dimension)" if batched else ""))
            if t.on_host and t.is_input:
                entry.is_shape_tensor = True
    if gpu_available:
        if not config.instance_group:
            group = config.instance_group.add()
            group.count = 1
            group.kind = mc.ModelInstanceGroup.KIND_GPU
        for group in config.instance_group:
            if group.kind == mc.ModelInstanceGroup.KIND_AUTO:
                group.kind = mc.ModelInstanceGroup.KIND_GPU


# ---------------------------------------------------------------- TensorRT objects

def _make_logger(trt):
    """A ``trt.ILogger`` keeping the last messages, so errors can quote TensorRT."""

    class CapturingLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.messages = collections.deque(maxlen=64)

        def log(self, severity, msg):
            level = _enum_name(severity)
            self.messages.append((level, msg))
            py_level = {"INTERNAL_ERROR": logging.ERROR, "ERROR": logging.ERROR,
                        "WARNING": logging.WARNING, "INFO": logging.DEBUG}.get(level, logging.DEBUG)
            log.log(py_level, "TensorRT: %s", msg)

        def errors(self) -> list:
            return [m for level, m in self.messages if level in ("ERROR", "INTERNAL_ERROR")]

        def take_errors(self) -> str:
            """Errors logged since the last call, else warnings; the log is then cleared."""
            found = self.errors() or [m for level, m in self.messages if level == "WARNING"]
            self.messages.clear()
            return "; ".join(found)

    return CapturingLogger()


def _make_output_allocator(trt, cuda, device: int, capacity: int):
    """An ``IOutputAllocator`` for a data-dependent output: one growing device buffer."""

    class GrowingOutputAllocator(trt.IOutputAllocator):
        def __init__(self):
            trt.IOutputAllocator.__init__(self)
            self.buffer = cuda.DeviceBuffer(max(capacity, 256), device)
            self.shape = None

        def reallocate_output(self, tensor_name, memory, size, alignment):
            if size > self.buffer.size:
                self.buffer = cuda.DeviceBuffer(max(size, 2 * self.buffer.size), device)
            return self.buffer.ptr

        def reallocate_output_async(self, tensor_name, memory, size, alignment, stream):
            return self.reallocate_output(tensor_name, memory, size, alignment)

        def notify_shape(self, tensor_name, shape):
            self.shape = tuple(int(d) for d in shape)

    return GrowingOutputAllocator()


def _resolve_model_file(model_path: Path, config, default: str) -> Path:
    path = Path(model_path)
    if path.is_dir():
        path = path / (config.default_model_filename or default)
    return path


def _nbytes(shape: Sequence[int], datatype: str) -> int:
    count = 1
    for d in shape:
        count *= d
    return count * NUMPY_DTYPES[datatype].itemsize


class TensorRTBackend(Backend):
    default_model_filename = "model.plan"

    @classmethod
    def gpu_by_default(cls) -> bool:
        return gpu.unavailable_reason() is None

    @classmethod
    def auto_complete_config(cls, config, model_path: Path) -> None:
        gpu.require_devices(what=f"TensorRT model '{config.name}'")
        trt = import_runtime_module()
        path = _resolve_model_file(model_path, config, cls.default_model_filename)
        loaded = _deserialize(trt, path, device=0)
        meta = read_engine_metadata(loaded[2])
        del loaded  # engine, then runtime, then logger (tuple order, reversed)
        auto_complete_from_metadata(config, meta)

    def __init__(self, config, version: int, model_path: Path, context: BackendContext):
        super().__init__(config, version, model_path, context)
        from .._proto import model_config_pb2 as mc

        name = config.name
        devices = sorted({d for g in config.instance_group if g.kind == mc.ModelInstanceGroup.KIND_GPU
                          for d in (list(g.gpus) or [0])})
        for g in config.instance_group:
            if g.kind not in (mc.ModelInstanceGroup.KIND_GPU, mc.ModelInstanceGroup.KIND_AUTO):
                raise InvalidArgument(f"unable to load model '{name}', TensorRT backend supports only "
                                      f"KIND_GPU instance groups, got {mc.ModelInstanceGroup.Kind.Name(g.kind)}")
        # The device check comes first: no Runtime may exist without a GPU.
        gpu.require_devices(devices or [0], what=f"TensorRT model '{name}'")
        self.cuda = gpu.cuda_module()
        self.trt = import_runtime_module()
        self.path = _resolve_model_file(model_path, config, self.default_model_filename)
        self.plan = self.path.read_bytes()
        self.graphs = bool(config.optimization.cuda.graphs)
        self.busy_wait = bool(config.optimization.cuda.busy_wait_events)
        self._engines: dict[int, tuple] = {}
        self._engines_handed_out: set[int] = set()
        loaded = _deserialize(self.trt, self.path, devices[0] if devices else 0, self.plan)
        self._engines[devices[0] if devices else 0] = loaded
        self.meta = read_engine_metadata(loaded[2])
        if any(t.on_host for t in self.meta.inputs):
            raise Unsupported(f"model '{name}': engines with shape tensors are not supported yet")
        self._check_config()

    def _check_config(self) -> None:
        by_name = {t.name: t for t in self.meta.tensors}
        for entry in list(self.config.input) + list(self.config.output):
            t = by_name.get(entry.name)
            if t is None:
                raise InvalidArgument(f"unable to load model '{self.config.name}', configuration expects "
                                      f"tensor '{entry.name}' which the engine does not have")
            from .._proto import model_config_pb2 as mc

            stated = CONFIG_TO_WIRE.get(mc.DataType.Name(entry.data_type))
            if stated != t.datatype:
                raise InvalidArgument(f"unexpected datatype {stated} for '{entry.name}' of model "
                                      f"'{self.config.name}', the engine has {t.datatype}")

    def engine_for(self, device: int, exclusive: bool):
        """The engine on ``device``; a private one when ``exclusive`` (dynamic shapes, as Triton)."""
        loaded = self._engines.get(device)
        if loaded is not None and (not exclusive or device not in self._engines_handed_out):
            self._engines_handed_out.add(device)
            return loaded
        loaded = _deserialize(self.trt, self.path, device, self.plan)
        if device not in self._engines:
            self._engines[device] = loaded
            self._engines_handed_out.add(device)
        return loaded

    def create_instance(self, index: int, kind: str, device_id: int) -> "TensorRTInstance":
        if kind not in ("KIND_GPU", "KIND_AUTO"):
            raise InvalidArgument(f"TensorRT instances must be KIND_GPU, got {kind}")
        exclusive = any(t.dynamic for t in self.meta.inputs)
        return TensorRTInstance(self, index, device_id, self.engine_for(device_id, exclusive))

    def unload(self) -> None:
        self._engines.clear()


def _deserialize(trt, path: Path, device: int, plan: Optional[bytes] = None):
    """``(logger, runtime, engine)`` on ``device``; raises :class:`Unavailable` quoting TensorRT's log.

    Kept together in that order: a tuple drops its items last to first, so the
    engine goes before its runtime, and the runtime before its logger.
    """
    cuda = gpu.cuda_module()
    if plan is None:
        plan = Path(path).read_bytes()
    with _ENGINE_LOCK:
        cuda.set_device(device)
        logger = _make_logger(trt)
        runtime = trt.Runtime(logger)
        # Version-compatible plans carry their lean runtime (host code).
        runtime.engine_host_code_allowed = True
        engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        detail = logger.take_errors() or "TensorRT gave no message"
        raise Unavailable(f"unable to load TensorRT engine from '{path}': {detail}")
    return logger, runtime, engine


class TensorRTInstance(ArrayBackendInstance):
    """One execution context per usable profile, one stream, buffers bound once."""

    #: ``execute`` waits for the GPU (GIL released): run it on a worker thread,
    #: never inline on an event loop.
    blocks_on_device = True

    def __init__(self, backend: TensorRTBackend, index: int, device: int, loaded: tuple):
        self.name = f"{backend.config.name}_{index}"
        self.backend = backend
        self.device = device
        self.loaded = loaded  # (logger, runtime, engine): keeps all three alive
        logger, _runtime, engine = loaded
        self.engine = engine
        self.logger = logger
        self.meta = backend.meta
        cuda = self.cuda = backend.cuda
        trt = backend.trt
        cuda.set_device(device)
        self.pool = gpu.pinned_pool()
        self.stream = cuda.Stream(device)
        # One event per batch in flight; taking one is what bounds the pipeline.
        self._events: "queue.SimpleQueue" = queue.SimpleQueue()
        for _ in range(PIPELINE_DEPTH):
            self._events.put(cuda.Event(device, blocking_sync=not backend.busy_wait))
        self._completions: "queue.SimpleQueue" = queue.SimpleQueue()
        self._completer = threading.Thread(target=self._complete_batches, daemon=True,
                                           name=f"{self.name}-completion")
        self.input_consumed = cuda.Event(device, blocking_sync=not backend.busy_wait)
        self.profiles = list(range(self.meta.num_profiles))
        self.contexts: dict[int, Any] = {}
        self.buffers: dict[str, Any] = {}
        self.allocators: dict[str, Any] = {}
        self.graphs: dict[tuple, Any] = {}
        self.data_dependent = set()
        sizes: dict[str, int] = {}
        for p in self.profiles:
            ctx = engine.create_execution_context()
            if ctx is None:
                raise InternalError(f"unable to create TensorRT execution context: {logger.take_errors()}")
            if not ctx.set_optimization_profile_async(p, self.stream.ptr):
                raise InternalError(f"unable to select optimization profile {p}: {logger.take_errors()}")
            for t in self.meta.inputs:
                shape = t.profiles[p][2]
                ctx.set_input_shape(t.name, shape)
                sizes[t.name] = max(sizes.get(t.name, 0), _nbytes(shape, t.datatype))
            for t in self.meta.outputs:
                out_shape = tuple(ctx.get_tensor_shape(t.name))
                if any(d < 0 for d in out_shape):
                    self.data_dependent.add(t.name)
                    bound = int(ctx.get_max_output_size(t.name))
                else:
                    bound = _nbytes(out_shape, t.datatype)
                sizes[t.name] = max(sizes.get(t.name, 0), bound)
            self.contexts[p] = ctx
        self.stream.synchronize()
        for t in self.meta.tensors:
            if t.name in self.data_dependent:
                self.allocators[t.name] = _make_output_allocator(trt, cuda, device, sizes[t.name])
            else:
                self.buffers[t.name] = cuda.DeviceBuffer(max(sizes[t.name], 1), device)
        self.use_graphs = backend.graphs and not self.data_dependent
        for ctx in self.contexts.values():
            for name, buf in self.buffers.items():
                if not ctx.set_tensor_address(name, buf.ptr):
                    raise InternalError(f"unable to bind '{name}': {logger.take_errors()}")
            for name, alloc in self.allocators.items():
                ctx.set_output_allocator(name, alloc)
            if not self.use_graphs:
                ctx.set_input_consumed_event(self.input_consumed.ptr)
        self._completer.start()

    def run(self, inputs: Mapping[str, Any], output_names: Sequence[str],
            parameters: Mapping[str, Any]) -> Mapping[str, Any]:
        """One execution, waited for on this thread (GIL released while the GPU runs)."""
        event = self._events.get()
        try:
            return self._finish(self._launch(inputs, output_names, event))
        finally:
            self._events.put(event)

    def execute(self, requests) -> None:
        """Queue the batch on the stream and return; the completion thread answers it."""
        if self.data_dependent:  # output sizes are known only after the run
            return super().execute(requests)
        from ..scheduler.base import backend_error

        start = _now()
        event = self._events.get()  # blocks while PIPELINE_DEPTH batches are in flight
        try:
            inputs, output_names, _ = gather(requests)
            gathered = _now()
            pending = self._launch(inputs, output_names, event)
        except Exception as exc:
            self._events.put(event)
            for request in requests:
                request.respond_error(backend_error(exc))
            return
        self._completions.put((requests, pending, event, start, gathered))

    def _complete_batches(self) -> None:
        from ..scheduler.base import backend_error, record_execution

        while True:
            item = self._completions.get()
            if item is None:
                return
            requests, pending, event, start, gathered = item
            try:
                outputs = self._finish(pending)  # waits on the event, GIL released
                executed = _now()
                split = scatter(requests, outputs, self.backend.config.name)
            except Exception as exc:
                for request in requests:
                    request.respond_error(backend_error(exc))
                continue
            finally:
                self._events.put(event)
            record_execution(requests, gathered - start, executed - gathered, _now() - executed)
            for request, result in zip(requests, split):
                request.respond(result)

    def _launch(self, inputs: Mapping[str, Any], output_names: Sequence[str], done) -> tuple:
        """Queue H2D, the execution and D2H on the stream, then record ``done``."""
        cuda = self.cuda
        cuda.set_device(self.device)
        arrays = {name: np.ascontiguousarray(value) for name, value in inputs.items()}
        shapes = {name: tuple(a.shape) for name, a in arrays.items()}
        profile = self.meta.select_profile(shapes, self.profiles)
        ctx = self.contexts[profile]
        for name, shape in shapes.items():
            if not ctx.set_input_shape(name, shape):
                raise InvalidArgument(f"TensorRT rejected shape {shape_str(shape)} for input '{name}': "
                                      f"{self.logger.take_errors()}")
        # Gather every input into one pinned buffer, one H2D per tensor.
        staging = self.pool.alloc(gpu.packed_nbytes(a.nbytes for a in arrays.values()))
        try:
            gpu.stage_inputs(staging, [(self.buffers[name].ptr, a) for name, a in arrays.items()],
                             self.stream)
            self._enqueue(ctx, profile, shapes)
            names = list(output_names) or [t.name for t in self.meta.outputs]
            out_shapes = {}
            for name in names:
                if name in self.allocators:
                    out_shapes[name] = self.allocators[name].shape
                else:
                    out_shapes[name] = tuple(int(d) for d in ctx.get_tensor_shape(name))
            dtypes = {name: NUMPY_DTYPES[self.meta.tensor(name).datatype] for name in names}
            sizes = {name: _nbytes(out_shapes[name], self.meta.tensor(name).datatype) for name in names}
            sources = {name: (self.allocators[name].buffer.ptr if name in self.allocators
                              else self.buffers[name].ptr, sizes[name]) for name in names}
            result_buf, offsets = gpu.copy_d2h(self.pool, sources, self.stream, done)
        except BaseException:
            # Copies may be in flight: the staging memory must not return to the pool yet.
            self.stream.synchronize()
            staging.release()
            raise
        layouts = {name: (dtypes[name], sizes[name] // dtypes[name].itemsize, out_shapes[name])
                   for name in names}
        return staging, result_buf, offsets, layouts, done

    @staticmethod
    def _finish(pending: tuple) -> dict:
        staging, result_buf, offsets, layouts, done = pending
        # Blocks in cudaEventSynchronize with the GIL released: a worker or completion
        # thread, never the event loop.
        done.synchronize()
        staging.release()
        return gpu.host_views(result_buf, offsets, layouts)

    def _enqueue(self, ctx, profile: int, shapes: Mapping[str, tuple]) -> None:
        if self.use_graphs:
            key = (profile,) + tuple(sorted(shapes.items()))
            graph = self.graphs.get(key)
            if graph is None:
                graph = self._capture(ctx, key)
            if graph is not None:
                graph.launch(self.stream)
                return
        if not ctx.execute_async_v3(self.stream.ptr):
            raise InternalError(f"TensorRT enqueue failed for model '{self.backend.config.name}': "
                                f"{self.logger.take_errors() or 'no message'}")

    def _capture(self, ctx, key):
        """Warm up, then capture one enqueue for these shapes (trtexec's recipe).

        If TensorRT cannot enqueue under capture, or the capture fails, the
        capture is abandoned, the sticky error cleared, and the instance runs
        without graphs from then on (returns ``None``).
        """
        if not ctx.execute_async_v3(self.stream.ptr):
            raise InternalError(f"TensorRT enqueue failed: {self.logger.take_errors()}")
        self.stream.synchronize()
        self.stream.begin_capture()
        graph = None
        try:
            if ctx.execute_async_v3(self.stream.ptr):
                graph = self.stream.end_capture()
            else:
                self.stream.end_capture(instantiate=False)
        except Exception as exc:  # CudaError from end_capture/instantiate
            log.warning("CUDA graph capture failed for %s: %s", self.name, exc)
            try:
                self.stream.end_capture(instantiate=False)
            except Exception:
                pass
        if graph is None:
            self.cuda.get_last_error()
            log.warning("running %s without CUDA graphs: %s", self.name,
                        self.logger.take_errors() or "capture failed")
            self.use_graphs = False
            return None
        self.graphs[key] = graph
        return graph

    def close(self) -> None:
        if self._completer.is_alive():  # answers what is in flight, then stops
            self._completions.put(None)
            self._completer.join(30)
        # Graphs and contexts before the buffers they point at; the engine last.
        self.graphs.clear()
        self.contexts.clear()
        self.buffers.clear()
        self.allocators.clear()
        self.engine = None
        self.loaded = None
