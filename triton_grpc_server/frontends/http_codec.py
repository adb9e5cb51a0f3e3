"""KServe v2 REST inference bodies <-> InferRequest / InferResponse.

The request body is a JSON header, optionally followed by the binary tensor
extension's raw data (``Inference-Header-Content-Length`` says where the JSON
ends). Every input reaches the data plane as a raw buffer: binary inputs are
zero-copy ``memoryview`` slices of the body, JSON ``data`` is converted once
into a little-endian numpy array (BYTES into Triton's length-prefixed layout).
Checks and texts follow Triton's HTTP frontend; a TritonJson type error there is
an INTERNAL error (HTTP 500), which is why several parse errors here are too.
"""
from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson

from .._ext.wire import InferInput, InferRequest, RequestedOutput  # the one request type
from ..errors import InternalError, InvalidArgument
from ..tensors import NUMPY_DTYPES, shape_str

INT64_MAX = 2**63 - 1
INT32_MIN, INT32_MAX = -2**31, 2**31 - 1
MAX_JSON_DEPTH = 100  # Triton's HTTP_MAX_JSON_NESTING_DEPTH

# TritonJson's texts for a value of the wrong JSON type.
_NOT_UINT = "attempt to access JSON non-unsigned-integer as unsigned-integer"
_NOT_INT = "attempt to access JSON non-signed-integer as signed-integer"
_NOT_BOOL = "attempt to access JSON non-boolean as boolean"
_NOT_STRING = "attempt to access JSON non-string as string"
_NOT_NUMBER = "attempt to access JSON non-number as number"
_NOT_ARRAY = "attempt to access JSON non-array as array"

_INT_KINDS = {"INT8", "INT16", "INT32", "INT64"}
_UINT_KINDS = {"UINT8", "UINT16", "UINT32", "UINT64"}
_FLOAT_KINDS = {"FP32", "FP64"}
_pack_u32 = struct.Struct("<I").pack


def parse_error(what: str, detail: str) -> InternalError:
    """Triton's ``RETURN_MSG_IF_ERR(json access, "Unable to parse 'x'")``."""
    return InternalError(f"Unable to parse '{what}': {detail}")


def _is_uint(value) -> bool:
    return type(value) is int and value >= 0


def _is_int(value) -> bool:
    return type(value) is int and -INT64_MAX - 1 <= value <= INT64_MAX


def loads(data, what: str = "request") -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        # rapidjson's wording is "failed to parse the request JSON buffer: <why> at <offset>"
        raise InvalidArgument(
            f"failed to parse the request JSON buffer: {exc.msg} at {exc.pos}") from None


class OutputPlan:
    """How each output goes back: JSON ``data`` or binary, per Triton's rules."""

    __slots__ = ("default_binary", "binary", "shared_memory")

    def __init__(self, default_binary: bool, binary: dict[str, bool],
                 shared_memory: frozenset = frozenset()):
        self.default_binary = default_binary
        self.binary = binary
        self.shared_memory = shared_memory  # outputs written to a region: no data here

    def is_binary(self, name: str) -> bool:
        value = self.binary.get(name)
        return self.default_binary if value is None else value


# -- request ------------------------------------------------------------
def decode_request(model_name: str, model_version: str, body, header_length: int,
                   max_input_size: int) -> tuple[Any, OutputPlan]:
    """``body``: the whole (decompressed) request; its first ``header_length`` bytes are JSON."""
    if header_length > max_input_size:
        raise InvalidArgument(
            f"request JSON size of {header_length} bytes exceeds the maximum allowed input size "
            f"of {max_input_size} bytes. Use --http-max-input-size to increase the limit.")
    view = memoryview(body)
    header = loads(view[:header_length] if header_length != len(view) else body)
    if not isinstance(header, dict):
        raise InternalError("Unable to parse 'inputs': attempt to access JSON non-object as object")
    request_id = header.get("id", "")
    if not isinstance(request_id, str):
        raise parse_error("id", _NOT_STRING)
    parameters, default_binary = _request_parameters(header.get("parameters"))
    inputs, raw = _inputs(header, model_name, view, header_length, max_input_size)
    outputs, binary = _outputs(header)
    request = InferRequest(model_name=model_name, model_version=model_version, id=request_id,
                           parameters=parameters, inputs=inputs, outputs=outputs,
                           raw_input_contents=raw)
    in_regions = frozenset(o.name for o in outputs if "shared_memory_region" in o.parameters)
    return request, OutputPlan(default_binary, binary, in_regions)


