"""The GPU half of scripts/gpu_check.sh: serve, compare, measure. Exits non-zero on any failure.

1. pool bandwidth: 4 MiB H2D/D2H from the pinned pool (CUDA events), and
   request-bytes -> device through ``stage_h2d`` (host timer);
2. a pytorch_libtorch model on KIND_GPU with 2 instances beside the same model
   on KIND_CPU, served by a real server; concurrent tritonclient callers, GPU
   results compared bit for bit with the CPU model's;
3. perf_analyzer against the GPU model, if it is on PATH;
4. per-request overhead of the backend's pipeline beyond copies + execution:
   ``instance.execute`` vs the same model driven by torch alone (pinned
   tensors, non_blocking copies, one sync), medians at concurrency 1;
5. a garbage model.plan under the TensorRT runtime: UNAVAILABLE with TensorRT's message.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

FAILURES: list[str] = []
SUMMARY: dict = {}


def check(ok: bool, what: str) -> None:
    print(("PASS " if ok else "FAIL ") + what, flush=True)
    if not ok:
        FAILURES.append(what)


def section(title: str) -> None:
    print(f"\n=== {title}", flush=True)


# ---------------------------------------------------------------- 1. pool bandwidth

def pool_bandwidth(cuda) -> None:
    section("pinned pool bandwidth, 4 MiB")
    n = 4 << 20
    pool = cuda.PinnedPool()
    check(pool.pinned, "pool is page-locked (cudaHostAlloc)")
    stream = cuda.Stream(0)
    dev = cuda.DeviceBuffer(n, 0)
    src = pool.alloc(n)
    dst = pool.alloc(n)
    request = np.random.default_rng(0).integers(0, 255, n, dtype=np.uint8).tobytes()
    src.copy_from(request)
    start, end = cuda.Event(0, blocking_sync=False, timing=True), cuda.Event(0, blocking_sync=False, timing=True)
    reps = 50

    def timed(fn) -> float:
        fn()
        stream.synchronize()
        start.record(stream)
        for _ in range(reps):
            fn()
        end.record(stream)
        end.synchronize()
        return n * reps / (start.elapsed_ms(end) / 1e3) / 1e9

    h2d = timed(lambda: cuda.memcpy_h2d_async(dev.ptr, src.ptr, n, stream))
    d2h = timed(lambda: cuda.memcpy_d2h_async(dst.ptr, dev.ptr, n, stream))
    stream.synchronize()
    check(dst.to_bytes() == request, "4 MiB round trip through the pool is byte-exact")
    staged = {}
    for chunk in (n, 1 << 20, 512 << 10, 256 << 10):
        best = float("inf")
        for _ in range(20):
            t0 = time.perf_counter()
            cuda.stage_h2d(dev.ptr, src, 0, request, stream, chunk=chunk)
            stream.synchronize()
            best = min(best, time.perf_counter() - t0)
        staged[chunk] = n / best / 1e9
    from triton_grpc_server import gpu as gpu_helpers

    request_view = np.frombuffer(request, np.uint8)
    best = float("inf")
    for _ in range(20):
        t0 = time.perf_counter()
        gpu_helpers.stage_h2d(dev.ptr, src, 0, request_view, stream)
        stream.synchronize()
        best = min(best, time.perf_counter() - t0)
    staged["parallel"] = n / best / 1e9
    stream.synchronize()
    cuda.memcpy_d2h_async(dst.ptr, dev.ptr, n, stream)
    stream.synchronize()
    check(dst.to_bytes() == request, "parallel staging (gpu.stage_h2d, 4 threads) is byte-exact")
    print(f"H2D (pinned pool -> device, DMA only): {h2d:.1f} GB/s")
    print(f"D2H (device -> pinned pool, DMA only): {d2h:.1f} GB/s")
    for chunk, gbs in staged.items():
        how = ("gpu.stage_h2d, 4 threads x 1 MiB chunks" if chunk == "parallel"
               else f"cuda.stage_h2d, 1 thread, chunk {chunk >> 10} KiB")
        print(f"request bytes -> pinned -> device, {how}: {gbs:.1f} GB/s (best of 20)")
    SUMMARY.update(h2d_gbs=round(h2d, 1), d2h_gbs=round(d2h, 1),
                   staged_gbs={(k if isinstance(k, str) else f"{k >> 10}KiB"): round(v, 1)
                               for k, v in staged.items()})
    print(f"target: H2D >= {0.8 * 55:.0f} GB/s (0.8 x 55): {'met' if h2d >= 44 else 'NOT met'}")


# ---------------------------------------------------------------- models

MODEL_SOURCE = '''
import torch


class AddSubInt(torch.nn.Module):
    """Elementwise only: IEEE add/sub and integer math are exact on CPU and GPU."""

    def forward(self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor):
        return a + b, a - b, c * 3 + 1
'''

CONFIG = """
name: "{name}"
platform: "pytorch_libtorch"
max_batch_size: 64
input [ {{ name: "INPUT__0" data_type: TYPE_FP32 dims: [ -1 ] }},
        {{ name: "INPUT__1" data_type: TYPE_FP32 dims: [ -1 ] }},
        {{ name: "INPUT__2" data_type: TYPE_INT32 dims: [ -1 ] }} ]
