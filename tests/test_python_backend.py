"""The Python backend in-process: real instance processes, fake scheduled requests.

The requests here stand in for the scheduler's ``ScheduledRequest`` (they
record every ``respond``/``respond_error``), so these tests exercise the
process, the shared-memory transport and ``pb_utils`` without a server.
End-to-end behaviour through tritonclient is in ``test_python_backend_e2e.py``.
"""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from python_models import (ADD_SUB, AUTO_COMPLETE, F32x4, F32x4_OUT, FAULTY, IDENTITY,
                           INIT_RAISES, METRICS, REPEAT, python_model)
from triton_grpc_server.backends.base import BackendContext
from triton_grpc_server.errors import TritonError
from triton_grpc_server.repository.config import complete_config, read_config
from triton_grpc_server.repository.layout import available_versions
from triton_grpc_server.repository.manager import model_files
from triton_grpc_server.stats import ModelStats, RequestTiming


class FakeRequest:
    def __init__(self, request_id="1", parameters=None):
        self.id = request_id
        self.parameters = parameters or {}
        self.cancelled = False
        self._callbacks = []

    def add_cancel_callback(self, fn):
        self._callbacks.append(fn)

    def cancel(self):
        self.cancelled = True
        for fn in self._callbacks:
            fn()


class FakeWork:
    """Records answers as (outputs-or-error, final)."""

    def __init__(self, inputs, output_names, request_id="1", parameters=None):
        self.request = FakeRequest(request_id)
        self.inputs = inputs
        self.output_names = list(output_names)
        self.parameters = parameters or {}
        self.batch = 0
        self.timing = RequestTiming()
        self.stats = ModelStats()
        self.answers = []
        self.executed = False
        self.finished = False
        self._final = threading.Event()

    def respond(self, outputs, *, final=True):
        self.answers.append((outputs, final))
        if final:
            self.finished = True
            self._final.set()

    def respond_error(self, error, *, final=True):
        self.answers.append((error, final))
        if final:
            self.finished = True
            self._final.set()

    def wait(self, timeout=20):
        assert self._final.wait(timeout), f"no final answer; got {self.answers}"
        return self.answers


def load(model_dir, version=1):
    config = read_config(model_dir)
    on_disk = available_versions(model_dir)
    config, cls = complete_config(config, model_dir.name, model_dir,
                                  lambda c: model_files(model_dir, c, on_disk), True)
    backend = cls(config, version, model_dir / str(version) / config.default_model_filename,
                  BackendContext(model_dir.name))
    instances = [backend.create_instance(i, "KIND_CPU", 0)
                 for i in range(sum(g.count for g in config.instance_group))]
    return config, backend, instances


@pytest.fixture
def loaded():
    opened = []

    def _load(model_dir):
        config, backend, instances = load(model_dir)
        opened.append((backend, instances))
        return config, backend, instances

    yield _load
    for backend, instances in opened:
        for instance in instances:
            instance.close()
        backend.unload()


def f32(*values):
    return np.array(values, dtype=np.float32)


def test_add_sub_and_initialize_args(tmp_path, loaded):
    _, _, (instance,) = loaded(python_model(tmp_path, "add_sub", ADD_SUB, F32x4, F32x4_OUT))
    work = FakeWork({"INPUT0": f32(1, 2, 3, 4), "INPUT1": f32(1, 1, 1, 1)}, ["OUTPUT0", "OUTPUT1"])
    instance.execute([work])
    ((outputs, final),) = work.wait()
    assert final
    np.testing.assert_array_equal(outputs["OUTPUT0"], f32(2, 3, 4, 5))
    np.testing.assert_array_equal(outputs["OUTPUT1"], f32(0, 1, 2, 3))


def test_only_requested_outputs_come_back(tmp_path, loaded):
    _, _, (instance,) = loaded(python_model(tmp_path, "add_sub", ADD_SUB, F32x4, F32x4_OUT))
    work = FakeWork({"INPUT0": f32(1, 2, 3, 4), "INPUT1": f32(1, 1, 1, 1)}, ["OUTPUT1"])
    instance.execute([work])
    ((outputs, _),) = work.wait()
    assert list(outputs) == ["OUTPUT1"]


def test_batch_of_requests_each_answered(tmp_path, loaded):
    _, _, (instance,) = loaded(python_model(tmp_path, "add_sub", ADD_SUB, F32x4, F32x4_OUT))
    works = [FakeWork({"INPUT0": f32(i, i, i, i), "INPUT1": f32(1, 2, 3, 4)}, ["OUTPUT0"], str(i))
             for i in range(5)]
    instance.execute(works)
    for i, work in enumerate(works):
        ((outputs, _),) = work.wait()
        np.testing.assert_array_equal(outputs["OUTPUT0"], f32(i + 1, i + 2, i + 3, i + 4))


def test_bytes_and_large_tensors_cross_shared_memory(tmp_path, loaded):
    _, _, (instance,) = loaded(python_model(
        tmp_path, "ident", IDENTITY, [("INPUT0", "TYPE_STRING", [-1])], [("OUTPUT0", "TYPE_STRING", [-1])]))
    strings = np.array([b"he\x00llo", b"", b"\xff\xfe" * 1000] * 50, dtype=object)
    work = FakeWork({"INPUT0": strings}, ["OUTPUT0"])
    instance.execute([work])
    ((outputs, _),) = work.wait()
    assert outputs["OUTPUT0"].tolist() == strings.tolist()


