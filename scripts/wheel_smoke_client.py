"""The serving half of scripts/wheel_smoke.sh, run by the fresh venv's Python.

Starts ``python -m triton_grpc_server`` from the installed wheel on free
loopback ports, waits for readiness, runs one ``simple`` inference with
tritonclient.grpc and (when the installed package has an HTTP frontend) one with
tritonclient.http, checks that /metrics counted them, then sends SIGTERM and
expects exit status 0. Exits non-zero with the server's log on any failure.
"""
from __future__ import annotations

import argparse
import importlib.util
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def simple_inputs(module):
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 3, dtype=np.int32)
    inputs = [module.InferInput("INPUT0", [1, 16], "INT32"),
              module.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    return inputs, a + b, a - b


def check_result(result, want_sum, want_diff, transport: str) -> None:
    if not (np.array_equal(result.as_numpy("OUTPUT0"), want_sum)
            and np.array_equal(result.as_numpy("OUTPUT1"), want_diff)):
        raise AssertionError(f"{transport}: wrong result for 'simple'")
    print(f"  {transport} inference on 'simple': OUTPUT0/OUTPUT1 correct")


def wait_ready(client, process, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before it was ready")
        try:
            if client.is_server_ready():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server not ready after {timeout:.0f}s")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", required=True, type=Path)
    parser.add_argument("--source-root", required=True, type=Path)
    args = parser.parse_args()

    import triton_grpc_server

    installed = Path(triton_grpc_server.__file__).resolve()
    if args.source_root.resolve() in installed.parents:
        raise SystemExit(f"error: imported the checkout ({installed}), not the installed wheel")
    if importlib.util.find_spec("triton_grpc_server._ext.wire") is None:
        raise SystemExit("error: the installed wheel has no compiled wire codec")
    has_http = importlib.util.find_spec("triton_grpc_server.frontends.http") is not None
    print(f"  installed at {installed.parent}; HTTP frontend: {'yes' if has_http else 'not yet'}")

    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    log_path = Path(tempfile.gettempdir()) / f"tgs-wheel-smoke-{grpc_port}.log"
    cmd = [sys.executable, "-m", "triton_grpc_server", "--model-repository", str(args.models),
           "--grpc-address", "127.0.0.1", "--grpc-port", str(grpc_port),
           "--http-port", str(http_port), "--metrics-port", str(metrics_port),
           "--infer-codec", "cython"]
    help_text = subprocess.run([sys.executable, "-m", "triton_grpc_server", "--help"],
                               capture_output=True, text=True, check=True).stdout
    if "--http-address" in help_text:  # keep the HTTP frontend on loopback too
        cmd += ["--http-address", "127.0.0.1"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        wait_ready(client, process)
        inputs, want_sum, want_diff = simple_inputs(grpcclient)
        check_result(client.infer("simple", inputs), want_sum, want_diff, "tritonclient.grpc")
        client.close()
        expected = 1
        if has_http:
            import tritonclient.http as httpclient

            http = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}")
            inputs, want_sum, want_diff = simple_inputs(httpclient)
            check_result(http.infer("simple", inputs), want_sum, want_diff, "tritonclient.http")
            http.close()
            expected = 2
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                      timeout=10).read().decode()
        line = next((l for l in text.splitlines()
                     if l.startswith('nv_inference_request_success{model="simple"')), "")
        if not line or float(line.rsplit(" ", 1)[1]) != expected:
            raise AssertionError(f"/metrics: expected {expected} successes for 'simple', got {line!r}")
        print(f"  /metrics: {line}")
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
        if code != 0:
            raise AssertionError(f"server exited with {code} after SIGTERM")
        print("  SIGTERM: clean shutdown, exit status 0")
        return 0
    except BaseException:
        if process.poll() is None:
            process.kill()
            process.wait()
        sys.stderr.write(log_path.read_text(errors="replace"))
        raise
    finally:
        log_path.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
