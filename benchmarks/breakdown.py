"""Where one ModelInfer's time goes inside our server, without gRPC.

Times the servicer's three steps in-process on the benchmark's models, for
each codec: decode (wire bytes -> request), the data plane (validation,
scheduler, ONNX Runtime, response assembly) and encode (response -> wire
bytes). Wall time per call, single thread; the repository is loaded without
auto-complete, as ``run.py`` serves it. ``python benchmarks/breakdown.py``.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import workloads  # noqa: E402


def _per_call_us(fn, arg, seconds: float) -> float:
    fn(arg)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(20):
            fn(arg)
        count += 20
    return (time.perf_counter() - start) / count * 1e6


def breakdown(seconds: float = 0.3) -> list[tuple[str, str, float, float, float]]:
    """Rows of (model, codec, decode us, data plane us, encode us)."""
    from triton_grpc_server.dataplane import DataPlane
    from triton_grpc_server.frontends.codecs import load_codec
    from triton_grpc_server.repository import ModelRepository
    from triton_grpc_server.settings import Settings

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models = workloads.write_repository(Path(tmp) / "repo")
        settings = Settings(model_repository=Path(tmp) / "repo")
        repository = ModelRepository(settings.model_repository, auto_complete=False,
                                     settings=settings)
        repository.load_all()
        dataplane = DataPlane(repository, settings)
        try:
            for codec_name in ("cython", "python"):
                try:
                    codec = load_codec(codec_name)
                except ImportError:
                    continue
                for name, model in models.items():
                    message = workloads.request_message(model)
                    request = codec.decode_request(message)
                    response = dataplane.infer(request)
                    rows.append((name, codec_name,
                                 _per_call_us(codec.decode_request, message, seconds),
                                 _per_call_us(dataplane.infer, request, seconds),
                                 _per_call_us(codec.encode_response, response, seconds)))
        finally:
            repository.close()
    return rows


def table(rows) -> str:
    lines = ["| model | codec | decode µs | data plane µs | encode µs |", "|---|---|---:|---:|---:|"]
    lines += [f"| {m} | {c} | {d:,.1f} | {p:,.1f} | {e:,.1f} |" for m, c, d, p, e in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(breakdown()))
