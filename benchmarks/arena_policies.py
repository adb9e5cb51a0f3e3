#!/usr/bin/env python
"""Idle RSS and server CPU per 4 MiB inference under one ONNX Runtime arena policy.

    python benchmarks/arena_policies.py default|shrink|no_arena

One server with a 4 MiB FP32 identity model (``big``) under the policy's config
parameters; 200 requests from 4 threads to warm up, then 4 rounds of 200, the idle
RSS after each (``test_memory_budget.idle_rss``: a quiet second, then the idle trim)
and the server's CPU per inference in each round. Run the policies one after another
on a quiet box and compare: docs/reliability.md has the figures.
"""
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import tritonclient.grpc as grpcclient  # noqa: E402

from models import identity_model, start  # noqa: E402
from test_memory_budget import cpu_seconds, idle_rss  # noqa: E402
from test_onnxruntime_options import _parameters  # noqa: E402

POLICIES = {"default": "", "shrink": _parameters(memory__enable_memory_arena_shrinkage="cpu:0"),
            "no_arena": _parameters(enable_mem_arena="0")}
REQUESTS = 200
THREADS = 4


def idle_rss_mib(pid: int) -> float:
    return idle_rss(pid) / 2**20


def load(server, model: str, count: int) -> None:
    payload = np.arange((4 << 20) // 4, dtype=np.float32)
    clients = [server.client() for _ in range(THREADS)]

    def work(index):
        tensor = grpcclient.InferInput("INPUT0", list(payload.shape), "FP32")
        tensor.set_data_from_numpy(payload)
        for _ in range(count // THREADS):
            out = clients[index].infer(model, [tensor]).as_numpy("OUTPUT0")
            assert out[-1] == payload[-1]

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(work, range(THREADS)))
    for client in clients:
        client.close()


def main() -> None:
    policy = sys.argv[1] if len(sys.argv) > 1 else "default"
    repo = Path(tempfile.mkdtemp(prefix="tgs-arena-"))
    identity_model(repo, "big", "FP32", max_batch_size=0, dims=(-1,), extra=POLICIES[policy])
    server = start(repo)
    try:
        pid = server.process.pid
        load(server, "big", REQUESTS)
        warm = idle_rss_mib(pid)
        readings, cpus = [], []
        for _ in range(4):
            before = cpu_seconds(pid)
            load(server, "big", REQUESTS)
            cpus.append((cpu_seconds(pid) - before) / REQUESTS * 1000)
            readings.append(idle_rss_mib(pid))
        print(f"{policy}: warm {warm:.1f} MiB; rounds " + ", ".join(f"{x:.1f}" for x in readings)
              + f"; growth {readings[-1] - warm:+.1f}; CPU ms/inf "
              + ", ".join(f"{x:.1f}" for x in cpus))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