def test_large_identity_is_not_copied_back(tmp_path, loaded):
    _, _, (instance,) = loaded(python_model(
        tmp_path, "ident", IDENTITY, [("INPUT0", "TYPE_UINT8", [-1])], [("OUTPUT0", "TYPE_UINT8", [-1])]))
    data = np.random.default_rng(0).integers(0, 255, 4 << 20, dtype=np.uint8)
    pool = None
    for _ in range(3):
        work = FakeWork({"INPUT0": data}, ["OUTPUT0"])
        instance.execute([work])
        ((outputs, _),) = work.wait()
        out = outputs["OUTPUT0"]
        np.testing.assert_array_equal(out, data)
        pool = instance.stub.transport.own
        # The output is a view of the very block the input was copied into.
        assert any(seg.address <= out.ctypes.data < seg.address + seg.size
                   for seg in pool.segments.values())
        del outputs, out, work
    time.sleep(0.1)
    # Blocks are reused after release, so the pool does not grow per request.
    assert sum(s.size for s in pool.segments.values()) < 3 * (4 << 20)


def test_decoupled_zero_one_and_many_responses(tmp_path, loaded):
    _, _, (instance,) = loaded(python_model(
        tmp_path, "repeat", REPEAT, [("IN", "TYPE_INT32", [-1])],
        [("OUT", "TYPE_INT32", [1]), ("IDX", "TYPE_UINT32", [1])],
        extra="model_transaction_policy { decoupled: true }\n"))
    for values in ([], [7], [4, 2, 0, 1]):
        work = FakeWork({"IN": np.array(values, np.int32)}, ["OUT", "IDX"])
        instance.execute([work])
        answers = work.wait()
        assert answers[-1] == (None, True)
        data = [a for a, _ in answers[:-1]]
        assert [int(d["OUT"][0]) for d in data] == values
        assert [int(d["IDX"][0]) for d in data] == list(range(len(values)))


def test_execute_raising_fails_its_requests_with_the_model_message(tmp_path, loaded):
    _, _, (instance,) = loaded(python_model(
        tmp_path, "faulty", FAULTY, [("MODE", "TYPE_INT32", [1])], [("OUT", "TYPE_INT64", [1])]))
    bad = FakeWork({"MODE": np.array([1], np.int32)}, ["OUT"])
    instance.execute([bad])
    ((error, _),) = bad.wait()
    assert isinstance(error, TritonError)
    assert "Failed to process the request(s) for model instance 'faulty_0'" in error.message
    assert "TritonModelException: execute failed on purpose" in error.message
    good = FakeWork({"MODE": np.array([0], np.int32)}, ["OUT"])
    instance.execute([good])
    ((outputs, _),) = good.wait()
    assert "OUT" in outputs


def test_error_response_keeps_its_code(tmp_path, loaded):
    _, _, (instance,) = loaded(python_model(
        tmp_path, "faulty", FAULTY, [("MODE", "TYPE_INT32", [1])], [("OUT", "TYPE_INT64", [1])]))
    work = FakeWork({"MODE": np.array([2], np.int32)}, ["OUT"])
    instance.execute([work])
    ((error, _),) = work.wait()
    assert error.message == "bad value" and error.status.name == "INVALID_ARG"


def test_crash_fails_the_request_and_the_process_restarts(tmp_path, loaded):
    _, _, (instance,) = loaded(python_model(
        tmp_path, "faulty", FAULTY, [("MODE", "TYPE_INT32", [1])], [("OUT", "TYPE_INT64", [1])]))
    first = FakeWork({"MODE": np.array([0], np.int32)}, ["OUT"])
    instance.execute([first])
    pid = int(first.wait()[0][0]["OUT"][0])
    crash = FakeWork({"MODE": np.array([3], np.int32)}, ["OUT"])
    instance.execute([crash])
    ((error, _),) = crash.wait()
    assert "Stub process 'faulty_0' is not healthy" in error.message
    assert "exited with code 3" in error.message
    after = FakeWork({"MODE": np.array([0], np.int32)}, ["OUT"])
    instance.execute([after])
    new_pid = int(after.wait()[0][0]["OUT"][0])
    assert new_pid != pid


def test_initialize_raising_fails_the_load_with_the_reason(tmp_path):
    with pytest.raises(TritonError) as info:
        load(python_model(tmp_path, "broken", INIT_RAISES, F32x4, F32x4_OUT))
    assert "TritonModelException: weights file missing" in info.value.message
    assert "initialize" in info.value.message


def test_auto_complete_fills_the_config(tmp_path, loaded):
    config, _, instances = loaded(python_model(tmp_path, "auto", AUTO_COMPLETE, config='backend: "python"\n'))
    assert config.max_batch_size == 4
    assert config.HasField("dynamic_batching")
    assert [t.name for t in config.input] == ["INPUT0", "INPUT1"]
    assert list(config.output[0].dims) == [4]
    assert len(instances) == 2  # Triton's default: two CPU instances


