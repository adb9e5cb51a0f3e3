"""Dynamic batching and instance groups on an ONNX MLP, through a real server.

Model: FP32 INPUT0 [-1, 256] -> 4 x (MatMul 1024 + bias + Relu) -> OUTPUT0 [-1, 1024].
Four configurations of it are served by one server (dynamic batching off/on x 1/2
instances, max_batch_size 32) and driven by C closed-loop clients (tritonclient,
one thread and one connection each, one item per request) for C in 1, 8, 32.
Every (configuration, C) cell is measured ``--repeats`` times, interleaved, and
the medians are reported: infer/s, p50 and p99 latency, and the ratios of
batching to no batching at equal instances and concurrency.

``--overhead`` also measures what the scheduler adds per request at C=1 without
batching: ``InstancePool.execute`` (with its statistics) versus the instance's
own ``execute``, in-process, on the MLP and on a one-Relu model.

    python benchmarks/batching_bench.py --duration 2 --repeats 3 --overhead
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
WIDTH_IN, LAYERS, MAX_BATCH = 256, 4, 32
WIDTH = 1024  # --width
CONFIGS = [("nobatch_1", False, 1), ("batch_1", True, 1), ("nobatch_2", False, 2),
           ("batch_2", True, 2)]


def mlp_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes, inits, previous, width = [], [], "INPUT0", WIDTH_IN
    for layer in range(LAYERS):
        w = numpy_helper.from_array(
            (rng.standard_normal([width, WIDTH]) / np.sqrt(width)).astype(np.float32), f"w{layer}")
        b = numpy_helper.from_array(np.zeros([WIDTH], np.float32), f"b{layer}")
        inits += [w, b]
        out = "OUTPUT0" if layer == LAYERS - 1 else f"h{layer}"
        nodes += [helper.make_node("MatMul", [previous, f"w{layer}"], [f"m{layer}"]),
                  helper.make_node("Add", [f"m{layer}", f"b{layer}"], [f"a{layer}"]),
                  helper.make_node("Relu", [f"a{layer}"], [out])]
        previous, width = out, WIDTH
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, [None, WIDTH_IN])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, [None, WIDTH])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def relu_model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["INPUT0"], ["OUTPUT0"])], "tiny",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, [None, WIDTH_IN])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, [None, WIDTH_IN])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def write_repo(root: Path, threads: int) -> None:
    data = mlp_model().SerializeToString()
    params = ('parameters { key: "intra_op_thread_count" '
              f'value {{ string_value: "{threads}" }} }}\n' if threads else "")
    for name, batching, count in CONFIGS:
        (root / name / "1").mkdir(parents=True)
        (root / name / "1" / "model.onnx").write_bytes(data)
        (root / name / "config.pbtxt").write_text(
            f'name: "{name}"\nbackend: "onnxruntime"\nmax_batch_size: {MAX_BATCH}\n{params}'
            f'input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ {WIDTH_IN} ] }} ]\n'
            f'output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ {WIDTH} ] }} ]\n'
            f"instance_group [ {{ kind: KIND_CPU count: {count} }} ]\n"
            + ("dynamic_batching { }\n" if batching else ""))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(repo: Path, port: int, threads: int) -> subprocess.Popen:
    import tritonclient.grpc as grpcclient

    process = subprocess.Popen(
        [sys.executable, "-m", "triton_grpc_server", "--model-repository", str(repo),
         "--grpc-address", "127.0.0.1", "--grpc-port", str(port),
         "--grpc-infer-thread-count", str(threads), "--metrics-port", str(free_port()),
         "--log-info", "false",
         # auto-complete would give the 'nobatch' models dynamic batching (as Triton's does)
         "--disable-auto-complete-config"], cwd=str(ROOT), env=dict(os.environ))
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if client.is_server_ready():
                return process
        except Exception:
            pass
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        time.sleep(0.2)
    process.kill()
    raise SystemExit("server did not become ready")


def _counts(url: str, model: str) -> tuple[int, int]:
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(url) as client:
        stats = client.get_inference_statistics(model).model_stats[0]
    return stats.inference_count, stats.execution_count


def run_load(url: str, model: str, concurrency: int, warmup: float, duration: float):
    """Closed loop: each client thread sends its next request when the last one returns.

    Returns (infer/s, p50 ms, p99 ms, mean executed batch size).
    """
    import tritonclient.grpc as grpcclient

    latencies = [[] for _ in range(concurrency)]
    barrier = threading.Barrier(concurrency + 1)
    bounds = {}

    def client_loop(index: int) -> None:
        client = grpcclient.InferenceServerClient(url)
        tensor = grpcclient.InferInput("INPUT0", [1, WIDTH_IN], "FP32")
        tensor.set_data_from_numpy(np.random.default_rng(index).random([1, WIDTH_IN], np.float32))
        client.infer(model, [tensor])
        barrier.wait()
        mine = latencies[index]
        while True:
            start = time.perf_counter()
            if start >= bounds["end"]:
                break
            client.infer(model, [tensor])
            end = time.perf_counter()
            if start >= bounds["start"]:
                mine.append(end - start)
        client.close()

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    before = _counts(url, model)
    now = time.perf_counter()
    bounds["start"], bounds["end"] = now + warmup, now + warmup + duration
    barrier.wait()
    for thread in threads:
        thread.join()
    after = _counts(url, model)
    merged = np.array([x for per in latencies for x in per])
    batch = (after[0] - before[0]) / max(1, after[1] - before[1])
    return (len(merged) / duration, np.percentile(merged, 50) * 1e3,
            np.percentile(merged, 99) * 1e3, batch)


def _noop_instance(outputs):
    """Returns its outputs at once: what remains is the scheduler's own cost."""
    from triton_grpc_server.backends.base import ArrayBackendInstance

    class NoopInstance(ArrayBackendInstance):
        name = "noop"

        def run(self, inputs, output_names, parameters):
            return outputs
    return NoopInstance()


