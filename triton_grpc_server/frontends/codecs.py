"""ModelInfer wire codecs by name, imported lazily (uvicorn's ``auto`` pattern).

A codec is a module with ``decode_request(bytes) -> InferRequest`` and
``encode_response(InferResponse) -> bytes``; malformed requests raise
``InvalidArgument``.
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
