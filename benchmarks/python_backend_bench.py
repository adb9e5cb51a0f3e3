#!/usr/bin/env python
"""Python backend against ONNX Runtime on the same server, in one invocation.

Workloads (each a pre-encoded ModelInfer frame replayed by h2load, or by the
grpc.aio load generator when h2load is missing):

* ``add_sub`` INT32 [1,16] at C=1: ONNX vs a Python ``model.py`` (one instance);
  the per-request overhead is ``1/rate(py) - 1/rate(onnx)``.
* the Python add_sub at C=16 with one instance vs two (separate processes:
  the ratio shows whether the GIL is shared).
* the same with about a millisecond of pure-Python work per execute (``busy_py``),
  where the instance, not the server, is the bottleneck.
* ``identity`` FP32 [1,1048576] (4 MiB each way) at C=1: MiB/s of each.

Runs are interleaved and repeated; medians are printed with the ratios and the
server's CPU per inference (the server process plus its instance processes).

    python benchmarks/python_backend_bench.py [--seconds 3] [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen  # noqa: E402
import workloads  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

ADD_SUB_PY = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for request in requests:
            a = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            b = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", a + b),
                                                   pb_utils.Tensor("OUTPUT1", a - b)]))
        return out
'''

# add_sub plus about a millisecond of pure-Python work, holding the GIL of its process:
# what two instances in one process could not run at once.
BUSY_PY = ADD_SUB_PY.replace("        out = []", "        sum(i * i for i in range(20000))\n        out = []")

IDENTITY_PY = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse(
                    [pb_utils.Tensor("OUTPUT0", pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy())])
                for r in requests]
'''


def python_copy(repo: Path, onnx_name: str, name: str, source: str, count: int) -> None:
    """A Python model with the tensors of an ONNX one (its config, backend swapped)."""
    config = (repo / onnx_name / "config.pbtxt").read_text()
    config = config.replace(f'name: "{onnx_name}"', f'name: "{name}"')
    config = config.replace('platform: "onnxruntime_onnx"', 'backend: "python"')
    config += f"instance_group [ {{ count: {count} kind: KIND_CPU }} ]\n"
    (repo / name / "1").mkdir(parents=True, exist_ok=True)
    (repo / name / "1" / "model.py").write_text(textwrap.dedent(source))
    (repo / name / "config.pbtxt").write_text(config)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its live children (the instance processes)."""
    total = 0.0
    pids = [pid]
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            pids += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        except OSError:
            pass
    return total


