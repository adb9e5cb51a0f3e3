"""Every flag of ``tritonserver`` is accepted with Triton's value syntax.

``TRITON_FLAGS`` is the list of long options of ``tritonserver``, copied from
Triton's ``src/command_line_parser.cc`` (``TritonParser::SetupOptions``) in
triton-inference-server/server at e1db8a60 (the 2.73 line; 91 options, counting
``--help`` and the ``--model-store`` alias), each with a value in Triton's
syntax. Every flag is parsed here in-process (fast); two real servers then
start with all the flags that act and all the flags that are accepted
without effect, so CI pays for two start-ups, not ninety.
"""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

import models
from conftest import ROOT, free_port
from triton_grpc_server import cli

# (flag, value) -- value None: the flag takes no argument
TRITON_FLAGS = [
    ("help", None),
    ("id", "my-triton"),
    ("exit-timeout-secs", "5"),
    ("model-store", "MODELS"),
    ("model-repository", "MODELS"),
    ("exit-on-error", "false"),
    ("disable-auto-complete-config", None),
    ("strict-readiness", "false"),
    ("model-control-mode", "poll"),
    ("repository-poll-secs", "2"),
    ("load-model", "simple"),
    ("model-config-name", "h100"),
    ("model-load-thread-count", "2"),
    ("model-load-retry-count", "1"),
    ("model-namespacing", "true"),
    ("enable-peer-access", "false"),
    ("allow-http", "false"),
    ("http-address", "127.0.0.1"),
    ("http-port", "18800"),
    ("reuse-http-port", "true"),
    ("http-header-forward-pattern", "x-http-.*"),
    ("http-thread-count", "4"),
    ("http-max-input-size", "1048576"),
    ("http-restricted-api", "model-repository:admin-key=secret"),
    ("allow-grpc", "true"),
    ("grpc-address", "127.0.0.1"),
    ("grpc-port", "18801"),
    ("reuse-grpc-port", "true"),
    ("grpc-header-forward-pattern", "x-fwd-.*"),
    ("grpc-infer-thread-count", "4"),
    ("grpc-infer-allocation-pool-size", "8"),
    ("grpc-max-response-pool-size", "8"),
    ("grpc-use-ssl", "false"),
    ("grpc-use-ssl-mutual", "false"),
    ("grpc-server-cert", "/tmp/server.crt"),
    ("grpc-server-key", "/tmp/server.key"),
    ("grpc-root-cert", "/tmp/root.crt"),
    ("grpc-infer-response-compression-level", "low"),
    ("grpc-keepalive-time", "10000"),
    ("grpc-keepalive-timeout", "5000"),
    ("grpc-keepalive-permit-without-calls", "1"),
    ("grpc-http2-max-pings-without-data", "0"),
    ("grpc-http2-min-recv-ping-interval-without-data", "5000"),
    ("grpc-http2-max-ping-strikes", "0"),
    ("grpc-max-connection-age", "60000"),
    ("grpc-max-connection-age-grace", "5000"),
    ("grpc-restricted-protocol", "model-repository,statistics:admin-key=secret"),
    ("log-verbose", "1"),
    ("log-info", "true"),
    ("log-warning", "on"),
    ("log-error", "1"),
    ("log-format", "ISO8601"),
    ("log-file", "LOGFILE"),
    ("allow-sagemaker", "false"),
    ("sagemaker-port", "8080"),
    ("sagemaker-safe-port-range", "8000-8010"),
    ("sagemaker-thread-count", "8"),
    ("allow-vertex-ai", "false"),
    ("vertex-ai-port", "8080"),
    ("vertex-ai-thread-count", "8"),
    ("vertex-ai-default-model", "simple"),
    ("allow-metrics", "true"),
    ("allow-gpu-metrics", "false"),
    ("allow-cpu-metrics", "true"),
    ("metrics-address", "127.0.0.1"),
    ("metrics-port", "18802"),
    ("metrics-interval-ms", "1000"),
    ("metrics-config", "summary_latencies=true"),
    ("trace-config", "triton,file=TRACEFILE"),
    ("cache-config", "local,size=1048576"),
    ("cache-directory", "/opt/tritonserver/caches"),
    ("rate-limit", "execution_count"),
    ("rate-limit-resource", "R1:10:0"),
    ("pinned-memory-pool-byte-size", "134217728"),
    ("cuda-memory-pool-byte-size", "0:67108864"),
    ("cuda-virtual-address-size", "0:1073741824"),
    ("min-supported-compute-capability", "6.0"),
    ("buffer-manager-thread-count", "2"),
    ("host-policy", "gpu_0,numa-node=0"),
    ("model-load-gpu-limit", "0:0.8"),
    ("allow-client-shm", "false"),
    ("backend-directory", "/opt/tritonserver/backends"),
    ("backend-config", "onnxruntime,default-max-batch-size=8"),
    ("repoagent-directory", "/opt/tritonserver/repoagents"),
    ("strict-model-config", "false"),
    ("response-cache-byte-size", "1048576"),
    ("trace-file", "TRACEFILE"),
    ("trace-level", "TIMESTAMPS"),
    ("trace-rate", "1000"),
    ("trace-count", "-1"),
    ("trace-log-frequency", "0"),
]

