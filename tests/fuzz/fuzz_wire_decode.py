"""ModelInfer request bytes: the Cython decoder against the protobuf reference.

Property: the Cython codec either rejects the bytes with INVALID_ARGUMENT or
decodes them to what protobuf decodes them to (names, shapes, parameters,
typed contents, raw tensors); it never crashes or raises anything else.
"""
from __future__ import annotations

import math

import _harness  # noqa: F401  (paths)
import numpy as np

with _harness.instrumented():
    from triton_grpc_server._ext import wire
    from triton_grpc_server.errors import InvalidArgument
    from triton_grpc_server.frontends import protobuf_codec

NAME = "wire_decode"
CONTENT_DTYPES = {"bool_contents": np.bool_, "int_contents": np.int32,
                  "int64_contents": np.int64, "uint_contents": np.uint32,
                  "uint64_contents": np.uint64, "fp32_contents": np.float32,
                  "fp64_contents": np.float64}


def _value(value):
    # NaN != NaN: compare floats by their bits.
    if isinstance(value, float):
        return ("f", np.float64(value).tobytes()) if math.isnan(value) else ("f", value)
    return (type(value).__name__, value)


def _params(params) -> dict:
    return {key: _value(value) for key, value in (params or {}).items()}


def _contents(contents) -> dict:
    out = {}
    for field, values in (contents or {}).items():
        if field == "bytes_contents":
            items = [bytes(v) for v in values]
        else:
            items = np.asarray(list(values) if not isinstance(values, np.ndarray) else values,
                               dtype=CONTENT_DTYPES[field]).tobytes()
        if len(items):
            out[field] = items
    return out


def canonical(request) -> tuple:
    return (request.model_name, request.model_version, request.id, _params(request.parameters),
            [(i.name, i.datatype, [int(d) for d in i.shape], _params(i.parameters),
              _contents(i.contents)) for i in request.inputs],
            [(o.name, _params(o.parameters)) for o in request.outputs],
            [bytes(r) for r in request.raw_input_contents])


def test_one_input(data: bytes) -> None:
    try:
        fast = wire.decode_request(data)
    except InvalidArgument:
        return
    reference = protobuf_codec.decode_request(data)  # raises: Cython accepted a bad message
    got, want = canonical(fast), canonical(reference)
    assert got == want, f"Cython decoded {got!r}, protobuf {want!r}"


if __name__ == "__main__":
    _harness.main(NAME, test_one_input)
