"""Type stubs for the compiled wire codec and request types (sources: ext/wire.pyx, ext/wire.pxd).

``InferRequest`` is the server's one request type: the Cython codec builds it,
the protobuf codec and the HTTP frontend construct it with keywords. The
contract between the layers that use it is docs/request_path.md.
"""
from typing import Any, Callable, Optional, Protocol, Sequence

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
    sender: Any  # triton_grpc_server.senders.ResponseSender, set by the frontend
    @property
    def cancelled(self) -> bool:
        """Set by :meth:`cancel` only (read-only here)."""
    def __init__(self, model_name: str = ..., model_version: str = ..., id: str = ...,
                 parameters: Optional[dict] = ..., inputs: Optional[list] = ...,
                 outputs: Optional[list] = ..., raw_input_contents: Optional[list] = ...,
                 sender: Any = ...) -> None: ...
    def cancel(self) -> None:
        """Flag the request cancelled and run its cancel callbacks, once."""
    def add_cancel_callback(self, callback: Callable[[], None]) -> None:
        """``callback()`` runs once on cancel (at once if already cancelled)."""
    def clear_cancel_callbacks(self) -> None:
        """Drop the callbacks (called when the request has its final answer)."""

class OutputTensor:
    name: str
    datatype: str
    shape: list[int]
    data: Any  # buffer-protocol object: C-contiguous array, or serialized BYTES
    parameters: dict[str, bool | int | str | float]
    def __init__(self, name: str, datatype: str, shape: Sequence[int], data: Any,
                 parameters: Optional[dict] = ...) -> None: ...

class InferResponse:
    model_name: str
    model_version: str
    id: str
    outputs: list[OutputTensor]
    parameters: dict[str, bool | int | str | float]
    def __init__(self, model_name: str, model_version: str, id: str = ...,
                 outputs: Optional[list] = ..., parameters: Optional[dict] = ...) -> None: ...

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

def encode_stream_response(response: Optional[InferResponse], error_message: str = ...) -> bytes:
    """-> ModelStreamInferResponse wire bytes (error_message, infer_response), one allocation."""
