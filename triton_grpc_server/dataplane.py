"""The transport-free API: health, metadata, repository and inference.

Frontends (gRPC now, HTTP later) convert their wire format to and from the
plain values and :mod:`inference` objects used here; all of Triton's
semantics live in this module and the modules it calls.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Optional

import numpy as np

from . import _version, logs
from .classification import classify
from .errors import InvalidArgument, TritonError, Unsupported
from .inference import InferResponse, OutputTensor
from .repository import ModelRepository
from .repository.control import ModelControl
from .repository.config import wire_datatype
from .request_inputs import RequestValidator, backend_parameters
from .stats import RequestTiming, select_statistics
from .tensors import NUMPY_DTYPES, serialize_bytes

log = logging.getLogger(__name__)

# What this server implements of Triton's protocol extensions (an honest list).
# Triton's order; the rest (sequence, shared memory, ...) come with their issues.
EXTENSIONS = ["classification", "model_repository", "model_repository(unload_dependents)",
              "model_configuration", "parameters", "statistics", "logging"]


class TensorMetadata:
    __slots__ = ("name", "datatype", "shape")

    def __init__(self, name: str, datatype: str, shape: list[int]):
        self.name, self.datatype, self.shape = name, datatype, shape


class ModelMetadata:
    __slots__ = ("name", "versions", "platform", "inputs", "outputs")

    def __init__(self, name, versions, platform, inputs, outputs):
        self.name, self.versions, self.platform = name, versions, platform
        self.inputs, self.outputs = inputs, outputs


class DataPlane:
    def __init__(self, repository: ModelRepository, settings=None,
                 control: Optional[ModelControl] = None):
        self.repository = repository
        self.settings = settings
        self.control = control if control is not None else ModelControl(repository, settings)
        self.live = True
        self.accepting = True

    # -- health and metadata --------------------------------------------
    def server_live(self) -> bool:
        return self.live

    def server_ready(self) -> bool:
        if not self.accepting:
            return False
        strict = getattr(self.settings, "strict_readiness", True)
        return self.repository.all_ready() if strict else True

    def server_metadata(self) -> tuple[str, str, list[str]]:
        return (getattr(self.settings, "server_id", "triton"), _version.TRITON_COMPAT_VERSION,
                list(EXTENSIONS))

    def model_ready(self, name: str, version: str = "") -> bool:
        return self.repository.is_ready(name, version)

    def model_metadata(self, name: str, version: str = "") -> ModelMetadata:
        model = self.repository.get(name, version)
        entry = self.repository.entries()[name]
        if version:  # Triton lists just the version asked for
            versions = [str(model.version)]
        else:
            versions = [str(v) for v, mv in sorted(entry.versions.items()) if mv.ready]
        lead = [-1] if model.config.max_batch_size > 0 else []

        def describe(tensors):
            return [TensorMetadata(t.name, wire_datatype(t), lead + list(t.dims)) for t in tensors]

        return ModelMetadata(name, versions, model.config.platform or model.config.backend,
                             describe(model.config.input), describe(model.config.output))

    def model_config(self, name: str, version: str = ""):
        return self.repository.get(name, version).config

    def repository_index(self, ready_only: bool = False):
        return self.repository.index(ready_only)

    def load_model(self, name: str, parameters: dict) -> None:
        """RepositoryModelLoad: ``parameters`` maps names to str/bytes/bool/int values."""
        self.control.load(name, parameters)

    def unload_model(self, name: str, parameters: dict) -> None:
        self.control.unload(name, parameters)

    # -- inference ------------------------------------------------------
    def infer(self, request, cancelled: Optional[Callable[[], bool]] = None) -> InferResponse:
        """``cancelled``: true once the client has gone (deadline passed, RPC cancelled)."""
        # Counted in flight: a reload or unload closes this version only after it returns.
        model = self.repository.acquire(request.model_name, request.model_version)
        try:
            return self._infer(request, model, cancelled)
        finally:
            model.release()

    async def infer_async(self, request) -> InferResponse:
        """Unary inference for event-loop frontends (HTTP, grpc.aio).

        Until the scheduler answers through senders this runs :meth:`infer` in the
        loop's default executor; callers only rely on the awaitable.
        """
        import asyncio

        return await asyncio.get_running_loop().run_in_executor(None, self.infer, request)

    def _infer(self, request, model, cancelled=None) -> InferResponse:
        if model.decoupled:  # read from the config at load
            raise Unsupported("ModelInfer RPC doesn't support models with decoupled transaction policy")
        timing = RequestTiming()
        try:
            parameters = backend_parameters(request)
            validator = RequestValidator(request, model)
            output_names = validator.requested_outputs()
            inputs, batch = validator.arrays()
            results = model.scheduler.execute(
                inputs, output_names, parameters, batch=batch, timing=timing,
                priority=request.parameters.get("priority", 0),
                timeout_us=request.parameters.get("timeout", 0), cancelled=cancelled)
            response = self._response(request, model, output_names, results, batch)
        except Exception as exc:
            model.stats.failed(timing)
            if logs.STATE.verbose:
                logs.log_request(log, model.name, model.version, request.id,
                                 exc.status.name if isinstance(exc, TritonError) else type(exc).__name__,
                                 time.monotonic_ns() - timing.start_ns)
            raise
        model.stats.succeeded(timing)
        if logs.STATE.verbose:
            logs.log_request(log, model.name, model.version, request.id, "SUCCESS",
                             time.monotonic_ns() - timing.start_ns)
        return response

    def model_statistics(self, name: str = "", version: str = ""):
        """``(model, version, ModelStats snapshot)`` rows for the ModelStatistics RPC."""
        return select_statistics(self.repository, name, version)

    def _response(self, request, model, output_names, results, batch) -> InferResponse:
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
            outputs.append(self._output_tensor(name, datatype, shape, array, model,
                                               check_size=has_reshape))
        return InferResponse(model.name, str(model.version), request.id, outputs)

    @staticmethod
    def _output_tensor(name, datatype, shape, array, model, check_size=True) -> OutputTensor:
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
