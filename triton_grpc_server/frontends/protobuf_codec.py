"""The reference ModelInfer codec, built on the generated protobuf classes.

Slower than the Cython codec (``ext/wire.pyx``) but obviously right (it builds
the same request and response classes, those of ``_ext.wire``); it is the
specification the Cython codec is tested against, and selectable with
``--infer-codec python`` for debugging.

Decoding contract shared by both codecs:

* parameters become ``{key: bool|int|str|float}`` (a parameter with no value
  set is dropped);
* an input's ``contents`` is ``None`` when the ``contents`` field is absent,
  else a dict ``{field_name: sequence}`` holding only the non-empty repeated
  fields of ``InferTensorContents`` (``{}`` when present but empty);
* ``raw_input_contents`` are buffer-protocol objects, in wire order.
"""
from __future__ import annotations

from .._proto import grpc_service_pb2 as pb
from ..errors import InvalidArgument
from .._ext.wire import InferInput, InferRequest, InferResponse, RequestedOutput

_CONTENT_FIELDS = ("bool_contents", "int_contents", "int64_contents", "uint_contents",
                   "uint64_contents", "fp32_contents", "fp64_contents", "bytes_contents")


def parameters_to_dict(params) -> dict:
    out = {}
    for key, value in params.items():
        which = value.WhichOneof("parameter_choice")
        if which is not None:
            out[key] = getattr(value, which)
    return out


def fill_parameters(target, params: dict) -> None:
    for key, value in params.items():
        slot = target[key]
        if isinstance(value, bool):
            slot.bool_param = value
        elif isinstance(value, int):
            if value > 0x7FFFFFFFFFFFFFFF:
                slot.uint64_param = value
            else:
                slot.int64_param = value
        elif isinstance(value, float):
            slot.double_param = value
        else:
            slot.string_param = str(value)


def request_from_message(msg) -> InferRequest:
    inputs = []
    for tensor in msg.inputs:
        contents = None
        if tensor.HasField("contents"):
            contents = {}
            for field in _CONTENT_FIELDS:
                values = getattr(tensor.contents, field)
                if len(values):
                    contents[field] = list(values)
        inputs.append(InferInput(tensor.name, tensor.datatype, list(tensor.shape),
                                 parameters_to_dict(tensor.parameters), contents))
    outputs = [RequestedOutput(o.name, parameters_to_dict(o.parameters)) for o in msg.outputs]
    return InferRequest(msg.model_name, msg.model_version, msg.id,
                        parameters_to_dict(msg.parameters), inputs, outputs,
                        list(msg.raw_input_contents))


def decode_request(data: bytes) -> InferRequest:
    """Wire bytes -> InferRequest; malformed bytes raise InvalidArgument."""
    msg = pb.ModelInferRequest()
    try:
        msg.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise InvalidArgument(f"failed to parse ModelInferRequest: {exc}") from None
    return request_from_message(msg)


def response_to_message(response: InferResponse):
    msg = pb.ModelInferResponse(model_name=response.model_name,
                                model_version=response.model_version, id=response.id)
    fill_parameters(msg.parameters, response.parameters)
    for out in response.outputs:
        tensor = msg.outputs.add(name=out.name, datatype=out.datatype, shape=out.shape)
        fill_parameters(tensor.parameters, out.parameters)
        # tobytes() copies in C order, so non-contiguous and zero-size views work too.
        msg.raw_output_contents.append(out.data if isinstance(out.data, bytes)
                                       else memoryview(out.data).tobytes())
    return msg


def encode_response(response: InferResponse) -> bytes:
    return response_to_message(response).SerializeToString()


def encode_stream_response(response, error_message: str = "") -> bytes:
    """A ModelStreamInferResponse: ``error_message`` and/or ``infer_response``."""
    msg = pb.ModelStreamInferResponse(error_message=error_message)
    if response is not None:
        msg.infer_response.CopyFrom(response_to_message(response))
    return msg.SerializeToString()
