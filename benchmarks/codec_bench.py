"""Micro-benchmark: Cython wire codec vs. the protobuf reference codec.

Cases:
  simple  Triton's `simple` add_sub model: INPUT0/INPUT1 INT32 [1,16] as raw
          inputs, OUTPUT0/OUTPUT1 requested; the response carries two INT32
          [1,16] outputs.
  4mib    one FP32 [1,1048576] raw input (4 MiB) and a 4 MiB FP32 output.

Each (case, direction, codec) is timed 5 times, interleaving the codecs, and
the median ops/s is printed with the Cython/protobuf ratio.

    python benchmarks/codec_bench.py [--repeats 5] [--seconds 0.2]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.grpc._utils import _get_inference_request

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # run from a checkout

from triton_grpc_server._ext import wire
from triton_grpc_server.frontends import protobuf_codec as ref
from triton_grpc_server._ext.wire import InferResponse, OutputTensor


def simple_case():
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.ones((1, 16), dtype=np.int32)
    inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"),
              grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    outputs = [grpcclient.InferRequestedOutput("OUTPUT0"), grpcclient.InferRequestedOutput("OUTPUT1")]
    request = _get_inference_request("simple", inputs, "", "", outputs, 0, False, False,
                                     0, None, None).SerializeToString()
    response = InferResponse("simple", "1", "", [OutputTensor("OUTPUT0", "INT32", [1, 16], a + b),
                                                 OutputTensor("OUTPUT1", "INT32", [1, 16], a - b)])
    return request, response


def big_case():
    x = np.random.default_rng(0).random((1, 1 << 20), dtype=np.float32)
    inputs = [grpcclient.InferInput("INPUT0", [1, 1 << 20], "FP32")]
    inputs[0].set_data_from_numpy(x)
    request = _get_inference_request("big", inputs, "", "", [grpcclient.InferRequestedOutput("OUTPUT0")],
                                     0, False, False, 0, None, None).SerializeToString()
    response = InferResponse("big", "1", "", [OutputTensor("OUTPUT0", "FP32", [1, 1 << 20], x * 2)])
    return request, response


def ops_per_second(fn, arg, seconds: float) -> float:
    n = 1
    while True:                       # calibrate: find n taking >= seconds/4
        start = time.perf_counter()
        for _ in range(n):
            fn(arg)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds / 4:
            break
        n *= 4
    n = max(1, int(n * seconds / elapsed))
    start = time.perf_counter()
    for _ in range(n):
        fn(arg)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.2, help="per timing")
    args = parser.parse_args()

    print(f"{'case':8} {'op':7} {'protobuf ops/s':>15} {'cython ops/s':>14} {'cython/protobuf':>16}")
    for case, (request, response) in (("simple", simple_case()), ("4mib", big_case())):
        # Same results first, so the numbers compare like with like.
        assert (bytes(wire.decode_request(request).raw_input_contents[0])
                == ref.decode_request(request).raw_input_contents[0])
        for op, fns, arg in (("decode", (ref.decode_request, wire.decode_request), request),
                             ("encode", (ref.encode_response, wire.encode_response), response)):
            runs = ([], [])
            for _ in range(args.repeats):
                for runs_of, fn in zip(runs, fns):
                    runs_of.append(ops_per_second(fn, arg, args.seconds))
            py, cy = (statistics.median(r) for r in runs)
            print(f"{case:8} {op:7} {py:15,.0f} {cy:14,.0f} {cy / py:15.1f}x")


if __name__ == "__main__":
    main()
