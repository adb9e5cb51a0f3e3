"""ONNX Runtime backend (``platform: "onnxruntime_onnx"``, ``backend: "onnxruntime"``).

One ``InferenceSession`` per instance. Inputs arrive as numpy views of the
request bytes and go to ``session.run`` as they are (ONNX Runtime wraps a
matching CPU numpy buffer without copying).

BYTES and ONNX string tensors: ONNX Runtime's Python API converts ``str``
to and from UTF-8 and refuses anything else, so a tensor whose elements are all
valid UTF-8 is passed decoded (the model sees exactly the bytes sent), and a
tensor holding any non-UTF-8 element is passed through latin-1 (one code point
per byte), with the request's string outputs mapped back the same way. That
keeps identity-like models byte-for-byte for arbitrary bytes; a model that
inspects such non-UTF-8 strings sees them transcoded (docs/deviations.md).
"""
from __future__ import annotations

import ctypes
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .._proto import model_config_pb2 as mc
from ..errors import InvalidArgument, TritonError, Unavailable
from ..tensors import shape_str
from .base import ArrayBackendInstance, Backend, BackendContext

# ONNX Runtime type strings -> config data types
ORT_TYPES = {
    "tensor(bool)": mc.TYPE_BOOL, "tensor(uint8)": mc.TYPE_UINT8,
    "tensor(uint16)": mc.TYPE_UINT16, "tensor(uint32)": mc.TYPE_UINT32,
    "tensor(uint64)": mc.TYPE_UINT64, "tensor(int8)": mc.TYPE_INT8,
    "tensor(int16)": mc.TYPE_INT16, "tensor(int32)": mc.TYPE_INT32,
    "tensor(int64)": mc.TYPE_INT64, "tensor(float16)": mc.TYPE_FP16,
    "tensor(float)": mc.TYPE_FP32, "tensor(double)": mc.TYPE_FP64,
    "tensor(string)": mc.TYPE_STRING, "tensor(bfloat16)": mc.TYPE_BF16,
}
_ONNX_BFLOAT16 = 16  # onnx.TensorProto.BFLOAT16
# Fixed-size ONNX Runtime types -> numpy, for outputs bound to given memory (run_into)
_NUMPY_OF = {f"tensor({name})": np.dtype(dtype) for name, dtype in (
    ("bool", "?"), ("uint8", "u1"), ("uint16", "<u2"), ("uint32", "<u4"), ("uint64", "<u8"),
    ("int8", "i1"), ("int16", "<i2"), ("int32", "<i4"), ("int64", "<i8"),
    ("float16", "<f2"), ("float", "<f4"), ("double", "<f8"))}
# Triton's ONNX Runtime backend: batching models get this max_batch_size.
DEFAULT_MAX_BATCH_SIZE = 4
log = logging.getLogger(__name__)

# config parameters -> SessionOptions attributes (Triton's ORT backend names)
_THREAD_PARAMETERS = {"intra_op_thread_count": "intra_op_num_threads",
                      "inter_op_thread_count": "inter_op_num_threads"}


def _ort():
    try:
        import onnxruntime
    except ImportError as exc:
        raise Unavailable("the onnxruntime backend needs the 'onnxruntime' package "
                          "(pip install triton_grpc_server[onnxruntime])") from exc
    return onnxruntime


def _dims(shape) -> list[int]:
    return [d if isinstance(d, int) and d >= 0 else -1 for d in (shape or [])]


# config parameters -> boolean SessionOptions attributes (Triton's ORT backend names)
_BOOL_PARAMETERS = {"enable_mem_arena": "enable_cpu_mem_arena",
                    "enable_mem_pattern": "enable_mem_pattern"}
# A RunOptions entry: which arenas ONNX Runtime shrinks back after each run ("cpu:0").
ARENA_SHRINKAGE = "memory.enable_memory_arena_shrinkage"


def _string_parameter(config, key: str) -> str | None:
    return config.parameters[key].string_value if key in config.parameters else None


def _parse_bool(config, key: str, value: str) -> bool:
    """Triton's backends' boolean syntax: true/on/1 and false/off/0, any case."""
    lowered = value.lower()
    if lowered in ("true", "on", "1"):
        return True
    if lowered in ("false", "off", "0"):
        return False
    raise InvalidArgument(f"parameter '{key}' of model '{config.name}': failed to convert "
                          f"'{value}' to boolean")


def _run_options(config):
    """The RunOptions every run of this model passes, or None when the config sets none."""
    shrinkage = _string_parameter(config, ARENA_SHRINKAGE)
    if shrinkage is None:
        return None
    options = _ort().RunOptions()
    try:
        options.add_run_config_entry(ARENA_SHRINKAGE, shrinkage)
    except Exception as exc:
        raise InvalidArgument(f"parameter '{ARENA_SHRINKAGE}' of model '{config.name}': "
                              f"{exc}") from None
    return options


