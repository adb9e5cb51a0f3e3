#!/usr/bin/env python
"""Sequence batching and ensemble overhead, each against its baseline in one run.

1. **Sequences.** ``C`` concurrent sequences of ``N`` requests each on
   ``simple_sequence`` with the *oldest* strategy (Triton's example graph;
   ``max_candidate_sequences`` = C), every answer checked exactly, against the
   unary ``simple`` model at the same concurrency (``C`` callers sending ``N``
   requests each). Target: sequences >= 0.7x the unary infer/s.
2. **Ensemble copies.** An ensemble of two ONNX identity steps over a 4 MiB FP32
   tensor against (a) the client calling the two step models one after the
   other and (b) one direct call of one identity step. The ensemble passes
   step 1's output to step 2 without a copy, so it should beat (a) (which
   moves the tensor over the wire twice more) and cost about one extra ORT
   identity run over (b).

The client is one ``grpc.aio`` process sending pre-encoded ModelInfer
messages, the same for every workload, so the ratios compare the server
paths. Prints infer/s, p50 latency and server CPU per inference for each
workload, the medians of ``--repeats`` interleaved runs, and the ratios.

    python benchmarks/sequence_bench.py [--sequences 64] [--length 100] [--repeats 3]
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PATH = "/inference.GRPCInferenceService/ModelInfer"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MIB4 = 1 << 20  # FP32 elements in 4 MiB


def _examples():
    spec = importlib.util.spec_from_file_location("_examples", ROOT / "examples" / "make_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_repo(root: Path, sequences: int) -> None:
    examples = _examples()
    examples.generate(root, ["simple", "simple_sequence"])
    oldest = root / "simple_sequence_oldest"
    examples.make_sequence_model(oldest / "1" / "model.onnx")
    config = (root / "simple_sequence" / "config.pbtxt").read_text()
    config = config.replace('name: "simple_sequence"', 'name: "simple_sequence_oldest"').replace(
        "sequence_batching {",
        f"sequence_batching {{\n  oldest {{ max_candidate_sequences: {sequences} }}")
    (oldest / "config.pbtxt").write_text(config)
    for name in ("identity_a", "identity_b"):
        examples.make_identity(root / name / "1" / "model.onnx", examples.TensorProto.FLOAT,
                               dims=[MIB4], batch_dim=None, input_name="IN", output_name="OUT")
        (root / name / "config.pbtxt").write_text(
            f'name: "{name}" platform: "onnxruntime_onnx" max_batch_size: 0\n'
            f'input [ {{ name: "IN" data_type: TYPE_FP32 dims: [ {MIB4} ] }} ]\n'
            f'output [ {{ name: "OUT" data_type: TYPE_FP32 dims: [ {MIB4} ] }} ]\n'
            'instance_group [ { count: 2 kind: KIND_CPU } ]\n')
    (root / "identity_pair" / "1").mkdir(parents=True)
    (root / "identity_pair" / "config.pbtxt").write_text(
        'name: "identity_pair" platform: "ensemble" max_batch_size: 0\n'
        f'input [ {{ name: "IN" data_type: TYPE_FP32 dims: [ {MIB4} ] }} ]\n'
        f'output [ {{ name: "OUT" data_type: TYPE_FP32 dims: [ {MIB4} ] }} ]\n'
        'ensemble_scheduling { step [\n'
        '  { model_name: "identity_a" model_version: -1\n'
        '    input_map { key: "IN" value: "IN" } output_map { key: "OUT" value: "mid" } },\n'
        '  { model_name: "identity_b" model_version: -1\n'
        '    input_map { key: "IN" value: "mid" } output_map { key: "OUT" value: "OUT" } } ] }\n')


# -- messages ---------------------------------------------------------------------------

def _pb():
    from tritonclient.grpc import service_pb2
    return service_pb2


def request(model: str, inputs: list[tuple[str, str, list, bytes]], outputs: list[str],
            sequence=None) -> bytes:
    pb = _pb()
    message = pb.ModelInferRequest(model_name=model)
    for name, datatype, shape, raw in inputs:
        message.inputs.add(name=name, datatype=datatype, shape=shape)
        message.raw_input_contents.append(raw)
    for name in outputs:
        message.outputs.add(name=name)
    if sequence is not None:
        sequence_id, start, end = sequence
        message.parameters["sequence_id"].int64_param = sequence_id
        message.parameters["sequence_start"].bool_param = start
        message.parameters["sequence_end"].bool_param = end
    return message.SerializeToString()


def first_output(raw: bytes, dtype=np.int32) -> np.ndarray:
    response = _pb().ModelInferResponse.FromString(raw)
    return np.frombuffer(response.raw_output_contents[0], dtype)


# -- server ---------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, repo: Path, log: Path):
        self.port = free_port()
        argv = [sys.executable, "-m", "triton_grpc_server", "--model-repository", str(repo),
                "--grpc-address", "127.0.0.1", "--grpc-port", str(self.port),
                "--allow-metrics", "false"]
        self.log = open(log, "wb")
        self.process = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                        cwd=str(ROOT))

    def wait_ready(self, timeout=120.0) -> None:
        import tritonclient.grpc as grpcclient

        deadline = time.monotonic() + timeout
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{self.port}")
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("server exited; see its log")
            try:
                if client.is_server_ready():
                    return
            except Exception:
                pass
            time.sleep(0.2)
        raise RuntimeError("server not ready")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()


# -- load -------------------------------------------------------------------------------

async def _callers(port: int, lanes: list[list[bytes]], check) -> tuple[float, list[float], int]:
    """One task per lane sends its messages in order, each after the previous answer."""
    import grpc

    async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 64 << 20),
                                          ("grpc.max_send_message_length", 64 << 20)]) as channel:
        call = channel.unary_unary(PATH)
        latencies: list[float] = []
        wrong = 0

        async def lane(index: int, messages: list[bytes]):
            nonlocal wrong
            for position, message in enumerate(messages):
                began = time.perf_counter()
                answer = await call(message)
                latencies.append(time.perf_counter() - began)
                if check is not None and not check(index, position, answer):
                    wrong += 1

        began = time.perf_counter()
        await asyncio.gather(*(lane(i, m) for i, m in enumerate(lanes)))
        return time.perf_counter() - began, latencies, wrong


def measure(server: Server, lanes, check=None) -> dict:
    cpu = server.cpu_seconds()
    seconds, latencies, wrong = asyncio.run(_callers(server.port, lanes, check))
    count = sum(len(m) for m in lanes)
    return {"rate": count / seconds, "p50_ms": 1e3 * statistics.median(latencies),
            "cpu_ms": 1e3 * (server.cpu_seconds() - cpu) / count, "wrong": wrong, "count": count}


def sequence_lanes(sequences: int, length: int):
    """Per sequence: values v_i; the model answers READY * (INPUT + START)."""
    lanes, expected = [], []
    for s in range(sequences):
        values = [(s * 7 + i * 3) % 50 - 25 for i in range(length)]
        lanes.append([request("simple_sequence_oldest",
                              [("INPUT", "INT32", [1, 1], np.int32(v).tobytes())], ["OUTPUT"],
                              (1000 + s, i == 0, i == length - 1))
                      for i, v in enumerate(values)])
        expected.append([v + (i == 0) for i, v in enumerate(values)])

    def check(lane, position, answer):
        return int(first_output(answer)[0]) == expected[lane][position]

    return lanes, check


def simple_lanes(sequences: int, length: int):
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.ones((1, 16), np.int32)
    message = request("simple", [("INPUT0", "INT32", [1, 16], a.tobytes()),
                                 ("INPUT1", "INT32", [1, 16], b.tobytes())], ["OUTPUT0", "OUTPUT1"])
    want = (a + b).reshape(-1)

    def check(lane, position, answer):
        return bool((first_output(answer) == want).all())

    return [[message] * length for _ in range(sequences)], check


def tensor_lanes(model: str, lanes: int, length: int, data: bytes):
    message = request(model, [("IN", "FP32", [MIB4], data)], ["OUT"])
    return [[message] * length for _ in range(lanes)]


async def _chain(port: int, lanes: int, length: int, data: bytes) -> tuple[float, int]:
    """The client runs the two steps itself: identity_a, then identity_b on its answer."""
    import grpc

    async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 64 << 20),
                                          ("grpc.max_send_message_length", 64 << 20)]) as channel:
        call = channel.unary_unary(PATH)
        first = request("identity_a", [("IN", "FP32", [MIB4], data)], ["OUT"])

        async def lane():
            for _ in range(length):
                answer = _pb().ModelInferResponse.FromString(await call(first))
                await call(request("identity_b", [("IN", "FP32", [MIB4],
                                                   answer.raw_output_contents[0])], ["OUT"]))

        began = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(lanes)))
        return time.perf_counter() - began, lanes * length


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequences", type=int, default=64)
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tensor-requests", type=int, default=20,
                        help="4 MiB requests per caller in the ensemble workloads")
    parser.add_argument("--tensor-callers", type=int, default=2)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="sequence_bench_"))
    write_repo(tmp / "repo", args.sequences)
    server = Server(tmp / "repo", tmp / "server.log")
    try:
        server.wait_ready()
        seq_lanes, seq_check = sequence_lanes(args.sequences, args.length)
        unary_lanes, unary_check = simple_lanes(args.sequences, args.length)
        data = np.random.default_rng(0).standard_normal(MIB4).astype(np.float32).tobytes()
        rows: dict[str, list[dict]] = {}
        measure(server, [m[:20] for m in unary_lanes[:8]])  # warm-up
        for _ in range(args.repeats):
            rows.setdefault("simple unary", []).append(measure(server, unary_lanes, unary_check))
            rows.setdefault("simple_sequence oldest", []).append(
                measure(server, seq_lanes, seq_check))
            rows.setdefault("ensemble identity x2", []).append(
                measure(server, tensor_lanes("identity_pair", args.tensor_callers,
                                             args.tensor_requests, data)))
            rows.setdefault("direct identity x1", []).append(
                measure(server, tensor_lanes("identity_a", args.tensor_callers,
                                             args.tensor_requests, data)))
            cpu = server.cpu_seconds()
            seconds, count = asyncio.run(_chain(server.port, args.tensor_callers,
                                                args.tensor_requests, data))
            rows.setdefault("client chain a->b", []).append(
                {"rate": count / seconds, "p50_ms": float("nan"),
                 "cpu_ms": 1e3 * (server.cpu_seconds() - cpu) / count, "wrong": 0,
                 "count": count})
    finally:
        server.stop()

    def median(name, key):
        return statistics.median(r[key] for r in rows[name])

    print(f"\nsequence_bench: C={args.sequences} sequences x {args.length} requests, "
          f"{args.repeats} repeats, {time.strftime('%H:%M UTC', time.gmtime())}")
    print(f"{'workload':26} {'infer/s':>9} {'p50 ms':>8} {'server CPU ms/inf':>18} {'wrong':>6}")
    for name in rows:
        wrong = sum(r["wrong"] for r in rows[name])
        print(f"{name:26} {median(name, 'rate'):9.1f} {median(name, 'p50_ms'):8.2f} "
              f"{median(name, 'cpu_ms'):18.3f} {wrong:6d}")
    seq_ratio = median("simple_sequence oldest", "rate") / median("simple unary", "rate")
    print(f"\nsequences / unary simple infer/s: {seq_ratio:.2f}x (target >= 0.70x); "
          f"exact results: {sum(r['wrong'] for r in rows['simple_sequence oldest']) == 0}")
    print(f"ensemble / client chain of the two steps: "
          f"{median('ensemble identity x2', 'rate') / median('client chain a->b', 'rate'):.2f}x")
    print(f"ensemble / one direct identity call: "
          f"{median('ensemble identity x2', 'rate') / median('direct identity x1', 'rate'):.2f}x "
          "(the ensemble runs ORT's identity twice)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
