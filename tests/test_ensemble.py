"""Ensembles: Triton's config checks in-process, the DAG served for real over tritonclient.grpc.

Step models are tiny ONNX graphs on FP32 [4] (``inc``: +1, ``double``: x2,
``addpair``: A+B, ``narrow``: expects [3]), a Python-backend add/sub model, and
``repeat``, a decoupled test backend loaded into the server through a
sitecustomize plugin, which answers IN, IN+1, IN+2.
"""
from __future__ import annotations

import os
import queue
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from google.protobuf import text_format
from onnx import TensorProto, helper, numpy_helper

from triton_grpc_server._proto import model_config_pb2 as mc
from triton_grpc_server.errors import InvalidArgument
from triton_grpc_server.scheduler.ensemble import plan_ensemble

ROOT = Path(__file__).resolve().parent.parent


# -- Triton's ensemble_scheduling checks ------------------------------------------------

def ensemble_config(steps: str, inputs=("X",), outputs=("Y",), extra=""):
    tensor = 'data_type: TYPE_FP32 dims: [ 4 ]'
    text = (f'name: "e" platform: "ensemble" max_batch_size: 0 '
            + " ".join(f'input {{ name: "{n}" {tensor} }}' for n in inputs)
            + " ".join(f' output {{ name: "{n}" {tensor} }}' for n in outputs)
            + f" {extra} ensemble_scheduling {{ {steps} }}")
    return text_format.Parse(text, mc.ModelConfig())


def step(model, inputs, outputs):
    maps = " ".join(f'input_map {{ key: "{k}" value: "{v}" }}' for k, v in inputs.items())
    maps += " " + " ".join(f'output_map {{ key: "{k}" value: "{v}" }}' for k, v in outputs.items())
    return f'step {{ model_name: "{model}" model_version: -1 {maps} }}'


def test_plan_orders_a_diamond():
    plan = plan_ensemble(ensemble_config(
        step("inc", {"IN": "X"}, {"OUT": "t"}) + step("double", {"IN": "t"}, {"OUT": "u"})
        + step("inc", {"IN": "t"}, {"OUT": "v"})
        + step("addpair", {"A": "u", "B": "v"}, {"OUT": "Y"})))
    assert [s.model_name for s in plan.ready_steps({"X": 1}, ["X"])] == ["inc"]
    assert [s.index for s in plan.ready_steps({"X": 1, "t": 1}, ["t"])] == [1, 2]
    assert plan.ready_steps({"X": 1, "t": 1, "u": 1}, ["u"]) == []


@pytest.mark.parametrize("steps, message", [
    ("", "must specify 'step' for ensemble 'e'"),
    (step("m", {"IN": "X"}, {}), "must specify 'output_map' in step 0 of ensemble 'e'"),
    (step("a", {"IN": "X"}, {"OUT": "Y"}) + step("b", {"IN": "X"}, {"OUT": "Y"}),
     "ensemble tensor 'Y' can appear in an output map only once for ensemble 'e' step 1"),
    (step("a", {"IN": "Z"}, {"OUT": "Y"}),
     "ensemble input 'X' for ensemble e' is not used"),
    (step("a", {"IN": "X"}, {"OUT": "t"}) + step("b", {"IN": "q"}, {"OUT": "Y"}),
     "output 'Y' for ensemble 'e' is not written: at least one of its depending tensors, 'q', "
     "is not connected"),
    (step("a", {"IN": "X"}, {"OUT": "Y", "EXTRA": "spare"}),
     "ensemble tensor 'spare' is unused in ensemble 'e'"),
])
def test_plan_refuses_what_triton_refuses(steps, message):
    with pytest.raises(InvalidArgument) as caught:
        plan_ensemble(ensemble_config(steps))
    assert caught.value.message == message


def test_instance_group_is_refused():
    config = ensemble_config(step("a", {"IN": "X"}, {"OUT": "Y"}),
                             extra='instance_group { count: 1 }')
    with pytest.raises(InvalidArgument, match="instance group should not be specified for "
                                              "ensemble 'e'"):
        plan_ensemble(config)


# -- zero copy between steps (in-process, a fake data plane) -----------------------------

