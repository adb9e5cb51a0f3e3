"""Python-backend test models: model.py sources and a helper that writes a repository entry.

Each model mirrors one behaviour of Triton's python_backend examples (add/sub,
identity, decoupled repeat, BLS, custom metrics, auto-complete) or a failure a
real model can have (raising, crashing, hanging).
"""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Optional

ADD_SUB = '''
import json
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.args = args
        config = json.loads(args["model_config"])
        out0 = pb_utils.get_output_config_by_name(config, "OUTPUT0")
        self.dtype = pb_utils.triton_string_to_numpy(out0["data_type"])

    def execute(self, requests):
        responses = []
        for request in requests:
            a = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            b = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("OUTPUT0", (a + b).astype(self.dtype)),
                pb_utils.Tensor("OUTPUT1", (a - b).astype(self.dtype))]))
        return responses
'''

IDENTITY = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse(
                    [pb_utils.Tensor("OUTPUT0", pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy())])
                for r in requests]
'''

# Like python_backend's decoupled repeat example: one response per element of IN,
# sent from a thread after execute returned, then the final flag alone.
REPEAT = '''
import threading
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        import json
        if not pb_utils.using_decoupled_model_transaction_policy(json.loads(args["model_config"])):
            raise pb_utils.TritonModelException("repeat needs the decoupled transaction policy")

    def execute(self, requests):
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            threading.Thread(target=self.respond, args=(request.get_response_sender(), values.copy()),
                             daemon=True).start()
        return None

    def respond(self, sender, values):
        for index, value in enumerate(values):
            sender.send(pb_utils.InferenceResponse([
                pb_utils.Tensor("OUT", np.array([value], np.int32)),
                pb_utils.Tensor("IDX", np.array([index], np.uint32))]))
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
'''

# Fails according to its input: 1 raises in execute, 2 answers with an error
# response, 3 kills its own process in the middle of the request, 4 hangs (6 s),
# 5 takes a second. Otherwise (and after 5) OUT is the process id.
FAULTY = '''
import os
import time
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            mode = int(pb_utils.get_input_tensor_by_name(request, "MODE").as_numpy().reshape(-1)[0])
            if mode == 1:
                raise pb_utils.TritonModelException("execute failed on purpose")
            if mode == 2:
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError("bad value", pb_utils.TritonError.INVALID_ARG)))
                continue
            if mode == 3:
                os._exit(3)
            if mode == 4:
                time.sleep(6)  # long against the queue timeout, short for teardown
            if mode == 5:
                time.sleep(1)
            responses.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor("OUT", np.array([os.getpid()], np.int64))]))
        return responses
'''

INIT_RAISES = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        raise pb_utils.TritonModelException("weights file missing")

    def execute(self, requests):
        return []
'''

AUTO_COMPLETE = '''
import json
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        for name in ("INPUT0", "INPUT1"):
            auto_complete_model_config.add_input({"name": name, "data_type": "TYPE_FP32", "dims": [4]})
        for name in ("OUTPUT0", "OUTPUT1"):
            auto_complete_model_config.add_output({"name": name, "data_type": "TYPE_FP32", "dims": [4]})
        auto_complete_model_config.set_max_batch_size(4)
        auto_complete_model_config.set_dynamic_batching()
        return auto_complete_model_config
''' + ADD_SUB.split("class TritonPythonModel:")[1]

METRICS = '''
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.family = pb_utils.MetricFamily(name="requests_seen", description="Requests seen",
                                            kind=pb_utils.MetricFamily.COUNTER)
        self.metric = self.family.Metric(labels={"model": args["model_name"], "version": args["model_version"]})
        self.sizes = pb_utils.MetricFamily(name="request_elements", description="Input sizes",
                                           kind=pb_utils.MetricFamily.HISTOGRAM
                                           ).Metric(labels={"model": args["model_name"]}, buckets=[1, 4, 16])

    def execute(self, requests):
        out = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            self.metric.increment(1)
            self.sizes.observe(data.size)
            pb_utils.Logger.log_info(f"seen {self.metric.value()}")
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", data)]))
        return out
'''