def overhead(iterations: int) -> list[tuple[str, float, float, float]]:
    """(model, direct us, through the scheduler us, difference us) at C=1, in-process.

    The scheduled path is what the data plane runs per request without batching:
    ``InstancePool.execute`` with a RequestTiming and a cancellation check, then
    ``ModelStats.succeeded``; ``noop/batcher`` is the same through a DynamicBatcher.
    ONNX Runtime runs with one intra-op thread here.
    """
    sys.path.insert(0, str(ROOT))
    from triton_grpc_server._proto import model_config_pb2 as mc
    from triton_grpc_server.backends.base import BackendContext
    from triton_grpc_server.backends.onnxruntime import OnnxRuntimeBackend
    from triton_grpc_server.scheduler import DynamicBatcher, InstancePool
    from triton_grpc_server._ext.wire import InferRequest
    from triton_grpc_server.scheduler.base import ScheduledRequest
    from triton_grpc_server.senders import BlockingSender
    from triton_grpc_server.stats import ModelStats

    rows = []
    inputs = {"INPUT0": np.random.default_rng(0).random([1, WIDTH_IN], np.float32)}
    names, params = ["OUTPUT0"], {}
    with tempfile.TemporaryDirectory() as tmp:
        instances = []
        for name, model in (("mlp", mlp_model()), ("relu", relu_model())):
            path = Path(tmp) / f"{name}.onnx"
            path.write_bytes(model.SerializeToString())
            config = mc.ModelConfig(name=name, backend="onnxruntime", max_batch_size=MAX_BATCH)
            config.parameters["intra_op_thread_count"].string_value = "1"
            backend = OnnxRuntimeBackend(config, 1, path, BackendContext(name))
            instances.append((name, backend.create_instance(0, "KIND_CPU", 0)))
        noop = _noop_instance({"OUTPUT0": inputs["INPUT0"]})
        instances += [("noop", noop), ("noop/batcher", noop)]
        batching = mc.ModelConfig(name="noop", max_batch_size=MAX_BATCH)
        batching.dynamic_batching.SetInParent()
        for name, instance in instances:
            stats = ModelStats()
            pool = (DynamicBatcher(batching, [instance], stats) if name.endswith("batcher")
                    else InstancePool([instance], stats))

            def direct():
                instance.run(inputs, names, params)

            def scheduled():
                sender = BlockingSender()
                work = ScheduledRequest(InferRequest(sender=sender), None, inputs, names, params,
                                        1, stats=stats)
                pool.enqueue(work)  # answered on the instance's worker thread
                sender.wait()

            samples = {"direct": [], "scheduled": []}
            for _ in range(200):
                direct(), scheduled()
            count = iterations * (20 if name.startswith("noop") else 1)
            for _ in range(5):  # interleaved rounds, median of each
                for label, fn in (("direct", direct), ("scheduled", scheduled)):
                    start = time.perf_counter()
                    for _ in range(count):
                        fn()
                    samples[label].append((time.perf_counter() - start) / count * 1e6)
            d, s = statistics.median(samples["direct"]), statistics.median(samples["scheduled"])
            rows.append((name, d, s, s - d))
            pool.close()
    return rows


def main() -> int:
    global WIDTH
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=2.0, help="seconds measured per cell")
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--width", type=int, default=1024, help="hidden layer width")
    parser.add_argument("--intra-op-threads", type=int, default=1,
                        help="ONNX Runtime threads per instance (0: its default)")
    parser.add_argument("--overhead", action="store_true",
                        help="also measure the scheduler's per-request overhead")
    parser.add_argument("--overhead-iterations", type=int, default=2000)
    args = parser.parse_args()
    WIDTH = args.width

    if args.overhead:
        print("scheduler overhead at C=1, no batching (in-process, median of 5 rounds)")
        print(f"{'model':13} {'direct us':>10} {'scheduled us':>13} {'added us':>9}")
        for name, direct, scheduled, added in overhead(args.overhead_iterations):
            print(f"{name:13} {direct:10.1f} {scheduled:13.1f} {added:9.1f}")
        print()

    results: dict[tuple[str, int], list] = {}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "models"
        write_repo(repo, args.intra_op_threads)
        port = free_port()
        server = start_server(repo, port, max(64, 2 * max(args.concurrency)))
        try:
            for _ in range(args.repeats):
                for concurrency in args.concurrency:
                    for name, _, _ in CONFIGS:
                        results.setdefault((name, concurrency), []).append(
                            run_load(f"127.0.0.1:{port}", name, concurrency, args.warmup,
                                     args.duration))
        finally:
            server.terminate()
            server.wait(30)

    med = {key: tuple(statistics.median(r[i] for r in runs) for i in range(4))
           for key, runs in results.items()}
    print(f"median of {args.repeats} interleaved repeats, {args.duration:g} s each, "
          f"MLP {WIDTH_IN}->{LAYERS}x{WIDTH}, max_batch_size {MAX_BATCH}, {os.cpu_count()} CPUs")
    print(f"{'config':10} {'C':>3} {'infer/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'batch':>6} {'x infer/s':>10} {'x p99':>7}")
    for concurrency in args.concurrency:
        for name, batching, count in CONFIGS:
            rate, p50, p99, batch = med[(name, concurrency)]
            ratio = ""
            if batching:
                base = med[(f"nobatch_{count}", concurrency)]
                ratio = f"{rate / base[0]:10.2f} {p99 / base[2]:7.2f}"
            print(f"{name:10} {concurrency:3d} {rate:9.0f} {p50:8.2f} {p99:8.2f} {batch:6.1f} "
                  f"{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
