"""Importing the package never imports a heavy backend runtime."""
import subprocess
import sys

HEAVY = ["onnxruntime", "onnx", "torch", "tensorrt", "tensorrt_lean", "tensorrt_dispatch",
         "tensorrt_lean_bindings", "tensorrt_dispatch_bindings", "prometheus_client", "pynvml"]


def test_server_modules_import_without_backends():
    code = (
        "import sys\n"
        "import triton_grpc_server, triton_grpc_server.cli, triton_grpc_server.server\n"
        "import triton_grpc_server.dataplane, triton_grpc_server.frontends.grpc\n"
        "import triton_grpc_server.repository, triton_grpc_server.backends\n"
        f"loaded = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(','.join(loaded))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_version_flag():
    out = subprocess.run([sys.executable, "-m", "triton_grpc_server", "--version"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.startswith("triton_grpc_server ")