# BLS to the model named by the MODEL_NAME input (sync), or to two models at once (async).
BLS_SYNC = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            name = pb_utils.get_input_tensor_by_name(request, "MODEL_NAME").as_numpy()[0]
            bls = pb_utils.InferenceRequest(
                model_name=name,  # bytes, as in python_backend's BLS example
                requested_output_names=["OUTPUT0", "OUTPUT1"],
                inputs=[pb_utils.get_input_tensor_by_name(request, "INPUT0"),
                        pb_utils.get_input_tensor_by_name(request, "INPUT1")])
            answer = bls.exec()
            if answer.has_error():
                raise pb_utils.TritonModelException(answer.error().message())
            responses.append(pb_utils.InferenceResponse(answer.output_tensors()))
        return responses
'''

BLS_ASYNC = '''
import asyncio
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    async def execute(self, requests):
        responses = []
        for request in requests:
            inputs = [pb_utils.get_input_tensor_by_name(request, "INPUT0"),
                      pb_utils.get_input_tensor_by_name(request, "INPUT1")]
            calls = [pb_utils.InferenceRequest(model_name=name, inputs=inputs,
                                               requested_output_names=["OUTPUT0", "OUTPUT1"]).async_exec()
                     for name in ("add_sub_onnx", "add_sub_py")]
            first, second = await asyncio.gather(*calls)
            for answer in (first, second):
                if answer.has_error():
                    raise pb_utils.TritonModelException(answer.error().message())
            responses.append(pb_utils.InferenceResponse([
                pb_utils.get_output_tensor_by_name(first, "OUTPUT0"),
                pb_utils.get_output_tensor_by_name(second, "OUTPUT1")]))
        return responses
'''

# Sums every OUT of a decoupled repeat model's responses (decoupled BLS).
BLS_DECOUPLED = '''
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            bls = pb_utils.InferenceRequest(model_name="repeat", requested_output_names=["OUT"],
                                            inputs=[pb_utils.get_input_tensor_by_name(request, "IN")])
            total, count = 0, 0
            for answer in bls.exec(decoupled=True):
                if answer.has_error():
                    raise pb_utils.TritonModelException(answer.error().message())
                out = pb_utils.get_output_tensor_by_name(answer, "OUT")
                if out is not None:
                    total += int(out.as_numpy()[0])
                    count += 1
            responses.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor("SUM", np.array([total], np.int32)),
                 pb_utils.Tensor("COUNT", np.array([count], np.int32))]))
        return responses
'''


# OUT of each request: how many requests the execute call that ran it had.
BATCH_COUNT = '''
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        n = len(requests)
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
                    "OUT", np.full(pb_utils.get_input_tensor_by_name(r, "IN").as_numpy().shape, n, np.int32))])
                for r in requests]
'''


def tensor(name: str, data_type: str, dims) -> str:
    return f'{{ name: "{name}" data_type: {data_type} dims: [ {", ".join(map(str, dims))} ] }}'


def python_model(repo: Path, name: str, source: str, inputs=(), outputs=(), max_batch_size: int = 0,
                 count: int = 1, extra: str = "", config: Optional[str] = None) -> Path:
    """Write ``repo/name`` with ``1/model.py`` and (unless ``config == ""``) a config.pbtxt."""
    model_dir = Path(repo) / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "1" / "model.py").write_text(textwrap.dedent(source))
    if config is None:
        config = (f'name: "{name}"\nbackend: "python"\nmax_batch_size: {max_batch_size}\n'
                  + "".join(f"input [ {tensor(*t)} ]\n" for t in inputs)
                  + "".join(f"output [ {tensor(*t)} ]\n" for t in outputs)
                  + f"instance_group [ {{ count: {count} kind: KIND_CPU }} ]\n" + extra)
    if config != "":
        (model_dir / "config.pbtxt").write_text(config)
    return model_dir


F32x4 = [("INPUT0", "TYPE_FP32", [4]), ("INPUT1", "TYPE_FP32", [4])]
F32x4_OUT = [("OUTPUT0", "TYPE_FP32", [4]), ("OUTPUT1", "TYPE_FP32", [4])]
