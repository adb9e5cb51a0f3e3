"""ModelInfer wire codecs by name, imported lazily (uvicorn's ``auto`` pattern).

A codec is a module with ``decode_request(bytes) -> InferRequest``,
``encode_response(InferResponse) -> bytes`` and
``encode_stream_response(InferResponse | None, error_message) -> bytes``
(a ModelStreamInferResponse); malformed requests raise ``InvalidArgument``.
Both build the request classes of ``_ext.wire``, so the compiled extension is
always needed; "python" only swaps the wire format code.
"""
from __future__ import annotations

import importlib

CODECS = {
    "cython": "triton_grpc_server._ext.wire",
    "python": "triton_grpc_server.frontends.protobuf_codec",
}


def load_codec(name: str = "auto"):
    if name == "auto":
        try:
            return importlib.import_module(CODECS["cython"])
        except ImportError:
            return importlib.import_module(CODECS["python"])
    return importlib.import_module(CODECS[name])
