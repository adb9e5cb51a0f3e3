"""4 MiB FP32 identity through system shared memory vs the wire and the ceiling.

One invocation measures, on the same machine and load generator:

* ``memcpy``: single-thread copy bandwidth of a 4 MiB buffer (numpy ``copyto``,
  the same ``memcpy`` the server's region copy uses) and of 256 MiB (DRAM);
* ``ceiling``: bare grpcio (``benchmarks/ceiling.py``, sync and aio) answering
  ``identity_4m`` over the wire, the best of the two;
* ``wire``: our server, the same request over the wire (after the output allocator);
* ``shm``: our server, input and output in registered POSIX regions: each
  ModelInfer is a ~200-byte message naming the regions; the server reads the
  input from the mapping and writes the output into it.

All at C=4 with h2load (or the grpc.aio fallback), medians of ``--repeat`` runs,
MiB/s counting the 4 MiB tensor one way, plus server CPU ms per inference.
The shm output is checked byte-exact through tritonclient before the timed runs.

    python benchmarks/shm_bench.py [--seconds 4] [--repeat 3] [--concurrency 4]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import loadgen  # noqa: E402
import run  # noqa: E402  (Server, ServerSpec, CPU accounting)
import workloads  # noqa: E402

from triton_grpc_server._proto import grpc_service_pb2 as pb  # noqa: E402

MIB = 1 << 20
MODEL = "identity_4m"


def memcpy_mib_s(nbytes: int, seconds: float = 1.0) -> float:
    src = np.random.default_rng(0).integers(0, 255, nbytes, dtype=np.uint8)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        np.copyto(dst, src)
        count += 1
    return count * nbytes / MIB / (time.perf_counter() - start)


def shm_request(model, in_region: str, out_region: str) -> bytes:
    msg = pb.ModelInferRequest(model_name=model.name)
    nbytes = model.inputs["INPUT0"].nbytes
    tensor = msg.inputs.add(name="INPUT0", datatype="FP32", shape=model.inputs["INPUT0"].shape)
    tensor.parameters["shared_memory_region"].string_param = in_region
    tensor.parameters["shared_memory_byte_size"].int64_param = nbytes
    out = msg.outputs.add(name="OUTPUT0")
    out.parameters["shared_memory_region"].string_param = out_region
    out.parameters["shared_memory_byte_size"].int64_param = nbytes
    return msg.SerializeToString()


def shm_response_len(model) -> int:
    msg = pb.ModelInferResponse(model_name=model.name, model_version="1")
    msg.outputs.add(name="OUTPUT0", datatype="FP32", shape=model.outputs["OUTPUT0"].shape)
    msg.raw_output_contents.append(b"")
    return len(workloads.grpc_frame(msg.SerializeToString()))


def setup_regions(port: int, model):
    """Register input/output regions with the server and check one result byte-exact."""
    import tritonclient.grpc as grpcclient
    import tritonclient.utils.shared_memory as shm

    data = model.inputs["INPUT0"]
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    handles = []
    for name in ("bench_in", "bench_out"):
        handles.append(shm.create_shared_memory_region(name, f"/tgs_{name}_{port}", data.nbytes))
        client.register_system_shared_memory(name, f"/tgs_{name}_{port}", data.nbytes)
    shm.set_shared_memory_region(handles[0], [data])
    tensor = grpcclient.InferInput("INPUT0", list(data.shape), "FP32")
    tensor.set_shared_memory("bench_in", data.nbytes)
    out = grpcclient.InferRequestedOutput("OUTPUT0")
    out.set_shared_memory("bench_out", data.nbytes)
    client.infer(model.name, [tensor], outputs=[out])
    got = shm.get_contents_as_numpy(handles[1], np.float32, list(data.shape))
    if not np.array_equal(got, data):
        raise RuntimeError("shared-memory output differs from the input")
    client.close()
    return handles


def measure(server, frame: Path, frame_len: int, message: Path, c: int, seconds: float,
            use_h2load: bool, warm_rate: float = 0.0):
    def load(n):
        if use_h2load:
            return loadgen.h2load(server.port, frame, frame_len, c, n)
        return loadgen.aio_loadgen(server.port, message, c, n)

    warm = load(max(4 * c, int(warm_rate * seconds * 0.1)) if warm_rate else 4 * c)
    count = max(8 * c, int((warm_rate or warm.rate) * seconds))
    cpu = server.cpu_seconds()
    result = load(count)
    cpu = server.cpu_seconds() - cpu
    return result.rate, 1000 * cpu / max(result.requests, 1), result.errors + warm.errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--server", choices=["default"], default="default",
                        help="our server (one serving loop: grpc.aio)")
    args = parser.parse_args()
    use_h2load = loadgen.have_h2load()
    c = args.concurrency
    rows: dict[str, list[tuple[float, float]]] = {}
    memcpy_4m = statistics.median(memcpy_mib_s(4 * MIB, 0.5) for _ in range(3))
    memcpy_big = memcpy_mib_s(256 * MIB, 1.0)

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        repo = tmp / "models"
        all_models = workloads.write_repository(repo)
        model = all_models[MODEL]
        small = all_models["add_sub"]  # readiness probe: a response under grpc's 4 MiB default
        probe = workloads.request_message(small)
        (tmp / "add_sub.response").write_bytes(workloads.response_message(small))
        wire_message = workloads.request_message(model)
        files = {}
        for kind, message in (("wire", wire_message),
                              ("shm", shm_request(model, "bench_in", "bench_out"))):
            (tmp / f"{kind}.message").write_bytes(message)
            (tmp / f"{kind}.frame").write_bytes(workloads.grpc_frame(message))
            files[kind] = (tmp / f"{kind}.frame", tmp / f"{kind}.message")
        (tmp / f"{MODEL}.response").write_bytes(workloads.response_message(model))
        wire_len = len(workloads.grpc_frame(workloads.response_message(model)))
        shm_len = shm_response_len(model)

        ours = ["-m", "triton_grpc_server", "--model-repository", "{repo}",
                "--grpc-address", "127.0.0.1", "--grpc-port", "{port}", "--allow-metrics", "false",
                "--allow-client-shm", "true"]
        specs = [run.ServerSpec(f"ceiling-{m}", [str(HERE / "ceiling.py"), "--mode", m,
                                                 "--port", "{port}", "--response",
                                                 f"{MODEL}={{tmp}}/{MODEL}.response",
                                                 "--response", "add_sub={tmp}/add_sub.response"])
                 for m in ("sync", "aio")]
        specs.append(run.ServerSpec(f"ours-{args.server}", ours))
        for spec in specs:
            server = run.Server(spec, repo, tmp)
            handles = []
            try:
                server.wait_ready(probe)
                kinds = ["wire"]
                if not spec.is_ceiling:
                    handles = setup_regions(server.port, model)
                    kinds.append("shm")
                for kind in kinds:
                    frame, message = files[kind]
                    frame_len = wire_len if kind == "wire" else shm_len
                    label = "ceiling" if spec.is_ceiling else kind
                    rate = 0.0
                    for _ in range(args.repeat):
                        rate, cpu, errors = measure(server, frame, frame_len, message, c,
                                                    args.seconds, use_h2load, rate)
                        if errors:
                            raise RuntimeError(f"{spec.name} {kind}: {errors} failed requests")
                        rows.setdefault(f"{label}|{spec.name}", []).append((rate, cpu))
            finally:
                server.stop()
                if handles:
                    import tritonclient.utils.shared_memory as shm
                    for handle in handles:
                        shm.destroy_shared_memory_region(handle)

    def med(key):
        rates, cpus = zip(*rows[key])
        return statistics.median(rates), statistics.median(cpus)

    mib = model.payload_bytes / MIB
    ceiling_key = max((k for k in rows if k.startswith("ceiling|")), key=lambda k: med(k)[0])
    ceiling_rate = med(ceiling_key)[0]
    print(f"# {MODEL} (4 MiB FP32 identity), C={c}, {args.repeat} runs x {args.seconds}s, "
          f"loadgen {'h2load' if use_h2load else 'grpc.aio'}; {time.strftime('%Y-%m-%d %H:%M:%S')}")
    print(f"memcpy single thread: {memcpy_4m:,.0f} MiB/s (4 MiB), {memcpy_big:,.0f} MiB/s (256 MiB)")
    print("| path | server | infer/s | MiB/s | x ceiling | server CPU ms/infer |")
    print("|---|---|---:|---:|---:|---:|")
    for key in rows:
        label, name = key.split("|")
        rate, cpu = med(key)
        print(f"| {label} | {name} | {rate:,.1f} | {rate * mib:,.0f} | "
              f"{rate / ceiling_rate:.2f} | {cpu:.2f} |")
    shm_rate = med(f"shm|ours-{args.server}")[0]
    wire_rate = med(f"wire|ours-{args.server}")[0]
    checks = [
        ("shm MiB/s >= 10x ceiling wire MiB/s", shm_rate / ceiling_rate, 10.0),
        ("shm MiB/s >= 0.5x memcpy (4 MiB)", shm_rate * mib / memcpy_4m, 0.5),
        ("shm MiB/s >= 0.5x memcpy (256 MiB)", shm_rate * mib / memcpy_big, 0.5),
        ("wire MiB/s >= 0.9x ceiling", wire_rate / ceiling_rate, 0.9),
    ]
    for label, value, need in checks:
        print(f"- {label}: {value:.2f}x {'PASS' if value >= need else 'MISS'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
