"""The sequence batcher in-process: gated fake instances, no server, no wall-clock gaps.

Each fake instance records the batches it runs (inputs as the model saw them,
control tensors included) and computes Triton's dyna-sequence arithmetic;
a gate holds an instance busy while the test queues more requests.
"""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from google.protobuf import text_format

from triton_grpc_server._proto import model_config_pb2 as mc
from triton_grpc_server.errors import InvalidArgument, Status
from triton_grpc_server.scheduler.sequence_batcher import (
    SequenceBatcher, fill_sequence_defaults, validate_sequence_config)
from triton_grpc_server.stats import ModelStats, RequestTiming

WAIT = 10.0


def flag(name, kind, values="int32_false_true: [ 0, 1 ]"):
    return f'{{ name: "{name}" control [ {{ kind: {kind} {values} }} ] }}'


def make_config(max_batch=4, strategy="", corrid="TYPE_UINT64", state="", idle_us=0,
                controls=("START", "END", "READY", "CORRID"), name="seq"):
    parts = []
    kinds = {"START": "CONTROL_SEQUENCE_START", "END": "CONTROL_SEQUENCE_END",
             "READY": "CONTROL_SEQUENCE_READY"}
    for control in controls:
        if control == "CORRID":
            parts.append(flag("CORRID", "CONTROL_SEQUENCE_CORRID", f"data_type: {corrid}"))
        else:
            parts.append(flag(control, kinds[control]))
    text = (f'name: "{name}" max_batch_size: {max_batch} '
            'input { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } '
            'output { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] } '
            f'sequence_batching {{ max_sequence_idle_microseconds: {idle_us} {strategy} '
            f'control_input [ {", ".join(parts)} ] {state} }}')
    config = text_format.Parse(text, mc.ModelConfig())
    fill_sequence_defaults(config)
    validate_sequence_config(config)
    return config


class FakeInstance:
    """OUTPUT = READY * (INPUT + START + END * CORRID) (+ STATE when the model has state)."""

    def __init__(self, gated=False):
        self.batches = []
        self.gate = threading.Semaphore(0) if gated else None
        self.started = threading.Semaphore(0)
        self.closed = False

    def run(self, inputs, output_names, parameters):
        self.batches.append({k: np.array(v) for k, v in inputs.items()})
        self.started.release()
        if self.gate is not None:
            assert self.gate.acquire(timeout=WAIT)
        value = inputs["INPUT"].astype(np.int64) + inputs.get("START", 0)
        if "STATE_IN" in inputs:
            value = value + inputs["STATE_IN"] * (1 - inputs["START"])
        if "CORRID" in inputs:
            corrid = inputs["CORRID"]
            if corrid.dtype == object:
                corrid = np.array([[int(c or b"0")] for c in corrid[:, 0]])
            value = value + inputs["END"] * corrid.astype(np.int64)
        out = (inputs["READY"] * value).astype(np.int32)
        outputs = {"OUTPUT": out}
        if "STATE_OUT" in output_names:
            outputs["STATE_OUT"] = out
        return outputs

    def close(self):
        self.closed = True


class Work:
    """What the data plane hands a scheduler, answered into an event."""

    def __init__(self, corrid, value, start=False, end=False, batch=1, rid=""):
        parameters = {}
        if corrid is not None:
            parameters["sequence_id"] = corrid
        if start:
            parameters["sequence_start"] = True
        if end:
            parameters["sequence_end"] = True
        self.request = SimpleNamespace(id=rid, parameters=parameters, cancelled=False)
        self.inputs = {"INPUT": np.full((batch, 1), value, np.int32)}
        self.output_names = ["OUTPUT"]
        self.parameters = {}
        self.batch = batch
        self.timing = RequestTiming()
        self.event = threading.Event()
        self.outputs = self.error = None

    def respond(self, outputs, *, final=True):
        self.outputs = outputs
        self.event.set()

    def respond_error(self, exc, *, final=True):
        self.error = exc
        self.event.set()

    def result(self):
        assert self.event.wait(WAIT), "no answer"
        if self.error is not None:
            raise self.error
        return int(self.outputs["OUTPUT"].reshape(-1)[0])


