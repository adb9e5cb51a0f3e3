"""``triton_python_backend_utils``: the API a Triton Python model imports as ``pb_utils``.

This module runs inside the instance process only (the stub installs it
under Triton's module name before importing ``model.py``). Names, arguments
and behaviour follow Triton's Python backend; requests, responses, senders,
BLS, metrics and logging reach the server through :data:`_runtime`, which the
stub sets.
"""
from __future__ import annotations

import enum
import json
import struct
import sys
from typing import Any

import numpy as np

from .transport import wire_datatype

_runtime: Any = None  # the stub's runtime, set before model.py is imported

TRITONSERVER_REQUEST_FLAG_SEQUENCE_START = 1
TRITONSERVER_REQUEST_FLAG_SEQUENCE_END = 2
TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
TRITONSERVER_REQUEST_RELEASE_ALL = 1
TRITONSERVER_REQUEST_RELEASE_RESCHEDULE = 2

TRITON_STRING_TO_NUMPY = {
    "TYPE_BOOL": bool, "TYPE_UINT8": np.uint8, "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32, "TYPE_UINT64": np.uint64, "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16, "TYPE_INT32": np.int32, "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16, "TYPE_FP32": np.float32, "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}
# TRITONSERVER_DataType numbers, as triton_to_numpy_type/numpy_to_triton_type use them
_TYPE_NUMBERS = [(1, np.bool_), (2, np.uint8), (3, np.uint16), (4, np.uint32), (5, np.uint64),
                 (6, np.int8), (7, np.int16), (8, np.int32), (9, np.int64), (10, np.float16),
                 (11, np.float32), (12, np.float64), (13, np.object_)]


def triton_string_to_numpy(triton_type_string):
    return TRITON_STRING_TO_NUMPY[triton_type_string]


def triton_to_numpy_type(data_type):
    for number, dtype in _TYPE_NUMBERS:
        if number == data_type:
            return dtype
    return None


def numpy_to_triton_type(data_type):
    if data_type == np.bytes_:
        return 13
    for number, dtype in _TYPE_NUMBERS:
        if data_type == dtype:
            return number
    return None


def serialize_byte_tensor(input_tensor):
    """Length-prefixed bytes of an object/bytes array, C order (Triton's BYTES layout)."""
    if input_tensor.size == 0:
        return ()
    if input_tensor.dtype != np.object_ and input_tensor.dtype.type != np.bytes_:
        return None
    parts = []
    for item in input_tensor.ravel(order="C"):
        if not isinstance(item, bytes):
            item = str(item).encode("utf-8")
        parts.append(struct.pack("<I", len(item)))
        parts.append(item)
    return b"".join(parts)


def deserialize_bytes_tensor(encoded_tensor):
    items, offset = [], 0
    while offset < len(encoded_tensor):
        (length,) = struct.unpack_from("<I", encoded_tensor, offset)
        offset += 4
        items.append(bytes(encoded_tensor[offset:offset + length]))
        offset += length
    return np.array(items, dtype=np.object_)


def get_input_tensor_by_name(inference_request, name):
    for tensor in inference_request.inputs():
        if tensor.name() == name:
            return tensor
    return None


def get_output_tensor_by_name(inference_response, name):
    for tensor in inference_response.output_tensors():
        if tensor.name() == name:
            return tensor
    return None


def get_input_config_by_name(model_config, name):
    for properties in model_config.get("input", []):
        if properties["name"] == name:
            return properties
    return None


def get_output_config_by_name(model_config, name):
    for properties in model_config.get("output", []):
        if properties["name"] == name:
            return properties
    return None


def using_decoupled_model_transaction_policy(model_config):
    if "model_transaction_policy" in model_config:
        return model_config["model_transaction_policy"].get("decoupled", False)
    return False


# -- errors -------------------------------------------------------------

class TritonModelException(Exception):
    """Raised by the backend's API (and by models) to fail a call or a request."""