def test_step_outputs_reach_the_next_step_without_a_copy():
    from triton_grpc_server.scheduler.ensemble import EnsembleScheduler

    seen = []

    class FakeDataPlane:
        """Each step returns its input's own memory as output (an identity without a copy)."""

        def model_decoupled(self, name, version=""):
            return False

        def enqueue(self, request):
            (raw,) = request.raw_input_contents
            array = np.frombuffer(raw, np.float32).reshape(request.inputs[0].shape)
            seen.append(array)
            out = SimpleNamespace(name=request.outputs[0].name, datatype="FP32",
                                  shape=list(array.shape), data=array)
            request.sender.send(SimpleNamespace(outputs=[out]), final=True)

    config = ensemble_config(step("id1", {"IN": "X"}, {"OUT": "t"})
                             + step("id2", {"IN": "t"}, {"OUT": "Y"}))
    scheduler = EnsembleScheduler(config, context=SimpleNamespace(dataplane=FakeDataPlane()))
    data = np.arange(1 << 20, dtype=np.float32).reshape(4, -1)  # 4 MiB
    answers = []
    work = SimpleNamespace(
        request=SimpleNamespace(id="", parameters={}), inputs={"X": data}, batch=0,
        timing=SimpleNamespace(compute_infer_ns=0, failure=None),
        respond=lambda outputs, final=True: answers.append(outputs),
        respond_error=lambda exc, final=True: answers.append(exc))
    scheduler.enqueue(work)
    (outputs,) = answers
    assert len(seen) == 2
    # the client's buffer, step 1's input, step 2's input and the ensemble output: one memory
    for array in seen + [outputs["Y"]]:
        assert array.__array_interface__["data"][0] == data.__array_interface__["data"][0]
    assert (outputs["Y"] == data).all()


# -- served for real -----------------------------------------------------------------------

def _onnx(path: Path, nodes, inputs, outputs, inits=()):
    graph = helper.make_graph(nodes, path.parent.parent.name, inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def _fp32(name, dims=(4,)):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(dims))


def _config(name, inputs, outputs, dims=4, extra=""):
    tensors = " ".join(f'input {{ name: "{n}" data_type: TYPE_FP32 dims: [ {dims} ] }}'
                       for n in inputs)
    tensors += " " + " ".join(f'output {{ name: "{n}" data_type: TYPE_FP32 dims: [ {dims} ] }}'
                              for n in outputs)
    return f'name: "{name}" platform: "onnxruntime_onnx" max_batch_size: 0 {tensors} {extra}\n'


def _unary(repo, name, op, constant, dims=4):
    c = numpy_helper.from_array(np.full([dims], constant, np.float32), "c")
    _onnx(repo / name / "1" / "model.onnx", [helper.make_node(op, ["IN", "c"], ["OUT"])],
          [_fp32("IN", (dims,))], [_fp32("OUT", (dims,))], [c])
    (repo / name / "config.pbtxt").write_text(_config(name, ["IN"], ["OUT"], dims))


REPEAT_SOURCE = '''
"""Test-only decoupled backend: OUT = IN, IN + 1, IN + 2, then the final flag."""
from triton_grpc_server.backends.base import Backend, BackendInstance


class RepeatInstance(BackendInstance):
    def execute(self, requests):
        for request in requests:
            value = request.inputs["IN"]
            for k in range(3):
                request.respond({"OUT": value + k}, final=False)
            request.respond(None, final=True)


class RepeatBackend(Backend):
    default_model_filename = "model.repeat"

    def create_instance(self, index, kind, device_id):
        return RepeatInstance()
'''

SITECUSTOMIZE = '''
import sys
sys.path.insert(0, %r)
from triton_grpc_server import backends as _backends
_backends.register_backend("repeat", "repeat_backend:RepeatBackend")
'''


