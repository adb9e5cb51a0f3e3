"""Ensembles (``platform: "ensemble"``): a DAG of steps run through the data plane.

:func:`plan_ensemble` checks ``ensemble_scheduling`` as Triton does at load and
orders the steps. :class:`EnsembleScheduler` runs one ensemble request: each
step whose input tensors are all present becomes an ordinary inference
request to its model through ``DataPlane.enqueue`` (so it is validated,
scheduled, batched and counted like any other request) with a sender that
records the step's outputs and starts the steps they complete. A step's
fixed-size output array travels to the next step as the raw buffer of its
input, so the data plane's view of it is the producer's own memory: no copy
between steps. A decoupled step may answer any number of times; each answer
runs the steps downstream of it again, and a decoupled ensemble streams each
complete set of its outputs.

A step's error fails the ensemble request with Triton's text,
``in ensemble '<ensemble>', <the step's error>``; the step's message names its
model.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Optional

import numpy as np

from ..backends.base import Backend
from ..errors import InvalidArgument, TritonError, Unavailable
from ..stats import BACKEND, ModelStats
from ..tensors import serialize_bytes

log = logging.getLogger(__name__)
_now = time.monotonic_ns

ENSEMBLE_PLATFORM = "ensemble"


# -- planning (load time) -------------------------------------------------------------

class Step:
    __slots__ = ("index", "model_name", "model_version", "inputs", "outputs")

    def __init__(self, index: int, step):
        self.index = index
        self.model_name = step.model_name
        self.model_version = "" if step.model_version < 0 else str(step.model_version)
        self.inputs = dict(step.input_map)    # step input name -> ensemble tensor
        self.outputs = dict(step.output_map)  # step output name -> ensemble tensor


class EnsemblePlan:
    """The steps, which steps read each tensor, and the ensemble's inputs and outputs."""

    def __init__(self, config, steps: list[Step]):
        self.name = config.name
        self.steps = steps
        self.inputs = [t.name for t in config.input]
        self.outputs = [t.name for t in config.output]
        self.readers: dict[str, list[Step]] = {}
        for step in steps:
            for tensor in set(step.inputs.values()):
                self.readers.setdefault(tensor, []).append(step)

    def ready_steps(self, tensors, changed) -> list[Step]:
        """Steps that read a tensor in ``changed`` and now have all their inputs."""
        found, seen = [], set()
        for tensor in changed:
            for step in self.readers.get(tensor, ()):
                if step.index not in seen and all(t in tensors for t in step.inputs.values()):
                    seen.add(step.index)
                    found.append(step)
        return found


