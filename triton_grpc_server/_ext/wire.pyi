"""Type stubs for the compiled ModelInfer wire codec (sources: ext/wire.pyx, ext/wire.pxd).

The request classes are extension types with the same constructors and
attributes as their namesakes in ``triton_grpc_server.inference``.
"""
from typing import Any, Optional, Protocol, Sequence

from triton_grpc_server.inference import InferResponse

class _Buffer(Protocol):
    def __buffer__(self, flags: int, /) -> memoryview: ...

class InferInput:
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, bool | int | str | float]
    contents: Optional[dict[str, Any]]
    def __init__(self, name: str, datatype: str, shape: Sequence[int],
                 parameters: Optional[dict] = ..., contents: Optional[dict] = ...) -> None: ...

class RequestedOutput:
    name: str
    parameters: dict[str, bool | int | str | float]
    def __init__(self, name: str, parameters: Optional[dict] = ...) -> None: ...

class InferRequest:
    model_name: str
    model_version: str
    id: str
    parameters: dict[str, bool | int | str | float]
    inputs: list[InferInput]
    outputs: list[RequestedOutput]
    raw_input_contents: list[memoryview]
    def __init__(self, model_name: str = ..., model_version: str = ..., id: str = ...,
                 parameters: Optional[dict] = ..., inputs: Optional[list] = ...,
                 outputs: Optional[list] = ..., raw_input_contents: Optional[list] = ...) -> None: ...

def decode_request(data: bytes | bytearray | memoryview | _Buffer) -> InferRequest:
    """ModelInferRequest wire bytes -> InferRequest.

    ``raw_input_contents`` are read-only ``memoryview`` slices of the request
    ``bytes`` (other buffers are copied into ``bytes`` first). Input
    ``contents`` maps each non-empty InferTensorContents field to a numpy
    array (packed fp32/fp64: a read-only view of the request bytes), or for
    ``bytes_contents`` to a list of ``bytes``.

    Raises:
        triton_grpc_server.errors.InvalidArgument: malformed input.
    """

def encode_response(response: InferResponse) -> bytes:
    """InferResponse -> ModelInferResponse wire bytes, built in one allocation."""
