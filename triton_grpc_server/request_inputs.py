"""Check a request's tensors against the model config and turn them into arrays.

Checks, their order and their texts follow Triton: first what its gRPC
frontend checks while building the request (parameters, where each input's
data comes from), then what its core checks in ``InferenceRequest::Normalize``
(requested outputs, input count, batch size, datatype, shape, byte size).
Only the core's messages carry the ``[request id: X] `` prefix, as in Triton.
Fixed-size raw inputs become zero-copy, read-only numpy views of the request.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InvalidArgument
from .tensors import NUMPY_DTYPES, element_count, shape_str

# Request parameters Triton consumes itself; they are not passed to the backend.
SCHEDULING_PARAMETERS = frozenset({"sequence_id", "sequence_start", "sequence_end",
                                   "priority", "timeout"})
ALLOWED_TRITON_PARAMETERS = ("triton_enable_empty_final_response",)

# InferTensorContents field -> the datatypes it may carry
_FIELD_TYPES = {
    "bool_contents": ("BOOL",), "int_contents": ("INT8", "INT16", "INT32"),
    "int64_contents": ("INT64",), "uint_contents": ("UINT8", "UINT16", "UINT32"),
    "uint64_contents": ("UINT64",), "fp32_contents": ("FP32",), "fp64_contents": ("FP64",),
    "bytes_contents": ("BYTES",),
}

# Sizes are int64 in Triton; a declared shape beyond it is refused before anything is sized.
INT64_MAX = 2**63 - 1
# Each BYTES element carries a 4-byte length prefix, so a payload of N bytes holds at most N // 4.
BYTES_LENGTH_PREFIX = 4

# numpy kind -> the width typed contents are read at before truncating to the input's type
_CONTENTS_WIDTH = {"i": np.dtype(np.int64), "u": np.dtype(np.int64)}

_IMPLICIT_BATCH_NOTE = (
    "NOTE: Setting a non-zero max_batch_size in the model config requires a batch dimension "
    "to be prepended to each input shape. If you want to specify the full shape including the "
    "batch dim in your input dims config, try setting max_batch_size to zero. See the model "
    "configuration docs for more info on max_batch_size.")


def _quoted_list(names) -> str:
    # Triton builds "['a','b']" by hand and pops the last character even when
    # the list is empty, which leaves "]"; kept so clients see the same text.
    text = "[" + "".join(f"'{n}'," for n in names)
    return text[:-1] + "]"


def backend_parameters(request) -> dict:
    """Check the request parameters and return those meant for the backend."""
    params = {}
    for key, value in request.parameters.items():
        if key == "sequence_id":
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                raise InvalidArgument("invalid value type for 'sequence_id' parameter, expected "
                                      "int64_param or string_param.")
        elif key in ("sequence_start", "sequence_end"):
            if not isinstance(value, bool):
                raise InvalidArgument(f"invalid value type for '{key}' parameter, expected bool_param.")
        elif key == "priority":
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidArgument("invalid value type for 'priority' parameter, expected "
                                      "int64_param or uint64_param.")
            if value < 0:
                raise InvalidArgument("invalid value for 'priority', expected value >= 0.")
        elif key == "timeout":
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidArgument("invalid value type for 'timeout' parameter, expected int64_param.")
        elif key.startswith("triton_"):
            if key not in ALLOWED_TRITON_PARAMETERS:
                raise InvalidArgument(
                    "parameter keys starting with 'triton_' are reserved for Triton usage. Only the "
                    "following keys starting with 'triton_' are allowed: "
                    + " ".join(ALLOWED_TRITON_PARAMETERS))
            if not isinstance(value, bool):
                raise InvalidArgument(f"invalid value type for '{key}' parameter, expected bool_param.")
        else:
            params[key] = value
    return params


class RequestValidator:
    """Validates one request against one model version and builds its input arrays."""

    def __init__(self, request, model, buffers=None):
        """``buffers``: the request's shared-memory inputs (``buffers.RequestBuffers``), if any."""
        self.request = request
        self.model = model
        self.buffers = buffers
        self.name = model.name
        self.prefix = f"[request id: {request.id}] " if request.id else ""

    def error(self, message: str) -> InvalidArgument:
        """An error raised by Triton's core, which prefixes the request id."""
        return InvalidArgument(self.prefix + message)

    # -- the frontend's part ---------------------------------------------
    def input_sources(self) -> list:
        """Each input's data: its typed contents or its raw entry (raw entries in input order)."""
        raw = self.request.raw_input_contents
        raw_index = 0
        sources = []
        for index, tensor in enumerate(self.request.inputs):
            # An input in shared memory: resolved by the buffer layer, uses no raw entry.
            if self.buffers is not None and self.buffers.inputs[index] is not None:
                sources.append(self.buffers.input_source(index))
                continue
            if tensor.contents is not None:
                if raw:
                    raise InvalidArgument(
                        f"contents field must not be specified when using raw_input_contents for "
                        f"'{tensor.name}' for model '{self.name}'")
                sources.append(self._typed_contents(tensor))
            else:
                if raw_index >= len(raw):
                    raise InvalidArgument(
                        f"unable to find data for input tensor '{tensor.name}' for model "
                        f"'{self.name}' in request.")
                sources.append(raw[raw_index])
                raw_index += 1
        return sources

    def _typed_contents(self, tensor):
        fields = list(tensor.contents)
        if len(fields) > 1:
            raise InvalidArgument(
                f"unexpected explicit tensor data for input tensor '{tensor.name}' for model "
                f"'{self.name}', binary data was already supplied.")
        if not fields:
            return []
        field = fields[0]
        allowed = _FIELD_TYPES[field]
        if tensor.datatype not in allowed:
            raise InvalidArgument(
                f"unexpected explicit tensor data for input tensor '{tensor.name}' for model "
                f"'{self.name}' of type '{allowed[-1]}', expected datatype '{tensor.datatype}'")
        return list(tensor.contents[field]) if field == "bytes_contents" else tensor.contents[field]

    # -- the core's part -------------------------------------------------
    def requested_outputs(self) -> list[str]:
        """Names of the outputs to return: the requested ones, or all in config order."""
        if not self.request.outputs:
            return list(self.model.outputs)
        names = []
        for output in self.request.outputs:
            if output.name in names:
                raise self.error(f"output '{output.name}' already exists in request")
            if output.name not in self.model.outputs:
                raise InvalidArgument(
                    f"unexpected inference output '{output.name}' for model '{self.name}'")
            names.append(output.name)
        return names

    def check_input_names(self) -> None:
        seen = set()
        for tensor in self.request.inputs:
            if tensor.name in seen:
                raise self.error(f"input '{tensor.name}' already exists in request")
            seen.add(tensor.name)
        # Counts and required names precomputed at load (ModelVersion), not per request.
        configured = self.model.input_count
        required = self.model.required_inputs
        if len(seen) > configured or len(seen) < len(required):
            missing = [name for name in required if name not in seen]
            if len(required) == configured:
                head = f"expected {configured} inputs"
            else:
                head = f"expected number of inputs between {len(required)} and {configured}"
            got = _quoted_list(sorted(seen)) if seen else "[]"
            raise self.error(
                f"{head} but got {len(seen)} inputs for model '{self.name}'. Got input(s) {got}, "
                f"but missing required input(s) {_quoted_list(missing)}. Please provide all "
                f"required input(s).")
        model_inputs = self.model.inputs
        for tensor in self.request.inputs:
            if tensor.name not in model_inputs:
                raise InvalidArgument(
                    f"unexpected inference input '{tensor.name}' for model '{self.name}'")

    def batch_size(self) -> int:
        """The request's batch size (0 for models without a batch dimension)."""
        max_batch = self.model.max_batch_size
        if max_batch == 0:
            return 0
        # Happy path without sorting: every input has a shape and all agree on the batch
        # size, so the name-ordered walk below would find no error and that same size.
        try:
            firsts = {tensor.shape[0] for tensor in self.request.inputs}
        except IndexError:  # an input without a shape: the walk reports it
            firsts = None
        if firsts is not None and len(firsts) <= 1:
            batch = firsts.pop() if firsts else 0
        else:
            batch = self._walk_batch_size()
        if batch > max_batch:
            raise self.error(f"inference request batch-size must be <= {max_batch} for '{self.name}'")
        return batch

    def _walk_batch_size(self) -> int:
        """The batch size found in input-name order, raising the first mismatch found so."""
        batch = 0
        for tensor in sorted(self.request.inputs, key=lambda t: t.name):
            if not tensor.shape:
                raise self.error(f"input '{tensor.name}' has no shape but model requires batch "
                                 f"dimension for '{self.name}'")
            if batch == 0:
                batch = tensor.shape[0]
            elif tensor.shape[0] != batch:
                raise self.error(f"input '{tensor.name}' batch size does not match other inputs "
                                 f"for '{self.name}'")
        return batch

    def check_shape(self, tensor, config, batch: int, dims=None) -> None:
        """``dims``: the config's dims as a list (precomputed at load); read from ``config``
        when not given."""
        request_shape = tensor.shape
        if request_shape and min(request_shape) < 0:
            raise self.error(
                f"All input dimensions should be specified for input '{tensor.name}' for model "
                f"'{self.name}', got {shape_str(request_shape)}")
        batched = self.model.max_batch_size > 0
        shape = request_shape[1:] if batched else request_shape
        if dims is None:
            dims = list(config.dims)
        if len(dims) != len(shape) or not _dims_match(dims, shape):
            expected = ([-1] if batched else []) + dims
            note = _IMPLICIT_BATCH_NOTE if batched else ""
            raise self.error(
                f"unexpected shape for input '{tensor.name}' for model '{self.name}'. Expected "
                f"{shape_str(expected)}, got {shape_str(tensor.shape)}. {note}")

    def arrays(self) -> tuple[dict[str, Any], int]:
        """Validate everything and return ``({input name: array}, batch size)``."""
        sources = self.input_sources()
        self.check_input_names()
        batch = self.batch_size()
        arrays = {}
        configs = self.model.inputs
        specs = self.model.input_specs  # name -> (wire datatype, dims, has reshape), from load
        for tensor, source in zip(self.request.inputs, sources):
            config = configs[tensor.name]
            expected_type, dims, has_reshape = specs[tensor.name]
            if tensor.datatype != expected_type:
                given = tensor.datatype if tensor.datatype in NUMPY_DTYPES else "<invalid>"
                raise self.error(
                    f"inference input '{tensor.name}' data-type is '{given}', but model "
                    f"'{self.name}' expects '{expected_type}'")
            self.check_shape(tensor, config, batch, dims)
            array = self._array(tensor, source)
            if has_reshape:
                lead = [batch] if batch else []
                array = array.reshape(lead + _fill_reshape(config, tensor.shape, batch))
            arrays[tensor.name] = array
        return arrays, batch

    def _array(self, tensor, source) -> np.ndarray:
        """The input as an array, after checking the declared shape against the bytes present.

        Nothing here allocates from the declared shape alone: the element count is
        compared with what the payload can hold first, so a 50-byte request
        declaring billions of elements costs microseconds, not gigabytes.
        """
        count = element_count(tensor.shape)
        if count > INT64_MAX:
            raise InvalidArgument(f"element count for tensor '{tensor.name}' exceeds maximum "
                                  f"size of {INT64_MAX}")
        if tensor.datatype == "BYTES":
            if count > INT64_MAX // BYTES_LENGTH_PREFIX:
                raise InvalidArgument(f"byte size for tensor '{tensor.name}' exceeds maximum "
                                      f"size of {INT64_MAX}")
            if isinstance(source, list):  # bytes_contents: one message field per element
                if len(source) > count:
                    raise self.error(
                        f"unexpected number of string elements {count + 1} for inference input "
                        f"'{tensor.name}' for model '{self.name}', expecting {count}")
                if len(source) < count:
                    raise self.error(
                        f"expected {count} string elements for inference input '{tensor.name}' "
                        f"for model '{self.name}', got {len(source)}")
                array = np.empty(count, dtype=object)
                array[:] = [bytes(v) for v in source]
            else:
                array = self._split_bytes(tensor, source, count)
            return array.reshape(tensor.shape)
        dtype = NUMPY_DTYPES[tensor.datatype]
        expected = count * dtype.itemsize
        if expected > INT64_MAX:
            raise InvalidArgument(f"byte size for tensor '{tensor.name}' exceeds maximum size "
                                  f"of {INT64_MAX}")
        if isinstance(source, (list, tuple, np.ndarray)):  # typed contents
            got = len(source) * dtype.itemsize
            if got != expected:
                raise self._byte_size_error(tensor, expected, got)
            # Narrow integer types travel widened in 32-bit fields; Triton truncates them.
            # Read at the field's own width first, so uint64 values stay exact.
            wide = _CONTENTS_WIDTH.get(dtype.kind, dtype) if dtype.itemsize < 8 else dtype
            values = np.asarray(source, dtype=wide)
            return values.astype(dtype, copy=False).reshape(tensor.shape)
        view = memoryview(source)
        if view.nbytes != expected:
            raise self._byte_size_error(tensor, expected, view.nbytes)
        return np.frombuffer(view, dtype=dtype).reshape(tensor.shape)

    def _byte_size_error(self, tensor, expected: int, got: int) -> InvalidArgument:
        return self.error(
            f"input byte size mismatch for input '{tensor.name}' for model '{self.name}'. "
            f"Expected {expected}, got {got}")

    def _split_bytes(self, tensor, buffer, count: int) -> np.ndarray:
        """Walk a raw BYTES buffer (uint32 LE length + bytes per element), bounds-checked."""
        view = memoryview(buffer).cast("B")
        total = len(view)
        # Elements are gathered as they are found and the array is made once the count
        # is confirmed: its size is bounded by the payload, never by the declared shape.
        items = []
        offset = checked = 0
        while offset < total:
            if total - offset < 4:
                raise self.error(
                    f"incomplete string length indicator for inference input '{tensor.name}' for "
                    f"model '{self.name}', expecting 4 bytes but only {total - offset} bytes "
                    f"available. Please make sure the string length indicator is in one buffer.")
            length = int.from_bytes(view[offset:offset + 4], "little")
            offset += 4
            if length > total - offset:
                break  # a truncated last element: reported below as a missing element
            if checked >= count:
                raise self.error(
                    f"unexpected number of string elements {checked + 1} for inference input "
                    f"'{tensor.name}' for model '{self.name}', expecting {count}")
            items.append(view[offset:offset + length].tobytes())
            offset += length
            checked += 1
        if checked != count or offset > total:
            raise self.error(
                f"expected {count} string elements for inference input '{tensor.name}' for model "
                f"'{self.name}', got {checked}")
        out = np.empty(count, dtype=object)
        out[:] = items
        return out


def _dims_match(dims, shape) -> bool:
    """Each config dim is -1 or equals the request's dim (the lengths already match)."""
    for d, s in zip(dims, shape):
        if d != -1 and d != s:
            return False
    return True


def _fill_reshape(config, request_shape, batch: int) -> list[int]:
    """The reshape target, with its -1s filled from the request's variable dims in order."""
    shape = request_shape[1:] if batch else list(request_shape)
    variable = [s for d, s in zip(config.dims, shape) if d == -1]
    out = []
    for dim in config.reshape.shape:
        out.append(variable.pop(0) if dim == -1 and variable else dim)
    return out
