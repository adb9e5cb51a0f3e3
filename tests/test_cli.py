"""The command line: bad repositories, --version, Triton's flag names, clean shutdown."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

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
         "--grpc-address", "127.0.0.1", "--grpc-port", str(port), "--allow-metrics=false", "--allow-http=false",
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

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_cleanly_after_in_flight_request(tmp_path, sig):
    repo = tmp_path / "models"
    repo.mkdir()
    env = models.echo_params_model(repo, tmp_path / "plugins")
    handle = models.start(repo, env=env)
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


# -- a tritonserver launch line, logs, start-up order ---------------------------------------

ISO8601_RECORD = re.compile(  # Triton's qa/L0_logging/log_format_test.py
    r"(?P<ISO8601_timestamp>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z) (?P<level>\w+) (?P<pid>\d+) "
    r"(?P<file>.+):(?P<line>\d+)] (?P<message>.*)")
DEFAULT_RECORD = re.compile(
    r"(?P<level>\w)(?P<month>\d{2})(?P<day>\d{2}) (?P<timestamp>\d{2}:\d{2}:\d{2}\.\d{6}) "
    r"(?P<pid>\d+) (?P<file>[\w\.]+):(?P<line>\d+)] (?P<message>.*)")


@pytest.fixture(scope="module")
def auto_repo(tmp_path_factory):
    """A batchable ONNX model without config.pbtxt, and Triton's simple."""
    repo = tmp_path_factory.mktemp("launch") / "models"
    models.add_sub_onnx(repo / "auto" / "1" / "model.onnx")
    models.simple_model(repo, "simple")
    return repo


def test_tritonserver_launch_line_from_triton_docs(auto_repo):
    """tritonserver --model-repository=/models --log-verbose=1
    --backend-config=onnxruntime,default-max-batch-size=8 --metrics-interval-ms=1000
    --log-format=ISO8601, with python -m triton_grpc_server in its place."""
    metrics_port = free_port()
    handle = models.start(auto_repo, f"--model-repository={auto_repo}", "--log-verbose=1",
                          "--backend-config=onnxruntime,default-max-batch-size=8",
                          "--metrics-interval-ms=1000", "--log-format=ISO8601",
                          "--metrics-port", metrics_port)
    try:
        client = handle.client()
        config = client.get_model_config("auto").config
        assert config.max_batch_size == 8          # the backend config's default, not 4
        check_simple(handle)
        client.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as response:
            assert b"nv_inference_request_success" in response.read()
        log = handle.log()
    finally:
        assert handle.stop() == 0
    records = [line for line in log.splitlines() if ISO8601_RECORD.match(line)]
    assert records, log
    assert all(ISO8601_RECORD.match(line).group("level") in "EWI" for line in records)
    assert any("successfully loaded 'auto' version 1" in line for line in records)
    # --log-verbose=1: a line per request, with model, version and status
    assert re.search(r"request model=simple version=1 id=\S+ status=SUCCESS duration_us=\d+",
                     log), log
    # the model table, as Triton prints it after loading
    assert re.search(r"^\| Model +\| Version \| Status +\|$", log, re.M)
    assert re.search(r"^\| auto +\| 1 +\| READY +\|$", log, re.M)


def test_default_log_format_and_log_file(simple_repo, tmp_path):
    log_file = tmp_path / "server.log"
    handle = models.start(simple_repo, "--log-file", log_file)
    try:
        check_simple(handle)
    finally:
        assert handle.stop() == 0
    console = handle.log()
    text = log_file.read_text()
    assert "Started GRPCInferenceService" in text
    assert "Started GRPCInferenceService" not in console
    lines = [line for line in text.splitlines() if not line.startswith(("+", "|"))]
    for line in lines:
        match = DEFAULT_RECORD.match(line)
        assert match, line
        message = match.group("message")   # escaped, as Triton's default; "" heads a table
        assert message == "" or (message.startswith('"') and message.endswith('"')), line


def test_json_log_format_and_switches(simple_repo):
    handle = models.start(simple_repo, "--log-format=json", "--log-info=false",
                          "--rate-limit=off")
    try:
        check_simple(handle)
    finally:
        assert handle.stop() == 0
    entries = [json.loads(line) for line in handle.log().splitlines() if line.startswith("{")]
    assert entries
    assert {e["level"] for e in entries} == {"WARNING"}  # info off; the flag warning stays
    assert "--rate-limit has no effect" in entries[0]["message"]
    assert {"time", "pid", "file", "line", "logger"} <= set(entries[0])


def test_busy_metrics_port_fails_before_loading(simple_repo):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_cli("--model-repository", simple_repo, "--grpc-port", free_port(),
                       "--allow-http=false", "--metrics-address", "127.0.0.1",
                       "--metrics-port", port)
    line = one_line_error(proc)
    assert f"127.0.0.1:{port}" in line and "Metrics" in line


def test_empty_repository_warns(tmp_path):
    repo = tmp_path / "empty"
    repo.mkdir()
    handle = models.start(repo)
    try:
        assert handle.client().is_server_ready()
    finally:
        assert handle.stop() == 0
    assert re.search(r"model repository '.*empty' is empty", handle.log())