def with_model(model: "workloads.Model", name: str) -> "workloads.Model":
    return workloads.Model(name, model.datatype, model.inputs, model.outputs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per run (default 3)")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved repeats (default 3)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="tgs-pybench-"))
    repo = tmp / "repo"
    models = workloads.write_repository(repo)
    python_copy(repo, "add_sub", "add_sub_py", ADD_SUB_PY, 1)
    python_copy(repo, "add_sub", "add_sub_py2", ADD_SUB_PY, 2)
    python_copy(repo, "identity_4m", "identity_4m_py", IDENTITY_PY, 1)
    python_copy(repo, "add_sub", "busy_py", BUSY_PY, 1)
    python_copy(repo, "add_sub", "busy_py2", BUSY_PY, 2)
    (repo / "add_sub" / "config.pbtxt").write_text(
        (repo / "add_sub" / "config.pbtxt").read_text()
        + "instance_group [ { count: 1 kind: KIND_CPU } ]\n")
    (repo / "identity_4m" / "config.pbtxt").write_text(
        (repo / "identity_4m" / "config.pbtxt").read_text()
        + "instance_group [ { count: 1 kind: KIND_CPU } ]\n")
    cases = {
        "add_sub": models["add_sub"], "add_sub_py": with_model(models["add_sub"], "add_sub_py"),
        "add_sub_py2": with_model(models["add_sub"], "add_sub_py2"),
        "busy_py": with_model(models["add_sub"], "busy_py"),
        "busy_py2": with_model(models["add_sub"], "busy_py2"),
        "identity_4m": models["identity_4m"],
        "identity_4m_py": with_model(models["identity_4m"], "identity_4m_py"),
    }
    frames = {}
    for name, model in cases.items():
        message = workloads.request_message(model)
        (tmp / f"{name}.frame").write_bytes(workloads.grpc_frame(message))
        (tmp / f"{name}.msg").write_bytes(message)
        frames[name] = len(workloads.grpc_frame(workloads.response_message(model)))

    port = free_port()
    log = open(tmp / "server.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "triton_grpc_server", "--model-repository", str(repo),
         "--grpc-address", "127.0.0.1", "--grpc-port", str(port), "--allow-metrics", "false",
         "--allow-http", "false"],
        stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT))
    try:
        import grpc

        limits = [("grpc.max_receive_message_length", 2**31 - 1),
                  ("grpc.max_send_message_length", 2**31 - 1)]
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=limits) as channel:
            call = channel.unary_unary(loadgen.PATH)
            deadline = time.monotonic() + 180
            for name in cases:
                while True:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError((tmp / "server.log").read_text())
                    try:
                        call((tmp / f"{name}.msg").read_bytes(), timeout=10)
                        break
                    except grpc.RpcError:
                        time.sleep(0.3)
        for name, model in cases.items():
            ok, bad = loadgen.check_outputs(port, model, 3)
            assert bad == 0, f"{name}: wrong outputs"

        use_h2load = loadgen.have_h2load()

        def run(name: str, concurrency: int):
            # Calibrate the request count so a run takes about --seconds.
            probe = load(name, concurrency, 40 if "4m" not in name else 10)
            count = max(concurrency * 4, int(probe.rate * args.seconds))
            cpu = process_tree_cpu(server.pid)
            result = load(name, concurrency, count)
            cpu = process_tree_cpu(server.pid) - cpu
            return result, 1000 * cpu / max(result.requests, 1)

        def load(name: str, concurrency: int, count: int):
            if use_h2load:
                return loadgen.h2load(port, tmp / f"{name}.frame", frames[name], concurrency, count)
            return loadgen.aio_loadgen(port, tmp / f"{name}.msg", concurrency, count)

        plan = [("add_sub", 1), ("add_sub_py", 1), ("add_sub_py", 16), ("add_sub_py2", 16),
                ("busy_py", 16), ("busy_py2", 16), ("identity_4m", 1), ("identity_4m_py", 1)]
        samples: dict = {key: [] for key in plan}
        for _ in range(args.repeat):
            for name, concurrency in plan:
                result, cpu_ms = run(name, concurrency)
                if result.errors:
                    raise RuntimeError(f"{name}: {result.errors} failed requests")
                samples[(name, concurrency)].append(
                    (result.rate, result.percentile_ms(50), cpu_ms))
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()

    med = {key: tuple(float(np.median([s[i] for s in rows])) for i in range(3))
           for key, rows in samples.items()}
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, {os.cpu_count()} cores, "
          f"load generator: {'h2load' if use_h2load else 'grpc.aio'}, {args.repeat} runs of "
          f"~{args.seconds:.0f}s, medians")
    print(f"{'workload':24} {'infer/s':>10} {'p50 ms':>8} {'server cpu ms/inf':>18}")
    for (name, concurrency), (rate, p50, cpu) in med.items():
        print(f"{name + ' C=' + str(concurrency):24} {rate:10.1f} {p50:8.3f} {cpu:18.3f}")
    onnx_rate, py_rate = med[("add_sub", 1)][0], med[("add_sub_py", 1)][0]
    overhead_us = (1 / py_rate - 1 / onnx_rate) * 1e6
    scale = med[("add_sub_py2", 16)][0] / med[("add_sub_py", 16)][0]
    busy = med[("busy_py2", 16)][0] / med[("busy_py", 16)][0]
    print(f"busy_py (add_sub + ~1 ms of Python) C=16, 2 instances / 1 instance: {busy:.2f}x")
    mib = 4.0
    onnx_mib, py_mib = med[("identity_4m", 1)][0] * mib, med[("identity_4m_py", 1)][0] * mib
    print(f"add_sub C=1 overhead of the Python backend over ONNX: {overhead_us:.0f} us "
          f"per request (p50 {1000 * (med[('add_sub_py', 1)][1] - med[('add_sub', 1)][1]):.0f} us)"
          f"  [target <= 100 us]")
    print(f"add_sub_py C=16, 2 instances / 1 instance: {scale:.2f}x  [target >= 1.6x]")
    print(f"identity 4 MiB C=1: Python {py_mib:.0f} MiB/s, ONNX {onnx_mib:.0f} MiB/s, "
          f"ratio {py_mib / onnx_mib:.2f}  [target >= 0.7]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
