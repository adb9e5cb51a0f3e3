"""Triton's sequence batcher: stateful models served one sequence at a time per slot.

A request names its sequence with the ``sequence_id`` parameter (a non-zero
uint64 or a non-empty string) and marks the first and last requests with
``sequence_start`` / ``sequence_end``. The batcher keeps the requests of one
sequence in order and never runs two of them at once, fills the control
inputs the config asks for (START, END, READY, CORRID) and carries implicit
state (``sequence_batching.state``) from one request's output to the next
request's input.

Strategies, as in Triton:

* ``direct`` (the default): a sequence holds a batch slot of one instance from
  START to END. An execution takes the next request of every slot of that
  instance; slots without one are padded up to the highest busy slot with
  READY false, so a model sees each sequence at the same batch index.
* ``oldest``: up to ``max_candidate_sequences`` sequences are candidates; a
  free instance takes the oldest next request of up to ``max_batch_size``
  different candidates, waiting up to ``max_queue_delay_microseconds`` for a
  ``preferred_batch_size``. No padding.

Sequences that cannot get a slot (or candidacy) wait in a backlog, in order.
A sequence idle for ``max_sequence_idle_microseconds`` is released; a later
request of it without START is refused with Triton's error.

One scheduler thread forms batches; each instance has a worker thread that
runs them. Requests arrive through :meth:`SequenceBatcher.enqueue` (any object
with the :class:`~triton_grpc_server.scheduler.base` ``ScheduledRequest``
attributes) and are answered through their ``respond``/``respond_error``.
"""
from __future__ import annotations

import inspect
import logging
import queue as queue_module
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from .._proto import model_config_pb2 as mc
from ..errors import InvalidArgument, TritonError, Unavailable
from ..stats import BACKEND, REJECTED, ModelStats
from .base import backend_error

log = logging.getLogger(__name__)
_now = time.monotonic_ns

# Triton's SEQUENCE_IDLE_DEFAULT_MICROSECONDS
DEFAULT_IDLE_US = 1_000_000

_Control = mc.ModelSequenceBatching.Control
_CORRID_TYPES = {mc.TYPE_UINT64: np.uint64, mc.TYPE_INT64: np.int64, mc.TYPE_UINT32: np.uint32,
                 mc.TYPE_INT32: np.int32, mc.TYPE_STRING: np.object_}
_STATE_TYPES = {mc.TYPE_BOOL: np.bool_, mc.TYPE_UINT8: np.uint8, mc.TYPE_UINT16: np.uint16,
                mc.TYPE_UINT32: np.uint32, mc.TYPE_UINT64: np.uint64, mc.TYPE_INT8: np.int8,
                mc.TYPE_INT16: np.int16, mc.TYPE_INT32: np.int32, mc.TYPE_INT64: np.int64,
                mc.TYPE_FP16: np.float16, mc.TYPE_FP32: np.float32, mc.TYPE_FP64: np.float64,
                mc.TYPE_STRING: np.object_}
_WIRE_NAMES = {mc.TYPE_UINT64: "UINT64", mc.TYPE_INT64: "INT64", mc.TYPE_UINT32: "UINT32",
               mc.TYPE_INT32: "INT32", mc.TYPE_STRING: "BYTES"}


# -- config: defaults and validation (called by the repository at load) ----------------

def fill_sequence_defaults(config) -> None:
    """The defaults Triton writes into a normalized ``sequence_batching`` section."""
    batching = config.sequence_batching
    if batching.max_sequence_idle_microseconds == 0:
        batching.max_sequence_idle_microseconds = DEFAULT_IDLE_US
    if batching.HasField("oldest") and not batching.oldest.preferred_batch_size \
            and config.max_batch_size > 0:
        batching.oldest.preferred_batch_size.append(config.max_batch_size)


def _kind_name(kind: int) -> str:
    return _Control.Kind.Name(kind)