def decode_raw_request(model_name: str, model_version: str, body, config):
    """A raw binary request (``Inference-Header-Content-Length: 0``): the whole body is the
    data of the model's one input, whose shape is deduced as Triton's core does; every
    output comes back binary."""
    from ..repository.config import wire_datatype

    if len(config.input) != 1:
        raise InvalidArgument(
            f"Raw request must only have 1 input (found 1) to be deduced but got "
            f"{len(config.input)} inputs in '{model_name}' model configuration")
    spec = config.input[0]
    datatype = wire_datatype(spec)
    shape = [1] if config.max_batch_size else []
    dynamic_axis, count = -1, 1
    for dim in spec.dims:
        if dim == -1:
            if dynamic_axis != -1:
                raise InvalidArgument(
                    f"The shape of the raw input '{spec.name}' can not be deduced because there "
                    "are more than one variable-sized dimension")
            dynamic_axis = len(shape)
        else:
            count *= dim
        shape.append(dim)
    view = memoryview(body)
    if datatype == "BYTES":
        if dynamic_axis != -1 or count != 1:
            raise InvalidArgument(f"For BYTE datatype raw input '{spec.name}', the model must "
                                  "have input shape [1]")
        data = _pack_u32(len(view)) + bytes(view)  # the body is the one element
    else:
        if dynamic_axis != -1:
            itemsize = NUMPY_DTYPES[datatype].itemsize
            shape[dynamic_axis] = len(view) // count // itemsize if count else 0
        data = view
    request = InferRequest(model_name=model_name, model_version=model_version,
                           inputs=[InferInput(spec.name, datatype, shape, {})],
                           raw_input_contents=[data])
    return request, OutputPlan(True, {})


def _request_parameters(params) -> tuple[dict, bool]:
    if params is None:
        return {}, False
    if not isinstance(params, dict):
        raise InternalError("failed to get request params.: attempt to access JSON non-object "
                            "as object")
    out: dict = {}
    binary_output = False
    for key, value in params.items():
        if key == "sequence_id":
            if not _is_uint(value) and not isinstance(value, str):
                raise parse_error("sequence_id", _NOT_STRING)
            out[key] = value
        elif key in ("sequence_start", "sequence_end"):
            if type(value) is not bool:
                raise parse_error(key, _NOT_BOOL)
            out[key] = value
        elif key in ("priority", "timeout"):
            if not _is_uint(value):
                raise parse_error(key, _NOT_UINT)
            out[key] = value
        elif key == "binary_data_output":
            if type(value) is not bool:
                raise parse_error(key, _NOT_BOOL)
            binary_output = value
        elif key.startswith("triton_"):
            raise InvalidArgument("parameter keys starting with 'triton_' are reserved for Triton "
                                  "usage and should not be specified.")
        elif isinstance(value, (str, bool, int, float)):
            out[key] = value
        else:
            raise InvalidArgument(f"parameter '{key}' has invalid type. It should be either "
                                  "'int', 'bool', or 'string'.")
    return out, binary_output


def _content_kind(tensor: dict) -> None:
    params = tensor.get("parameters")
    params = params if isinstance(params, dict) else {}
    has = [("data" in tensor, "'data'"), ("binary_data_size" in params, "'binary_data_size'"),
           ("shared_memory_region" in params, "'shared_memory_region'")]
    found = [label for present, label in has if present]
    if len(found) != 1:
        text = ("Input must set only one of the following fields: 'data', 'binary_data_size' in "
                "'parameters', 'shared_memory_region' in 'parameters'. But")
        text += " no field is set" if not found else " set " + " ".join(found)
        raise InvalidArgument(text)


def _inputs(header: dict, model_name: str, view: memoryview, header_length: int,
            max_input_size: int) -> tuple[list, list]:
    tensors = header.get("inputs")
    if not isinstance(tensors, list):
        raise parse_error("inputs", _NOT_ARRAY)
    inputs, raw = [], []
    offset, end = header_length, len(view)
    for tensor in tensors:
        if not isinstance(tensor, dict):
            raise InternalError("attempt to access JSON non-object as object")
        _content_kind(tensor)
        name = tensor.get("name")
        if not isinstance(name, str):
            raise parse_error("name", _NOT_STRING)
        datatype = tensor.get("datatype")
        if not isinstance(datatype, str):
            raise parse_error("datatype", _NOT_STRING)
        shape = tensor.get("shape")
        if not isinstance(shape, list):
            raise parse_error("shape", _NOT_ARRAY)
        for dim in shape:
            if not _is_uint(dim) or dim > 2**64 - 1:
                raise parse_error("shape", _NOT_UINT)
        params = tensor.get("parameters")
        params = dict(params) if isinstance(params, dict) else {}
        size = params.pop("binary_data_size", None)
        if size is not None:
            if not _is_uint(size):
                raise parse_error("binary_data_size", _NOT_UINT)
            if size and header_length == 0:
                raise InvalidArgument(
                    "must specify valid 'Infer-Header-Content-Length' in request header and "
                    "'binary_data_size' when passing inputs in binary data format")
            if offset + size > end:
                raise InvalidArgument(
                    f"unexpected size for input '{name}', expecting {offset + size - end} "
                    f"additional bytes for model '{model_name}'")
            raw.append(view[offset:offset + size])  # zero-copy: a view of the body
            offset += size
        elif "shared_memory_region" in params:
            pass  # the data plane reads the region; no raw entry (as gRPC)
        else:
            raw.append(_json_tensor(name, datatype, shape, tensor["data"], max_input_size))
        inputs.append(InferInput(name, datatype, shape, params))
    if offset != end:
        raise InvalidArgument(f"unexpected additional input data for model '{model_name}'")
    return inputs, raw


