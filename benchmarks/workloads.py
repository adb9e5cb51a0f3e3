"""The benchmark's models, requests and expected answers.

Everything is generated: the ONNX files (onnx helper API) and ``config.pbtxt``
go into a temporary Triton repository, the request of each workload is encoded
once into a gRPC frame (5-byte prefix + ModelInferRequest), and the response a
"ceiling" server returns is precomputed from the same inputs.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from triton_grpc_server._proto import grpc_service_pb2 as pb

OPSET = 17
IR_VERSION = 8
PATH = "/inference.GRPCInferenceService/ModelInfer"


@dataclasses.dataclass(frozen=True)
class Model:
    name: str
    datatype: str
    inputs: dict            # name -> numpy array sent
    outputs: dict           # name -> numpy array expected

    @property
    def payload_bytes(self) -> int:
        """Tensor bytes one request carries (and, here, one response)."""
        return sum(a.nbytes for a in self.inputs.values())


@dataclasses.dataclass(frozen=True)
class Workload:
    model: Model
    concurrency: int
    #: "unary" (h2load when installed), "unary-aio" (the grpc.aio load generator, for a
    #: like-for-like comparison with streams) or "stream" (ModelStreamInfer, one request in
    #: flight per stream, grpc.aio load generator)
    mode: str = "unary"

    @property
    def label(self) -> str:
        kind = {"unary": "", "unary-aio": " aio-unary", "stream": " stream"}[self.mode]
        return f"{self.model.name}{kind} C={self.concurrency}"


def _save(graph, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=IR_VERSION, producer_name="triton_grpc_server.benchmarks")
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())


def _tensors(names, data_type: str, dims: str) -> str:
    return ", ".join(f'{{ name: "{n}" data_type: {data_type} dims: [ {dims} ] }}' for n in names)


def _add_sub(repo: Path) -> Model:
    """Triton's ``simple``: INT32 [-1,16] x2 -> sum, difference; max_batch_size 8."""
    shape = ["batch", 16]
    graph = helper.make_graph(
        [helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
         helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"])], "add_sub",
        [helper.make_tensor_value_info(n, TensorProto.INT32, shape) for n in ("INPUT0", "INPUT1")],
        [helper.make_tensor_value_info(n, TensorProto.INT32, shape) for n in ("OUTPUT0", "OUTPUT1")])
    _save(graph, repo / "add_sub" / "1" / "model.onnx")
    (repo / "add_sub" / "config.pbtxt").write_text(
        'name: "add_sub"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
        f"input [ {_tensors(('INPUT0', 'INPUT1'), 'TYPE_INT32', '16')} ]\n"
        f"output [ {_tensors(('OUTPUT0', 'OUTPUT1'), 'TYPE_INT32', '16')} ]\n")
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 3, dtype=np.int32)
    return Model("add_sub", "INT32", {"INPUT0": a, "INPUT1": b},
                 {"OUTPUT0": a + b, "OUTPUT1": a - b})


def _identity_4m(repo: Path) -> Model:
    """FP32 [1, 1048576] -> the same (4 MiB each way); no batching."""
    shape = [1, 1048576]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])], "identity_4m",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, shape)])
    _save(graph, repo / "identity_4m" / "1" / "model.onnx")
    (repo / "identity_4m" / "config.pbtxt").write_text(
        'name: "identity_4m"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 0\n'
        f"input [ {_tensors(('INPUT0',), 'TYPE_FP32', '1, 1048576')} ]\n"
        f"output [ {_tensors(('OUTPUT0',), 'TYPE_FP32', '1, 1048576')} ]\n")
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    return Model("identity_4m", "FP32", {"INPUT0": x}, {"OUTPUT0": x})


def write_repository(repo: Path) -> dict[str, Model]:
    repo.mkdir(parents=True, exist_ok=True)
    return {m.name: m for m in (_add_sub(repo), _identity_4m(repo))}


def request_message(model: Model) -> bytes:
    """The ModelInferRequest a Triton client sends (raw contents, outputs named)."""
    msg = pb.ModelInferRequest(model_name=model.name)
    for name, array in model.inputs.items():
        msg.inputs.add(name=name, datatype=model.datatype, shape=array.shape)
        msg.raw_input_contents.append(array.tobytes())
    for name in model.outputs:
        msg.outputs.add(name=name)
    return msg.SerializeToString()


def response_message(model: Model) -> bytes:
    """The ModelInferResponse our server gives for :func:`request_message`."""
    msg = pb.ModelInferResponse(model_name=model.name, model_version="1")
    for name, array in model.outputs.items():
        msg.outputs.add(name=name, datatype=model.datatype, shape=array.shape)
        msg.raw_output_contents.append(array.tobytes())
    return msg.SerializeToString()


def grpc_frame(message: bytes) -> bytes:
    """One uncompressed gRPC length-prefixed message."""
    return b"\x00" + len(message).to_bytes(4, "big") + message
