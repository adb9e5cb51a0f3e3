"""The transport-free API: health, metadata, repository and inference.

Frontends (gRPC, HTTP) convert their wire format to and from the plain
values and the request/response objects of ``_ext.wire`` used here; all of
Triton's semantics live in this module and the modules it calls.

Inference is asynchronous: :meth:`DataPlane.enqueue` validates a request,
hands it to its model's scheduler and returns; the answer (or an error found
on the way) reaches the request's sender (``senders.py``).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Optional

from . import _version
from ._ext.wire import InferRequest, validate_raw_inputs
from .buffers import resolve_buffers
from .backends.base import BackendContext
from .errors import InvalidArgument, TritonError, Unsupported
from .repository import ModelRepository
from .repository.control import ModelControl
from .repository.config import wire_datatype
from .request_inputs import RequestValidator, backend_parameters
from .scheduler.base import ScheduledRequest
from .senders import BlockingSender, FutureSender
from .shared_memory import SharedMemoryManager
from .stats import RequestTiming, select_statistics
from .trace import TraceManager

log = logging.getLogger(__name__)

# What this server implements of Triton's protocol extensions (an honest list).
# Triton's order; the rest (sequence, shared memory, ...) come with their issues.
EXTENSIONS = ["classification", "model_repository", "model_repository(unload_dependents)",
              "model_configuration", "system_shared_memory", "binary_tensor_data", "parameters",
              "statistics", "trace", "logging"]


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
        BackendContext.dataplane = self  # backends' own requests (BLS) come back here
        self.shared_memory = SharedMemoryManager(
            allow_client_shm=getattr(settings, "allow_client_shm", False))
        self.trace = TraceManager.from_settings(settings)

    def close(self) -> None:
        """At shutdown: write the traces still buffered, unmap client regions."""
        self.trace.close()
        self.shared_memory.close()

    # -- health and metadata --------------------------------------------
    def server_live(self) -> bool:
        return self.live

    def server_ready(self) -> bool:
        if not self.accepting:
            return False
        strict = getattr(self.settings, "strict_readiness", True)
        return self.repository.all_ready() if strict else True

    def server_metadata(self) -> tuple[str, str, list[str]]:
        extensions = list(EXTENSIONS)
        if self.shared_memory.cuda_available():  # only where a region could be opened
            extensions.insert(extensions.index("system_shared_memory") + 1, "cuda_shared_memory")
        return getattr(self.settings, "server_id", "triton"), _version.TRITON_COMPAT_VERSION, \
            extensions

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

    def model_decoupled(self, name: str, version: str = "") -> bool:
        """Whether the model answers a request with any number of responses (false if unknown)."""
        try:
            return getattr(self.repository.get(name, version), "decoupled", False)
        except TritonError:
            return False

    def model_config(self, name: str, version: str = ""):
        return self.repository.get(name, version).config

    def repository_index(self, ready_only: bool = False):
        return self.repository.index(ready_only)

    def load_model(self, name: str, parameters: dict) -> None:
        """RepositoryModelLoad: ``parameters`` maps names to str/bytes/bool/int values."""
        self.control.load(name, parameters)

    def unload_model(self, name: str, parameters: dict) -> None:
        self.control.unload(name, parameters)

    def trace_setting(self, model_name: str, values: dict) -> dict:
        """TraceSetting: update with ``values`` ({key: [str]}; empty: just read), return all."""
        if model_name and not self.repository.is_ready(model_name, ""):
            raise InvalidArgument(f"Request for unknown model : {model_name}")
        return self.trace.update(model_name, values)

    # -- inference ------------------------------------------------------
    def enqueue(self, request) -> None:
        """Validate ``request``, resolve its model and schedule it; returns at once.

        Every answer, including errors found here (unknown model, bad input, a
        decoupled model on a unary call), goes to ``request.sender``.
        """
        sender = request.sender
        try:
            # Counted in flight: a reload or unload closes this version only after the
            # final answer (ScheduledRequest releases it).
            model = self.repository.acquire(request.model_name, request.model_version)
        except Exception as exc:
            sender.send_error(exc)
            return
        if model.decoupled and not sender.streaming:  # read from the config at load
            model.release()
            sender.send_error(Unsupported(
                "ModelInfer RPC doesn't support models with decoupled transaction policy"))
            return
        timing = RequestTiming()
        # Sampled requests only (trace_rate); one attribute read when tracing is off.
        trace = self.trace.start(model.name, model.version, request.id) if self.trace.active else None
        try:
            # Tensors in shared memory (buffers.py) and tracing (trace.py) wrap the sender:
            # outputs go into their regions and regions are released with the final answer.
            buffers = resolve_buffers(self.shared_memory, request)
            if buffers is not None:
                sender = request.sender = buffers.wrap(sender)
            if trace is not None:
                sender = request.sender = trace.wrap(sender, timing)
            parameters = backend_parameters(request)
            # The common case in Cython (all inputs raw, fixed-size, as configured); any
            # other request, and every error, goes through the Python validator.
            specs = getattr(model, "raw_input_specs", None)
            fast = (validate_raw_inputs(request, specs)
                    if specs is not None and buffers is None and type(request) is InferRequest
                    else None)
            if fast is not None:
                inputs, batch, output_names = fast
            else:
                validator = RequestValidator(request, model, buffers)
                output_names = validator.requested_outputs()
                inputs, batch = validator.arrays()
            if trace is not None:
                trace.record_inputs(inputs)
        except Exception as exc:
            model.stats.failed(timing)
            model.release()
            sender.send_error(exc)
            if trace is not None:
                trace.finish(timing)  # no-op when its sender already did
            return
        work = ScheduledRequest(request, model, inputs, output_names, parameters, batch, timing)
        try:
            model.scheduler.enqueue(work)
        except Exception as exc:  # a scheduler answers its own errors; this is a bug's net
            log.exception("scheduler of model '%s' raised", model.name)
            work.respond_error(exc)

    async def infer_async(self, request):
        """Unary inference for event-loop frontends: the one response, or raises its error.

        A cancelled await (client gone, deadline passed) cancels the request, so a
        queued request leaves its queue.
        """
        sender = FutureSender(asyncio.get_running_loop())
        request.sender = sender
        self.enqueue(request)
        try:
            return await sender.future
        except asyncio.CancelledError:
            request.cancel()
            raise

    def infer(self, request):
        """Blocking unary inference, for in-process callers without an event loop."""
        sender = BlockingSender()
        request.sender = sender
        self.enqueue(request)
        return sender.wait()

    def model_statistics(self, name: str = "", version: str = ""):
        """``(model, version, ModelStats snapshot)`` rows for the ModelStatistics RPC."""
        return select_statistics(self.repository, name, version)