@pytest.fixture
def batchers():
    made = []

    def make(config, instances=None, stats=None, **kwargs):
        instances = instances if instances is not None else [FakeInstance()]
        batcher = SequenceBatcher(config, instances, stats, **kwargs)
        made.append(batcher)
        return batcher, instances

    yield make
    for batcher in made:
        batcher.close(timeout=5)


def send(batcher, *args, **kwargs):
    work = Work(*args, **kwargs)
    batcher.enqueue(work)
    return work


def wait_until(predicate):
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


# -- results and control tensors --------------------------------------------------------

def test_dyna_arithmetic_and_control_tensors(batchers):
    batcher, (instance,) = batchers(make_config())
    values = [0, 11, 7, 5, 3, 2, 0, 1]
    results = [send(batcher, 1000, v, start=i == 0, end=i == len(values) - 1).result()
               for i, v in enumerate(values)]
    assert results == [1, 11, 7, 5, 3, 2, 0, 1 + 1000]
    first, last = instance.batches[0], instance.batches[-1]
    assert first["START"].tolist() == [[1]] and first["END"].tolist() == [[0]]
    assert first["READY"].tolist() == [[1]] and first["READY"].dtype == np.int32
    assert first["CORRID"].dtype == np.uint64 and first["CORRID"].tolist() == [[1000]]
    assert last["END"].tolist() == [[1]] and last["START"].tolist() == [[0]]


def test_interleaved_sequences_keep_their_own_order(batchers):
    batcher, _ = batchers(make_config())
    a = [send(batcher, 1, 10, start=True)]
    b = [send(batcher, 2, 20, start=True)]
    for i in range(5):
        a.append(send(batcher, 1, i, end=i == 4))
        b.append(send(batcher, 2, -i, end=i == 4))
    assert [w.result() for w in a] == [11, 0, 1, 2, 3, 4 + 1]
    assert [w.result() for w in b] == [21, 0, -1, -2, -3, -4 + 2]


def test_uint64_ids_beyond_int64(batchers):
    batcher, (instance,) = batchers(make_config())
    big = 2**64 - 2
    send(batcher, big, 1, start=True).result()
    assert instance.batches[0]["CORRID"].tolist() == [[big]]


def test_string_ids_fill_a_string_corrid(batchers):
    batcher, (instance,) = batchers(make_config(corrid="TYPE_STRING"))
    assert send(batcher, "1002", 20, start=True).result() == 21
    assert send(batcher, "1002", 5, end=True).result() == 5 + 1002
    assert instance.batches[0]["CORRID"].dtype == object
    assert instance.batches[0]["CORRID"].tolist() == [[b"1002"]]


def test_bool_and_fp32_controls(batchers):
    text = ('name: "flags" max_batch_size: 2 input { name: "INPUT" data_type: TYPE_INT32 dims: [1] } '
            'output { name: "OUTPUT" data_type: TYPE_INT32 dims: [1] } sequence_batching { '
            'control_input [ { name: "START" control [ { kind: CONTROL_SEQUENCE_START '
            'fp32_false_true: [ 0, 1 ] } ] }, { name: "READY" control [ { kind: '
            'CONTROL_SEQUENCE_READY bool_false_true: [ false, true ] } ] } ] }')
    config = text_format.Parse(text, mc.ModelConfig())
    validate_sequence_config(config)
    batcher, (instance,) = batchers(config)
    send(batcher, 7, 3, start=True).result()
    assert instance.batches[0]["START"].dtype == np.float32
    assert instance.batches[0]["READY"].dtype == np.bool_


# -- strategies -------------------------------------------------------------------------

def test_direct_pads_idle_slots_with_ready_false(batchers):
    instance = FakeInstance(gated=True)
    batcher, _ = batchers(make_config(max_batch=4), [instance])
    a = send(batcher, 1, 1, start=True)   # slot 0
    assert instance.started.acquire(timeout=WAIT)
    b = send(batcher, 2, 2, start=True)   # slot 1, queued while slot 0 runs
    instance.gate.release()
    assert a.result() == 2
    instance.gate.release()
    assert b.result() == 3
    second = instance.batches[1]
    assert second["READY"].tolist() == [[0], [1]]  # slot 0 has nothing: padding
    assert second["INPUT"][1].tolist() == [2]


