"""ONNX models and helpers shared by the scheduling, statistics and metrics tests.

``add``: FP32 INPUT0 [-1, 4] -> OUTPUT0 = INPUT0 + 1.
``strings``: BYTES INPUT0 [-1, 1] -> OUTPUT0 (identity).
``slow``: FP32 INPUT0 [-1, 4], INT64 DELAY [-1, 1] -> OUTPUT0 = INPUT0 + 1, after a
Loop of max(DELAY) 256x256 MatMuls; :func:`delay_for` picks a DELAY that keeps an
instance busy for about the given number of seconds on this machine. Tests use it
to hold an instance while they queue other requests; no test asserts a duration.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]
WIDTH = 256
ONE_THREAD = 'parameters { key: "intra_op_thread_count" value { string_value: "1" } }\n'


def _save(graph, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=OPSET)
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def add_graph():
    one = numpy_helper.from_array(np.ones([1, 4], np.float32), "one")
    return helper.make_graph(
        [helper.make_node("Add", ["INPUT0", "one"], ["OUTPUT0"])], "add",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, [None, 4])], [one])


def strings_graph():
    return helper.make_graph(
        [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])], "strings",
        [helper.make_tensor_value_info("INPUT0", TensorProto.STRING, [None, 1])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.STRING, [None, 1])])


def slow_graph():
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(
        (rng.standard_normal([WIDTH, WIDTH]) / np.sqrt(WIDTH)).astype(np.float32), "W")
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("MatMul", ["v_in", "W"], ["mm"]),
         helper.make_node("Tanh", ["mm"], ["v_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1, WIDTH])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1, WIDTH])])
    inits = [weight,
             numpy_helper.from_array(np.ones([1, WIDTH], np.float32), "v0"),
             numpy_helper.from_array(np.array(True), "true"),
             numpy_helper.from_array(np.array([], np.int64), "scalar_shape"),
             numpy_helper.from_array(np.ones([1, 4], np.float32), "one"),
             numpy_helper.from_array(np.zeros([], np.float32), "zero")]
    nodes = [
        helper.make_node("ReduceMax", ["DELAY"], ["dmax"], keepdims=0),
        helper.make_node("Reshape", ["dmax", "scalar_shape"], ["trips"]),
        helper.make_node("Loop", ["trips", "true", "v0"], ["v_final"], body=body),
        helper.make_node("ReduceSum", ["v_final"], ["vsum"], keepdims=0),
        helper.make_node("Mul", ["vsum", "zero"], ["nothing"]),
        helper.make_node("Add", ["INPUT0", "one"], ["plus"]),
        helper.make_node("Add", ["plus", "nothing"], ["OUTPUT0"]),
    ]
    return helper.make_graph(
        nodes, "slow",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, [None, 4]),
         helper.make_tensor_value_info("DELAY", TensorProto.INT64, [None, 1])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, [None, 4])], inits)


GRAPHS = {"add": add_graph, "strings": strings_graph, "slow": slow_graph}
# Full I/O configs, so servers run with --disable-auto-complete-config can load them
# (auto-complete would add dynamic_batching to every model with max_batch_size > 1).
IO = {
    "add": 'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
           'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]\n',
    "strings": 'input [ { name: "INPUT0" data_type: TYPE_STRING dims: [ 1 ] } ]\n'
               'output [ { name: "OUTPUT0" data_type: TYPE_STRING dims: [ 1 ] } ]\n',
    "slow": 'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] },\n'
            '        { name: "DELAY" data_type: TYPE_INT64 dims: [ 1 ] } ]\n'
            'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]\n',
}
NO_AUTO_COMPLETE = "--disable-auto-complete-config"


def write_model(repo: Path, name: str, kind: str, config: str) -> None:
    """``repo/name/1/model.onnx`` from graph ``kind`` and ``config.pbtxt`` with ``config``
    (plus the graph's inputs and outputs unless ``config`` lists them)."""
    _save(GRAPHS[kind](), repo / name / "1" / "model.onnx")
    io = "" if "input [" in config else IO[kind]
    (repo / name / "config.pbtxt").write_text(
        f'name: "{name}"\nbackend: "onnxruntime"\n{ONE_THREAD}{io}{config}\n')


_seconds_per_trip = None
_calibrate_lock = threading.Lock()


def delay_for(seconds: float) -> int:
    """A DELAY value that keeps one single-threaded instance busy for about ``seconds``."""
    global _seconds_per_trip
    with _calibrate_lock:
        if _seconds_per_trip is None:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            model = helper.make_model(slow_graph(), opset_imports=OPSET)
            model.ir_version = 8
            session = ort.InferenceSession(model.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
            feed = {"INPUT0": np.zeros([1, 4], np.float32), "DELAY": np.array([[2000]])}
            session.run(None, feed)
            runs = []
            for _ in range(3):  # the fastest run: a loaded machine errs towards longer delays
                start = time.monotonic()
                session.run(None, feed)
                runs.append(time.monotonic() - start)
            _seconds_per_trip = min(runs) / 2000
    return max(1, int(seconds / _seconds_per_trip))


def slow_inputs(grpcclient, value: float, delay: int, batch: int = 1):
    data = np.full([batch, 4], value, np.float32)
    inputs = [grpcclient.InferInput("INPUT0", [batch, 4], "FP32"),
              grpcclient.InferInput("DELAY", [batch, 1], "INT64")]
    inputs[0].set_data_from_numpy(data)
    inputs[1].set_data_from_numpy(np.full([batch, 1], delay, np.int64))
    return inputs


def add_inputs(grpcclient, data: np.ndarray):
    tensor = grpcclient.InferInput("INPUT0", list(data.shape), "FP32")
    tensor.set_data_from_numpy(data)
    return [tensor]


class Completions:
    """Collects async_infer callbacks: ``order`` of tags, and results or errors by tag."""

    def __init__(self):
        self.lock = threading.Lock()
        self.order, self.results, self.errors, self.times = [], {}, {}, {}
        self.event = threading.Condition(self.lock)

    def callback(self, tag):
        def done(result, error):
            with self.lock:
                self.times[tag] = time.monotonic()
                self.order.append(tag)
                if error is not None:
                    self.errors[tag] = error
                else:
                    self.results[tag] = result
                self.event.notify_all()
        return done

    def wait(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        with self.lock:
            while len(self.order) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"only {len(self.order)} of {count} responses arrived")
                self.event.wait(left)


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not reached in time")


def model_stats(client, name: str):
    return client.get_inference_statistics(name).model_stats[0]
