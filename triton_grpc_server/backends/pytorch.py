"""PyTorch backend (``platform: "pytorch_libtorch"``, ``backend: "pytorch"``, ``model.pt``).

The model is a TorchScript file loaded with ``torch.jit.load`` once per
instance, on the instance's device (what Triton's libtorch backend loads).
torch 2.13 marks TorchScript deprecated, so a ``torch.export`` archive
(``torch.export.save``) is accepted as well, recognised by its contents; set
``default_model_filename: "model.pt2"`` for one, or keep ``model.pt``. Tensor naming follows Triton's libtorch
backend:

* inputs: if every configured input name is an argument name of
  ``forward()``, inputs are passed by those names (in forward's order); else
  if every name has the form ``<name>__<index>`` (``INPUT__0``...), the index
  gives the position; else the config's order is the position;
* outputs: ``<name>__<index>`` names pick that element of the returned
  tuple/list, otherwise the config's order does.

As in Triton, the config must state inputs and outputs (the backend does not
auto-complete them; TorchScript carries no I/O datatypes or shapes).

KIND_CPU instances run the module on CPU under ``torch.inference_mode()``.
KIND_GPU instances use the CUDA layer: inputs are gathered into one buffer of
the process's pinned pool (memcpy with the GIL released, overlapped with the
DMA by ``stage_h2d``) and copied H2D on the instance's own non-blocking stream
straight into torch-allocated device tensors; the module runs on that stream
(``torch.cuda.ExternalStream``); outputs are copied D2H into one pinned
buffer on the same stream; the worker thread waits on a blocking-sync event
with the GIL released; outputs are returned as numpy views of pinned memory.
Our own ``cudaMemcpyAsync`` is used rather than ``tensor.to(device,
non_blocking=True)``: torch only copies asynchronously from host memory it
knows is pinned (its own caching host allocator), and would otherwise make a
synchronous pageable copy of memory it did not allocate.
"""
from __future__ import annotations

import re
import threading
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .. import gpu
from ..errors import InternalError, InvalidArgument, Unavailable, Unsupported
from ..tensors import CONFIG_TO_WIRE, NUMPY_DTYPES
from .base import ArrayBackendInstance, Backend, BackendContext, BackendInstance

_NAMED_INDEX = re.compile(r"^(.*)__(\d+)$")
_torch_lock = threading.Lock()


def _import_torch():
    try:
        import torch
    except ImportError as exc:
        raise Unavailable(f"the PyTorch backend needs torch (pip install 'triton_grpc_server[pytorch]'): {exc}") from exc
    # Inputs are read-only views of the request bytes; torch warns once about that.
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    return torch


def _torch_dtypes(torch) -> dict:
    table = {"BOOL": torch.bool, "UINT8": torch.uint8, "INT8": torch.int8, "INT16": torch.int16,
             "INT32": torch.int32, "INT64": torch.int64, "FP16": torch.float16,
             "FP32": torch.float32, "FP64": torch.float64, "BF16": torch.bfloat16}
    for wire, attr in (("UINT16", "uint16"), ("UINT32", "uint32"), ("UINT64", "uint64")):
        if hasattr(torch, attr):
            table[wire] = getattr(torch, attr)
    return table


def _positions(names: Sequence[str], forward_args: Sequence[str] = ()) -> tuple[str, dict]:
    """Triton's naming convention and ``{config name: position}``."""
    if forward_args and all(n in forward_args for n in names):
        return "FORWARD_ARGUMENT", {n: forward_args.index(n) for n in names}
    matches = [_NAMED_INDEX.match(n) for n in names]
    if names and all(matches):
        positions = {n: int(m.group(2)) for n, m in zip(names, matches)}
        if len(set(positions.values())) == len(names):
            return "NAMED_INDEX", positions
    return "STRICT_CONFIG_ORDERING", {n: i for i, n in enumerate(names)}