def test_direct_backlog_waits_for_a_free_slot(batchers):
    batcher, (instance,) = batchers(make_config(max_batch=1))
    send(batcher, 1, 5, start=True).result()
    b = send(batcher, 2, 7, start=True)       # the only slot is taken: backlog
    assert not b.event.wait(0.05)
    assert send(batcher, 1, 1, end=True).result() == 2
    assert b.result() == 8                     # slot freed by END


def test_oldest_takes_one_request_per_sequence_in_order(batchers):
    instance = FakeInstance(gated=True)
    config = make_config(max_batch=4, strategy="oldest { max_candidate_sequences: 4 }")
    batcher, _ = batchers(config, [instance])
    hold = send(batcher, 9, 0, start=True)
    assert instance.started.acquire(timeout=WAIT)
    a = [send(batcher, 1, 10, start=True), send(batcher, 1, 1), send(batcher, 1, 2)]
    b = [send(batcher, 2, 20, start=True)]
    for _ in range(4):
        instance.gate.release()
    assert [w.result() for w in a] == [11, 1, 2] and b[0].result() == 21 and hold.result() == 1
    sizes = [len(batch["INPUT"]) for batch in instance.batches]
    assert sizes == [1, 2, 1, 1]                 # (9), (1: 10, 2: 20), (1: 1), (1: 2)
    assert instance.batches[1]["CORRID"].tolist() == [[1], [2]]
    assert instance.batches[1]["READY"].tolist() == [[1], [1]]


def test_oldest_candidates_limit_puts_new_sequences_in_backlog(batchers):
    config = make_config(max_batch=2, strategy="oldest { max_candidate_sequences: 1 }")
    batcher, _ = batchers(config)
    assert send(batcher, 1, 1, start=True).result() == 2
    late = send(batcher, 2, 1, start=True)
    assert not late.event.wait(0.05)             # not a candidate until sequence 1 ends
    send(batcher, 1, 0, end=True).result()
    assert late.result() == 2


def test_instances_run_sequences_concurrently(batchers):
    gated = [FakeInstance(gated=True), FakeInstance(gated=True)]
    batcher, _ = batchers(make_config(max_batch=1), gated)
    a = send(batcher, 1, 1, start=True)
    b = send(batcher, 2, 2, start=True)
    assert gated[0].started.acquire(timeout=WAIT) and gated[1].started.acquire(timeout=WAIT)
    gated[0].gate.release()
    gated[1].gate.release()
    assert (a.result(), b.result()) == (2, 3)


# -- implicit state ------------------------------------------------------------------

STATE = 'state [ { input_name: "STATE_IN" output_name: "STATE_OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]'


def test_implicit_state_carries_and_resets_on_start(batchers):
    batcher, (instance,) = batchers(make_config(state=STATE, controls=("START", "READY")))
    assert [send(batcher, 5, v, start=i == 0).result() for i, v in enumerate([3, 4, 5])] == \
        [4, 8, 13]  # 3+START, then running sum
    assert instance.batches[0]["STATE_IN"].tolist() == [[0]]   # zero initial state
    assert instance.batches[2]["STATE_IN"].tolist() == [[8]]
    assert send(batcher, 5, 10, start=True).result() == 11      # a new START resets the sum


def test_state_is_per_sequence_in_one_batch(batchers):
    instance = FakeInstance(gated=True)
    config = make_config(state=STATE, controls=("START", "READY"),
                         strategy="oldest { max_candidate_sequences: 8 }")
    batcher, _ = batchers(config, [instance])
    first = [send(batcher, 1, 100, start=True)]
    assert instance.started.acquire(timeout=WAIT)
    first.append(send(batcher, 2, 200, start=True))
    for _ in range(3):
        instance.gate.release()
    assert [w.result() for w in first] == [101, 201]
    x, y = send(batcher, 1, 1), send(batcher, 2, 2)
    assert (x.result(), y.result()) == (102, 203)