# flags that need another flag to be valid (Triton's post-parse checks)
NEEDS = {"load-model": ["--model-control-mode=explicit"]}

FLAG_BY_NAME = {f.name: f for f in cli.FLAGS}
for _flag in cli.FLAGS:
    for _alias in _flag.aliases:
        FLAG_BY_NAME[_alias.lstrip("-")] = _flag


def test_list_is_complete():
    """The table in cli.py has exactly Triton's flags (plus --help, which argparse owns)."""
    names = [name for name, _ in TRITON_FLAGS]
    assert len(names) == len(set(names)) == 91
    assert set(names) - {"help"} <= set(FLAG_BY_NAME)
    ours = {f.name for f in cli.FLAGS}
    assert ours <= set(names), ours - set(names)


def _argv(name, value, tmp_path, joined=True):
    value = (value.replace("MODELS", str(tmp_path)).replace("LOGFILE", str(tmp_path / "log.txt"))
             .replace("TRACEFILE", str(tmp_path / "trace.json")) if value is not None else None)
    flag = [f"--{name}"] if value is None else (
        [f"--{name}={value}"] if joined else [f"--{name}", value])
    base = [] if name in ("model-repository", "model-store") else ["--model-repository",
                                                                    str(tmp_path)]
    return base + NEEDS.get(name, []) + flag


@pytest.mark.parametrize("name, value", [f for f in TRITON_FLAGS if f[0] != "help"],
                         ids=[f[0] for f in TRITON_FLAGS if f[0] != "help"])
def test_flag_parses(name, value, tmp_path):
    """Both ``--flag=value`` and ``--flag value``; the flag sets its field or is listed as
    having no effect (and is then in docs/deviations.md)."""
    flag = FLAG_BY_NAME[name]
    for joined in (True, False):
        settings = cli.parse_settings(_argv(name, value, tmp_path, joined))
        if flag.effect:
            assert settings.ignored_flags == [flag.name]
        else:
            assert settings.ignored_flags == []
            assert flag.dest in settings.model_fields_set or flag.dest == \
                "disable_auto_complete_config", f"--{name} set nothing"
    if flag.name == "disable-auto-complete-config":
        assert settings.strict_model_config is True


def test_no_effect_flags_are_documented():
    text = (ROOT / "docs" / "deviations.md").read_text()
    for flag in cli.FLAGS:
        if flag.effect:
            assert f"`--{flag.name}`" in text, f"--{flag.name} missing from docs/deviations.md"


@pytest.mark.parametrize("text, expected", [
    ("true", True), ("True", True), ("ON", True), ("1", True),
    ("false", False), ("FALSE", False), ("off", False), ("0", False)])
def test_triton_booleans(text, expected, tmp_path):
    settings = cli.parse_settings(["--model-repository", str(tmp_path), "--allow-grpc", text,
                                   "--strict-readiness", text])
    assert settings.allow_grpc is expected and settings.strict_readiness is expected