def forward_argument_names(module) -> list:
    """``forward()``'s argument names (without ``self``): TorchScript schema or Python signature."""
    schema = getattr(module.forward, "schema", None)
    if schema is not None:
        return [a.name for a in schema.arguments][1:]
    import inspect

    try:
        params = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _is_export_archive(path: Path) -> bool:
    """True for a ``torch.export.save`` archive (it records ``archive_format``)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.endswith("/archive_format") or n == "archive_format" for n in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


class PyTorchBackend(Backend):
    default_model_filename = "model.pt"

    @classmethod
    def gpu_by_default(cls) -> bool:
        return gpu.unavailable_reason() is None

    @classmethod
    def auto_complete_config(cls, config, model_path: Path) -> None:
        # Triton's libtorch backend completes nothing about I/O; only KIND_AUTO
        # (and a missing instance_group) resolve to a GPU when one is usable.
        from .._proto import model_config_pb2 as mc

        if gpu.unavailable_reason() is not None:
            return
        if not config.instance_group:
            group = config.instance_group.add()
            group.count = 1
            group.kind = mc.ModelInstanceGroup.KIND_GPU
        for group in config.instance_group:
            if group.kind == mc.ModelInstanceGroup.KIND_AUTO:
                group.kind = mc.ModelInstanceGroup.KIND_GPU

    def __init__(self, config, version: int, model_path: Path, context: BackendContext):
        super().__init__(config, version, model_path, context)
        from .._proto import model_config_pb2 as mc

        self.torch = _import_torch()
        path = Path(model_path)
        if path.is_dir():
            path = path / (config.default_model_filename or self.default_model_filename)
        self.path = path
        name = config.name
        if not config.input or not config.output:
            raise InvalidArgument(f"model '{name}': the PyTorch backend needs inputs and outputs stated "
                                  "in config.pbtxt")
        dtypes = _torch_dtypes(self.torch)
        self.input_types = {}
        self.output_types = {}
        for entries, table in ((config.input, self.input_types), (config.output, self.output_types)):
            for entry in entries:
                wire = CONFIG_TO_WIRE.get(mc.DataType.Name(entry.data_type))
                if wire not in dtypes:
                    raise Unsupported(f"model '{name}': tensor '{entry.name}' has datatype "
                                      f"{mc.DataType.Name(entry.data_type)}, which the PyTorch backend "
                                      "does not support")
                table[entry.name] = wire
        self.torch_dtypes = dtypes
        gpu_devices = sorted({d for g in config.instance_group if g.kind == mc.ModelInstanceGroup.KIND_GPU
                              for d in (list(g.gpus) or [0])})
        if gpu_devices:
            gpu.require_devices(gpu_devices, what=f"model '{name}' (KIND_GPU)")
            if not self.torch.cuda.is_available():
                raise Unavailable(f"model '{name}' has KIND_GPU instances but this torch build has no CUDA "
                                  f"(torch {self.torch.__version__})")
        params = {k: v.string_value for k, v in config.parameters.items()}
        self._apply_parameters(params)
        # Load once on CPU now to fail early and learn forward()'s signature.
        module = self._load("cpu")
        self.forward_args = forward_argument_names(module)
        # Kept for the first CPU instance; a GPU-only model does not hold a CPU copy.
        has_cpu = any(g.kind != mc.ModelInstanceGroup.KIND_GPU for g in config.instance_group) \
            or not config.instance_group
        self._cpu_module = module if has_cpu else None
        self.input_convention, self.input_positions = _positions(
            [e.name for e in config.input], self.forward_args)
        self.output_convention, self.output_positions = _positions([e.name for e in config.output])
        # Argument order: forward's order, or position order.
        self.input_order = sorted(self.input_positions, key=self.input_positions.get)

    def _apply_parameters(self, params: Mapping[str, str]) -> None:
        torch = self.torch
        with _torch_lock:
            if params.get("INTRA_OP_THREAD_COUNT"):
                torch.set_num_threads(int(params["INTRA_OP_THREAD_COUNT"]))
            if params.get("DISABLE_OPTIMIZED_EXECUTION", "").lower() == "true":
                torch._C._jit_set_graph_executor_optimize(False)

    def _load(self, device: str):
        """The model on ``device``: TorchScript (``torch.jit.load``) or a ``torch.export`` archive."""
        torch = self.torch
        exported = _is_export_archive(self.path)
        try:
            with warnings.catch_warnings():
                # torch 2.13 marks TorchScript deprecated; Triton models are still TorchScript.
                warnings.simplefilter("ignore", DeprecationWarning)
                if exported:
                    module = torch.export.load(str(self.path)).module().to(device)
                else:
                    module = torch.jit.load(str(self.path), map_location=device)
                    module.eval()
        except Exception as exc:  # torch raises RuntimeError subclasses with the reason
            kind = "torch.export program" if exported else "TorchScript model"
            raise Unavailable(f"unable to load {kind} '{self.path}': {exc}") from exc
        return module

    def create_instance(self, index: int, kind: str, device_id: int) -> BackendInstance:
        if kind == "KIND_GPU":
            return PyTorchGpuInstance(self, index, device_id)
        module, self._cpu_module = self._cpu_module, None
        return PyTorchCpuInstance(self, index, module if module is not None else self._load("cpu"))

    def unload(self) -> None:
        self._cpu_module = None

    # shared by both instance kinds

    def arguments(self, tensors: Mapping[str, Any]) -> list:
        missing = [n for n in self.input_order if n not in tensors]
        if missing:
            raise InvalidArgument(f"model '{self.config.name}' expects input(s) {missing}")
        return [tensors[n] for n in self.input_order]

    def pick_outputs(self, result, output_names: Sequence[str]) -> dict:
        torch = self.torch
        if isinstance(result, torch.Tensor):
            result = (result,)
        elif isinstance(result, dict):
            result = tuple(result.values())
        elif not isinstance(result, (tuple, list)):
            raise InternalError(f"model '{self.config.name}' returned {type(result).__name__}, "
                                "expected a tensor or a tuple/list of tensors")
        names = list(output_names) or list(self.output_positions)
        picked = {}
        for name in names:
            pos = self.output_positions.get(name)
            if pos is None:
                raise InvalidArgument(f"unexpected inference output '{name}' for model '{self.config.name}'")
            if pos >= len(result):
                raise InternalError(f"model '{self.config.name}' returned {len(result)} output(s), "
                                    f"no element {pos} for '{name}'")
            tensor = result[pos]
            want = self.torch_dtypes[self.output_types[name]]
            if tensor.dtype != want:
                raise InternalError(f"unexpected datatype {tensor.dtype} of output '{name}' of model "
                                    f"'{self.config.name}', config says {self.output_types[name]}")
            picked[name] = tensor
        return picked

    def to_torch(self, name: str, array: np.ndarray):
        """A CPU tensor viewing ``array`` (no copy); BF16 arrives as uint16 bits."""
        torch = self.torch
        wire = self.input_types.get(name)
        if wire is None:
            raise InvalidArgument(f"unexpected inference input '{name}' for model '{self.config.name}'")
        array = np.ascontiguousarray(array)
        if wire == "BF16":
            return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(array)


def _cpu_numpy(torch, tensor) -> np.ndarray:
    tensor = tensor.detach().contiguous()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(np.uint16)
    return tensor.numpy()


class PyTorchCpuInstance(ArrayBackendInstance):
    def __init__(self, backend: PyTorchBackend, index: int, module):
        self.name = f"{backend.config.name}_{index}"
        self.backend = backend
        self.module = module

    def run(self, inputs: Mapping[str, Any], output_names: Sequence[str],
                parameters: Mapping[str, Any]) -> Mapping[str, Any]:
        backend = self.backend
        torch = backend.torch
        tensors = {name: backend.to_torch(name, value) for name, value in inputs.items()}
        with torch.inference_mode():
            result = self.module(*backend.arguments(tensors))
            picked = backend.pick_outputs(result, output_names)
            return {name: _cpu_numpy(torch, t) for name, t in picked.items()}

    def close(self) -> None:
        self.module = None


class PyTorchGpuInstance(ArrayBackendInstance):
    """The module on ``cuda:device``, driven on a stream of the CUDA layer."""

    #: ``execute`` waits for the GPU (GIL released): run it on a worker thread,
    #: never inline on an event loop.
    blocks_on_device = True

    def __init__(self, backend: PyTorchBackend, index: int, device: int):
        self.name = f"{backend.config.name}_{index}"
        self.backend = backend
        self.device = device
        torch = backend.torch
        cuda = self.cuda = gpu.cuda_module()
        cuda.set_device(device)
        torch.cuda.set_device(device)
        self.torch_device = torch.device("cuda", device)
        self.module = backend._load(f"cuda:{device}")
        self.pool = gpu.pinned_pool()
        self.stream = cuda.Stream(device)
        self.torch_stream = torch.cuda.ExternalStream(self.stream.ptr, device=self.torch_device)
        self.done = cuda.Event(device)

    def run(self, inputs: Mapping[str, Any], output_names: Sequence[str],
                parameters: Mapping[str, Any]) -> Mapping[str, Any]:
        backend = self.backend
        torch = backend.torch
        cuda = self.cuda
        cuda.set_device(self.device)
        arrays = {}
        for name, value in inputs.items():
            if name not in backend.input_types:
                raise InvalidArgument(f"unexpected inference input '{name}' for model '{backend.config.name}'")
            arrays[name] = np.ascontiguousarray(value)
        staging = self.pool.alloc(gpu.packed_nbytes(a.nbytes for a in arrays.values()))
        try:
            # StreamContext also makes the stream's device current for torch.
            with torch.inference_mode(), torch.cuda.stream(self.torch_stream):
                # Inputs: request bytes -> pinned staging -> device tensors, on our stream.
                tensors = {name: torch.empty(a.shape, device=self.torch_device,
                                             dtype=backend.torch_dtypes[backend.input_types[name]])
                           for name, a in arrays.items()}
                gpu.stage_inputs(staging, [(tensors[name].data_ptr(), a) for name, a in arrays.items()],
                                 self.stream)
                result = self.module(*backend.arguments(tensors))
                picked = {name: t.contiguous() for name, t in backend.pick_outputs(result, output_names).items()}
                # Outputs: device -> one pinned buffer, on the same stream.
                sources = {name: (t.data_ptr(), t.numel() * t.element_size()) for name, t in picked.items()}
                out, offsets = gpu.copy_d2h(self.pool, sources, self.stream, self.done)
        except BaseException:
            # Copies may be in flight: the staging memory must not return to the pool yet.
            self.stream.synchronize()
            raise
        # GIL released while the GPU finishes; this is the scheduler's worker thread.
        self.done.synchronize()
        staging.release()
        return gpu.host_views(out, offsets, {
            name: (NUMPY_DTYPES[backend.output_types[name]], t.numel(), tuple(t.shape))
            for name, t in picked.items()})

    def close(self) -> None:
        self.module = None
