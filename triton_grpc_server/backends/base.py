"""The interface every backend implements.

A backend is loaded once per model version (:class:`Backend`) and runs work
on one or more instances (:class:`BackendInstance`), one per
``instance_group`` entry count. The scheduler owns the instances and gives
each batch to a free one, on that instance's worker thread; instances of one
model run concurrently, but one instance never runs two batches at once.

Triton's shape: ``execute(requests)`` gets the batch's
:class:`~triton_grpc_server.scheduler.base.ScheduledRequest` objects and
answers each through ``request.respond(outputs)`` / ``respond_error(exc)``
(a decoupled model any number of times, the last with ``final=True``).
:class:`ArrayBackendInstance` does that for the common case, arrays in and
arrays out: it batches the requests' inputs, calls :meth:`~ArrayBackendInstance.run`
once and splits the outputs.

Inputs are numpy arrays: zero-copy, read-only views of the request bytes for
fixed-size types, object arrays of ``bytes`` for BYTES. Outputs are numpy
arrays (or any buffer-protocol object with a ``shape``); BYTES outputs as
object arrays of ``bytes``/``str``.
"""
from __future__ import annotations

import abc
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ..buffers import output_destinations
from ..errors import TritonError

_now = time.monotonic_ns


class Backend(abc.ABC):
    #: ``default_model_filename`` when the config sets none.
    default_model_filename: str = ""

    @classmethod
    def auto_complete_config(cls, config, model_path: Path) -> None:
        """Fill what ``config`` (a ``ModelConfig`` message) leaves out from the model file.

        Called before :meth:`__init__` unless auto-complete is disabled. Must not
        contradict what the config states; raise ``TritonError`` if the model
        and the config disagree.
        """

    @classmethod
    def gpu_by_default(cls) -> bool:
        """True when instances without an explicit kind should go on the GPU: a GPU is
        usable here and this backend can run on it (Triton's KIND_AUTO rule)."""
        return False

    def __init__(self, config, version: int, model_path: Path, context: "BackendContext"):
        """Load the model file of one version (``model_path``)."""
        self.config = config
        self.version = version
        self.model_path = model_path
        self.context = context

    @abc.abstractmethod
    def create_instance(self, index: int, kind: str, device_id: int) -> "BackendInstance":
        """Create instance ``index`` of ``kind`` ("KIND_CPU", "KIND_GPU") on ``device_id``."""

    def unload(self) -> None:
        """Release what the model holds beyond its instances."""


class BackendInstance(abc.ABC):
    name: str = ""
    #: True for an instance whose ``execute`` computes on the calling thread without
    #: waiting on anything else (ONNX Runtime on CPU): the instance pool may then run
    #: it on the thread that enqueues (the event loop) while its executions stay short,
    #: saving two thread hand-offs per request (``scheduler/instance_pool.py``).
    may_run_inline: bool = False

    @abc.abstractmethod
    def execute(self, requests: Sequence[Any]) -> None:
        """Answer every request through ``request.respond`` / ``respond_error``.

        Runs on the instance's worker thread. A decoupled model may respond any
        number of times per request, from any thread, the last with ``final=True``.
        """

    def close(self) -> None:
        """Release the instance's sessions, streams and buffers."""


class ArrayBackendInstance(BackendInstance):
    """Arrays in, arrays out: implement :meth:`run` for one (already batched) execution."""

    @abc.abstractmethod
    def run(self, inputs: Mapping[str, Any], output_names: Sequence[str],
            parameters: Mapping[str, Any]) -> Mapping[str, Any]:
        """Run one (possibly batched) execution and return the named outputs."""

    #: Optional ``run_into(inputs, output_names, parameters, destinations)``: :meth:`run`
    #: with output memory supplied (name -> writable uint8 array, e.g. a shared-memory
    #: window, see ``buffers.output_destinations``) that the backend may write into.
    run_into = None

    def execute(self, requests: Sequence[Any]) -> None:
        # The scheduler package imports this module, so its helpers come in at first use.
        backend_error, record_execution = _scheduler_helpers()
        start = _now()
        try:
            inputs, output_names, parameters = gather(requests)
            gathered = _now()
            into = (self.run_into is not None and len(requests) == 1
                    and output_destinations(requests[0]))
            if into:
                outputs = self.run_into(inputs, output_names, parameters, into)
            else:
                outputs = self.run(inputs, output_names, parameters)
            executed = _now()
            split = scatter(requests, outputs, self.name)
            end = _now()
        except Exception as exc:
            for request in requests:
                request.respond_error(backend_error(exc))
            return
        record_execution(requests, gathered - start, executed - gathered, end - executed)
        for request, result in zip(requests, split):
            request.respond(result)


_SCHEDULER_HELPERS = None


def _scheduler_helpers():
    global _SCHEDULER_HELPERS
    if _SCHEDULER_HELPERS is None:
        from ..scheduler.base import backend_error, record_execution
        _SCHEDULER_HELPERS = backend_error, record_execution
    return _SCHEDULER_HELPERS


def gather(requests: Sequence[Any]):
    """The batch's inputs concatenated along dimension 0 (one copy per request; a
    batch of one goes through untouched), the union of the requested outputs and
    the parameters (equal across a batch)."""
    first = requests[0]
    if len(requests) == 1:
        return first.inputs, first.output_names, first.parameters
    inputs = {name: np.concatenate([r.inputs[name] for r in requests]) for name in first.inputs}
    output_names = list(dict.fromkeys(n for r in requests for n in r.output_names))
    return inputs, output_names, first.parameters


def scatter(requests: Sequence[Any], outputs: Mapping[str, Any], where: str = "") -> list:
    """Each request's rows of the batch outputs, as views."""
    if len(requests) == 1:
        return [outputs]
    total = sum(r.batch for r in requests)
    arrays = {}
    for name, value in outputs.items():
        array = value if isinstance(value, np.ndarray) else np.asarray(value)
        if array.ndim == 0 or array.shape[0] != total:
            raise TritonError(
                f"output '{name}' of model '{where}' has batch size "
                f"{array.shape[0] if array.ndim else 0}, expected {total}")
        arrays[name] = array
    split, offset = [], 0
    for request in requests:
        end = offset + request.batch
        split.append({n: arrays[n][offset:end] for n in request.output_names if n in arrays})
        offset = end
    return split


class BackendContext:
    """What the server hands a backend at load time.

    ``dataplane`` is the server's :class:`~triton_grpc_server.dataplane.DataPlane`
    (a backend's own requests to other models, e.g. BLS, go through it). The
    models loaded at start-up are created before it, so it is set on the class
    when the DataPlane is created (one server per process) and read at request
    time; it is ``None`` until then. A context may also be given its own.
    """

    dataplane: Any = None

    def __init__(self, model_name: str, settings: Optional[Any] = None, dataplane: Any = None):
        self.model_name = model_name
        self.settings = settings
        if dataplane is not None:
            self.dataplane = dataplane