@pytest.mark.parametrize("args, message", [
    (["--allow-grpc", "yes"], "invalid value for bool option: yes"),
    (["--log-verbose", "loud"], "Invalid option value. Got loud"),
    (["--log-format", "iso8601"], "invalid argument 'iso8601'"),
    (["--backend-config", ",x=1"], "--backend-config option format is"),
    (["--backend-config", "onnxruntime,x"], "--backend-config option format is"),
    (["--metrics-config", "summary_latencies"], "--metrics-config option format is"),
    (["--cache-config", "size=1"], "--cache-config option format is"),
    (["--rate-limit", "fast"], "invalid argument 'fast'"),
    (["--cuda-memory-pool-byte-size", "64"], "<GPU device ID>:<pool byte size>"),
])
def test_bad_values_rejected_with_triton_text(args, message, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "triton_grpc_server", "--model-repository",
                           str(tmp_path), *args], capture_output=True, text=True, cwd=str(ROOT),
                          timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--load-model", "simple"], "requires setting '--model-control-mode=explicit'"),
    (["--grpc-infer-thread-count", "1"], "Must be in the range 2 to 128"),
    (["--model-config-name="], "empty argument for --model-config-name"),
])
def test_triton_post_parse_checks(args, message, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_settings(["--model-repository", str(tmp_path), *args])
    assert exit_info.value.code == 1


def test_log_verbose_takes_booleans(tmp_path):
    base = ["--model-repository", str(tmp_path)]
    assert cli.parse_settings(base + ["--log-verbose=true"]).log_verbose == 1
    assert cli.parse_settings(base + ["--log-verbose=false"]).log_verbose == 0
    assert cli.parse_settings(base + ["--log-verbose=3"]).log_verbose == 3


def test_help_describes_every_flag():
    proc = subprocess.run([sys.executable, "-m", "triton_grpc_server", "--help"],
                          capture_output=True, text=True, cwd=str(ROOT), timeout=60)
    assert proc.returncode == 0
    text = proc.stdout
    assert "--model-repository PATH" in text.splitlines()[0]  # the usage line: required
    for flag in cli.FLAGS + cli.OWN_FLAGS:
        assert f"--{flag.name}" in text
        assert flag.help
    assert len(re.findall(r"\(no\s+effect:", text)) == sum(1 for f in cli.FLAGS if f.effect)


# -- real servers ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("flags") / "models"
    models.simple_model(repo, "simple")
    return repo


def _warned(log: str, name: str) -> int:
    return len(re.findall(rf"--{re.escape(name)} has no effect in this server", log))


def test_server_starts_with_every_no_effect_flag(repo, tmp_path):
    """One warning line per flag that does nothing here; the server serves regardless."""
    flags = []
    for name, value in TRITON_FLAGS:
        flag = FLAG_BY_NAME.get(name)
        if flag is not None and flag.effect:
            flags += _argv(name, value, tmp_path)[2:]
    handle = models.start(repo, *flags)
    try:
        client = handle.client()
        assert client.is_model_ready("simple")
        client.close()
        log = handle.log()
    finally:
        assert handle.stop() == 0
    for flag in cli.FLAGS:
        if flag.effect:
            assert _warned(log, flag.name) == 1, f"--{flag.name}:\n{log}"


def test_server_starts_with_every_acting_flag(repo, tmp_path):
    """All the flags that act, at once, in Triton's syntax (ports and addresses chosen here)."""
    skip = {"model-repository", "model-store", "grpc-port", "grpc-address", "metrics-port",
            "help", "log-file", "model-control-mode", "http-port"}
    flags = ["--model-control-mode=explicit", f"--http-port={free_port()}"]
    for name, value in TRITON_FLAGS:
        flag = FLAG_BY_NAME.get(name)
        if name in skip or flag is None or flag.effect:
            continue
        flags += _argv(name, value, tmp_path)[2:]
    flags += ["--metrics-port", free_port()]
    handle = models.start(repo, *flags)
    try:
        client = handle.client()
        assert client.get_server_metadata().name == "my-triton"   # --id
        assert client.is_model_ready("simple")                    # --load-model
        client.close()
        log = handle.log()
    finally:
        assert handle.stop() == 0
    assert "has no effect" not in log
    assert "Warning: '--strict-model-config' has been deprecated!" in log


def test_grpc_flags_become_grpcio_channel_arguments(tmp_path):
    """Triton's keepalive, ping, connection-age and reuse-port flags as the core arguments
    Triton's C++ server sets; the connection-age ones only when given."""
    from triton_grpc_server.frontends.transport_options import grpc_server_options

    options = dict(grpc_server_options(cli.parse_settings(["--model-repository", str(tmp_path)])))
    assert options["grpc.so_reuseport"] == 0 and options["grpc.keepalive_time_ms"] == 7_200_000
    assert "grpc.max_connection_age_ms" not in options
    options = dict(grpc_server_options(cli.parse_settings([
        "--model-repository", str(tmp_path), "--reuse-grpc-port=true",
        "--grpc-keepalive-time=10000", "--grpc-keepalive-timeout=5000",
        "--grpc-keepalive-permit-without-calls=1", "--grpc-http2-max-pings-without-data=0",
        "--grpc-http2-min-recv-ping-interval-without-data=5000",
        "--grpc-http2-max-ping-strikes=0", "--grpc-max-connection-age=60000",
        "--grpc-max-connection-age-grace=5000"])))
    assert options == {**options, "grpc.so_reuseport": 1, "grpc.keepalive_time_ms": 10000,
                       "grpc.keepalive_timeout_ms": 5000,
                       "grpc.keepalive_permit_without_calls": 1,
                       "grpc.http2.max_pings_without_data": 0,
                       "grpc.http2.min_ping_interval_without_data_ms": 5000,
                       "grpc.http2.max_ping_strikes": 0, "grpc.max_connection_age_ms": 60000,
                       "grpc.max_connection_age_grace_ms": 5000}


def test_deprecated_trace_flags_become_trace_config(tmp_path):
    settings = cli.parse_settings(["--model-repository", str(tmp_path), "--trace-level=max",
                                   "--trace-rate=10", "--trace-file", str(tmp_path / "t.json")])
    assert sorted(settings.trace_config) == sorted(["level=TIMESTAMPS", "rate=10",
                                                    f"triton,file={tmp_path / 't.json'}"])


def test_model_load_threads_and_retries_in_process(tmp_path):
    """--model-load-thread-count loads concurrently; --model-load-retry-count retries a failure."""
    import threading
    import time

    from triton_grpc_server.backends import register_backend
    from triton_grpc_server.backends.base import Backend, BackendInstance
    from triton_grpc_server.repository import ModelRepository
    from triton_grpc_server.repository.control import ModelControl

    active, peak, attempts = [0], [0], {}
    lock = threading.Lock()

    class Slow(Backend):
        default_model_filename = "model.slow"

        def __init__(self, config, version, model_path, context):
            super().__init__(config, version, model_path, context)
            with lock:
                attempts[config.name] = attempts.get(config.name, 0) + 1
                active[0] += 1
                peak[0] = max(peak[0], active[0])
                first = attempts[config.name] == 1
            time.sleep(0.2)
            with lock:
                active[0] -= 1
            if config.name == "flaky" and first:
                raise RuntimeError("first load fails")

        def create_instance(self, index, kind, device_id):
            return Instance()

    class Instance(BackendInstance):
        def execute(self, requests):
            raise AssertionError("not called")

    register_backend("slow_flag_test", Slow)
    for name in ("a", "b", "c", "flaky"):
        model = tmp_path / name
        (model / "1").mkdir(parents=True)
        (model / "1" / "model.slow").write_text("x")
        (model / "config.pbtxt").write_text(
            f'name: "{name}" backend: "slow_flag_test" max_batch_size: 0 '
            'input [{ name: "I" data_type: TYPE_FP32 dims: [1] }] '
            'output [{ name: "O" data_type: TYPE_FP32 dims: [1] }] '
            'instance_group [{ kind: KIND_CPU count: 1 }]')
    settings = cli.parse_settings(["--model-repository", str(tmp_path),
                                   "--model-load-thread-count=4", "--model-load-retry-count=1"])
    repository = ModelRepository(tmp_path, settings=settings)
    try:
        ModelControl(repository, settings).load_startup_models()
        states = {n: e.state for n, e in repository.entries().items()}
    finally:
        repository.close()
    assert states == dict.fromkeys(("a", "b", "c", "flaky"), "READY"), states
    assert attempts["flaky"] == 2 and peak[0] > 1
