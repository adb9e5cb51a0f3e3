"""The trace extension: TraceSetting over gRPC, and the trace file a real server writes."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

import models
from models import error_of

TIMESTAMP_NAMES = ["REQUEST_START", "QUEUE_START", "COMPUTE_START", "COMPUTE_INPUT_END",
                   "COMPUTE_OUTPUT_START", "COMPUTE_END", "REQUEST_END"]


def infer_simple(client, n=1, model="simple"):
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"),
              grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
    for tensor in inputs:
        tensor.set_data_from_numpy(a)
    for i in range(n):
        client.infer(model, inputs, request_id=f"req{i}")


def settings_of(client, model=""):
    got = client.get_trace_settings(model_name=model or None, as_json=True)["settings"]
    return {k: v.get("value", []) for k, v in got.items()}


@pytest.fixture
def repo(tmp_path):
    repo = tmp_path / "models"
    models.simple_model(repo, "simple")
    models.simple_model(repo, "other")
    return repo


def test_defaults_and_updates(repo, tmp_path, start_server):
    trace_file = tmp_path / "trace.json"
    server = start_server(repo, "--allow-metrics", "false", "--trace-config", f"triton,file={trace_file}")
    c = server.client()
    assert "trace" in c.get_server_metadata().extensions
    assert settings_of(c) == {"trace_level": ["OFF"], "trace_rate": ["1000"],
                              "trace_count": ["-1"], "log_frequency": ["0"],
                              "trace_file": [str(trace_file)], "trace_mode": ["triton"]}
    c.update_trace_settings(settings={"trace_level": ["TIMESTAMPS"], "trace_rate": "5"})
    # a model setting keeps its own fields and follows the global ones for the rest
    c.update_trace_settings(model_name="simple", settings={"trace_count": "3"})
    c.update_trace_settings(settings={"trace_rate": "7"})
    model = settings_of(c, "simple")
    assert (model["trace_level"], model["trace_rate"], model["trace_count"]) == (
        ["TIMESTAMPS"], ["7"], ["3"])
    assert settings_of(c, "other")["trace_count"] == ["-1"]
    # clearing a field (empty value list) returns it to its fallback
    c.update_trace_settings(model_name="simple", settings={"trace_count": None})
    assert settings_of(c, "simple")["trace_count"] == ["-1"]
    c.update_trace_settings(settings={"trace_rate": None})
    assert settings_of(c)["trace_rate"] == ["1000"]
    c.update_trace_settings(settings={"trace_level": ["TIMESTAMPS", "TENSORS"]})
    assert settings_of(c)["trace_level"] == ["TIMESTAMPS", "TENSORS"]
    c.close()


@pytest.mark.parametrize("settings,code,message", [
    ({"trace_file": "x"}, "UNIMPLEMENTED",
     "trace file location can not be updated through network protocol"),
    ({"trace_level": ["OFF", "TIMESTAMPS"]}, "INVALID_ARGUMENT",
     "Expect only one trace level 'OFF' is specified"),
    ({"trace_rate": "abc"}, "INVALID_ARGUMENT", "Unable to parse 'trace_rate', got: abc"),
    ({"trace_rate": ["1", "2"]}, "INVALID_ARGUMENT", "expect only 1 value for 'trace_rate'"),
    ({"trace_count": "-2"}, "INVALID_ARGUMENT",
     "Unable to parse 'trace_count'. Expecting value >= -1, got: -2"),
    ({"log_frequency": "99999999999"}, "INVALID_ARGUMENT",
     "Unable to parse 'log_frequency', value is out of range [ 0, 4294967295 ], got: 99999999999"),
])
def test_update_errors(repo, tmp_path, start_server, settings, code, message):
    server = start_server(repo, "--allow-metrics", "false", "--trace-config", f"triton,file={tmp_path / 't.json'}")
    c = server.client()
    assert error_of(c.update_trace_settings, settings=settings) == (code, message)
    c.close()


def test_unknown_model_and_missing_file(repo, start_server):
    server = start_server(repo, "--allow-metrics", "false")
    c = server.client()
    assert error_of(c.get_trace_settings, model_name="nope") == (
        "INVALID_ARGUMENT", "Request for unknown model : nope")
    # tracing on without a trace file is refused, as in Triton's triton mode
    assert error_of(c.update_trace_settings, settings={"trace_level": ["TIMESTAMPS"]}) == (
        "INVALID_ARGUMENT", "Attempting to set invalid trace setting :trace file name is not given")
    c.close()


def test_trace_file_of_sampled_requests(repo, tmp_path, start_server):
    trace_file = tmp_path / "trace.json"
    server = start_server(repo, "--allow-metrics", "false", "--trace-config", f"triton,file={trace_file}",
                          "--trace-config", "level=TIMESTAMPS", "--trace-config", "rate=2",
                          "--trace-config", "count=2")
    c = server.client()
    infer_simple(c, 8)  # rate 2 samples requests 2, 4; count 2 stops after them
    records = json.loads(trace_file.read_text())
    heads = [r for r in records if "model_name" in r]
    assert [(h["model_name"], h["model_version"], h["request_id"]) for h in heads] == [
        ("simple", 1, "req1"), ("simple", 1, "req3")]
    for head in heads:
        stamps = [r["timestamps"][0] for r in records if r["id"] == head["id"] and "timestamps" in r]
        assert [s["name"] for s in stamps] == TIMESTAMP_NAMES
        ns = [s["ns"] for s in stamps]
        assert ns == sorted(ns) and ns[0] > 0
    assert settings_of(c)["trace_count"] == ["0"]
    c.close()


def test_tensors_level_and_log_frequency(repo, tmp_path, start_server):
    trace_file = tmp_path / "trace.json"
    server = start_server(repo, "--allow-metrics", "false", "--trace-config", f"triton,file={trace_file}",
                          "--trace-config", "triton,log-frequency=2",
                          "--trace-config", "level=TENSORS", "--trace-config", "rate=1")
    c = server.client()
    infer_simple(c, 4)
    assert not trace_file.exists()  # with a frequency, traces go to indexed files
    for index in (0, 1):
        records = json.loads((tmp_path / f"trace.json.{index}").read_text())
        tensors = [r for r in records if "activity" in r]
        assert len([r for r in records if "model_name" in r]) == 2
        assert {(r["activity"], r["tensor"]["name"]) for r in tensors} == {
            ("TENSOR_QUEUE_INPUT", "INPUT0"), ("TENSOR_QUEUE_INPUT", "INPUT1"),
            ("TENSOR_BACKEND_OUTPUT", "OUTPUT0"), ("TENSOR_BACKEND_OUTPUT", "OUTPUT1")}
        out0 = next(r for r in tensors if r["tensor"]["name"] == "OUTPUT0")["tensor"]
        assert out0["dtype"] == "INT32" and out0["shape"] == "1,16"
        assert out0["data"] == ",".join(str(2 * i) for i in range(16))
    # a model turned off while the global setting traces
    c.update_trace_settings(model_name="other", settings={"trace_level": ["OFF"]})
    infer_simple(c, 2, model="other")
    assert not (tmp_path / "trace.json.2").exists()
    # one more trace: below the frequency, written to the next indexed file at shutdown
    infer_simple(c, 1)
    c.close()
    assert server.stop() == 0
    records = json.loads((tmp_path / "trace.json.2").read_text())
    assert [r["request_id"] for r in records if "model_name" in r] == ["req0"]


@pytest.mark.parametrize("option", [",level=TIMESTAMPS", "bogus,rate=1", "rate", "level="])
def test_bad_trace_config_flag_exits(repo, option):
    proc = subprocess.run([sys.executable, "-m", "triton_grpc_server", "--model-repository",
                           str(repo), "--trace-config", option], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert "--trace-config" in proc.stderr


def test_opentelemetry_mode_exports_spans(repo, start_server):
    pytest.importorskip("opentelemetry.sdk.trace", reason="opentelemetry-sdk not installed")
    try:  # without the OTLP exporter the spans go to the server's stdout, read here
        import opentelemetry.exporter.otlp.proto.http  # noqa: F401
        pytest.skip("the OTLP exporter is installed: spans would go to a collector")
    except ImportError:
        pass
    server = start_server(repo, "--allow-metrics", "false", "--trace-config", "mode=opentelemetry",
                          "--trace-config", "level=TIMESTAMPS", "--trace-config", "rate=1",
                          "--trace-config", "opentelemetry,resource=test.key=abc")
    c = server.client()
    settings = settings_of(c)
    assert settings["trace_mode"] == ["opentelemetry"]
    assert "trace_file" not in settings and "log_frequency" not in settings
    assert settings["resource"] == ["test.key=abc"]
    infer_simple(c, 2)
    c.close()
    assert server.stop() == 0
    log = server.log()
    assert log.count('"name": "simple"') == 2
    for name in TIMESTAMP_NAMES:
        assert f'"name": "{name}"' in log
    assert '"test.key": "abc"' in log


def test_http_trace_setting(repo, tmp_path, start_server):
    trace_file = tmp_path / "trace.json"
    server = start_server(repo, "--allow-metrics", "false", "--trace-config",
                          f"triton,file={trace_file}")
    c = server.http_client()
    got = c.get_trace_settings()
    assert got == {"trace_level": ["OFF"], "trace_rate": "1000", "trace_count": "-1",
                   "log_frequency": "0", "trace_file": str(trace_file), "trace_mode": "triton"}
    got = c.update_trace_settings(model_name="simple",
                                  settings={"trace_level": ["TIMESTAMPS"], "trace_rate": "1"})
    assert (got["trace_level"], got["trace_rate"]) == (["TIMESTAMPS"], "1")
    assert c.get_trace_settings()["trace_level"] == ["OFF"]  # the global one is unchanged
    got = c.update_trace_settings(model_name="simple", settings={"trace_rate": None})
    assert got["trace_rate"] == "1000"
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException,
                       match="trace file location can not be updated through network protocol"):
        c.update_trace_settings(settings={"trace_file": "x"})
    with pytest.raises(InferenceServerException, match="Request for unknown model : nope"):
        c.get_trace_settings(model_name="nope")
    c.close()
