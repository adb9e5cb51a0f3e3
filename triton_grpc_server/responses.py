"""Backend arrays -> an ``InferResponse``, as Triton's core shapes it.

Reshape to the configured dims, classification, output datatypes and BYTES
serialization; :meth:`ScheduledRequest.respond` calls this on the thread that
answers (an instance's worker), so the event loop only encodes.
"""
from __future__ import annotations

import numpy as np

from ._ext.wire import InferResponse, OutputTensor
from .classification import classify
from .errors import InvalidArgument, TritonError
from .tensors import NUMPY_DTYPES, serialize_bytes


def build_response(request, model, output_names, results, batch: int) -> InferResponse:
    # Only requested outputs carrying parameters can ask for classification.
    requested = {o.name: o for o in request.outputs if o.parameters}
    specs = model.output_specs  # name -> (wire datatype, has reshape), from load
    outputs = []
    for name in output_names:
        if name not in results:
            raise TritonError(f"output '{name}' was not produced by model '{model.name}'")
        array = np.asarray(results[name])
        datatype, has_reshape = specs[name]
        if has_reshape:  # the model's shape -> the configured one
            shape = ([batch] if batch else []) + _resolve_dims(model.outputs[name].dims,
                                                               array, batch)
        else:
            shape = list(array.shape)
        asked = requested.get(name)
        k = asked.parameters.get("classification") if asked is not None else None
        if k is not None:
            if not isinstance(k, int) or isinstance(k, bool) or k < 1:
                raise InvalidArgument(
                    f"classification count must be a positive integer for output '{name}' "
                    f"for model '{model.name}'")
            classes = classify(array, k, batch, model.labels.get(name))
            outputs.append(OutputTensor(name, "BYTES", list(classes.shape),
                                        serialize_bytes(classes)))
            continue
        # Without reshape the shape is the array's own, so its element count matches.
        outputs.append(output_tensor(name, datatype, shape, array, model,
                                     check_size=has_reshape))
    return InferResponse(model.name, str(model.version), request.id, outputs)


def output_tensor(name, datatype, shape, array, model, check_size=True) -> OutputTensor:
    if datatype == "BYTES":
        return OutputTensor(name, datatype, shape, serialize_bytes(array))
    dtype = NUMPY_DTYPES[datatype]
    if array.dtype != dtype:
        array = array.astype(dtype)
    if check_size and int(np.prod(shape, dtype=np.int64)) != array.size:
        raise TritonError(
            f"output '{name}' of model '{model.name}' has {array.size} elements, which does "
            f"not match its configured shape {shape}")
    return OutputTensor(name, datatype, shape, np.ascontiguousarray(array))


def _resolve_dims(dims, array: np.ndarray, batch: int) -> list[int]:
    """Config dims with -1 wildcards filled so the element count matches the array."""
    dims = list(dims)
    if -1 in dims:
        known = int(np.prod([d for d in dims if d != -1], dtype=np.int64)) or 1
        per_item = array.size // (batch or 1)
        dims[dims.index(-1)] = per_item // known
    return dims