def _element_count(name: str, shape: list) -> int:
    count = 1
    for dim in shape:
        count *= dim
    if count > INT64_MAX:
        raise InvalidArgument(
            f"invalid shape for input '{name}': shape {shape_str(shape)} causes total element "
            f"count to exceed maximum size of {INT64_MAX}")
    return count


def _json_tensor(name: str, datatype: str, shape: list, data, max_input_size: int):
    """JSON ``data`` (flat or nested) -> one buffer in the layout of the raw wire data."""
    count = _element_count(name, shape)
    if datatype in ("FP16", "BF16"):
        raise InvalidArgument(f"receiving {datatype} data via JSON is not supported. Please use "
                              f"the binary data format for input {name}")
    dtype = NUMPY_DTYPES.get(datatype)
    if dtype is None:
        raise InvalidArgument(f"invalid datatype for input {name}")
    if count == 0:
        return b""
    if not isinstance(data, list):
        raise parse_error("data", _NOT_ARRAY)
    if datatype == "BYTES":
        return _json_bytes(name, data, max_input_size)
    if dtype.itemsize > 1 and count > INT64_MAX // dtype.itemsize:
        raise InvalidArgument(
            f"byte size overflow for input '{name}': element count ({count}) * data type size "
            f"({dtype.itemsize}) exceeds maximum allowed size ({INT64_MAX})")
    byte_size = count * dtype.itemsize
    if byte_size > max_input_size:
        raise InvalidArgument(
            f"JSON input '{name}' has a byte_size ({byte_size} bytes) that exceeds the maximum "
            f"allowed value of {max_input_size} bytes. Use --http-max-input-size to increase "
            "the limit.")
    # Fast path: numpy reads a regular nested list in C; anything it can't type (ragged,
    # mixed) takes the element-by-element walk, which also gives Triton's texts.
    try:
        values = np.array(data)
    except (ValueError, OverflowError):
        values = None
    if values is None or not _kind_ok(datatype, values) or values.ndim >= MAX_JSON_DEPTH:
        values = np.array(_walk(datatype, data), dtype=_wide(datatype))
    _check_count(values.size, count)
    return values.astype(dtype, copy=False).reshape(-1)


def _check_count(got: int, expected: int) -> None:
    if got > expected:
        raise InternalError("Unable to parse 'data': Shape does not match true shape of 'data' field")
    if got < expected:
        raise InternalError("Failed to parse 'data' field: shape does not match true shape")


def _wide(datatype: str):
    # Triton reads every JSON integer as a 64-bit one of the tensor's signedness and then
    # narrows it with a C cast, so an unsigned value above 2**63 must survive to the cast.
    if datatype == "BOOL":
        return np.bool_
    if datatype in _UINT_KINDS:
        return np.uint64
    if datatype in _INT_KINDS:
        return np.int64
    return np.float64


def _kind_ok(datatype: str, values: np.ndarray) -> bool:
    kind = values.dtype.kind
    if datatype == "BOOL":
        return kind == "b"
    if datatype in _INT_KINDS:
        return kind == "i"
    if datatype in _UINT_KINDS:
        return (kind == "u") or (kind == "i" and (values.size == 0 or values.min() >= 0))
    return kind in "iuf"  # FP32/FP64 take any JSON number


def _walk(datatype: str, data) -> list:
    """Flatten nested lists with Triton's depth limit and element checks."""
    if datatype == "BOOL":
        ok, why = (lambda v: type(v) is bool), _NOT_BOOL
    elif datatype in _INT_KINDS:
        ok, why = _is_int, _NOT_INT
    elif datatype in _UINT_KINDS:
        ok, why = (lambda v: _is_uint(v) and v < 2**64), _NOT_UINT
    else:
        ok, why = (lambda v: type(v) in (int, float)), _NOT_NUMBER
    out: list = []

    def visit(node, depth: int) -> None:
        if depth >= MAX_JSON_DEPTH:
            raise InvalidArgument(f"Unable to parse 'data': JSON nesting depth exceeds maximum "
                                  f"allowed limit ({MAX_JSON_DEPTH})")
        for item in node:
            if type(item) is list:
                visit(item, depth + 1)
            elif ok(item):
                out.append(item)
            else:
                raise parse_error("data", why)
    visit(data, 0)
    return out