def _ensemble(repo, name, steps, inputs=("X",), outputs=("Y",), extra=""):
    (repo / name / "1").mkdir(parents=True)
    tensors = " ".join(f'input {{ name: "{n}" data_type: TYPE_FP32 dims: [ 4 ] }}' for n in inputs)
    tensors += " " + " ".join(f'output {{ name: "{n}" data_type: TYPE_FP32 dims: [ 4 ] }}'
                              for n in outputs)
    (repo / name / "config.pbtxt").write_text(
        f'name: "{name}" platform: "ensemble" max_batch_size: 0 {tensors} {extra} '
        f"ensemble_scheduling {{ {steps} }}\n")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from conftest import ServerHandle

    repo = tmp_path_factory.mktemp("ensemble_repo")
    plugin = tmp_path_factory.mktemp("ensemble_plugin")
    _unary(repo, "inc", "Add", 1)
    _unary(repo, "double", "Mul", 2)
    _unary(repo, "narrow", "Add", 0, dims=3)
    _onnx(repo / "addpair" / "1" / "model.onnx", [helper.make_node("Add", ["A", "B"], ["OUT"])],
          [_fp32("A"), _fp32("B")], [_fp32("OUT")])
    (repo / "addpair" / "config.pbtxt").write_text(_config("addpair", ["A", "B"], ["OUT"]))
    (repo / "repeat" / "1").mkdir(parents=True)
    (repo / "repeat" / "1" / "model.repeat").write_text("repeat\n")
    (repo / "repeat" / "config.pbtxt").write_text(
        _config("repeat", ["IN"], ["OUT"], extra="model_transaction_policy { decoupled: true }")
        .replace('platform: "onnxruntime_onnx"', 'backend: "repeat"'))
    (plugin / "repeat_backend.py").write_text(REPEAT_SOURCE)
    (plugin / "sitecustomize.py").write_text(SITECUSTOMIZE % str(plugin))

    from python_models import ADD_SUB, F32x4, F32x4_OUT, python_model

    python_model(repo, "py_add_sub", ADD_SUB, F32x4, F32x4_OUT)
    _ensemble(repo, "mixed", step("inc", {"IN": "X"}, {"OUT": "t"})
              + step("py_add_sub", {"INPUT0": "X", "INPUT1": "t"}, {"OUTPUT0": "Y"}))
    _ensemble(repo, "two_step", step("inc", {"IN": "X"}, {"OUT": "t"})
              + step("double", {"IN": "t"}, {"OUT": "Y"}))
    _ensemble(repo, "diamond", step("inc", {"IN": "X"}, {"OUT": "t"})
              + step("double", {"IN": "t"}, {"OUT": "u"}) + step("inc", {"IN": "t"}, {"OUT": "v"})
              + step("addpair", {"A": "u", "B": "v"}, {"OUT": "Y"}))
    _ensemble(repo, "failing", step("inc", {"IN": "X"}, {"OUT": "t"})
              + step("narrow", {"IN": "t"}, {"OUT": "Y"}))
    _ensemble(repo, "missing_step", step("nowhere", {"IN": "X"}, {"OUT": "Y"}))
    _ensemble(repo, "streaming", step("repeat", {"IN": "X"}, {"OUT": "t"})
              + step("double", {"IN": "t"}, {"OUT": "Y"}),
              extra="model_transaction_policy { decoupled: true }")
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(plugin), os.environ.get("PYTHONPATH"))
                                         if p)}
    handle = ServerHandle(repo, ["--allow-metrics", "false", "--exit-on-error", "false"], env=env)
    yield handle
    handle.stop()


@pytest.fixture
def client(server):
    with server.client() as c:
        yield c


X = np.array([1, 2, 3, 4], np.float32)


def run(client, model, x=X):
    import tritonclient.grpc as grpcclient

    tensor = grpcclient.InferInput("X", [4], "FP32")
    tensor.set_data_from_numpy(x)
    return client.infer(model, [tensor]).as_numpy("Y")


def test_two_steps(client):
    assert run(client, "two_step").tolist() == ((X + 1) * 2).tolist()


def test_onnx_and_python_backend_steps(client):
    assert run(client, "mixed").tolist() == (X + (X + 1)).tolist()


def test_diamond(client):
    assert run(client, "diamond").tolist() == (2 * (X + 1) + (X + 2)).tolist()


def test_failing_step_names_its_model(client):
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as caught:
        run(client, "failing")
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    message = caught.value.message()
    assert message.startswith("in ensemble 'failing', ") and "model 'narrow'" in message


def test_missing_step_model_is_unavailable_with_the_reason(client):
    rows = {m.name: m for m in client.get_model_repository_index().models}
    assert rows["missing_step"].state == "UNAVAILABLE"
    assert rows["missing_step"].reason == (
        "ensemble 'missing_step' depends on 'nowhere' which has no loaded version.")
    assert rows["two_step"].state == "READY"


def test_decoupled_step_streams_through(server):
    import tritonclient.grpc as grpcclient

    answers = queue.Queue()
    with server.client() as client:
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        tensor = grpcclient.InferInput("X", [4], "FP32")
        tensor.set_data_from_numpy(X)
        client.async_stream_infer("streaming", [tensor], enable_empty_final_response=True)
        got = []
        while True:
            result, error = answers.get(timeout=30)
            assert error is None, error
            if result.get_response().parameters["triton_final_response"].bool_param:
                break
            got.append(result.as_numpy("Y").tolist())
        client.stop_stream()
    assert sorted(got) == [((X + k) * 2).tolist() for k in range(3)]


def test_statistics_per_step(client):
    def successes(model):
        stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
        return int(stats["inference_stats"]["success"].get("count", 0))

    before = {m: successes(m) for m in ("two_step", "inc", "double")}
    for _ in range(3):
        run(client, "two_step")
    after = {m: successes(m) for m in ("two_step", "inc", "double")}
    assert {m: after[m] - before[m] for m in after} == {"two_step": 3, "inc": 3, "double": 3}
    ensemble = client.get_inference_statistics("two_step", as_json=True)["model_stats"][0]
    assert int(ensemble["inference_stats"]["compute_infer"]["ns"]) > 0


def test_concurrent_ensemble_requests(server):
    results, errors = [], []

    def worker(seed):
        with server.client() as client:
            for i in range(10):
                x = np.full(4, seed * 100 + i, np.float32)
                try:
                    results.append((run(client, "diamond", x) == 2 * (x + 1) + (x + 2)).all())
                except Exception as exc:  # reported below
                    errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors and len(results) == 40 and all(results)
