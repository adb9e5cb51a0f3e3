"""Packaging: extras, the unbuilt-checkout message, a missing backend extra named in the load error.

Building the sdist and wheel and serving from a fresh venv is the job of
scripts/wheel_smoke.sh (``make wheel-smoke``, run by CI after the tests);
these tests cover what can be checked in seconds.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import ROOT, ServerHandle
from models import simple_model

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
BACKEND_EXTRAS = ["onnxruntime", "pytorch", "tensorrt"]


def test_extras_exist_and_all_covers_them():
    extras = PYPROJECT["project"]["optional-dependencies"]
    for name in [*BACKEND_EXTRAS, "metrics", "all"]:
        assert name in extras, f"extra [{name}] missing from pyproject.toml"
    (all_spec,) = extras["all"]
    requested = all_spec.split("[", 1)[1].rstrip("]").split(",")
    assert all_spec.startswith(PYPROJECT["project"]["name"] + "[")
    assert set(requested) >= {*BACKEND_EXTRAS, "metrics"}
    assert set(requested) <= set(extras), "[all] names an extra that does not exist"


def test_core_dependencies_have_no_backend_runtime():
    core = " ".join(PYPROJECT["project"]["dependencies"]).lower()
    # prometheus-client is core on purpose: metrics are on by default, as in Triton
    for heavy in ("onnxruntime", "torch", "tensorrt"):
        assert heavy not in core, f"{heavy} must stay in an extra, not in the core dependencies"


def test_sdist_manifest_carries_the_build_inputs():
    manifest = (ROOT / "MANIFEST.in").read_text()
    assert "graft protos" in manifest
    for pattern in ("ext/*.pyx", "ext/*.pxd", "ext/cuda_build.py"):
        assert pattern in manifest


def _unbuilt_copy(tmp_path: Path) -> Path:
    """The package's Python sources alone, as a fresh clone has them."""
    target = tmp_path / "checkout"
    shutil.copytree(ROOT / "triton_grpc_server", target / "triton_grpc_server",
                    ignore=shutil.ignore_patterns("*_pb2*.py", "*.so", "__pycache__"))
    return target


def test_unbuilt_checkout_says_what_to_run(tmp_path):
    checkout = _unbuilt_copy(tmp_path)
    # -m puts the working directory first on sys.path, ahead of the installed package
    out = subprocess.run([sys.executable, "-m", "triton_grpc_server", "--model-repository",
                          str(tmp_path)], cwd=checkout, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "not built" in lines[0] and "make setup" in lines[0]
    assert "model_config_pb2" in lines[0]


def test_built_package_passes_the_check():
    out = subprocess.run([sys.executable, "-m", "triton_grpc_server", "--version"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "not built" not in out.stderr


def test_missing_onnxruntime_extra_is_named_in_the_model_state(tmp_path):
    """A repository of ONNX models without onnxruntime: UNAVAILABLE, the reason names the extra."""
    repo = tmp_path / "repo"
    simple_model(repo)
    # A package that fails to import the way an absent one does, ahead of the real one
    shadow = tmp_path / "shadow" / "onnxruntime"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'onnxruntime'\", name='onnxruntime')\n")
    server = ServerHandle(repo, ["--exit-on-error", "false", "--allow-metrics", "false"],
                          env={"PYTHONPATH": str(shadow.parent)})
    try:
        with server.client() as client:
            index = client.get_model_repository_index(as_json=True)["models"]
        (row,) = [m for m in index if m["name"] == "simple"]
        assert row["state"] == "UNAVAILABLE"
        assert "[onnxruntime]" in row["reason"], row
        assert "onnxruntime" in row["reason"]
    finally:
        server.stop()


@pytest.mark.parametrize("script", ["scripts/wheel_smoke.sh"])
def test_wheel_smoke_script_is_valid_bash(script):
    subprocess.run(["bash", "-n", str(ROOT / script)], check=True)


@pytest.mark.parametrize("module,package,call,extra", [
    ("triton_grpc_server.backends.pytorch", "torch", "_import_torch()", "[pytorch]"),
    ("triton_grpc_server.backends.onnxruntime", "onnxruntime", "_ort()", "[onnxruntime]"),
    ("triton_grpc_server.backends.tensorrt", None,
     "import_runtime_module(('no_such_tensorrt_module',))", "[tensorrt]"),
])
def test_each_backend_names_its_extra_when_its_package_is_missing(tmp_path, module, package,
                                                                  call, extra):
    shadow = tmp_path / "shadow"
    if package:  # fails to import the way an absent package does, ahead of the real one
        (shadow / package).mkdir(parents=True)
        (shadow / package / "__init__.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{package}'\", name='{package}')\n")
    code = (f"import {module} as backend\n"
            f"from triton_grpc_server.errors import Unavailable\n"
            f"try:\n    backend.{call}\nexcept Unavailable as exc:\n    print(exc.message)\n")
    env = dict(os.environ, PYTHONPATH=str(shadow))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert extra in out.stdout and "pip install" in out.stdout, out.stdout