class TritonError:
    class _Code(enum.IntEnum):
        UNKNOWN = 0
        INTERNAL = 1
        NOT_FOUND = 2
        INVALID_ARG = 3
        UNAVAILABLE = 4
        UNSUPPORTED = 5
        ALREADY_EXISTS = 6
        CANCELLED = 7

    UNKNOWN = _Code.UNKNOWN
    INTERNAL = _Code.INTERNAL
    NOT_FOUND = _Code.NOT_FOUND
    INVALID_ARG = _Code.INVALID_ARG
    UNAVAILABLE = _Code.UNAVAILABLE
    UNSUPPORTED = _Code.UNSUPPORTED
    ALREADY_EXISTS = _Code.ALREADY_EXISTS
    CANCELLED = _Code.CANCELLED

    def __init__(self, message, code=_Code.INTERNAL):
        if message is None or code is None:
            raise TypeError("TritonError needs a message and a code")
        self._message = str(message)
        self._code = TritonError._Code(int(code))

    def code(self):
        return self._code

    def message(self):
        return self._message

    def __repr__(self):
        return f"TritonError({self._message!r}, {self._code.name})"


# -- tensors ------------------------------------------------------------

class _DLPackCapsule:
    """Lets numpy read a bare DLPack capsule (what torch.utils.dlpack.to_dlpack returns)."""

    def __init__(self, capsule):
        self._capsule = capsule

    def __dlpack__(self, stream=None, **_):
        return self._capsule

    def __dlpack_device__(self):
        return (1, 0)  # kDLCPU


class Tensor:
    def __init__(self, name, data, *_ignored):
        if not isinstance(name, str):
            raise TritonModelException("Tensor name must be a string")
        array = data if isinstance(data, np.ndarray) else np.asarray(data)
        if array.dtype.kind == "U":
            array = array.astype(np.object_)
        try:
            self._datatype = wire_datatype(array.dtype)
        except TypeError as exc:
            raise TritonModelException(str(exc)) from None
        self._name = name
        self._array = array

    @classmethod
    def _wrap(cls, name: str, datatype: str, array: np.ndarray) -> "Tensor":
        tensor = cls.__new__(cls)
        tensor._name, tensor._datatype, tensor._array = name, datatype, array
        return tensor

    def name(self):
        return self._name

    def as_numpy(self):
        return self._array

    def triton_dtype(self):
        return numpy_to_triton_type(self._array.dtype.type) or 13

    def shape(self):
        return list(self._array.shape)

    def is_cpu(self):
        return True

    def to_dlpack(self):
        if self._datatype == "BYTES":
            raise TritonModelException("DLPack does not support BYTES tensors")
        return self._array.__dlpack__()

    def __dlpack__(self, stream=None):
        return self.to_dlpack()

    def __dlpack_device__(self):
        return (1, 0)

    @staticmethod
    def from_dlpack(name, dlpack_tensor):
        source = dlpack_tensor if hasattr(dlpack_tensor, "__dlpack__") else _DLPackCapsule(dlpack_tensor)
        try:
            array = np.from_dlpack(source)
        except (RuntimeError, TypeError, BufferError) as exc:
            raise TritonModelException(f"from_dlpack: {exc}") from None
        return Tensor(name, array)

    def __repr__(self):
        return f"Tensor({self._name!r}, {self._datatype}, {list(self._array.shape)})"


# -- responses ----------------------------------------------------------

class InferenceResponse:
    def __init__(self, output_tensors=None, error=None, parameters=None):
        self._outputs = list(output_tensors) if output_tensors is not None else []
        for tensor in self._outputs:
            if not isinstance(tensor, Tensor):
                raise TritonModelException("output_tensors must be a list of pb_utils.Tensor")
        if error is not None and not isinstance(error, TritonError):
            raise TritonModelException("error must be a pb_utils.TritonError")
        self._error = error
        self._parameters = _parameters_json(parameters)

    def output_tensors(self):
        return self._outputs

    def has_error(self):
        return self._error is not None

    def error(self):
        return self._error

    def parameters(self):
        return self._parameters


def _parameters_json(parameters) -> str:
    if parameters is None:
        return "{}"
    if isinstance(parameters, str):
        parameters = json.loads(parameters)
    if not isinstance(parameters, dict):
        raise TritonModelException("parameters must be a dict")
    for key, value in parameters.items():
        if not isinstance(key, str) or not isinstance(value, (bool, int, str)):
            raise TritonModelException(
                "Expect parameters keys to have type str and values to have type bool, int "
                "or str, found " + f"{key!r}: {type(value).__name__}")
    return json.dumps(parameters)