def plan_ensemble(config) -> EnsemblePlan:
    """Triton's ``ValidateEnsembleSchedulingConfig``, with its texts."""
    name = config.name
    if config.platform != ENSEMBLE_PLATFORM:
        raise InvalidArgument(f"ensemble scheduling cannot be set for model '{name}' whose "
                              f"platform is not {ENSEMBLE_PLATFORM}")
    if not config.HasField("ensemble_scheduling"):
        raise InvalidArgument(f"ensemble scheduling must be set for ensemble {name} whose "
                              f"platform is {ENSEMBLE_PLATFORM}")
    if config.instance_group:
        raise InvalidArgument(f"instance group should not be specified for ensemble '{name}'")
    if config.HasField("optimization"):
        raise InvalidArgument(f"optimization should not be specified for ensemble '{name}'")
    if config.model_warmup:
        raise InvalidArgument(f"model_warmup can not be specified for ensemble '{name}'")
    if not config.ensemble_scheduling.step:
        raise InvalidArgument(f"must specify 'step' for ensemble '{name}'")
    produced_by: dict[str, int] = {}
    steps = []
    for index, raw in enumerate(config.ensemble_scheduling.step):
        for field in ("model_name", "input_map", "output_map"):
            if not getattr(raw, field):
                raise InvalidArgument(
                    f"must specify '{field}' in step {index} of ensemble '{name}'")
        for tensor in raw.output_map.values():
            if tensor in produced_by:
                raise InvalidArgument(f"ensemble tensor '{tensor}' can appear in an output map "
                                      f"only once for ensemble '{name}' step {index}")
            produced_by[tensor] = index
        steps.append(Step(index, raw))
    consumed = {t for step in steps for t in step.inputs.values()}
    known = consumed | set(produced_by)
    for tensor in config.input:
        if tensor.name not in known:
            raise InvalidArgument(
                f"ensemble input '{tensor.name}' for ensemble {name}' is not used")
    # data flow: which tensors can be computed from the ensemble's inputs
    ready = {t.name for t in config.input}
    done: set[int] = set()
    progress = True
    while progress:
        progress = False
        for step in steps:
            if step.index not in done and all(t in ready for t in step.inputs.values()):
                done.add(step.index)
                ready.update(step.outputs.values())
                progress = True
    outputs = set()
    for tensor in config.output:
        if tensor.name not in known:
            raise InvalidArgument(
                f"ensemble output '{tensor.name}' for ensemble {name}' is not used")
        if tensor.name not in ready:
            message = f"output '{tensor.name}' for ensemble '{name}' is not written"
            source = _unconnected_source(tensor.name, steps, produced_by, ready)
            if source != tensor.name:
                message += (f": at least one of its depending tensors, '{source}', "
                            "is not connected")
            raise InvalidArgument(message)
        outputs.add(tensor.name)
    for tensor in sorted(known - outputs):
        if tensor not in ready or tensor not in consumed:
            raise InvalidArgument(f"ensemble tensor '{tensor}' is unused in ensemble '{name}'")
    return EnsemblePlan(config, steps)


def _unconnected_source(tensor: str, steps, produced_by, ready) -> str:
    """Follow not-ready inputs upstream to the first tensor nothing can produce."""
    seen = {tensor}
    current = tensor
    while current in produced_by:
        step = steps[produced_by[current]]
        missing = [t for t in step.inputs.values() if t not in ready and t not in seen]
        if not missing:
            break
        current = missing[0]
        seen.add(current)
    return current


def step_models(config) -> list[tuple[str, str]]:
    return [(s.model_name, "" if s.model_version < 0 else str(s.model_version))
            for s in config.ensemble_scheduling.step]


def check_dependencies(config, repository) -> None:
    """Triton's load-time rule: every step's model must have a loaded version."""
    if repository is None:
        return
    entries = repository.entries()
    for model, version in step_models(config):
        entry = entries.get(model)
        if entry is None or not any(v.ready for v in entry.versions.values()):
            message = (f"ensemble '{config.name}' depends on '{model}' which has no loaded "
                       "version.")
            if entry is not None and entry.reason:
                message = message[:-1] + f". Model '{model}' loading failed with error: {entry.reason}"
            raise Unavailable(message)
        if version and int(version) not in entry.versions or (
                version and not entry.versions[int(version)].ready):
            raise Unavailable(f"ensemble '{config.name}' depends on '{model}' whose required "
                              f"version {version} is not loaded.")


def is_ensemble_dir(model_dir: Path) -> bool:
    """Whether a model directory's config names the ensemble platform (cheap text check,
    used to load ensembles after the models they use)."""
    try:
        text = (Path(model_dir) / "config.pbtxt").read_text(errors="replace")
    except OSError:
        return False
    return "ensemble_scheduling" in text


# -- the backend entry: an ensemble has no model file and no instances -------------------

class EnsembleBackend(Backend):
    default_model_filename = ""

    def __init__(self, config, version: int, model_path: Path, context):
        super().__init__(config, version, model_path, context)
        plan_ensemble(config)
        check_dependencies(config, getattr(context, "repository", None))

    def create_instance(self, index: int, kind: str, device_id: int):
        raise InvalidArgument(
            f"instance group should not be specified for ensemble '{self.config.name}'")