def test_version_lists_backends():
    proc = run_cli("--version")
    assert proc.returncode == 0
    assert re.search(r"backend onnxruntime: onnxruntime(-gpu)? \d", proc.stdout), proc.stdout
    for backend in ("pytorch", "tensorrt"):
        assert f"backend {backend}: " in proc.stdout


def test_model_config_name(tmp_path):
    repo = tmp_path / "models"
    model_dir = models.simple_model(repo, "simple", max_batch_size=8)
    text = (model_dir / "config.pbtxt").read_text().replace("max_batch_size: 8",
                                                            "max_batch_size: 2")
    models.write_text(model_dir / "configs" / "small.pbtxt", text)
    handle = models.start(repo, "--model-config-name=small")
    try:
        client = handle.client()
        assert client.get_model_config("simple").config.max_batch_size == 2
        client.close()
    finally:
        assert handle.stop() == 0


def test_header_forwarding(tmp_path):
    repo = tmp_path / "models"
    repo.mkdir()
    env = models.echo_params_model(repo, tmp_path / "plugins")
    handle = models.start(repo, "--grpc-header-forward-pattern", "x-fwd-.*", env=env)
    try:
        client = handle.client()
        x = grpcclient.InferInput("INPUT0", [1], "FP32")
        x.set_data_from_numpy(np.array([1.0], dtype=np.float32))
        result = client.infer("echo_params", [x], headers={"x-fwd-tenant": "blue",
                                                           "other": "no"})
        echoed = json.loads(result.as_numpy("PARAMS")[0])["parameters"]
        assert echoed.get("x-fwd-tenant") == "blue"
        assert "other" not in echoed
        with pytest.raises(InferenceServerException, match="is reserved for Triton usage"):
            client.infer("echo_params", [x], headers={"triton_x-fwd-a": "1"})
        client.close()
    finally:
        handle.stop()


def test_reuse_grpc_port(simple_repo):
    """Two servers on one port with --reuse-grpc-port=true (SO_REUSEPORT); without it the
    second refuses to start, naming the address."""
    first = models.start(simple_repo, "--reuse-grpc-port=true")
    try:
        second = subprocess.Popen(
            [sys.executable, "-m", "triton_grpc_server", "--model-repository", str(simple_repo),
             "--grpc-address", "127.0.0.1", "--grpc-port", str(first.port),
             "--allow-metrics=false", "--allow-http=false", "--reuse-grpc-port=true"],
            cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(3)
            assert second.poll() is None, second.stderr.read()
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(30) == 0
        refused = run_cli("--model-repository", simple_repo, "--grpc-address", "127.0.0.1",
                          "--grpc-port", first.port, "--allow-metrics=false",
                          "--allow-http=false")
        assert refused.returncode == 1
        errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
        assert errors == [f"error: failed to bind gRPC frontend on 127.0.0.1:{first.port}: "
                          "address in use or not available"], refused.stderr
        # refused before loading models
        assert "successfully loaded" not in refused.stdout + refused.stderr
    finally:
        first.stop()


def test_make_serve_installs_serving_packages_only():
    """`make serve` installs the core dependencies and the extras it names, none of them
    test-only (torch, the TensorRT runtime, the clients, pytest)."""
    import tomllib

    makefile = (ROOT / "Makefile").read_text()
    serve_rule = re.search(r"^serve: (.*)$", makefile, re.M).group(1).split()
    assert "setup" not in serve_rule and "setup-serve" in serve_rule
    extras = re.search(r'^setup-serve:.*\n\t.*pip install[^\n]*-e "\.\[([^\]]*)\]"', makefile,
                       re.M).group(1).split(",")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    installed = list(project["dependencies"])
    for extra in extras:
        installed += project["optional-dependencies"][extra]
    names = {re.split(r"[<>=\[ ;]", requirement, maxsplit=1)[0].lower()
             for requirement in installed}
    assert "prometheus-client" in set(re.split(r"[<>=]", d)[0] for d in project["dependencies"])
    assert not names & {"torch", "tensorrt-lean-cu13", "tritonclient", "pytest", "hypothesis",
                        "pillow", "pytest-timeout"}, names


def test_info_on_stdout_warnings_and_errors_on_stderr(tmp_path):
    """As Triton (qa/L0_logging checks it): I lines on stdout, W and E lines on stderr."""
    repo = tmp_path / "models"
    models.simple_model(repo, "simple")
    models.write_text(repo / "broken" / "config.pbtxt", "this is not a config")
    out, err = tmp_path / "out.log", tmp_path / "err.log"
    port = free_port()
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "triton_grpc_server", "--model-repository", str(repo),
             "--grpc-address", "127.0.0.1", "--grpc-port", str(port), "--allow-metrics=false", "--allow-http=false",
             "--exit-on-error=false", "--rate-limit=off"],
            cwd=str(ROOT), stdout=stdout, stderr=stderr)
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if client.is_server_live():
                        break
                except Exception:
                    time.sleep(0.1)
        finally:
            client.close()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
    records_out = [line for line in out.read_text().splitlines() if DEFAULT_RECORD.match(line)]
    records_err = [line for line in err.read_text().splitlines() if DEFAULT_RECORD.match(line)]
    assert records_out and {line[0] for line in records_out} == {"I"}
    assert {line[0] for line in records_err} == {"W", "E"}, records_err
    assert any("Waiting for in-flight requests to complete" in line for line in records_out)