class InferenceResponseSender:
    """Sends the responses of one request (decoupled models send any number)."""

    def __init__(self, key: int, decoupled: bool):
        self._key = key
        self._decoupled = decoupled
        self._closed = False
        self._sent = 0

    def send(self, response=None, flags=0):
        if self._closed:
            raise TritonModelException("Unable to send response. Response sender has been closed.")
        final = bool(flags & TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        if response is None and not final:
            raise TritonModelException(
                "Inference Response object must be provided when the response flags is set "
                "to zero.")
        if not self._decoupled:
            if self._sent >= 1 and response is not None:
                raise TritonModelException(
                    "Non-decoupled model cannot send more than one response.")
        if response is not None:
            self._sent += 1
        if final:
            self._closed = True
        _runtime.send_response(self._key, response, final)

    def is_cancelled(self):
        return _runtime.is_cancelled(self._key)


# -- requests -----------------------------------------------------------

class InferenceRequest:
    """A request the model received, or a BLS request the model builds."""

    def __init__(self, request_id="", correlation_id=0, inputs=None, requested_output_names=None,
                 model_name=None, model_version=-1, flags=0, timeout=0, preferred_memory=None,
                 trace=None, parameters=None):
        if inputs is None or requested_output_names is None or model_name is None:
            raise TypeError("InferenceRequest needs inputs, requested_output_names and model_name")
        # Triton's binding takes std::string: bytes (what a BYTES input's as_numpy holds) convert.
        if isinstance(model_name, bytes):
            model_name = model_name.decode("utf-8")
        if isinstance(request_id, bytes):
            request_id = request_id.decode("utf-8")
        if not isinstance(correlation_id, (int, str)):
            raise TritonModelException("Correlation ID must be integer or string")
        for tensor in inputs:
            if not isinstance(tensor, Tensor):
                raise TritonModelException("inputs must be a list of pb_utils.Tensor")
        self._request_id = request_id
        self._correlation_id = correlation_id
        self._inputs = list(inputs)
        self._requested = list(requested_output_names)
        self.model_name = model_name
        self.model_version = int(model_version)
        self._flags = flags
        self._timeout = timeout
        self._parameters = _parameters_json(parameters)
        self._key = None
        self._sender = None
        self._release_flags = TRITONSERVER_REQUEST_RELEASE_ALL

    @classmethod
    def _received(cls, key, request_id, correlation_id, flags, timeout, inputs, requested,
                  parameters, model_name, model_version, decoupled) -> "InferenceRequest":
        request = cls.__new__(cls)
        request._request_id = request_id
        request._correlation_id = correlation_id
        request._inputs = inputs
        request._requested = requested
        request.model_name = model_name
        request.model_version = model_version
        request._flags = flags
        request._timeout = timeout
        request._parameters = parameters
        request._key = key
        request._sender = InferenceResponseSender(key, decoupled)
        request._release_flags = TRITONSERVER_REQUEST_RELEASE_ALL
        return request

    def inputs(self):
        return self._inputs

    def get_input_tensor_by_name(self, name):
        return get_input_tensor_by_name(self, name)

    def request_id(self):
        return self._request_id

    def correlation_id(self):
        return self._correlation_id

    def flags(self):
        return self._flags

    def set_flags(self, flags):
        self._flags = flags

    def timeout(self):
        return self._timeout

    def parameters(self):
        return self._parameters

    def requested_output_names(self):
        return list(self._requested)

    def trace(self):
        return None

    def get_response_sender(self):
        if self._sender is None:
            raise TritonModelException("a BLS request has no response sender")
        return self._sender

    def is_cancelled(self):
        if self._key is None:
            return False
        return _runtime.is_cancelled(self._key)

    def set_release_flags(self, flags):
        if flags == TRITONSERVER_REQUEST_RELEASE_RESCHEDULE:
            raise TritonModelException("request rescheduling is not supported by this server")
        self._release_flags = flags

    def exec(self, decoupled=False, timeout=None):
        """Run this request on another model through the server; blocks until it answers."""
        return _runtime.bls(self, decoupled)

    def async_exec(self, decoupled=False):
        """An awaitable of :meth:`exec`, run in the event loop's executor as Triton does."""
        import asyncio

        loop = asyncio.get_running_loop()
        return loop.run_in_executor(None, _runtime.bls, self, decoupled)


# -- logging ------------------------------------------------------------

class Logger:
    class LogLevel(enum.IntEnum):
        INFO = 0
        WARNING = 1
        ERROR = 2
        VERBOSE = 3

    INFO = LogLevel.INFO
    WARNING = LogLevel.WARNING
    ERROR = LogLevel.ERROR
    VERBOSE = LogLevel.VERBOSE

    @staticmethod
    def log(message, level=LogLevel.INFO):
        frame = sys._getframe(1)
        _runtime.log(int(level), str(message), frame.f_code.co_filename, frame.f_lineno)

    @staticmethod
    def log_info(message):
        frame = sys._getframe(1)
        _runtime.log(0, str(message), frame.f_code.co_filename, frame.f_lineno)

    @staticmethod
    def log_warn(message):
        frame = sys._getframe(1)
        _runtime.log(1, str(message), frame.f_code.co_filename, frame.f_lineno)

    @staticmethod
    def log_error(message):
        frame = sys._getframe(1)
        _runtime.log(2, str(message), frame.f_code.co_filename, frame.f_lineno)

    @staticmethod
    def log_verbose(message):
        frame = sys._getframe(1)
        _runtime.log(3, str(message), frame.f_code.co_filename, frame.f_lineno)


# -- custom metrics -----------------------------------------------------

class MetricKind(enum.IntEnum):
    COUNTER = 0
    GAUGE = 1
    HISTOGRAM = 2


COUNTER, GAUGE, HISTOGRAM = MetricKind.COUNTER, MetricKind.GAUGE, MetricKind.HISTOGRAM


class Metric:
    def __init__(self, metric_id: int, kind: MetricKind):
        self._id = metric_id
        self._kind = kind

    def increment(self, value):
        if self._kind == MetricKind.HISTOGRAM:
            raise TritonModelException("Failed to increment metric value: histogram metrics "
                                       "support observe() only")
        if self._kind == MetricKind.COUNTER and value < 0:
            raise TritonModelException("Failed to increment metric value: counters can only "
                                       "be incremented by non-negative values")
        _runtime.metric_update(self._id, "increment", float(value))

    def set(self, value):
        if self._kind != MetricKind.GAUGE:
            raise TritonModelException("Failed to set metric value: set() is supported by "
                                       "gauge metrics only")
        _runtime.metric_update(self._id, "set", float(value))

    def observe(self, value):
        if self._kind != MetricKind.HISTOGRAM:
            raise TritonModelException("Failed to observe metric value: observe() is supported "
                                       "by histogram metrics only")
        _runtime.metric_update(self._id, "observe", float(value))

    def value(self):
        if self._kind == MetricKind.HISTOGRAM:
            raise TritonModelException("Failed to get metric value: histogram metrics have no "
                                       "single value")
        return _runtime.call("metric_value", self._id)


class MetricFamily:
    COUNTER = MetricKind.COUNTER
    GAUGE = MetricKind.GAUGE
    HISTOGRAM = MetricKind.HISTOGRAM

    def __init__(self, name, description, kind):
        if name is None or description is None or kind is None:
            raise TypeError("MetricFamily needs a name, a description and a kind")
        self._kind = MetricKind(int(kind))
        self._id = _runtime.call("metric_family", str(name), str(description), int(self._kind))

    def Metric(self, labels=None, buckets=None):
        labels = dict(labels or {})
        for key, value in labels.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TritonModelException("metric labels must map str to str")
        if self._kind == MetricKind.HISTOGRAM:
            if buckets is None:
                raise TritonModelException("histogram metrics need 'buckets'")
            buckets = [float(b) for b in buckets]
        elif buckets is not None:
            raise TritonModelException("only histogram metrics take 'buckets'")
        return Metric(_runtime.call("metric", self._id, labels, buckets), self._kind)


# -- model control (BLS side) -------------------------------------------

def load_model(model_name, config="", files=None):
    _runtime.call("load_model", model_name, config, files or {})


def unload_model(model_name, unload_dependents=False):
    _runtime.call("unload_model", model_name, bool(unload_dependents))


def is_model_ready(model_name, model_version=""):
    return _runtime.call("is_model_ready", model_name, str(model_version))


# -- auto-complete --------------------------------------------------------

class ModelConfig:
    """The config ``auto_complete_config`` may extend: batch size, tensors, batching, policy."""

    def __init__(self, model_config):
        self._model_config = json.loads(model_config) if isinstance(model_config, str) else model_config
        self._model_config.setdefault("input", [])
        self._model_config.setdefault("output", [])
        self._model_config.setdefault("max_batch_size", 0)

    def as_dict(self):
        return self._model_config

    def _name(self):
        return self._model_config.get("name", "")

    def set_max_batch_size(self, max_batch_size):
        if self._model_config["max_batch_size"] > max_batch_size:
            raise ValueError(
                f"configuration specified max_batch_size {self._model_config['max_batch_size']}, "
                f"but in auto-complete-config function for model '{self._name()}' specified "
                f"max_batch_size {max_batch_size}")
        self._model_config["max_batch_size"] = max_batch_size

    def set_dynamic_batching(self):
        for other in ("sequence_batching", "ensemble_scheduling"):
            if other in self._model_config:
                raise ValueError(
                    f"Configuration specified scheduling_choice as '{other}', but "
                    f"auto-complete-config function for model '{self._name()}' tries to set "
                    "scheduling_choice as 'dynamic_batching'")
        self._model_config.setdefault("dynamic_batching", {})

    def _add_tensor(self, kind, tensor, allowed):
        name = tensor.get("name")
        for key in tensor:
            if key not in allowed:
                raise ValueError(
                    f"{kind} '{name}' in auto-complete-config function for model '{self._name()}' "
                    f"contains property other than {', '.join(repr(a) for a in allowed)}.")
        for key in ("name", "data_type", "dims"):
            if key not in tensor:
                where = f"{kind} '{name}'" if key != "name" else kind
                raise ValueError(f"{where} in auto-complete-config function for model "
                                 f"'{self._name()}' is missing '{key}' property.")
        for current in self._model_config[kind]:
            if current["name"] != name:
                continue
            if current.get("data_type", "TYPE_INVALID") not in ("TYPE_INVALID", tensor["data_type"]):
                raise ValueError(
                    f"unable to load model '{self._name()}', configuration expects datatype "
                    f"{current['data_type']} for {kind} '{name}', model provides "
                    f"{tensor['data_type']}")
            if current.get("dims") and list(current["dims"]) != list(tensor["dims"]):
                raise ValueError(
                    f"model '{self._name()}', tensor '{name}': the model expects dims "
                    f"{tensor['dims']} but the model configuration specifies dims "
                    f"{current['dims']}")
            if ("optional" in current and "optional" in tensor
                    and current["optional"] != tensor["optional"]):
                raise ValueError(
                    f"model '{self._name()}', tensor '{name}': the model expects optional "
                    f"{tensor['optional']} but the model configuration specifies optional "
                    f"{current['optional']}")
            current["data_type"] = tensor["data_type"]
            current["dims"] = tensor["dims"]
            if "optional" in tensor:
                current["optional"] = tensor["optional"]
            return
        self._model_config[kind].append(tensor)

    def add_input(self, input):
        self._add_tensor("input", input, ("name", "data_type", "dims", "optional"))

    def add_output(self, output):
        self._add_tensor("output", output, ("name", "data_type", "dims"))

    def set_model_transaction_policy(self, transaction_policy_dict):
        for key in transaction_policy_dict:
            if key != "decoupled":
                raise ValueError(
                    "model transaction property in auto-complete-config function for model "
                    f"'{self._name()}' contains property other than 'decoupled'.")
        policy = self._model_config.setdefault("model_transaction_policy", {})
        if "decoupled" in transaction_policy_dict:
            if "decoupled" in policy and policy["decoupled"] != transaction_policy_dict["decoupled"]:
                raise ValueError(
                    "trying to change decoupled property in auto-complete-config for model "
                    f"'{self._name()}', which is already set to '{policy['decoupled']}'.")
            policy["decoupled"] = transaction_policy_dict["decoupled"]