# -- running one ensemble request --------------------------------------------------------

def _bytes_array(data, shape) -> np.ndarray:
    """Triton's BYTES layout (uint32 LE length + bytes per element) -> an object array."""
    view = memoryview(data).cast("B")
    count = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
    items, offset = [], 0
    for _ in range(count):
        size = int.from_bytes(view[offset:offset + 4], "little")
        offset += 4
        items.append(bytes(view[offset:offset + size]))
        offset += size
    array = np.empty(count, dtype=object)
    array[:] = items
    return array.reshape(shape)


class _Tensor:
    """An ensemble tensor: wire datatype, shape and data (a numpy array, or BYTES layout)."""

    __slots__ = ("datatype", "shape", "data")

    def __init__(self, datatype: str, shape, data):
        self.datatype, self.shape, self.data = datatype, list(shape), data

    def raw(self):
        """The buffer a step request carries for this tensor (no copy for fixed-size arrays)."""
        data = self.data
        if isinstance(data, np.ndarray):
            if data.dtype == object:
                return serialize_bytes(data)
            if not data.flags.c_contiguous:
                data = np.ascontiguousarray(data)
            # a raw buffer, not an array: the data plane reads arrays as typed contents
            return memoryview(data)
        return data

    def array(self) -> np.ndarray:
        data = self.data
        if isinstance(data, np.ndarray):
            return data.reshape(self.shape)
        return _bytes_array(data, self.shape)


class _StepSender:
    """The sender a step request answers through; feeds the run that issued it."""

    def __init__(self, run: "_EnsembleRun", step: Step, streaming: bool):
        self.run, self.step, self.streaming = run, step, streaming
        self.started = _now()

    def send(self, response, *, final: bool) -> None:
        self.run.step_answered(self, response, None, final)

    def send_error(self, error: BaseException, *, final: bool = True) -> None:
        self.run.step_answered(self, None, error, final)