def _session_options(config):
    ort = _ort()
    options = ort.SessionOptions()
    for key, attr in _BOOL_PARAMETERS.items():
        value = _string_parameter(config, key)
        if value is not None:
            setattr(options, attr, _parse_bool(config, key, value))
    for key, attr in _THREAD_PARAMETERS.items():
        value = _string_parameter(config, key)
        if value is not None:
            try:
                setattr(options, attr, int(value))
            except ValueError:
                raise InvalidArgument(
                    f"parameter '{key}' of model '{config.name}' must be an integer") from None
    # optimization { graph { level } }: Triton's numbers; anything else keeps ORT's default (all)
    level = {-1: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
             1: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
             2: ort.GraphOptimizationLevel.ORT_DISABLE_ALL}.get(config.optimization.graph.level)
    if level is not None:
        options.graph_optimization_level = level
    if _string_parameter(config, "execution_mode") == "1":
        options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    return options


def _open_session(path: Path, config, providers=("CPUExecutionProvider",)):
    ort = _ort()
    try:
        return ort.InferenceSession(str(path), sess_options=_session_options(config),
                                    providers=list(providers))
    except TritonError:
        raise
    except Exception as exc:
        raise Unavailable(f"unable to load model '{config.name}': {exc}") from None


def strings_to_ort(array: np.ndarray) -> tuple[np.ndarray, bool]:
    """BYTES elements as ``str`` for ONNX Runtime; True when latin-1 had to be used."""
    flat = array.ravel()
    out = np.empty(flat.shape, dtype=object)
    try:
        for i, item in enumerate(flat):
            out[i] = item.decode("utf-8") if isinstance(item, bytes) else str(item)
        return out.reshape(array.shape), False
    except UnicodeDecodeError:
        for i, item in enumerate(flat):
            out[i] = item.decode("latin-1") if isinstance(item, bytes) else str(item)
        return out.reshape(array.shape), True


def strings_from_ort(array: np.ndarray, latin1: bool) -> np.ndarray:
    """ONNX Runtime's ``str`` outputs back to bytes, undoing :func:`strings_to_ort`."""
    flat = array.ravel()
    out = np.empty(flat.shape, dtype=object)
    for i, item in enumerate(flat):
        if latin1:
            try:
                out[i] = item.encode("latin-1")
                continue
            except UnicodeEncodeError:
                pass
        out[i] = item.encode("utf-8")
    return out.reshape(array.shape)


def validate_against_model(config, model_tensors, kind: str) -> None:
    """Refuse a config that contradicts the ONNX model, as Triton's ORT backend does at load."""
    name = config.name
    by_name = {t.name: t for t in model_tensors}
    configured = config.input if kind == "input" else config.output
    for tensor in configured:
        model_tensor = by_name.get(tensor.name)
        if model_tensor is None:
            raise Unavailable(
                f"unable to load model '{name}', unexpected inference {kind} '{tensor.name}', "
                f"allowed {kind}s are: {', '.join(by_name)}")
        model_type = ORT_TYPES.get(model_tensor.type)
        if model_type != tensor.data_type:
            provided = mc.DataType.Name(model_type) if model_type is not None else model_tensor.type
            raise Unavailable(
                f"unable to load model '{name}', configuration expects datatype "
                f"{mc.DataType.Name(tensor.data_type)} for {kind} '{tensor.name}', model provides "
                f"{provided}")
        model_dims = _dims(model_tensor.shape)
        if config.max_batch_size > 0:
            if not model_dims or model_dims[0] != -1:
                raise Unavailable(
                    f"model '{name}', tensor '{tensor.name}': for the model to support batching "
                    f"the shape should have at least 1 dimension and the first dimension must be "
                    f"-1; but shape expected by the model is {shape_str(model_dims)}")
            model_dims = model_dims[1:]
        dims = list(tensor.reshape.shape) if tensor.HasField("reshape") else list(tensor.dims)
        if len(dims) != len(model_dims) or any(
                d != m and d != -1 and m != -1 for d, m in zip(dims, model_dims)):
            lead = [-1] if config.max_batch_size > 0 else []
            raise Unavailable(
                f"model '{name}', tensor '{tensor.name}': the model expects {len(lead + model_dims)} "
                f"dimensions (shape {shape_str(lead + model_dims)}) but the model configuration "
                f"specifies {len(lead + dims)} dimensions (shape {shape_str(lead + dims)})")


