#!/usr/bin/env python
"""``--workers N`` scaling: add_sub infer/s of our server with 1, 2, 4, 8 ... processes.

    python benchmarks/scaling.py --workers 1,2 --concurrency 32          # this 2-core box
    python benchmarks/scaling.py --workers 1,2,4,8 --loadgen-threads 4   # a many-core host

Every worker count is a separate server (``--workers N`` on one port, SO_REUSEPORT),
measured with h2load replaying the pre-encoded add_sub frame (C connections; the
kernel spreads them over the workers), ``--repeats`` times interleaved. The table
gives medians, the ratio to one worker, and the CPU per inference summed over the
supervisor and all its workers. On a machine with fewer cores than workers plus the
load generator the ratio measures contention, not scaling: the noise columns say
how busy the rest of the machine was.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import loadgen  # noqa: E402
import run  # noqa: E402
import workloads  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", default="1,2,4,8", help="worker counts, e.g. 1,2,4,8")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--loadgen-threads", type=int, default=1,
                   help="h2load threads (one is the bottleneck past ~4 workers)")
    p.add_argument("--codec", default="cython", choices=["cython", "python"])
    args = p.parse_args(argv)
    if not loadgen.have_h2load():
        print("error: h2load not found (apt-get install nghttp2-client)", file=sys.stderr)
        return 1
    counts = [int(n) for n in args.workers.split(",") if n]
    ours = ["-m", "triton_grpc_server", "--model-repository", "{repo}", "--grpc-address",
            "127.0.0.1", "--grpc-port", "{port}", "--allow-metrics", "false",
            "--allow-http", "false", "--disable-auto-complete-config",
            "--infer-codec", args.codec]
    specs = [run.ServerSpec(f"workers={n}", ours + ["--workers", str(n)]) for n in counts]
    started = dt.datetime.now(dt.timezone.utc)
    load_before = os.getloadavg()
    samples = []
    with tempfile.TemporaryDirectory(prefix="tgs-scaling-") as tmpdir:
        tmp = Path(tmpdir)
        models = workloads.write_repository(tmp / "repo")
        model = models["add_sub"]
        bench = run.Bench(tmp, {"add_sub": model}, use_h2load=True)
        original = bench.load

        def load(server, name, concurrency, requests, mode="unary"):  # h2load, more threads
            return loadgen.h2load(server.port, tmp / f"{name}.frame",
                                  server.frame_lens.get(name, bench.frames[name]),
                                  concurrency, requests, threads=args.loadgen_threads)
        bench.load = load if args.loadgen_threads > 1 else original
        servers = [run.Server(spec, tmp / "repo", tmp) for spec in specs]
        try:
            probe = (tmp / "add_sub.message").read_bytes()
            for server in servers:
                server.wait_ready(probe)
                server.measure_frames({"add_sub": probe})
            workload = workloads.Workload(model, args.concurrency)
            guesses = {}
            for repeat in range(args.repeats):
                shift = repeat % len(servers)
                for server in servers[shift:] + servers[:shift]:
                    sample = bench.measure(server, workload, repeat, args.seconds,
                                           guesses.get(server.spec.name, 0.0))
                    guesses[server.spec.name] = sample.infer_per_s
                    samples.append(sample)
                    print(f"  r{repeat} {server.spec.name:10} {sample.infer_per_s:9,.0f}/s "
                          f"cpu {sample.cpu_ms_per_infer:.3f} ms others {sample.other_cores:.2f} "
                          f"steal {sample.steal_cores:.2f} err {sample.errors}", file=sys.stderr)
        finally:
            for server in servers:
                server.stop()
    rows = run.median_rows(samples)
    base = rows.get((workload.label, specs[0].name))
    command = "python benchmarks/scaling.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"\n## {started:%Y-%m-%d %H:%M} UTC: `{command.strip()}`\n")
    print(f"{os.cpu_count()} cores; load average {load_before[0]:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after; h2load -t{args.loadgen_threads} -c "
          f"{args.concurrency} -m1; medians of {args.repeats} interleaved repeats of "
          f"{args.seconds:g} s.\n")
    print("| server | infer/s | ÷ workers=1 | p50 ms | p99 ms | CPU ms/infer (all processes) "
          "| errors | others' CPU | steal |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for spec in specs:
        row = rows[(workload.label, spec.name)]
        ratio = row["infer_per_s"] / base["infer_per_s"] if base else float("nan")
        print(f"| {spec.name} | {row['infer_per_s']:,.0f} | {ratio:.2f} | {row['p50_ms']:.3f} | "
              f"{row['p99_ms']:.3f} | {row['cpu_ms_per_infer']:.3f} | {row['errors']} | "
              f"{row['other_cores']:.2f} | {row['steal_cores']:.2f} |")
    return 1 if any(r["errors"] for r in rows.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
