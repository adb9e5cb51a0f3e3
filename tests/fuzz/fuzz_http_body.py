"""The HTTP infer body parser (JSON header plus the binary tensor extension).

Input: a little-endian uint32 (the Inference-Header-Content-Length, taken modulo
the body's length + 1; 0 means a JSON-only body), then the body. Property: the
parser raises nothing but the server's own errors (INVALID_ARGUMENT, or
INTERNAL for Triton's "Unable to parse" texts); what it accepts is a request
whose JSON part parses as JSON, whose binary tensors lie inside the body, and
whose JSON ``data`` tensors hold as many elements as their shapes say.
"""
from __future__ import annotations

import struct

import _harness  # noqa: F401  (paths)
import orjson

with _harness.instrumented():
    from triton_grpc_server.errors import TritonError
    from triton_grpc_server.frontends import http_codec

NAME = "http_body"
MAX_INPUT = 1 << 20


def frame(body: bytes, header_length: int = 0) -> bytes:
    return struct.pack("<I", header_length) + body


def _parameters(tensor: dict) -> dict:
    # The parser reads a non-object "parameters" as no parameters (as Triton's
    # JSON lookup finds no member in it), so the reference does the same.
    params = tensor.get("parameters")
    return params if isinstance(params, dict) else {}


def test_one_input(data: bytes) -> None:
    if len(data) < 4:
        return
    (header_length,) = struct.unpack_from("<I", data)
    body = data[4:]
    header_length = header_length % (len(body) + 1) or len(body)
    try:
        request, plan = http_codec.decode_request("m", "", body, header_length, MAX_INPUT)
    except TritonError:
        return
    header = orjson.loads(body[:header_length])
    assert isinstance(header, dict)
    binary = sum(_parameters(t).get("binary_data_size", 0) or 0
                 for t in header.get("inputs", []) if isinstance(t, dict))
    assert header_length + binary <= len(body), (header_length, binary, len(body))
    assert len(request.inputs) == len(header.get("inputs", []))
    for tensor in request.inputs:
        assert all(isinstance(d, int) and d >= 0 for d in tensor.shape)


if __name__ == "__main__":
    _harness.main(NAME, test_one_input)
