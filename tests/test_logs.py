"""Triton's log: line formats, switches, and the LogSettings extension changing them live."""
from __future__ import annotations

import json
import logging
import re

import numpy as np
import pytest

import models
from models import error_of

grpcclient = pytest.importorskip("tritonclient.grpc")

DEFAULT_RECORD = re.compile(r"^[IWE]\d{4} \d{2}:\d{2}:\d{2}\.\d{6} \d+ [\w.]+:\d+\] ")
ISO8601_RECORD = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z [IWE] \d+ .+:\d+\] ")


@pytest.fixture
def fresh_state():
    """The formatter in-process, restored afterwards."""
    from triton_grpc_server import logs

    saved = dict(vars(logs.STATE))
    yield logs
    vars(logs.STATE).update(saved)


def _record(level=logging.INFO, message="hello %s", args=("world",)):
    return logging.LogRecord("triton_grpc_server", level, "/x/server.py", 42, message, args, None)


def test_formats_in_process(fresh_state):
    logs = fresh_state
    formatter = logs.TritonFormatter()
    logs.STATE.format, logs.STATE.escape = "default", True
    line = formatter.format(_record())
    assert DEFAULT_RECORD.match(line) and line.endswith('server.py:42] "hello world"')
    logs.STATE.format = "ISO8601"
    line = formatter.format(_record(logging.WARNING))
    assert ISO8601_RECORD.match(line) and " W " in line
    logs.STATE.format = "json"
    entry = json.loads(formatter.format(_record(logging.ERROR)))
    assert entry["level"] == "ERROR" and entry["message"] == "hello world"
    assert entry["file"] == "server.py" and entry["line"] == 42
    # a message cannot forge a second record
    logs.STATE.format = "default"
    line = formatter.format(_record(message="a\nI0101 00:00:00.000000 1 x.py:1] forged", args=()))
    assert "\n" not in line
    logs.STATE.escape = False
    assert formatter.format(_record()).endswith("] hello world")


def test_table_layout(fresh_state):
    table = fresh_state.format_table(["Model", "Version", "Status"], [["simple", "1", "READY"]])
    assert table.splitlines() == ["+--------+---------+--------+",
                                  "| Model  | Version | Status |",
                                  "+--------+---------+--------+",
                                  "| simple | 1       | READY  |",
                                  "+--------+---------+--------+"]


def test_update_settings_semantics(fresh_state):
    logs = fresh_state
    from triton_grpc_server.errors import InvalidArgument, Unsupported

    with pytest.raises(Unsupported, match="log file location can not be updated"):
        logs.update_settings({"log_file": "/tmp/x"})
    with pytest.raises(InvalidArgument, match="expect boolean for 'log_info'"):
        logs.update_settings({"log_info": 1})
    with pytest.raises(InvalidArgument, match="expect int32 for 'log_verbose_level'"):
        logs.update_settings({"log_verbose_level": True})
    with pytest.raises(InvalidArgument, match="invalid argument for log_format, got: xml"):
        logs.update_settings({"log_format": "xml"})
    with pytest.raises(InvalidArgument, match="--log_format"):
        logs.update_settings({"log_format": "xml"}, http=True)
    # settings before the bad one stay applied, as in Triton
    with pytest.raises(InvalidArgument):
        logs.update_settings({"log_warning": False, "log_format": "xml"})
    assert logs.STATE.warning is False
    current = logs.update_settings({"log_verbose_level": 2, "log_format": "ISO8601"})
    assert current["log_verbose_level"] == 2 and current["log_format"] == "ISO8601"
    assert logging.getLogger().isEnabledFor(logging.DEBUG - 1)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("logs") / "models"
    models.simple_model(repo, "simple")
    yield from models.serve(repo)


def _infer(client):
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"),
              grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
    for tensor in inputs:
        tensor.set_data_from_numpy(a)
    client.infer("simple", inputs, request_id="req-7")


def test_log_settings_rpc_changes_the_log(server):
    client = server.client()
    try:
        assert "logging" in client.get_server_metadata().extensions
        current = client.get_log_settings(as_json=True)["settings"]
        assert current["log_info"]["bool_param"] is True
        assert current["log_format"]["string_param"] == "default"
        assert current["log_file"]["string_param"] == ""
        assert current.get("log_verbose_level", {}).get("uint32_param", 0) == 0

        _infer(client)
        assert "id=req-7" not in server.log()  # verbose off

        updated = client.update_log_settings({"log_verbose_level": 1, "log_format": "ISO8601"},
                                             as_json=True)["settings"]
        assert updated["log_verbose_level"]["uint32_param"] == 1
        _infer(client)
        lines = [line for line in server.log().splitlines() if "id=req-7" in line]
        assert len(lines) == 1 and ISO8601_RECORD.match(lines[0]), lines
        assert "status=SUCCESS" in lines[0]

        code, message = error_of(client.update_log_settings, {"log_file": "/tmp/elsewhere"})
        assert code == "UNIMPLEMENTED"
        assert message == "log file location can not be updated through network protocol"
        from tritonclient.grpc import service_pb2

        wrong = service_pb2.LogSettingsRequest()
        wrong.settings["log_info"].string_param = "yes"   # tritonclient would send a bool
        code, message = error_of(client._client_stub.LogSettings, wrong)
        assert (code, message) == ("INVALID_ARGUMENT", "expect boolean for 'log_info'")
        code, message = error_of(client.update_log_settings, {"log_format": "xml"})
        assert (code, message) == ("INVALID_ARGUMENT", "invalid argument for log_format, got: xml")
    finally:
        client.update_log_settings({"log_verbose_level": 0, "log_format": "default"})
        client.close()