def _json_bytes(name: str, data: list, max_input_size: int) -> bytes:
    parts: list = []
    total = 0

    def visit(node, depth: int) -> None:
        nonlocal total
        if depth >= MAX_JSON_DEPTH:
            raise InvalidArgument(f"JSON nesting depth exceeds maximum allowed limit "
                                  f"({MAX_JSON_DEPTH})")
        for item in node:
            if type(item) is list:
                visit(item, depth + 1)
            elif isinstance(item, str):
                encoded = item.encode("utf-8")
                parts.append(_pack_u32(len(encoded)))
                parts.append(encoded)
                total += 4 + len(encoded)
            else:
                raise InternalError(f"Unable to parse JSON bytes array: {_NOT_STRING}")
    visit(data, 0)
    if total > max_input_size:
        raise InvalidArgument(
            f"JSON input '{name}' has a byte_size ({total} bytes) that exceeds the maximum "
            f"allowed value of {max_input_size} bytes. Use --http-max-input-size to increase "
            "the limit.")
    # The element count is checked by the core against the shape, with its own text.
    return b"".join(parts)


def _outputs(header: dict) -> tuple[list, dict[str, bool]]:
    tensors = header.get("outputs")
    if tensors is None:
        return [], {}
    if not isinstance(tensors, list):
        raise parse_error("outputs", _NOT_ARRAY)
    outputs, binary = [], {}
    for tensor in tensors:
        if not isinstance(tensor, dict):
            raise InternalError("attempt to access JSON non-object as object")
        params = tensor.get("parameters")
        params = params if isinstance(params, dict) else {}
        if "shared_memory_region" in params and "classification" in params:
            raise InvalidArgument("Output can't set both 'shared_memory_region' and "
                                  "'classification'")
        name = tensor.get("name")
        if not isinstance(name, str):
            raise parse_error("name", _NOT_STRING)
        forwarded = {}
        classes = params.get("classification")
        if classes is not None:
            if not _is_uint(classes):
                raise InternalError(f"Unable to set 'classification': {_NOT_UINT}")
            if classes > 0:
                forwarded["classification"] = classes
        for key in ("shared_memory_region", "shared_memory_offset", "shared_memory_byte_size"):
            if key in params:
                forwarded[key] = params[key]
        use_binary = params.get("binary_data", False)
        if type(use_binary) is not bool:
            raise InternalError(f"Unable to parse 'binary_data': {_NOT_BOOL}")
        binary[name] = use_binary
        outputs.append(RequestedOutput(name, forwarded))
    return outputs, binary


# -- response -----------------------------------------------------------
def encode_response(response, plan: OutputPlan) -> tuple[bytes, list]:
    """``(JSON header, [binary buffers in output order])``; the buffers are not copied."""
    body: dict = {}
    if response.id:
        body["id"] = response.id
    body["model_name"] = response.model_name
    body["model_version"] = response.model_version
    if response.parameters:
        body["parameters"] = response.parameters
    outputs = []
    buffers = []
    for out in response.outputs:
        entry: dict = {"name": out.name, "datatype": out.datatype, "shape": out.shape}
        if out.parameters:
            entry["parameters"] = dict(out.parameters)
        if out.name in plan.shared_memory:
            pass  # the data is in the client's region
        elif plan.is_binary(out.name):
            data = out.data
            size = len(data) if isinstance(data, bytes) else data.nbytes
            entry.setdefault("parameters", {})["binary_data_size"] = size
            if size:
                buffers.append(data)
        else:
            entry["data"] = _json_data(out)
        outputs.append(entry)
    body["outputs"] = outputs
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), buffers


def _json_data(out):
    datatype = out.datatype
    if datatype in ("FP16", "BF16"):
        raise InvalidArgument(f"sending {datatype} data via JSON is not supported. Please use "
                              "the binary data format for output")
    if datatype == "BYTES":
        return [item.decode("utf-8", errors="replace") for item in split_bytes(out.data)]
    # orjson writes a flat numpy array without a Python list in between.
    return np.ascontiguousarray(out.data).reshape(-1)


def split_bytes(data) -> list[bytes]:
    """Triton's BYTES layout (uint32 LE length + bytes per element) -> list of bytes."""
    view = memoryview(data).cast("B")
    items, offset, total = [], 0, len(view)
    while offset + 4 <= total:
        length = int.from_bytes(view[offset:offset + 4], "little")
        offset += 4
        items.append(bytes(view[offset:offset + length]))
        offset += length
    return items