def test_initial_state_from_file(batchers, tmp_path):
    (tmp_path / "initial_state").mkdir()
    (tmp_path / "initial_state" / "start.bin").write_bytes(np.array([40], np.int32).tobytes())
    state = ('state [ { input_name: "STATE_IN" output_name: "STATE_OUT" data_type: TYPE_INT32 '
             'dims: [ 1 ] initial_state { name: "from_file" data_type: TYPE_INT32 dims: [ 1 ] '
             'data_file: "start.bin" } } ]')
    config = make_config(state=state, controls=("START", "READY"))
    batcher, (instance,) = batchers(config, model_dir=tmp_path)
    send(batcher, 3, 2, start=True).result()
    assert instance.batches[0]["STATE_IN"].tolist() == [[40]]


def test_initial_state_file_outside_its_folder_is_refused(tmp_path):
    state = ('state [ { input_name: "S" output_name: "T" data_type: TYPE_INT32 dims: [ 1 ] '
             'initial_state { name: "x" data_type: TYPE_INT32 dims: [ 1 ] '
             'data_file: "../../etc/passwd" } } ]')
    with pytest.raises(InvalidArgument, match="outside its initial_state folder"):
        SequenceBatcher(make_config(state=state), [FakeInstance()], model_dir=tmp_path)


# -- errors, with Triton's codes and texts ----------------------------------------------

def test_missing_start(batchers):
    batcher, _ = batchers(make_config())
    with pytest.raises(InvalidArgument) as caught:
        send(batcher, 77, 1).result()
    assert caught.value.message == ("inference request for sequence 77 to model 'seq' must "
                                    "specify the START flag on the first request of the sequence")


@pytest.mark.parametrize("corrid", [None, 0, ""])
def test_missing_correlation_id(batchers, corrid):
    batcher, _ = batchers(make_config(controls=("START", "READY")))
    with pytest.raises(InvalidArgument) as caught:
        send(batcher, corrid, 1, start=True).result()
    assert caught.value.status == Status.INVALID_ARG
    assert caught.value.message == ("inference request to model 'seq' must specify a non-zero "
                                    "or non-empty correlation ID")


def test_batch_size_above_one(batchers):
    batcher, _ = batchers(make_config())
    with pytest.raises(InvalidArgument, match="must specify batch-size 1 due to requirements of "
                                              "sequence batcher"):
        send(batcher, 1, 1, start=True, batch=2).result()


def test_id_type_must_suit_corrid(batchers):
    batcher, _ = batchers(make_config())
    with pytest.raises(InvalidArgument) as caught:
        send(batcher, "abc", 1, start=True, rid="r1").result()
    assert caught.value.message == ("[request id: r1] sequence batching control 'CORRID' "
                                    "data-type is 'BYTES', but model 'seq' expects 'UINT64'")
    batcher, _ = batchers(make_config(corrid="TYPE_STRING"))
    with pytest.raises(InvalidArgument, match="data-type is 'UINT64', but model 'seq' expects 'BYTES'"):
        send(batcher, 5, 1, start=True).result()


def test_second_start_continues_in_the_same_slot(batchers):
    batcher, _ = batchers(make_config(state=STATE, controls=("START", "READY")))
    send(batcher, 4, 1, start=True).result()
    assert send(batcher, 4, 1, start=True).result() == 2   # restarted, not refused
    assert send(batcher, 4, 1).result() == 3


def test_request_after_end_needs_a_new_start(batchers):
    batcher, _ = batchers(make_config())
    send(batcher, 8, 1, start=True, end=True).result()
    with pytest.raises(InvalidArgument, match="must specify the START flag"):
        send(batcher, 8, 1).result()


def test_idle_sequence_is_released(batchers):
    batcher, _ = batchers(make_config(max_batch=1, idle_us=20_000))
    send(batcher, 3, 1, start=True).result()
    wait_until(lambda: not batcher._sequences)
    with pytest.raises(InvalidArgument, match="sequence 3 to model 'seq' must specify the START"):
        send(batcher, 3, 1).result()
    assert send(batcher, 4, 1, start=True).result() == 2    # its slot was freed


