#!/usr/bin/env python
"""Idle RSS after each round of one kind of request: which requests move the server's memory.

    python benchmarks/memory_rounds.py small [--rounds 12]     # 10,000 small requests a round
    python benchmarks/memory_rounds.py large [--rounds 12]     # 200 4 MiB (+200 small) a round
    python benchmarks/memory_rounds.py large --shrink          # the same, ONNX Runtime's arena
                                                               # shrinking after every run

The memory test's server (``add`` and the 4 MiB ``big`` identity), its warm-up and its idle
reading (``test_memory_budget``), one kind of request per run, so a trend in the full-size
test's mixed rounds can be told apart: growth with the small requests would be a per-request
leak, wandering with the large ones is what their buffers leave held at idle.
docs/reliability.md has the figures.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from models import identity_model, start  # noqa: E402
from scheduling_models import write_model  # noqa: E402
from test_memory_budget import _warm_up, idle_rss, serve_mix  # noqa: E402
from test_onnxruntime_options import _parameters  # noqa: E402

ROUND = {"small": (10_000, 0), "large": (200, 200)}  # (small, 4 MiB) requests per round


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=sorted(ROUND))
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--shrink", action="store_true",
                        help="memory.enable_memory_arena_shrinkage: cpu:0 on the 4 MiB model")
    args = parser.parse_args()
    repo = Path(tempfile.mkdtemp(prefix="tgs-rounds-"))
    write_model(repo, "add", "add", "max_batch_size: 8\n")
    extra = _parameters(memory__enable_memory_arena_shrinkage="cpu:0") if args.shrink else ""
    identity_model(repo, "big", "FP32", max_batch_size=0, dims=(-1,), extra=extra)
    server = start(repo)
    try:
        pid = server.process.pid
        _warm_up(server, 100_000, 2_000)  # the full-size test's warm-up
        readings = [idle_rss(pid)]
        for index in range(args.rounds):
            serve_mix(server, *ROUND[args.kind])
            readings.append(idle_rss(pid))
            print(f"{args.kind} round {index}: {readings[-1] / 2**20:.1f} MiB", flush=True)
        print(f"{args.kind}{' (shrink)' if args.shrink else ''}: idle RSS after warm-up, then "
              "each round (MiB): " + ", ".join(f"{r / 2**20:.1f}" for r in readings))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