def test_custom_metrics_and_logger(tmp_path, loaded, caplog):
    from triton_grpc_server.backends.python_backend.custom_metrics import REGISTRY

    _, _, (instance,) = loaded(python_model(
        tmp_path, "metered", METRICS, [("INPUT0", "TYPE_FP32", [-1])], [("OUTPUT0", "TYPE_FP32", [-1])]))
    for size in (1, 3, 20):
        work = FakeWork({"INPUT0": np.zeros(size, np.float32)}, ["OUTPUT0"])
        instance.execute([work])
        work.wait()
    text = REGISTRY.render()
    assert "# TYPE requests_seen counter" in text
    assert 'requests_seen{model="metered",version="1"} 3.0' in text
    assert 'request_elements_bucket{le="4.0",model="metered"} 2' in text
    assert 'request_elements_count{model="metered"} 1' not in text
    assert 'request_elements_count{model="metered"} 3' in text
    instance.close()
    assert "requests_seen" not in REGISTRY.render()


def test_model_config_autocomplete_checks():
    from triton_grpc_server.pb_stub import pb_utils

    config = pb_utils.ModelConfig(json.dumps({"name": "m", "max_batch_size": 8,
                                              "input": [{"name": "A", "data_type": "TYPE_FP32",
                                                         "dims": [2]}]}))
    with pytest.raises(ValueError, match="configuration specified max_batch_size 8"):
        config.set_max_batch_size(4)
    with pytest.raises(ValueError, match="configuration expects datatype TYPE_FP32"):
        config.add_input({"name": "A", "data_type": "TYPE_INT32", "dims": [2]})
    with pytest.raises(ValueError, match="the model expects dims"):
        config.add_input({"name": "A", "data_type": "TYPE_FP32", "dims": [3]})
    config.set_model_transaction_policy({"decoupled": True})
    with pytest.raises(ValueError, match="trying to change decoupled property"):
        config.set_model_transaction_policy({"decoupled": False})


def test_transport_blocks_are_freed_and_merged():
    from triton_grpc_server.pb_stub.transport import SharedPool

    pool = SharedPool("test", segment_bytes=1 << 16)
    blocks = [pool.alloc(1000) for _ in range(10)]
    for segment, offset in blocks:
        pool.release(segment.id, offset)
    (segment,) = pool.segments.values()
    assert segment.free == [(0, segment.size)] and not segment.used
    pool.close()


CRASH_ON_RESTART = '''
import os
import triton_python_backend_utils as pb_utils

MARK = os.path.join(os.path.dirname(__file__), "started")


class TritonPythonModel:
    def initialize(self, args):
        if os.path.exists(MARK):  # every start after the first dies in initialize
            os._exit(4)
        open(MARK, "w").close()

    def execute(self, requests):
        os._exit(3)
'''


def test_restart_that_dies_in_initialize_gives_up(tmp_path, loaded):
    _, backend, (instance,) = loaded(python_model(
        tmp_path, "dies", CRASH_ON_RESTART, [("MODE", "TYPE_INT32", [1])], [("OUT", "TYPE_INT64", [1])]))
    first = FakeWork({"MODE": np.array([0], np.int32)}, ["OUT"])
    instance.execute([first])
    assert "exited with code 3" in first.wait()[0][0].message
    second = FakeWork({"MODE": np.array([0], np.int32)}, ["OUT"])
    instance.execute([second])
    ((error, _),) = second.wait()
    assert error.status.name == "UNAVAILABLE"
    assert "restarting it failed" in error.message and "during initialize" in error.message


WAITS_FOR_CANCEL = '''
import threading
import time
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            threading.Thread(target=self.wait, args=(request,), daemon=True).start()

    def wait(self, request):
        sender = request.get_response_sender()
        while not (request.is_cancelled() and sender.is_cancelled()):
            time.sleep(0.01)
        sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(
            "saw the cancellation", pb_utils.TritonError.CANCELLED)),
            flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
'''


def test_model_sees_its_request_cancelled(tmp_path, loaded):
    _, _, (instance,) = loaded(python_model(
        tmp_path, "cancellable", WAITS_FOR_CANCEL, [("IN", "TYPE_INT32", [1])],
        [("OUT", "TYPE_INT32", [1])], extra="model_transaction_policy { decoupled: true }\n"))
    work = FakeWork({"IN": np.array([1], np.int32)}, ["OUT"])
    instance.execute([work])
    time.sleep(0.2)
    assert not work.answers
    work.request.cancel()
    ((error, final),) = work.wait()
    assert final and error.message == "saw the cancellation" and error.status.name == "CANCELLED"


def test_bls_request_takes_a_bytes_model_name():
    """Triton's bls example passes ``MODEL_NAME.as_numpy()[0]`` (bytes) as the model name."""
    from triton_grpc_server.pb_stub import pb_utils as stub_utils

    request = stub_utils.InferenceRequest(model_name=b"add_sub", inputs=[],
                                          requested_output_names=[])
    assert request.model_name == "add_sub"