# -- statistics, config checks, shutdown -------------------------------------------

def test_statistics(batchers):
    stats = ModelStats()
    batcher, _ = batchers(make_config(), stats=stats)
    for i in range(3):
        send(batcher, 1, i, start=i == 0, end=i == 2).result()
    assert stats.execution_count == 3 and stats.inference_count == 3 and stats.pending == 0


@pytest.mark.parametrize("text, message", [
    ('control_input [ { name: "C" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_FP32 } ] } ]',
     "unexpected data type for control CONTROL_SEQUENCE_CORRID for m. Allowed data types are "
     "TYPE_UINT64, TYPE_INT64, TYPE_UINT32, TYPE_INT32 and TYPE_STRING"),
    ('control_input [ { name: "S" control [ { kind: CONTROL_SEQUENCE_START } ] } ]',
     "sequence batching must specify either 'int32_false_true', 'fp32_false_true' or "
     "'bool_false_true' for CONTROL_SEQUENCE_START for m"),
    ('control_input [ { name: "S" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 1 ] } ] } ]',
     "sequence batching control 'int32_false_true' must have exactly 2 entries for "
     "CONTROL_SEQUENCE_START for m"),
    ('oldest { preferred_batch_size: [ 9 ] }',
     "sequence batching preferred batch size must be <= max batch size for m"),
    ('state [ { input_name: "A" output_name: "B" data_type: TYPE_INT32 dims: [ 1 ] }, '
     '{ input_name: "A" output_name: "C" data_type: TYPE_INT32 dims: [ 1 ] } ]',
     "State input name 'A' specified more than once."),
])
def test_config_checks(text, message):
    config = text_format.Parse(f'name: "m" max_batch_size: 8 sequence_batching {{ {text} }}',
                               mc.ModelConfig())
    with pytest.raises(InvalidArgument) as caught:
        validate_sequence_config(config)
    assert caught.value.message == message


def test_config_defaults():
    config = text_format.Parse('name: "m" max_batch_size: 8 sequence_batching { oldest { } }',
                               mc.ModelConfig())
    fill_sequence_defaults(config)
    assert config.sequence_batching.max_sequence_idle_microseconds == 1_000_000
    assert list(config.sequence_batching.oldest.preferred_batch_size) == [8]


def test_close_finishes_queued_work_and_closes_instances():
    instance = FakeInstance(gated=True)
    batcher = SequenceBatcher(make_config(max_batch=1), [instance])
    a = send(batcher, 1, 1, start=True)
    assert instance.started.acquire(timeout=WAIT)
    b = send(batcher, 1, 2)
    closer = threading.Thread(target=batcher.close)
    closer.start()
    instance.gate.release()
    instance.gate.release()
    closer.join(WAIT)
    assert (a.result(), b.result()) == (2, 2) and instance.closed
    with pytest.raises(Exception, match="unloading|stopping"):
        send(batcher, 2, 1, start=True).result()


class RequestLevelInstance:
    """A backend that answers requests itself (as the Python backend does)."""

    def __init__(self):
        self.seen = []

    def execute(self, requests):
        for request in requests:
            inputs = request.inputs
            self.seen.append(sorted(inputs))
            total = inputs["INPUT"] + inputs["STATE_IN"] * (1 - inputs["START"])
            request.respond({"OUTPUT": total, "STATE_OUT": total})

    def close(self):
        pass


def test_request_level_backend_gets_controls_and_state(batchers):
    instance = RequestLevelInstance()
    batcher, _ = batchers(make_config(state=STATE, controls=("START", "READY")), [instance])
    a = send(batcher, 1, 5, start=True)
    assert a.result() == 5 and set(a.outputs) == {"OUTPUT"}   # state stays in the server
    assert send(batcher, 1, 6).result() == 11
    assert instance.seen[0] == ["INPUT", "READY", "START", "STATE_IN"]
