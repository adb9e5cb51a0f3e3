"""InferResponse -> ModelInferResponse / ModelStreamInferResponse bytes.

Responses are built from the fuzz input (names, datatypes, shapes, parameters,
output bytes); the Cython encoder's bytes must parse (with protobuf) to the
same message the protobuf reference encoder writes. A response the reference
cannot encode (a parameter out of every protobuf type's range) may fail in
either, but with an ordinary Python exception, never a crash.
"""
from __future__ import annotations

import _harness  # noqa: F401  (paths)
import atheris

with _harness.instrumented():
    from triton_grpc_server._ext import wire
    from triton_grpc_server._proto import grpc_service_pb2 as pb
    from triton_grpc_server.frontends import protobuf_codec

NAME = "wire_encode"
DATATYPES = ["BOOL", "UINT8", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES", "BF16", ""]


def _parameters(fdp) -> dict:
    params = {}
    for _ in range(fdp.ConsumeIntInRange(0, 3)):
        key = fdp.ConsumeUnicodeNoSurrogates(8)
        kind = fdp.ConsumeIntInRange(0, 3)
        params[key] = (fdp.ConsumeBool() if kind == 0 else
                       fdp.ConsumeIntInRange(-(1 << 63), (1 << 64) - 1) if kind == 1 else
                       fdp.ConsumeRegularFloat() if kind == 2 else
                       fdp.ConsumeUnicodeNoSurrogates(16))
    return params


def build(data: bytes):
    fdp = atheris.FuzzedDataProvider(data)
    outputs = []
    for _ in range(fdp.ConsumeIntInRange(0, 4)):
        shape = [fdp.ConsumeIntInRange(-1, 1 << 40) for _ in range(fdp.ConsumeIntInRange(0, 4))]
        outputs.append(wire.OutputTensor(fdp.ConsumeUnicodeNoSurrogates(12),
                                         DATATYPES[fdp.ConsumeIntInRange(0, len(DATATYPES) - 1)],
                                         shape, fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 256)),
                                         _parameters(fdp)))
    return wire.InferResponse(fdp.ConsumeUnicodeNoSurrogates(16), fdp.ConsumeUnicodeNoSurrogates(4),
                              fdp.ConsumeUnicodeNoSurrogates(8), outputs, _parameters(fdp))


def test_one_input(data: bytes) -> None:
    response = build(data)
    try:
        want = protobuf_codec.encode_response(response)
    except (ValueError, TypeError, OverflowError):
        try:
            wire.encode_response(response)
        except (ValueError, TypeError, OverflowError):
            pass
        return
    got = wire.encode_response(response)
    assert pb.ModelInferResponse.FromString(got) == pb.ModelInferResponse.FromString(want)
    error = response.model_name[:8]
    got = wire.encode_stream_response(response, error)
    want = protobuf_codec.encode_stream_response(response, error)
    assert (pb.ModelStreamInferResponse.FromString(got)
            == pb.ModelStreamInferResponse.FromString(want))


if __name__ == "__main__":
    _harness.main(NAME, test_one_input)
