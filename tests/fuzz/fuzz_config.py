"""config.pbtxt parsing, auto-complete through the ONNX Runtime backend, validation.

The input is the text of a config.pbtxt in a model directory that holds a real
ONNX model (``add``: FP32 [-1, 4] -> [-1, 4]). Property: reading, completing
and validating it either succeeds with a config that names the model and only
files inside its directory, or raises one of the server's errors; nothing else.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import _harness  # noqa: F401  (paths)

with _harness.instrumented():
    from triton_grpc_server.errors import TritonError
    from triton_grpc_server.repository import config as cfg
    from triton_grpc_server.repository.manager import model_files
    from triton_grpc_server.backends import onnxruntime as _ort_backend  # noqa: F401

NAME = "config"
_dirs = {}


def _model_dir() -> Path:
    if not _dirs:
        from scheduling_models import write_model

        root = Path(tempfile.mkdtemp(prefix="tgs-fuzz-config-"))
        write_model(root, "add", "add", "max_batch_size: 8\n")
        _dirs["model"] = root / "add"
    return _dirs["model"]


def test_one_input(data: bytes) -> None:
    model_dir = _model_dir()
    (model_dir / "config.pbtxt").write_bytes(data)
    try:
        config = cfg.read_config(model_dir)
        config, _ = cfg.complete_config(config, "add", model_dir,
                                        lambda c: model_files(model_dir, c, [1]), True)
    except TritonError:
        return
    assert config.name == "add"
    root = os.path.realpath(model_dir)
    for path in model_files(model_dir, config, [1]):
        assert os.path.commonpath([root, os.path.realpath(path)]) == root


if __name__ == "__main__":
    _model_dir()
    _harness.main(NAME, test_one_input)