def validate_sequence_config(config) -> None:
    """Triton's load-time checks of ``sequence_batching``, with its texts."""
    name, batching = config.name, config.sequence_batching
    seen_names, seen_kinds = set(), set()
    for control_input in batching.control_input:
        if not control_input.name:
            raise InvalidArgument(f"sequence batching control tensor must have a name for {name}")
        if control_input.name in seen_names:
            raise InvalidArgument(f"sequence batching control tensor '{control_input.name}' is "
                                  f"specified for multiple control kinds for {name}")
        seen_names.add(control_input.name)
        for control in control_input.control:
            if control.kind in seen_kinds:
                raise InvalidArgument(f"sequence batching specifies multiple "
                                      f"{_kind_name(control.kind)} tensors for {name}")
            seen_kinds.add(control.kind)
            if control.kind == _Control.CONTROL_SEQUENCE_CORRID:
                if control.data_type not in _CORRID_TYPES:
                    raise InvalidArgument(
                        f"unexpected data type for control CONTROL_SEQUENCE_CORRID for {name}. "
                        "Allowed data types are TYPE_UINT64, TYPE_INT64, TYPE_UINT32, "
                        "TYPE_INT32 and TYPE_STRING")
                continue
            given = [field for field in ("int32_false_true", "fp32_false_true", "bool_false_true")
                     if len(getattr(control, field))]
            kind = _kind_name(control.kind)
            if not given:
                raise InvalidArgument(
                    "sequence batching must specify either 'int32_false_true', 'fp32_false_true' "
                    f"or 'bool_false_true' for {kind} for {name}")
            if len(given) > 1:
                raise InvalidArgument(
                    "sequence batching specifies more than one from 'int32_false_true', "
                    f"'fp32_false_true' and 'bool_false_true' for {kind} for {name}")
            if len(getattr(control, given[0])) != 2:
                raise InvalidArgument(f"sequence batching control '{given[0]}' must have exactly "
                                      f"2 entries for {kind} for {name}")
    if batching.HasField("oldest"):
        for size in batching.oldest.preferred_batch_size:
            if size <= 0:
                raise InvalidArgument(
                    f"sequence batching preferred batch size must be positive for {name}")
            if size > config.max_batch_size:
                raise InvalidArgument(
                    f"sequence batching preferred batch size must be <= max batch size for {name}")
    state_inputs = set()
    for state in batching.state:
        if state.input_name in state_inputs:
            raise InvalidArgument(
                f"State input name '{state.input_name}' specified more than once.")
        state_inputs.add(state.input_name)
        if len(state.initial_state) > 1:
            raise InvalidArgument(
                f"initial_state field for state input '{state.input_name}' must contain exactly "
                f"one or zero element. Found '{len(state.initial_state)}' elements.")
        for initial in state.initial_state:
            if initial.data_type != state.data_type:
                raise InvalidArgument(f"The data type used for 'initial_state' field of state "
                                      f"'{state.input_name}' does not match the state data type.")
            if not initial.name:
                raise InvalidArgument(f"Field 'name' must be set when using initial_state for "
                                      f"state input '{state.input_name}'.")
            if len(initial.dims) != len(state.dims):
                raise InvalidArgument(
                    "Number of dimensions in 'initial_state' doesn't match the size of 'state' "
                    f"dimensions for state input '{state.input_name}'. {len(initial.dims)} != "
                    f"{len(state.dims)}")
            for dim, state_dim in zip(initial.dims, state.dims):
                if dim < 0:
                    raise InvalidArgument(f"'initial_state' field for state input name "
                                          f"'{state.input_name}' contains variable dimensions.")
                if state_dim != -1 and dim != state_dim:
                    raise InvalidArgument(
                        f"'initial_state' dim for input name '{state.input_name}' doesn't match "
                        f"'state' dim description. {dim} != {state_dim}")
            if initial.WhichOneof("state_data") is None:
                raise InvalidArgument(f"initial_state setting expects state'{state.input_name}' "
                                      "to have state_data set")


# -- what the config asks the batcher to fill in --------------------------------------

class _Flag:
    """A boolean control (START, END or READY): tensor name, false and true values."""

    __slots__ = ("name", "dtype", "false", "true")

    def __init__(self, name: str, control):
        self.name = name
        for field, dtype in (("int32_false_true", np.int32), ("fp32_false_true", np.float32),
                             ("bool_false_true", np.bool_)):
            values = list(getattr(control, field))
            if values:
                self.dtype, (self.false, self.true) = dtype, values
                return
        raise InvalidArgument(f"sequence batching control '{name}' has no false/true values")

    def column(self, flags: Sequence[bool], batched: bool) -> np.ndarray:
        values = np.array([self.true if f else self.false for f in flags], dtype=self.dtype)
        return values.reshape(-1, 1) if batched else values


