"""The command line: bad repositories, --version, Triton's flag names, clean shutdown."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

import models
from conftest import ROOT, free_port


def run_cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "triton_grpc_server", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=str(ROOT))


def one_line_error(proc) -> str:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_missing_repository(tmp_path):
    missing = tmp_path / "nowhere"
    line = one_line_error(run_cli("--model-repository", missing))
    assert str(missing) in line
    assert "does not exist" in line


def test_repository_is_a_file(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    line = one_line_error(run_cli("--model-repository", path))
    assert str(path) in line
    assert "not a directory" in line


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root can read a mode-000 directory")
def test_unreadable_repository(tmp_path):
    repo = tmp_path / "locked"
    repo.mkdir()
    repo.chmod(0)
    try:
        line = one_line_error(run_cli("--model-repository", repo))
    finally:
        repo.chmod(0o755)
    assert str(repo) in line
    assert "not readable" in line


def test_no_repository_flag():
    line = one_line_error(run_cli())
    assert "--model-repository" in line


def test_version():
    from triton_grpc_server import _version

    proc = run_cli("--version")
    assert proc.returncode == 0
    assert _version.__version__ in proc.stdout
    assert "triton_grpc_server" in proc.stdout


def test_unknown_flag_rejected():
    proc = run_cli("--model-repository", ".", "--no-such-flag")
    assert proc.returncode == 2
    assert "--no-such-flag" in proc.stderr


@pytest.fixture(scope="module")
def simple_repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("cli") / "models"
    models.simple_model(repo, "simple")
    return repo


def check_simple(handle):
    client = handle.client()
    try:
        a = np.arange(16, dtype=np.int32).reshape(1, 16)
        inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"),
                  grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_data_from_numpy(a)
        np.testing.assert_array_equal(client.infer("simple", inputs).as_numpy("OUTPUT0"), a * 2)
        assert client.is_server_ready()
    finally:
        client.close()


def test_triton_flag_names_accepted(simple_repo):
    flags = ["--http-port", free_port(), "--metrics-port", free_port(), "--allow-metrics=false",
             "--allow-http=false", "--strict-model-config=false", "--exit-on-error=true",
             "--strict-readiness=true", "--log-verbose=1", "--log-info=true",
             "--model-control-mode=none", "--exit-timeout-secs=5",
             "--grpc-infer-thread-count", 4, "--host", "127.0.0.1"]
    handle = models.start(simple_repo, *flags)
    try:
        check_simple(handle)
    finally:
        assert handle.stop() == 0


def test_model_store_alias_and_explicit_mode(simple_repo, tmp_path):
    """--model-store (Triton's old name); explicit mode with --load-model."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "triton_grpc_server", "--model-store", str(simple_repo),
         "--grpc-address", "127.0.0.1", "--grpc-port", str(port), "--allow-metrics=false",
         "--model-control-mode=explicit", "--load-model", "simple"],
        cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if client.is_server_live():
                    break
            except Exception:
                time.sleep(0.1)
        assert client.is_model_ready("simple") is True
    finally:
        client.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


# -- shutdown -----------------------------------------------------------------------------------

@pytest.mark.parametrize("sig, frontend", [
    (signal.SIGTERM, "sync"), (signal.SIGINT, "sync"), (signal.SIGTERM, "aio"),
    (signal.SIGINT, "aio")],
    ids=["SIGTERM", "SIGINT", "SIGTERM-aio", "SIGINT-aio"])
def test_signal_stops_cleanly_after_in_flight_request(tmp_path, sig, frontend):
    repo = tmp_path / "models"
    repo.mkdir()
    env = models.echo_params_model(repo, tmp_path / "plugins")
    handle = models.start(repo, "--grpc-server", frontend, env=env)
    time.sleep(0.5)  # let the server install its signal handlers after answering
    marker = tmp_path / "in-flight"
    client = handle.client()
    outcome = {}

    def slow_request():
        x = grpcclient.InferInput("INPUT0", [1], "FP32")
        x.set_data_from_numpy(np.array([1.0], dtype=np.float32))
        try:
            result = client.infer("echo_params", [x],
                                  parameters={"marker": str(marker), "sleep_ms": 1500})
            outcome["params"] = result.as_numpy("PARAMS")
        except Exception as exc:  # recorded, asserted below
            outcome["error"] = exc

    worker = threading.Thread(target=slow_request)
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert time.monotonic() < deadline, "request never reached the backend"
            time.sleep(0.02)
        handle.process.send_signal(sig)
        worker.join(30)
        code = handle.process.wait(30)
    finally:
        worker.join(1)
        client.close()
        handle.stop()
    assert "error" not in outcome, outcome.get("error")
    assert outcome["params"] is not None
    assert code == 0


def test_sigterm_idle_server_exits_zero(simple_repo):
    handle = models.start(simple_repo)
    time.sleep(0.5)
    started = time.monotonic()
    assert handle.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 10
