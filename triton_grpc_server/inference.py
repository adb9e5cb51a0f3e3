"""Transport-free inference request and response.

Both decoders (the Cython codec in ``ext/wire.pyx`` and the protobuf reference
path in ``frontends/protobuf_codec.py``) produce an :class:`InferRequest`-shaped
object, and both encoders consume an :class:`InferResponse`. The data plane only
reads the attributes named here, so a Cython ``cdef class`` with the same
attributes serves as well as these classes.

Parameter values are plain Python ``bool``/``int``/``str``/``float`` (uint64
parameters arrive as ``int``).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence


class InferInput:
    """One input tensor's metadata and, if given, its typed ``contents``.

    ``contents`` is ``None`` or a sequence of Python values taken from the
    ``InferTensorContents`` field matching the datatype (for BYTES a sequence of
    ``bytes``). Raw data lives in ``InferRequest.raw_input_contents``.
    """

    __slots__ = ("name", "datatype", "shape", "parameters", "contents")

    def __init__(self, name: str, datatype: str, shape: Sequence[int],
                 parameters: Optional[dict] = None, contents: Optional[Sequence[Any]] = None):
        self.name = name
        self.datatype = datatype
        self.shape = list(shape)
        self.parameters = parameters if parameters is not None else {}
        self.contents = contents


class RequestedOutput:
    __slots__ = ("name", "parameters")

    def __init__(self, name: str, parameters: Optional[dict] = None):
        self.name = name
        self.parameters = parameters if parameters is not None else {}


class InferRequest:
    """A decoded ModelInferRequest.

    ``raw_input_contents`` holds buffer-protocol objects (``bytes`` or
    zero-copy ``memoryview`` slices of the request bytes), in wire order.
    """

    __slots__ = ("model_name", "model_version", "id", "parameters", "inputs", "outputs",
                 "raw_input_contents")

    def __init__(self, model_name: str = "", model_version: str = "", id: str = "",
                 parameters: Optional[dict] = None, inputs: Optional[list] = None,
                 outputs: Optional[list] = None, raw_input_contents: Optional[list] = None):
        self.model_name = model_name
        self.model_version = model_version
        self.id = id
        self.parameters = parameters if parameters is not None else {}
        self.inputs = inputs if inputs is not None else []
        self.outputs = outputs if outputs is not None else []
        self.raw_input_contents = raw_input_contents if raw_input_contents is not None else []


class OutputTensor:
    """One output: metadata plus its raw bytes as any buffer-protocol object.

    ``data`` is a C-contiguous numpy array for fixed-size types, or ``bytes``
    already serialized in Triton's BYTES layout (4-byte LE length prefixes).
    """

    __slots__ = ("name", "datatype", "shape", "data", "parameters")

    def __init__(self, name: str, datatype: str, shape: Sequence[int], data: Any,
                 parameters: Optional[dict] = None):
        self.name = name
        self.datatype = datatype
        self.shape = list(shape)
        self.data = data
        self.parameters = parameters if parameters is not None else {}


class InferResponse:
    __slots__ = ("model_name", "model_version", "id", "parameters", "outputs")

    def __init__(self, model_name: str, model_version: str, id: str = "",
                 outputs: Optional[list] = None, parameters: Optional[dict] = None):
        self.model_name = model_name
        self.model_version = model_version
        self.id = id
        self.outputs = outputs if outputs is not None else []
        self.parameters = parameters if parameters is not None else {}