class _State:
    """One implicit state: the tensor fed in, the output read back, its initial value."""

    def __init__(self, state, model_dir: Optional[Path], model_name: str):
        self.input_name, self.output_name = state.input_name, state.output_name
        self.dtype = _STATE_TYPES[state.data_type]
        self.initial = self._initial(state, model_dir, model_name)

    def _initial(self, state, model_dir, model_name) -> np.ndarray:
        if not state.initial_state:
            if any(d < 0 for d in state.dims):
                # Triton starts such a state empty; zero elements along the variable dims
                dims = [0 if d < 0 else d for d in state.dims]
            else:
                dims = list(state.dims)
            return np.zeros(dims, dtype=self.dtype) if self.dtype is not np.object_ \
                else np.full(dims, b"", dtype=object)
        initial = state.initial_state[0]
        dims = list(initial.dims)
        if initial.WhichOneof("state_data") == "zero_data":
            if self.dtype is np.object_:
                return np.full(dims, b"", dtype=object)
            return np.zeros(dims, dtype=self.dtype)
        if model_dir is None:
            raise InvalidArgument(f"initial_state data_file of state '{self.input_name}' needs "
                                  f"the directory of model '{model_name}'")
        folder = (Path(model_dir) / "initial_state").resolve()
        path = (folder / initial.data_file).resolve()
        if folder not in path.parents:
            raise InvalidArgument(f"initial_state data_file '{initial.data_file}' of model "
                                  f"'{model_name}' is outside its initial_state folder")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidArgument(f"failed to read initial_state file {path}: {exc}") from None
        if self.dtype is np.object_:
            return np.array([data], dtype=object).reshape(dims or [1])
        size = int(np.prod(dims, dtype=np.int64)) * np.dtype(self.dtype).itemsize
        if size > len(data):
            raise InvalidArgument(
                f"initial_state setting expects {size} bytes, but the data provided from "
                f"{initial.data_file}only has {len(data)} bytes.")
        return np.frombuffer(data[:size], dtype=self.dtype).reshape(dims).copy()


class SequenceSettings:
    """The config's sequence_batching section, read once at load."""

    def __init__(self, config, model_dir: Optional[Path] = None):
        batching = config.sequence_batching
        self.name = config.name
        self.max_batch = config.max_batch_size
        self.batched = config.max_batch_size > 0
        self.start = self.end = self.ready = None
        self.corrid_name = None
        self.corrid_type = None
        for control_input in batching.control_input:
            for control in control_input.control:
                if control.kind == _Control.CONTROL_SEQUENCE_START:
                    self.start = _Flag(control_input.name, control)
                elif control.kind == _Control.CONTROL_SEQUENCE_END:
                    self.end = _Flag(control_input.name, control)
                elif control.kind == _Control.CONTROL_SEQUENCE_READY:
                    self.ready = _Flag(control_input.name, control)
                elif control.kind == _Control.CONTROL_SEQUENCE_CORRID:
                    self.corrid_name, self.corrid_type = control_input.name, control.data_type
        self.states = [_State(s, model_dir, config.name) for s in batching.state]
        self.idle_ns = (batching.max_sequence_idle_microseconds or DEFAULT_IDLE_US) * 1000
        self.oldest = batching.HasField("oldest")
        if self.oldest:
            oldest = batching.oldest
            self.max_candidates = max(1, oldest.max_candidate_sequences or 1)
            self.delay_ns = oldest.max_queue_delay_microseconds * 1000
            self.preferred = frozenset(s for s in oldest.preferred_batch_size if s > 0)
        else:
            self.max_candidates = 0
            self.delay_ns = 0
            self.preferred = frozenset()
        self.slots_per_instance = max(1, self.max_batch)

    def check_corrid(self, corrid, request_id: str) -> None:
        """Triton's check that the request's id type suits the CORRID control."""
        if self.corrid_name is None:
            return
        if isinstance(corrid, str):
            mismatch = self.corrid_type != mc.TYPE_STRING
            given = "BYTES"
        else:
            mismatch = self.corrid_type == mc.TYPE_STRING
            given = "UINT64"
        if mismatch:
            prefix = f"[request id: {request_id}] " if request_id else ""
            raise InvalidArgument(
                f"{prefix}sequence batching control '{self.corrid_name}' data-type is '{given}', "
                f"but model '{self.name}' expects '{_WIRE_NAMES[self.corrid_type]}'")

    def corrid_column(self, ids: Sequence[Any]) -> np.ndarray:
        if self.corrid_type == mc.TYPE_STRING:
            column = np.array([str(i).encode() if i != 0 else b"" for i in ids], dtype=object)
        else:
            dtype = _CORRID_TYPES[self.corrid_type]
            column = np.array([0 if isinstance(i, str) else i for i in ids],
                              dtype=np.uint64).astype(dtype)
        return column.reshape(-1, 1) if self.batched else column