def default_max_batch_size() -> int:
    """``--backend-config=onnxruntime,default-max-batch-size=N`` (Triton's default 4)."""
    from . import backend_config

    value = backend_config("onnxruntime").get("default-max-batch-size")
    try:
        return max(0, int(value)) if value is not None else DEFAULT_MAX_BATCH_SIZE
    except ValueError:
        log.warning("ignoring --backend-config default-max-batch-size=%s: not an integer", value)
        return DEFAULT_MAX_BATCH_SIZE


class OnnxRuntimeBackend(Backend):
    default_model_filename = "model.onnx"

    @classmethod
    def gpu_by_default(cls) -> bool:
        # onnxruntime-gpu lists its CUDA provider even on a machine without a device.
        from .. import gpu

        try:
            providers = _ort().get_available_providers()
        except Unavailable:
            return False
        return "CUDAExecutionProvider" in providers and gpu.device_count() > 0

    @classmethod
    def auto_complete_config(cls, config, model_path: Path) -> None:
        if config.input and config.output:
            return  # Triton's ORT backend: "inputs and outputs already specified"
        session = _open_session(model_path, config)
        model_inputs, model_outputs = session.get_inputs(), session.get_outputs()
        if config.max_batch_size == 0:
            batchable = all(len(t.shape) >= 1 and _dims(t.shape)[0] == -1
                            for t in list(model_inputs) + list(model_outputs))
            if batchable:
                config.max_batch_size = default_max_batch_size()
        skip = 1 if config.max_batch_size > 0 else 0
        for kind, model_tensors, config_tensors in (("input", model_inputs, config.input),
                                                    ("output", model_outputs, config.output)):
            by_name = {t.name: t for t in config_tensors}
            for tensor in model_tensors:
                entry = by_name.get(tensor.name)
                if entry is None:
                    entry = config_tensors.add(name=tensor.name)
                if entry.data_type == mc.TYPE_INVALID:
                    if tensor.type not in ORT_TYPES:
                        raise InvalidArgument(f"unsupported datatype {tensor.type} for {kind} "
                                              f"'{tensor.name}' for model '{config.name}'")
                    entry.data_type = ORT_TYPES[tensor.type]
                if not entry.dims and not entry.HasField("reshape"):
                    dims = _dims(tensor.shape)[skip:]
                    entry.dims.extend(dims if dims else [1])
        if (config.max_batch_size > 1
                and config.WhichOneof("scheduling_choice") is None):
            config.dynamic_batching.SetInParent()

    def __init__(self, config, version: int, model_path: Path, context: BackendContext):
        super().__init__(config, version, model_path, context)
        session = _open_session(model_path, config)
        validate_against_model(config, session.get_inputs(), "input")
        validate_against_model(config, session.get_outputs(), "output")
        self._spare_session = session  # becomes the first CPU instance's session

    def unload(self) -> None:
        self._spare_session = None  # a load that made no CPU instance still holds it

    def create_instance(self, index: int, kind: str, device_id: int) -> "OnnxRuntimeInstance":
        if kind == "KIND_GPU":
            if "CUDAExecutionProvider" not in _ort().get_available_providers():
                raise Unavailable(f"model '{self.config.name}': KIND_GPU instances need "
                                  "onnxruntime-gpu (CUDAExecutionProvider is not available)")
            providers = [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        session, self._spare_session = self._spare_session, None
        if session is None or kind == "KIND_GPU":
            session = _open_session(self.model_path, self.config, providers)
        instance = OnnxRuntimeInstance(f"{self.config.name}_{index}", session, self.config)
        instance.may_run_inline = kind != "KIND_GPU"  # a CUDA run may wait on the device
        return instance


class OnnxRuntimeInstance(ArrayBackendInstance):
    def __init__(self, name: str, session, config):
        self.name = name
        self.session = session
        self.model_name = config.name
        self.run_options = _run_options(config)
        # The compiled session's run without the Python wrapper around it, whose work is
        # done already or moot here: it checks the feed's input names (the data plane
        # has) and retries on the CPU when another execution provider fails (a CPU-only
        # session has none). About a third of the CPU of a small model's run. Kept
        # optional: it is not public API, so any other session object runs as usual.
        bare = getattr(session, "_sess", None)
        self._bare_run = (bare.run if bare is not None and callable(getattr(bare, "run", None))
                          and list(session.get_providers()) == ["CPUExecutionProvider"] else None)
        self.string_outputs = {t.name for t in session.get_outputs() if t.type == "tensor(string)"}
        # The data plane only builds object (BYTES) arrays for BYTES inputs, and the load
        # checks each configured input's type against the model: without string inputs the
        # per-request conversion loop below has nothing to do.
        self.string_inputs = any(t.type == "tensor(string)" for t in session.get_inputs())
        self.bf16_tensors = {t.name for t in list(session.get_inputs()) + list(session.get_outputs())
                             if t.type == "tensor(bfloat16)"}
        # Outputs whose shape the model fixes: these can be bound to memory given in
        # advance (run_into); name -> (shape, numpy dtype).
        self.static_outputs = {}
        for t in session.get_outputs():
            dims = list(t.shape)
            if dims and all(isinstance(d, int) and d > 0 for d in dims) and t.type in _NUMPY_OF:
                self.static_outputs[t.name] = (tuple(dims), _NUMPY_OF[t.type])

    def run_into(self, inputs: Mapping[str, Any], output_names: Sequence[str],
                 parameters: Mapping[str, Any], destinations: Mapping[str, np.ndarray]):
        """:meth:`run`, with each output of fixed shape that fits its destination bound
        there (io_binding): ONNX Runtime writes it straight into that memory (a
        shared-memory region), saving the copy out of its own buffer."""
        bound = {}
        for name in output_names:
            dest, spec = destinations.get(name), self.static_outputs.get(name)
            if dest is None or spec is None:
                continue
            shape, dtype = spec
            nbytes = int(np.prod(shape)) * dtype.itemsize
            if nbytes <= dest.nbytes:  # too small: the normal path reports it
                bound[name] = dest[:nbytes].view(dtype).reshape(shape)
        if not bound or self.string_inputs or self.bf16_tensors:
            return self.run(inputs, output_names, parameters)
        binding = self.session.io_binding()
        try:
            for name, array in inputs.items():
                binding.bind_cpu_input(name, np.ascontiguousarray(array))
            for name in output_names:
                target = bound.get(name)
                if target is None:
                    binding.bind_output(name, "cpu")
                else:
                    binding.bind_output(name, "cpu", 0, target.dtype, list(target.shape),
                                        target.ctypes.data)
            self.session.run_with_iobinding(binding, self.run_options)
            values = binding.get_outputs()
        except Exception as exc:
            raise TritonError(f"onnx runtime error for model '{self.model_name}': {exc}") from None
        return {name: bound[name] if name in bound else value.numpy()
                for name, value in zip(output_names, values)}

    def run(self, inputs: Mapping[str, Any], output_names: Sequence[str],
                parameters: Mapping[str, Any]) -> Mapping[str, Any]:
        feeds, latin1 = {}, False
        if not self.string_inputs:
            feeds = inputs if type(inputs) is dict else dict(inputs)  # ORT wants a dict
        else:
            for name, array in inputs.items():
                if array.dtype == object:
                    array, mapped = strings_to_ort(array)
                    latin1 = latin1 or mapped
                feeds[name] = array
        try:
            if self.bf16_tensors:
                results = self._run_with_bf16(feeds, output_names)
            else:
                bare_run = self._bare_run
                results = (bare_run(list(output_names), feeds, self.run_options)
                           if bare_run is not None
                           else self.session.run(list(output_names), feeds, self.run_options))
        except Exception as exc:
            raise TritonError(f"onnx runtime error for model '{self.model_name}': {exc}") from None
        outputs = dict(zip(output_names, results))
        if self.string_outputs:  # skip the set work for models without string outputs
            for name in self.string_outputs.intersection(outputs):
                outputs[name] = strings_from_ort(outputs[name], latin1)
        return outputs

    def _run_with_bf16(self, feeds, output_names) -> list:
        """numpy has no bfloat16: BF16 tensors travel as uint16 bits through OrtValues."""
        ort = _ort()
        values = {}
        for name, array in feeds.items():
            array = np.ascontiguousarray(array)
            values[name] = (ort.OrtValue.ortvalue_from_numpy_with_onnx_type(array, _ONNX_BFLOAT16)
                            if name in self.bf16_tensors else ort.OrtValue.ortvalue_from_numpy(array))
        results = []
        ran = self.session.run_with_ort_values(list(output_names), values, self.run_options)
        for name, value in zip(output_names, ran):
            if name in self.bf16_tensors:
                # OrtValue.numpy() refuses bfloat16; copy the bits out of ORT's buffer.
                count = value.tensor_size_in_bytes() // 2
                bits = (ctypes.c_uint16 * count).from_address(value.data_ptr()) if count else []
                results.append(np.array(bits, dtype=np.uint16).reshape(value.shape()))
            else:
                results.append(value.numpy())
        return results

    def close(self) -> None:
        # Both references go: the bare run is a method of the compiled session, so keeping
        # it would keep the session (its arena and its intra-op threads) until the garbage
        # collector breaks the scheduler's reference cycles, minutes later under load.
        self.session = None
        self._bare_run = None
