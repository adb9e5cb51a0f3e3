"""Where one ModelInfer's time goes inside our server, without gRPC.

Times the servicer's three steps in-process on the benchmark's models, for
each codec: decode (wire bytes -> request), the data plane (validation,
scheduler, ONNX Runtime, response assembly) and encode (response -> wire
bytes). Wall time per call, single thread; the repository is loaded without
auto-complete, as ``run.py`` serves it. ``python benchmarks/breakdown.py``.
"""
from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def loaded_repository():
    """The benchmark's models in a temporary repository, loaded as ``run.py`` serves them
    (no auto-complete): yields ``(models, settings, repository)``."""
    from triton_grpc_server.repository import ModelRepository
    from triton_grpc_server.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        models = workloads.write_repository(Path(tmp) / "repo")
        settings = Settings(model_repository=Path(tmp) / "repo")
        repository = ModelRepository(settings.model_repository, auto_complete=False,
                                     settings=settings)
        repository.load_all()
        try:
            yield models, settings, repository
        finally:
            repository.close()


def breakdown(seconds: float = 0.3) -> list[tuple[str, str, float, float, float]]:
    """Rows of (model, codec, decode us, data plane us, encode us)."""
    from triton_grpc_server.dataplane import DataPlane
    from triton_grpc_server.frontends.codecs import load_codec

    rows = []
    with loaded_repository() as (models, settings, repository):
        dataplane = DataPlane(repository, settings)
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
    return rows


def table(rows) -> str:
    lines = ["| model | codec | decode µs | data plane µs | encode µs |", "|---|---|---:|---:|---:|"]
    lines += [f"| {m} | {c} | {d:,.1f} | {p:,.1f} | {e:,.1f} |" for m, c, d, p, e in rows]
    return "\n".join(lines)


def _cpu_us(fn, seconds: float) -> float:
    """CPU time of this thread per call of ``fn()``."""
    fn()
    count, start = 0, time.thread_time()
    while time.thread_time() - start < seconds:
        for _ in range(50):
            fn()
        count += 50
    return (time.thread_time() - start) / count * 1e6


def stages(seconds: float = 0.5) -> list[tuple[str, float]]:
    """CPU µs per call of each stage of one add_sub request (Cython codec), in-process."""
    from triton_grpc_server._ext.wire import validate_raw_inputs
    from triton_grpc_server.frontends.codecs import load_codec
    from triton_grpc_server.request_inputs import RequestValidator
    from triton_grpc_server.responses import build_response
    from triton_grpc_server.scheduler.base import ScheduledRequest

    codec = load_codec("cython")
    with loaded_repository() as (models, _settings, repository):
        message = workloads.request_message(models["add_sub"])
        request = codec.decode_request(message)
        model = repository.get("add_sub")
        instance = model.scheduler.instances[0]

        def python_validator():
            validator = RequestValidator(request, model)
            return validator.requested_outputs(), validator.arrays()

        inputs, batch, names = validate_raw_inputs(request, model.raw_input_specs)
        outputs = instance.run(inputs, names, {})
        response = build_response(request, model, names, outputs, batch)
        steps = [
            ("decode (Cython codec)", lambda: codec.decode_request(message)),
            ("model lookup + in-flight count", lambda: repository.acquire("add_sub").release()),
            ("validation, Cython fast path", lambda: validate_raw_inputs(request, model.raw_input_specs)),
            ("validation, Python validator", python_validator),
            ("ScheduledRequest", lambda: ScheduledRequest(request, model, inputs, names, {}, batch)),
            ("ONNX Runtime run (instance.run)", lambda: instance.run(inputs, names, {})),
            ("ONNX Runtime InferenceSession.run", lambda: instance.session.run(names, inputs)),
            ("response assembly", lambda: build_response(request, model, names, outputs, batch)),
            ("encode (Cython codec)", lambda: codec.encode_response(response)),
        ]
        return [(label, _cpu_us(fn, seconds)) for label, fn in steps]


if __name__ == "__main__":
    if "--stages" in sys.argv:
        print("| stage (add_sub, one request) | CPU µs |\n|---|---:|")
        for label, us in stages():
            print(f"| {label} | {us:.1f} |")
    else:
        print(table(breakdown()))