# -- the batcher's own records ------------------------------------------------------------

class _Item:
    """One queued request of a sequence."""

    __slots__ = ("work", "corrid", "start", "end", "enqueue_ns")

    def __init__(self, work, corrid, start: bool, end: bool, now: int):
        self.work, self.corrid, self.start, self.end, self.enqueue_ns = work, corrid, start, end, now


class _Sequence:
    """A correlation id's requests and state, from START to END (or idle release)."""

    __slots__ = ("corrid", "pending", "busy", "state", "last_ns", "worker", "slot", "ended")

    def __init__(self, corrid, now: int):
        self.corrid = corrid
        self.pending: deque[_Item] = deque()
        self.busy = False          # one of its requests is executing
        self.state: dict[str, np.ndarray] = {}
        self.last_ns = now
        self.worker: Optional["_Worker"] = None   # direct: the instance holding its slot
        self.slot = -1
        self.ended = False         # END enqueued: the id may start a new sequence


class _Worker:
    """One instance, its slots (direct) and the thread that runs its batches."""

    def __init__(self, batcher: "SequenceBatcher", instance, index: int):
        self.instance = instance
        self.index = index
        self.slots: list[Optional[_Sequence]] = [None] * batcher.settings.slots_per_instance
        self.busy = False
        self.array_run = _array_runner(instance)
        self.jobs: "queue_module.SimpleQueue" = queue_module.SimpleQueue()
        self.thread = threading.Thread(target=self._run, args=(batcher,), daemon=True,
                                       name=f"sequence-{batcher.name}-{index}")
        self.thread.start()

    def _run(self, batcher: "SequenceBatcher") -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            batcher._execute(self, job)


def _array_runner(instance):
    """The instance's arrays-in, arrays-out call, or None for one that answers requests itself."""
    run = getattr(instance, "run", None)
    if run is not None:
        return run
    try:
        parameters = inspect.signature(instance.execute).parameters
    except (TypeError, ValueError):
        return None
    # execute(inputs, output_names, parameters) is the array call of instances written
    # before the request-level execute(requests).
    return instance.execute if len(parameters) >= 3 else None


class _RowRequest:
    """One row of a sequence batch handed to a backend that answers requests itself.

    Its inputs carry the control and state tensors; its answer updates the
    sequence's state and reaches the client with the requested outputs only.
    """

    def __init__(self, batcher, item: _Item, sequence: _Sequence, inputs, output_names):
        self._batcher, self._item, self._sequence = batcher, item, sequence
        work = item.work
        self.request = getattr(work, "request", None)
        self.inputs = inputs
        self.output_names = output_names
        self.parameters = work.parameters
        self.batch = work.batch
        self.timing = work.timing
        self.stats = batcher.stats
        self.executed = False   # set by a backend that records its own execution

    @property
    def cancelled(self) -> bool:
        return bool(getattr(self._item.work, "cancelled", False))

    def respond(self, outputs, *, final: bool = True) -> None:
        if outputs is not None:
            self._batcher._keep_state(self._sequence, outputs, 0, single=True)
            outputs = {n: outputs[n] for n in self._item.work.output_names if n in outputs}
        self._item.work.respond(outputs, final=final)

    def respond_error(self, exc, *, final: bool = True) -> None:
        self._item.work.respond_error(exc, final=final)


# -- the scheduler ----------------------------------------------------------------------

