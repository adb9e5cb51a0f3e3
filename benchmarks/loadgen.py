"""Load generators and the output check.

* :func:`h2load` replays one pre-encoded gRPC frame with nghttp2's h2load
  (``C`` connections, one stream each). h2load does not read gRPC trailers, but
  a failed RPC is a trailers-only response with no DATA, so "every response
  carried the full message" is checked exactly: the DATA bytes received must be
  ``n x frame length`` (partial or missing messages show up as a shortfall).
* :func:`aio_loadgen` is the fallback when h2load is missing: processes of
  ``grpc.aio`` callers sending the same pre-encoded bytes and checking every
  status (run as ``python benchmarks/loadgen.py ...``).
* :func:`check_outputs` sends requests through ``tritonclient.grpc`` and
  compares every output with the expected array.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

STREAM_PATH = "/inference.GRPCInferenceService/ModelStreamInfer"
PATH = "/inference.GRPCInferenceService/ModelInfer"


@dataclasses.dataclass
class LoadResult:
    requests: int           # responses that carried a complete message
    errors: int             # requests without one (failed status, reset, ...)
    seconds: float
    latencies_us: np.ndarray

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_us, q)) / 1000 if len(self.latencies_us) else 0.0


def have_h2load() -> bool:
    return shutil.which("h2load") is not None


def h2load(port: int, frame_path: Path, frame_len: int, concurrency: int, requests: int,
           timeout: float = 300.0, threads: int = 1) -> LoadResult:
    with tempfile.NamedTemporaryFile(suffix=".tsv") as log:
        cmd = ["h2load", "-t", str(min(threads, concurrency)), "-c", str(concurrency), "-m", "1", "-n", str(requests),
               "-d", str(frame_path), "-H", "content-type: application/grpc",
               "-H", "te: trailers", f"--log-file={log.name}",
               f"http://127.0.0.1:{port}{PATH}"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout).stdout
        rows = np.loadtxt(log.name, dtype=np.int64, ndmin=2)
    seconds = _unit_seconds(_find(r"finished in ([\d.]+)(\w+),", out))
    done = int(_find(r"requests: \d+ total, \d+ started, (\d+) done", out)[0])
    data = int(_find(r"traffic: .*? \((\d+)\) data", out)[0])
    complete = min(done, data // frame_len)
    latencies = rows[:, 2] if rows.size else np.zeros(0)
    return LoadResult(complete, requests - complete, seconds, latencies)


def _find(pattern: str, text: str) -> tuple:
    match = re.search(pattern, text)
    if match is None:
        raise RuntimeError(f"unexpected h2load output (no {pattern!r}):\n{text}")
    return match.groups()


def _unit_seconds(value_unit: tuple) -> float:
    value, unit = value_unit
    return float(value) * {"s": 1.0, "ms": 1e-3, "us": 1e-6}[unit]


# -- fallback: grpc.aio processes ----------------------------------------------------------

def aio_loadgen(port: int, message_path: Path, concurrency: int, requests: int,
                processes: int = 2, stream: bool = False) -> LoadResult:
    processes = max(1, min(processes, concurrency))
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        for i in range(processes):
            share = concurrency // processes + (i < concurrency % processes)
            count = requests // processes + (i < requests % processes)
            out = Path(tmp) / f"{i}.json"
            procs.append((subprocess.Popen(
                [sys.executable, __file__, "--port", str(port), "--message", str(message_path),
                 "--concurrency", str(share), "--requests", str(count), "--out", str(out)]
                + (["--stream"] if stream else [])), out))
        results = []
        for proc, out in procs:
            proc.wait()
            results.append(json.loads(out.read_text()))
    latencies = np.concatenate([np.array(r["latencies_us"], dtype=np.int64) for r in results])
    return LoadResult(sum(r["ok"] for r in results), sum(r["errors"] for r in results),
                      max(r["seconds"] for r in results), latencies)


async def _aio_worker(port: int, message: bytes, concurrency: int, requests: int,
                      stream: bool = False) -> dict:
    import grpc

    channels = [grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1),
                                      ("grpc.max_receive_message_length", 2**31 - 1),
                                      ("grpc.max_send_message_length", 2**31 - 1)])
        for _ in range(concurrency)]
    remaining = [requests]
    latencies, counts = [], {"ok": 0, "errors": 0}

    async def caller(channel):
        call = channel.unary_unary(PATH)  # no (de)serializers: bytes in, bytes out
        while remaining[0] > 0:
            remaining[0] -= 1
            start = time.perf_counter_ns()
            try:
                await call(message)
                counts["ok"] += 1
            except grpc.aio.AioRpcError:
                counts["errors"] += 1
            latencies.append((time.perf_counter_ns() - start) // 1000)

    async def streamer(channel):
        # One ModelStreamInfer per caller, one request in flight on it (like a unary caller).
        call = channel.stream_stream(STREAM_PATH)()  # no (de)serializers: bytes
        try:
            while remaining[0] > 0:
                remaining[0] -= 1
                start = time.perf_counter_ns()
                await call.write(message)
                response = await call.read()
                # field 1 (error_message) comes first when set: tag byte 0x0A
                if response is grpc.aio.EOF or response[:1] == b"\x0a":
                    counts["errors"] += 1
                else:
                    counts["ok"] += 1
                latencies.append((time.perf_counter_ns() - start) // 1000)
            await call.done_writing()
        except grpc.aio.AioRpcError:
            counts["errors"] += 1

    start = time.perf_counter()
    await asyncio.gather(*((streamer if stream else caller)(c) for c in channels))
    seconds = time.perf_counter() - start
    for channel in channels:
        await channel.close()
    return dict(counts, seconds=seconds, latencies_us=latencies)


def _aio_main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--message", required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--stream", action="store_true")
    args = parser.parse_args()
    message = Path(args.message).read_bytes()
    result = asyncio.run(_aio_worker(args.port, message, args.concurrency, args.requests,
                                     args.stream))
    Path(args.out).write_text(json.dumps(result))


# -- outputs through tritonclient ----------------------------------------------------------

def check_outputs(port: int, model, count: int) -> tuple[int, int]:
    """``count`` tritonclient inferences; returns (correct, wrong or failed)."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    inputs = []
    for name, array in model.inputs.items():
        tensor = grpcclient.InferInput(name, list(array.shape), model.datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    outputs = [grpcclient.InferRequestedOutput(name) for name in model.outputs]
    good = bad = 0
    try:
        for _ in range(count):
            try:
                result = client.infer(model.name, inputs, outputs=outputs)
            except Exception:
                bad += 1
                continue
            if all(np.array_equal(result.as_numpy(n), a) for n, a in model.outputs.items()):
                good += 1
            else:
                bad += 1
    finally:
        client.close()
    return good, bad


if __name__ == "__main__":
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    _aio_main()