output [ {{ name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ -1 ] }},
         {{ name: "OUTPUT__1" data_type: TYPE_FP32 dims: [ -1 ] }},
         {{ name: "OUTPUT__2" data_type: TYPE_INT32 dims: [ -1 ] }} ]
instance_group {{ kind: {kind} count: {count} }}
"""


def build_repo(root: Path):
    import torch

    (root / "gpu_models_src.py").write_text(MODEL_SOURCE)
    sys.path.insert(0, str(root))
    from gpu_models_src import AddSubInt  # noqa: E402  (TorchScript needs the source in a file)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(AddSubInt())
    repo = root / "models"
    for name, kind, count in (("add_sub_gpu", "KIND_GPU", 2), ("add_sub_cpu", "KIND_CPU", 2)):
        (repo / name / "1").mkdir(parents=True)
        scripted.save(str(repo / name / "1" / "model.pt"))
        (repo / name / "config.pbtxt").write_text(CONFIG.format(name=name, kind=kind, count=count))
    bad = repo / "bad_plan"
    (bad / "1").mkdir(parents=True)
    (bad / "1" / "model.plan").write_bytes(b"this is not a TensorRT plan\x00" * 64)
    (bad / "config.pbtxt").write_text(textwrap.dedent("""
        name: "bad_plan"
        platform: "tensorrt_plan"
        max_batch_size: 0
        input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
        output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
        instance_group { kind: KIND_GPU count: 1 }
    """))
    return repo, AddSubInt


def make_request(seed: int, width: int = 1024, batch: int = 4):
    rng = np.random.default_rng(seed)
    return {"INPUT__0": rng.standard_normal((batch, width), dtype=np.float32),
            "INPUT__1": rng.standard_normal((batch, width), dtype=np.float32),
            "INPUT__2": rng.integers(-2**24, 2**24, (batch, width), dtype=np.int32)}


# ---------------------------------------------------------------- 2, 3, 5 through the server

def serve_and_compare(repo: Path) -> None:
    import tritonclient.grpc as grpcclient
    from conftest import ServerHandle

    section("server: KIND_GPU x2 vs KIND_CPU, concurrent tritonclient callers")
    server = ServerHandle(repo, ["--exit-on-error", "false"], timeout=180)
    try:
        client = server.client()
        check(client.is_model_ready("add_sub_gpu"), "add_sub_gpu (KIND_GPU, 2 instances) is READY")
        check(client.is_model_ready("add_sub_cpu"), "add_sub_cpu (KIND_CPU) is READY")

        def infer(model, req):
            inputs = []
            for name, arr in req.items():
                inp = grpcclient.InferInput(name, arr.shape, "FP32" if arr.dtype == np.float32 else "INT32")
                inp.set_data_from_numpy(arr)
                inputs.append(inp)
            result = client.infer(model, inputs)
            return {n: result.as_numpy(n) for n in ("OUTPUT__0", "OUTPUT__1", "OUTPUT__2")}

        def compare(seed):
            req = make_request(seed, width=int(np.random.default_rng(seed).integers(1, 4096)))
            got, want = infer("add_sub_gpu", req), infer("add_sub_cpu", req)
            return all(got[n].tobytes() == want[n].tobytes() and got[n].shape == want[n].shape for n in want)

        t0 = time.perf_counter()
        with ThreadPoolExecutor(8) as ex:
            results = list(ex.map(compare, range(400)))
        check(all(results), f"400 requests from 8 concurrent callers: GPU == CPU bit-exact "
                            f"({sum(results)}/400, {time.perf_counter() - t0:.1f} s)")

        # round-trip latency at concurrency 1, for the record
        req = make_request(1, width=256, batch=1)
        for model in ("add_sub_gpu", "add_sub_cpu"):
            for _ in range(50):
                infer(model, req)
            times = []
            for _ in range(500):
                t = time.perf_counter()
                infer(model, req)
                times.append(time.perf_counter() - t)
            p50 = np.median(times) * 1e6
            print(f"gRPC round trip {model}, 3 x 1 KiB, concurrency 1: p50 {p50:.0f} us")
            SUMMARY[f"grpc_p50_us_{model}"] = round(p50)

        section("garbage model.plan under the TensorRT runtime")
        index = {m.name: m for m in client.get_model_repository_index().models}
        bad = index.get("bad_plan")
        print(f"bad_plan: state={getattr(bad, 'state', None)!r} reason={getattr(bad, 'reason', None)!r}")
        check(bad is not None and bad.state == "UNAVAILABLE", "bad_plan is UNAVAILABLE")
        reason = getattr(bad, "reason", "")
        check("unable to load TensorRT engine" in reason and "TensorRT gave no message" not in reason,
              "bad_plan's reason carries TensorRT's own message")
        SUMMARY["bad_plan_reason"] = reason

        section("perf_analyzer")
        run_perf_analyzer(server.url)
        client.close()
    finally:
        code = server.stop()
        print(f"server stopped ({code}); log tail:\n" + "\n".join(server.log_path.read_text(errors="replace").splitlines()[-15:]))


def run_perf_analyzer(url: str) -> None:
    exe = None
    try:  # the binary inside the carried perf-analyzer wheel
        import importlib.util

        spec = importlib.util.find_spec("perf_analyzer")
        if spec and spec.origin:
            candidate = Path(spec.origin).parent / "bin" / "perf_analyzer"
            if candidate.exists():
                candidate.chmod(0o755)
                exe = str(candidate)
    except (ImportError, OSError):
        pass
    exe = exe or shutil.which("perf_analyzer")
    if exe is None:
        print("perf_analyzer not on PATH: skipped (carry the perf-analyzer wheel in .whl)")
        return
    shape_args = ["--shape", "INPUT__0:1024", "--shape", "INPUT__1:1024", "--shape", "INPUT__2:1024"]
    cmd = [exe, "-m", "add_sub_gpu", "-u", url, "-i", "grpc", "--concurrency-range", "1:4:3",
           "--measurement-interval", "2000", "-b", "1", *shape_args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired:
        print("perf_analyzer timed out after 90 s")
        return
    print(proc.stdout[-3000:] or proc.stderr[-3000:])
    print(f"perf_analyzer exit code {proc.returncode}")


# ---------------------------------------------------------------- 4. pipeline overhead

def pipeline_overhead(repo: Path, model_cls) -> None:
    import torch
    from google.protobuf import text_format

    from triton_grpc_server._proto import model_config_pb2 as mc
    from triton_grpc_server.backends.base import BackendContext
    from triton_grpc_server.backends.pytorch import PyTorchBackend

    section("per-request overhead beyond copies + execution (in process, concurrency 1)")
    path = repo / "add_sub_gpu" / "1" / "model.pt"
    config = text_format.Parse((repo / "add_sub_gpu" / "config.pbtxt").read_text(), mc.ModelConfig())
    backend = PyTorchBackend(config, 1, path, BackendContext("add_sub_gpu"))
    inst = backend.create_instance(0, "KIND_GPU", 0)
    module = torch.jit.load(str(path), map_location="cuda:0")
    stream = torch.cuda.Stream()
    results = {}
    for width in (16, 1 << 18):  # 3 x 64 B and 3 x 1 MiB inputs
        req = make_request(7, width=width, batch=1)
        pinned = {n: torch.from_numpy(a).pin_memory() for n, a in req.items()}
        outs_pinned = [torch.empty((1, width), dtype=d).pin_memory()
                       for d in (torch.float32, torch.float32, torch.int32)]

        pinned_np = {n: t.numpy() for n, t in pinned.items()}

        def torch_alone():
            # The same work: request bytes -> pinned -> device -> model -> pinned.
            for n, a in req.items():
                np.copyto(pinned_np[n], a)
            with torch.inference_mode(), torch.cuda.stream(stream):
                args = [pinned[n].to("cuda:0", non_blocking=True) for n in ("INPUT__0", "INPUT__1", "INPUT__2")]
                outs = module(*args)
                for dst, o in zip(outs_pinned, outs):
                    dst.copy_(o, non_blocking=True)
            stream.synchronize()

        def ours():
            return inst.run(req, [], {})

        def median_us(fn, n=2000):
            for _ in range(200):
                fn()
            times = []
            for _ in range(n):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
            return float(np.median(times) * 1e6)

        got = ours()
        with torch.inference_mode():
            want = module(*[pinned[n].cuda() for n in ("INPUT__0", "INPUT__1", "INPUT__2")])
        exact = all(got[f"OUTPUT__{i}"].tobytes() == want[i].cpu().numpy().tobytes() for i in range(3))
        check(exact, f"backend output == torch output (width {width})")
        base = median_us(torch_alone)
        mine = median_us(ours)
        results[width] = (base, mine)
        print(f"width {width:>6} ({3 * width * 4 / 1024:.1f} KiB in): torch alone p50 {base:.1f} us, "
              f"backend execute p50 {mine:.1f} us, overhead {mine - base:+.1f} us")
    overhead = results[16][1] - results[16][0]
    SUMMARY["overhead_us_small"] = round(overhead, 1)
    SUMMARY["overhead_us_1MiB"] = round(results[1 << 18][1] - results[1 << 18][0], 1)
    print(f"target: overhead <= 30 us at concurrency 1 (small request): "
          f"{'met' if overhead <= 30 else 'NOT met'} ({overhead:.1f} us)")
    pool = inst.pool
    blocks = pool.block_allocations
    for _ in range(100):
        inst.run(make_request(3, width=1000, batch=2), [], {})
    check(pool.block_allocations == blocks, "no new pinned blocks in steady state")
    print(f"pool: {pool.stats()}")
    inst.close()


def main() -> int:
    from triton_grpc_server import gpu

    reason = gpu.unavailable_reason()
    if reason is not None:
        print(f"FAIL no usable GPU: {reason}")
        return 2
    cuda = gpu.cuda_module()
    props = cuda.device_properties(0)
    print(f"device 0: {props['name']} cc {props['compute_capability']}, driver CUDA "
          f"{cuda.driver_version()}, static cudart {cuda.runtime_version()}")
    pool_bandwidth(cuda)
    with tempfile.TemporaryDirectory() as tmp:
        repo, model_cls = build_repo(Path(tmp))
        pipeline_overhead(repo, model_cls)
        serve_and_compare(repo)
    section("summary")
    print(json.dumps(SUMMARY, indent=1))
    out = os.environ.get("OUT")
    if out:
        Path(out, "gpu_check_summary.json").write_text(json.dumps(SUMMARY, indent=1))
    if FAILURES:
        print(f"\n{len(FAILURES)} check(s) FAILED: " + "; ".join(FAILURES))
        return 1
    print("\nall GPU checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