class SequenceBatcher:
    def __init__(self, config, instances: Sequence, stats: Optional[ModelStats] = None,
                 model_dir: Optional[Path] = None):
        self.name = config.name
        self.settings = SequenceSettings(config, model_dir)
        self.instances = list(instances)
        self.stats = stats if stats is not None else ModelStats()
        self._cond = threading.Condition(threading.Lock())
        self._sequences: dict[Any, _Sequence] = {}   # live correlation ids
        self._active: list[_Sequence] = []           # oldest: the candidates
        self._backlog: deque[_Sequence] = deque()     # waiting for a slot / candidacy
        self._idle_check_ns = 0
        self._closing = False
        self._stopped = False
        self._workers = [_Worker(self, instance, i) for i, instance in enumerate(self.instances)]
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"sequencer-{self.name}")
        self._thread.start()

    # -- arrival (any thread) ---------------------------------------------------------
    def enqueue(self, work) -> None:
        """Queue one request; it is answered through ``work.respond``/``respond_error``."""
        try:
            self._admit(work)
        except TritonError as exc:
            timing = getattr(work, "timing", None)
            if timing is not None and timing.failure is None:
                timing.failure = getattr(exc, "failure", REJECTED)
            work.respond_error(exc)

    def _admit(self, work) -> None:
        settings = self.settings
        request = work.request
        parameters = request.parameters
        corrid = parameters.get("sequence_id", 0)
        settings.check_corrid(corrid, request.id)
        if work.batch > 1:
            raise InvalidArgument(f"inference request to model '{self.name}' must specify "
                                  "batch-size 1 due to requirements of sequence batcher")
        if corrid == 0 or corrid == "":
            raise InvalidArgument(f"inference request to model '{self.name}' must specify a "
                                  "non-zero or non-empty correlation ID")
        start = bool(parameters.get("sequence_start", False))
        end = bool(parameters.get("sequence_end", False))
        now = _now()
        with self._cond:
            if self._closing and start:
                raise Unavailable("Server is stopping, scheduler for model has stopped "
                                  "accepting new inference requests")
            if self._stopped:
                raise Unavailable(f"model '{self.name}' is unloading")
            sequence = self._sequences.get(corrid)
            if sequence is None:
                if not start:
                    raise InvalidArgument(
                        f"inference request for sequence {corrid} to model '{self.name}' must "
                        "specify the START flag on the first request of the sequence")
                sequence = _Sequence(corrid, now)
                self._sequences[corrid] = sequence
                self._place(sequence)
            elif start:
                log.warning("sequence %s for model '%s' has a conflict. The previous sequence "
                            "did not end before this sequence start. Previous sequence will be "
                            "terminated early.", corrid, self.name)
            sequence.pending.append(_Item(work, corrid, start, end, now))
            sequence.last_ns = now
            if end:
                # a later START with this id begins a new sequence (a new slot)
                sequence.ended = True
                del self._sequences[corrid]
            self.stats.enqueued()
            self._cond.notify()

    def _place(self, sequence: _Sequence) -> None:
        """Under the lock: give a new sequence a slot (direct) or candidacy (oldest)."""
        if self.settings.oldest:
            if len(self._active) < self.settings.max_candidates:
                self._active.append(sequence)
            else:
                self._backlog.append(sequence)
            return
        for worker in self._workers:
            for index, holder in enumerate(worker.slots):
                if holder is None:
                    worker.slots[index] = sequence
                    sequence.worker, sequence.slot = worker, index
                    return
        self._backlog.append(sequence)

    def _release(self, sequence: _Sequence) -> None:
        """Under the lock: the sequence is over; its slot or candidacy goes to the backlog."""
        if self._sequences.get(sequence.corrid) is sequence:
            del self._sequences[sequence.corrid]
        if self.settings.oldest:
            if sequence in self._active:
                self._active.remove(sequence)
                if self._backlog:
                    self._active.append(self._backlog.popleft())
            elif sequence in self._backlog:
                self._backlog.remove(sequence)
            return
        worker = sequence.worker
        if worker is None:
            if sequence in self._backlog:
                self._backlog.remove(sequence)
            return
        worker.slots[sequence.slot] = None
        sequence.worker = None
        if self._backlog:
            waiting = self._backlog.popleft()
            worker.slots[sequence.slot] = waiting
            waiting.worker, waiting.slot = worker, sequence.slot

    # -- the scheduler thread -----------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                job = self._next()
                if job is None:
                    return
                worker, rows = job
                worker.jobs.put(rows)
        except BaseException:  # never expected; fail what is queued rather than hang callers
            log.exception("sequence batcher for model '%s' stopped", self.name)
            self._fail_all(TritonError(f"sequence batcher for model '{self.name}' stopped"))

    def _next(self):
        """Under the lock: wait for a batch to run; None once closed and drained."""
        cond = self._cond
        with cond:
            while True:
                now = _now()
                wake = self._reap_idle(now)
                if self._closing and not self._has_pending() and not any(
                        w.busy for w in self._workers):
                    self._stopped = True
                    return None
                for worker in self._workers:
                    if worker.busy:
                        continue
                    rows, ready_at = (self._form_oldest(now) if self.settings.oldest
                                      else self._form_direct(worker))
                    if rows:
                        worker.busy = True
                        for _, sequence in rows:
                            if sequence is not None:
                                sequence.busy = True
                        self.stats.dequeued(sum(1 for item, _ in rows if item is not None))
                        return worker, rows
                    if ready_at:
                        wake = min(wake, ready_at) if wake else ready_at
                    if self.settings.oldest:
                        break  # every free instance would see the same candidates
                cond.wait((wake - now) / 1e9 if wake else None)

    def _has_pending(self) -> bool:
        return any(s.pending for s in self._all_sequences())

    def _all_sequences(self):
        seen = set()
        pools = [self._active, self._backlog] + [w.slots for w in self._workers]
        for pool in pools:
            for sequence in pool:
                if sequence is not None and id(sequence) not in seen:
                    seen.add(id(sequence))
                    yield sequence

    def _form_direct(self, worker: _Worker):
        """Rows (item, sequence) for every slot of this instance up to its last ready one."""
        ready = [index for index, s in enumerate(worker.slots)
                 if s is not None and s.pending and not s.busy]
        if not ready:
            return None, 0
        rows = []
        last = ready[-1] if self.settings.batched else ready[0]
        for index in range(last + 1):
            sequence = worker.slots[index]
            if index in ready:
                rows.append((sequence.pending.popleft(), sequence))
            else:
                rows.append((None, None))  # padding: READY false
        if not self.settings.batched:
            rows = rows[-1:]
        return rows, 0

    def _form_oldest(self, now: int):
        """The oldest next requests of up to max_batch_size candidates, or when to look again."""
        settings = self.settings
        ready = [s for s in self._active if s.pending and not s.busy]
        if not ready:
            return None, 0
        ready.sort(key=lambda s: s.pending[0].enqueue_ns)
        limit = max(1, settings.max_batch)
        chosen = ready[:limit]
        count = len(chosen)
        if count < limit and settings.delay_ns and count not in settings.preferred:
            oldest = chosen[0].pending[0].enqueue_ns
            if now - oldest < settings.delay_ns and not self._closing:
                # more sequences may still send: a preferred size or the delay ends the wait
                return None, oldest + settings.delay_ns
        return [(s.pending.popleft(), s) for s in chosen], 0

    def _reap_idle(self, now: int) -> int:
        """Release sequences idle longer than allowed; return the next time to look (0: none)."""
        idle_ns = self.settings.idle_ns
        if now < self._idle_check_ns:
            return self._idle_check_ns
        next_check = 0
        for sequence in list(self._all_sequences()):
            # a sequence with work is not idle; it cannot expire before now + idle
            expires = now + idle_ns if sequence.pending or sequence.busy \
                else sequence.last_ns + idle_ns
            if expires <= now:
                log.info("sequence %s of model '%s' idle for more than %d us: released",
                         sequence.corrid, self.name, idle_ns // 1000)
                self._release(sequence)
            elif not next_check or expires < next_check:
                next_check = expires
        self._idle_check_ns = next_check
        return next_check

    # -- the instance worker threads -----------------------------------------------------
    def _execute(self, worker: _Worker, rows: list) -> None:
        start_ns = _now()
        items = [(item, sequence) for item, sequence in rows if item is not None]
        try:
            for item, sequence in items:
                if item.start:
                    sequence.state.clear()
            if worker.array_run is not None:
                self._run_arrays(worker, rows, items, start_ns)
            else:
                self._run_requests(worker, items)
        except BaseException as exc:
            for item, _ in items:
                item.work.timing.failure = getattr(exc, "failure", BACKEND)
                item.work.respond_error(backend_error(exc))
        finally:
            now = _now()
            with self._cond:
                worker.busy = False
                for item, sequence in items:
                    sequence.busy = False
                    sequence.last_ns = now
                    if item.end:  # later requests with this id belong to a new sequence
                        self._release(sequence)
                self._cond.notify()

    def _batch_inputs(self, rows: list, items: list) -> tuple[dict, list]:
        settings = self.settings
        batched = settings.batched
        first = items[0][0].work
        inputs = {}
        for name, array in first.inputs.items():
            if len(rows) == 1:
                inputs[name] = array
                continue
            pad = None
            parts = []
            for item, _ in rows:
                if item is None:
                    if pad is None:
                        pad = (np.full(array.shape, b"", dtype=object) if array.dtype == object
                               else np.zeros_like(array))
                    parts.append(pad)
                else:
                    parts.append(item.work.inputs[name])
            inputs[name] = np.concatenate(parts)
        flags = [(item is not None and item.start, item is not None and item.end, item is not None)
                 for item, _ in rows]
        if settings.start is not None:
            inputs[settings.start.name] = settings.start.column([f[0] for f in flags], batched)
        if settings.end is not None:
            inputs[settings.end.name] = settings.end.column([f[1] for f in flags], batched)
        if settings.ready is not None:
            inputs[settings.ready.name] = settings.ready.column([f[2] for f in flags], batched)
        if settings.corrid_name is not None:
            inputs[settings.corrid_name] = settings.corrid_column(
                [item.corrid if item is not None else 0 for item, _ in rows])
        for state in settings.states:
            parts = []
            for item, sequence in rows:
                value = sequence.state.get(state.input_name) if sequence is not None else None
                if value is None:
                    value = state.initial[None] if batched else state.initial
                parts.append(value)
            inputs[state.input_name] = parts[0] if len(parts) == 1 else np.concatenate(parts)
        names = list(dict.fromkeys(n for item, _ in items for n in item.work.output_names))
        names += [s.output_name for s in settings.states if s.output_name not in names]
        return inputs, names

    def _run_arrays(self, worker: _Worker, rows: list, items: list, start_ns: int) -> None:
        inputs, output_names = self._batch_inputs(rows, items)
        gathered = _now()
        outputs = worker.array_run(inputs, output_names, items[0][0].work.parameters)
        executed = _now()
        batched = self.settings.batched
        answers = []
        for index, (item, sequence) in enumerate(rows):
            if item is None:
                continue
            if len(rows) == 1 or not batched:
                mine = outputs
            else:
                mine = {n: v[index:index + 1] for n, v in outputs.items()}
            self._keep_state(sequence, mine, 0, single=True)
            answers.append((item, {n: mine[n] for n in item.work.output_names if n in mine}))
        end_ns = _now()
        self.stats.executed(len(items), gathered - start_ns, executed - gathered, end_ns - executed)
        for item, answer in answers:
            timing = item.work.timing
            timing.queue_ns = start_ns - item.enqueue_ns
            timing.compute_input_ns = gathered - start_ns
            timing.compute_infer_ns = executed - gathered
            timing.compute_output_ns = end_ns - executed
            item.work.respond(answer)

    def _run_requests(self, worker: _Worker, items: list) -> None:
        requests = []
        for item, sequence in items:
            inputs, names = self._batch_inputs([(item, sequence)], [(item, sequence)])
            requests.append(_RowRequest(self, item, sequence, inputs, names))
        start = _now()
        worker.instance.execute(requests)
        if not requests[0].executed:  # the backend did not record the execution itself
            self.stats.executed(len(items), 0, _now() - start, 0)

    def _keep_state(self, sequence: _Sequence, outputs: Mapping[str, Any], index: int,
                    single: bool) -> None:
        for state in self.settings.states:
            value = outputs.get(state.output_name)
            if value is None:
                continue
            value = np.asarray(value)
            if not single:
                value = value[index:index + 1]
            sequence.state[state.input_name] = value

    # -- shutdown ---------------------------------------------------------------------------
    def _fail_all(self, error: TritonError) -> None:
        with self._cond:
            self._stopped = True
            stranded = [item for s in self._all_sequences() for item in s.pending]
            for sequence in self._all_sequences():
                sequence.pending.clear()
        for item in stranded:
            item.work.respond_error(TritonError(error.message, error.status))

    def close(self, timeout: float = 30.0) -> None:
        """Finish what is queued, stop the threads and close the instances."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._fail_all(Unavailable(f"model '{self.name}' is unloading"))
        for worker in self._workers:
            worker.jobs.put(None)
        for worker in self._workers:
            worker.thread.join(timeout)
        for instance in self.instances:
            instance.close()