class _EnsembleRun:
    def __init__(self, scheduler: "EnsembleScheduler", work):
        self.scheduler = scheduler
        self.work = work
        self.lock = threading.Lock()
        self.tensors: dict[str, _Tensor] = {}
        self.inflight = 0
        self.failed: Optional[TritonError] = None
        self.latest: Optional[dict] = None   # the last complete set of ensemble outputs
        self.sent = False
        self.step_ns = 0
        self.start_ns = _now()
        self.step_requests: list = []

    def cancel(self) -> None:
        """The client went away: cancel the step requests in flight (queued ones leave)."""
        with self.lock:
            launched = list(self.step_requests)
        for step_request in launched:
            step_request.cancel()

    def begin(self) -> None:
        plan = self.scheduler.plan
        watch = getattr(self.work.request, "add_cancel_callback", None)
        if watch is not None:
            watch(self.cancel)
        datatypes = self.scheduler.input_types
        for name, array in self.work.inputs.items():
            self.tensors[name] = _Tensor(datatypes[name], array.shape, array)
        with self.lock:
            ready = plan.ready_steps(self.tensors, list(self.tensors))
            self.inflight += len(ready)
            snapshot = dict(self.tensors)
        for step in ready:
            self.launch(step, snapshot)

    def launch(self, step: Step, tensors: dict) -> None:
        from .._ext.wire import InferInput, InferRequest, RequestedOutput

        scheduler = self.scheduler
        request = self.work.request
        inputs, raw = [], []
        for step_input, tensor_name in step.inputs.items():
            tensor = tensors[tensor_name]
            inputs.append(InferInput(step_input, tensor.datatype, tensor.shape))
            raw.append(tensor.raw())
        sender = _StepSender(self, step, scheduler.decoupled(step))
        step_request = InferRequest(
            model_name=step.model_name, model_version=step.model_version, id=request.id,
            parameters=dict(request.parameters or {}), inputs=inputs,
            outputs=[RequestedOutput(name) for name in step.outputs], raw_input_contents=raw)
        step_request.sender = sender
        with self.lock:
            self.step_requests.append(step_request)
        if getattr(request, "cancelled", False):
            step_request.cancel()
        dataplane = scheduler.dataplane()
        if dataplane is None:
            sender.send_error(Unavailable(f"ensemble '{scheduler.name}' has no data plane"))
            return
        dataplane.enqueue(step_request)

    def step_answered(self, sender: _StepSender, response, error, final: bool) -> None:
        plan = self.scheduler.plan
        ready, snapshot, stream = [], None, None
        with self.lock:
            if final:
                self.inflight -= 1
                self.step_ns += _now() - sender.started
            if error is not None and self.failed is None:
                message = getattr(error, "message", None) or str(error)
                self.failed = TritonError(f"in ensemble '{self.scheduler.name}', {message}",
                                          getattr(error, "status", None) or TritonError.status)
                self.failed.failure = getattr(error, "failure", BACKEND)
            if response is not None and self.failed is None:
                changed = []
                for output in response.outputs:
                    tensor_name = sender.step.outputs.get(output.name)
                    if tensor_name is not None:
                        self.tensors[tensor_name] = _Tensor(output.datatype, output.shape,
                                                            output.data)
                        changed.append(tensor_name)
                ready = plan.ready_steps(self.tensors, changed)
                self.inflight += len(ready)
                snapshot = dict(self.tensors)
                if any(t in plan.outputs for t in changed) and all(
                        t in self.tensors for t in plan.outputs):
                    self.latest = {t: self.tensors[t] for t in plan.outputs}
                    if self.scheduler.streams:
                        stream = self.latest
            finished = self.inflight == 0
        if stream is not None:
            self._stream(stream)
        for step in ready:
            self.launch(step, snapshot)
        if finished:
            self.finish()

    def _stream(self, outputs) -> None:
        self.sent = True
        self.work.respond({n: t.array() for n, t in outputs.items()}, final=False)

    def finish(self) -> None:
        scheduler, work = self.scheduler, self.work
        timing = work.timing
        if self.failed is not None:
            timing.failure = getattr(self.failed, "failure", BACKEND)
            work.respond_error(self.failed)
            return
        if scheduler.streams:
            work.respond(None, final=True)
            return
        if self.latest is None:
            error = InvalidArgument(
                f"in ensemble '{scheduler.name}', unexpected deadlock, at least one output is "
                "not set while no more ensemble steps can be made")
            work.respond_error(error)
            return
        # Triton reports an ensemble's compute time as its steps' (summed here end to end)
        timing.compute_infer_ns = self.step_ns
        scheduler.stats.executed(work.batch, 0, self.step_ns, 0)
        work.respond({n: t.array() for n, t in self.latest.items()})


class EnsembleScheduler:
    """``enqueue(work)`` starts the ensemble's DAG for one request; returns at once."""

    def __init__(self, config, stats: Optional[ModelStats] = None, context=None):
        from ..repository.config import wire_datatype

        self.name = config.name
        self.plan = plan_ensemble(config)
        self.stats = stats if stats is not None else ModelStats()
        self.context = context
        self.input_types = {t.name: wire_datatype(t) for t in config.input}
        self.streams = config.model_transaction_policy.decoupled
        self._decoupled: dict[tuple, bool] = {}

    def dataplane(self):
        return getattr(self.context, "dataplane", None)

    def decoupled(self, step: Step) -> bool:
        dataplane = self.dataplane()
        check = getattr(dataplane, "model_decoupled", None)
        return bool(check(step.model_name, step.model_version)) if check is not None else False

    def enqueue(self, work) -> None:
        run = _EnsembleRun(self, work)
        try:
            run.begin()
        except Exception as exc:  # never expected: answer rather than strand the client
            log.exception("ensemble '%s' failed to start", self.name)
            work.respond_error(exc if isinstance(exc, TritonError) else TritonError(str(exc)))

    def close(self) -> None:
        """Nothing to release: the steps' models own their instances."""
