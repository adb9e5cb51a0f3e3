"""Holes a client on the network could use, each closed and checked against a real server:
config paths that escape the model directory, declared shapes that would make the
server allocate far beyond the bytes sent, version folders no request can address,
load texts, load limits, --allow-grpc / --allow-http, and error texts that echo
unbounded client strings."""
from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

import models
from conftest import free_port
from models import error_of, pb_input, pb_request, stub_infer

POLL_FAILED = "failed to load '{}', failed to poll from model repository"
INT64_MAX = 2**63 - 1


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("hardening_repo")
    models.simple_model(repo, "simple")
    models.labels_file(repo / "simple", [f"label{i}" for i in range(16)])
    models.simple_model(repo, "other")
    models.write_text(repo / "other" / "secret.txt", "not for clients\n")
    for datatype in ("BYTES", "FP32", "INT64", "UINT8", "BOOL", "FP16", "INT32"):
        models.identity_model(repo, f"id_{datatype.lower()}", datatype, max_batch_size=0,
                              dims=(-1, -1))
    return repo


@pytest.fixture(scope="module")
def server(repo):
    yield from models.serve(repo, "--model-control-mode", "explicit", "--load-model", "*")


from models import client  # noqa: E402,F401  (module-scoped client of ``server``)


def simple_config(**changes) -> str:
    """The ``simple`` config as a JSON override, with ``changes`` merged into it."""
    config = {
        "name": "simple", "platform": "onnxruntime_onnx", "max_batch_size": 8,
        "input": [{"name": "INPUT0", "data_type": "TYPE_INT32", "dims": [16]},
                  {"name": "INPUT1", "data_type": "TYPE_INT32", "dims": [16]}],
        "output": [{"name": "OUTPUT0", "data_type": "TYPE_INT32", "dims": [16]},
                   {"name": "OUTPUT1", "data_type": "TYPE_INT32", "dims": [16]}]}
    for key, value in changes.items():
        if key == "label_filename":
            config["output"][0]["label_filename"] = value
        else:
            config[key] = value
    return json.dumps(config)


def simple_inputs():
    data = np.arange(16, dtype=np.int32).reshape(1, 16)
    tensors = [grpcclient.InferInput(name, [1, 16], "INT32") for name in ("INPUT0", "INPUT1")]
    for tensor in tensors:
        tensor.set_data_from_numpy(data)
    return tensors


def classify_simple(client, class_count=1000):
    outputs = [grpcclient.InferRequestedOutput("OUTPUT0", class_count=class_count)]
    result = client.infer("simple", simple_inputs(), outputs=outputs)
    return [item.decode() for item in result.as_numpy("OUTPUT0").ravel()]


# -- 1. every path a config names stays inside its model directory ---------------------------

WARMUP = {"name": "w", "batch_size": 1, "inputs": {"INPUT0": {
    "data_type": "TYPE_INT32", "dims": [16], "input_data_file": None}}}


def warmup(path: str) -> dict:
    entry = json.loads(json.dumps(WARMUP))
    entry["inputs"]["INPUT0"]["input_data_file"] = path
    return {"model_warmup": [entry]}


# (config field, value): each names a file outside ``simple/``; ``{other}`` is the
# sibling model's directory, so some targets exist and some do not.
ESCAPES = [
    ("label_filename", "/etc/passwd"),
    ("label_filename", "/etc/no-such-file-here"),
    ("label_filename", "../../../../../../etc/passwd"),
    ("label_filename", "../other/secret.txt"),
    ("label_filename", "../other/no-such-secret.txt"),
    ("label_filename", "./../other/secret.txt"),
    ("label_filename", "1/../../other/secret.txt"),
    ("label_filename", ".."),
    ("label_filename", "{other}/secret.txt"),
    ("default_model_filename", "../../other/1/model.onnx"),
    ("default_model_filename", "../../other/9/model.onnx"),
    ("default_model_filename", "{other}/1/model.onnx"),
    ("default_model_filename", "../../../../../../etc/passwd"),
    ("default_model_filename", "../.."),
    ("cc_model_filenames", {"7.5": "../../other/1/model.onnx"}),
    ("cc_model_filenames", {"8.0": "/etc/passwd"}),
    ("model_warmup", "../../other/1/model.onnx"),
    ("model_warmup", "/etc/passwd"),
    ("model_warmup", "../../../../../../etc/shadow"),
    ("initial_state", "../../other/1/model.onnx"),
    ("initial_state", "/etc/passwd"),
]


def escape_config(field: str, value, repo: Path) -> str:
    if isinstance(value, str):
        value = value.replace("{other}", str(repo / "other"))
    if field == "model_warmup":
        return simple_config(**warmup(value))
    if field == "initial_state":
        return simple_config(sequence_batching={"state": [{
            "input_name": "INPUT_STATE", "output_name": "OUTPUT_STATE", "data_type": "TYPE_INT32",
            "dims": [1], "initial_state": [{"name": "s", "data_type": "TYPE_INT32", "dims": [1],
                                            "data_file": value}]}]})
    return simple_config(**{field: value})


@pytest.mark.parametrize("field,value", ESCAPES, ids=[f"{f}={v}" for f, v in ESCAPES])
def test_config_paths_outside_the_model_directory_are_refused(client, repo, field, value):
    code, message = error_of(client.load_model, "simple", config=escape_config(field, value, repo))
    assert code == "INVALID_ARGUMENT", message
    assert message.startswith("load failed for model 'simple': ")
    assert "must name a file inside the model directory" in message
    # Nothing tells whether the outside file exists.
    for telling in ("No such file", "does not exist", "unable to find", "exist", "failed to read"):
        assert telling not in message
    # The model keeps serving the versions it had, with the labels of its own directory.
    assert client.is_model_ready("simple")


def test_refusal_text_is_the_same_whether_the_target_exists(client, repo):
    texts = []
    for target in ("../other/secret.txt", "../other/no-such-secret.txt"):
        _, message = error_of(client.load_model, "simple",
                              config=simple_config(label_filename=target))
        texts.append(message.replace(target, "<target>"))
    assert texts[0] == texts[1]


def test_host_file_is_not_served_as_labels(client):
    """The reported hole: label_filename '/etc/passwd', then class_count=1000."""
    error_of(client.load_model, "simple", config=simple_config(label_filename="/etc/passwd"))
    classes = classify_simple(client)
    assert not any("root" in item for item in classes)


def test_paths_inside_the_model_directory_still_load(client):
    client.load_model("simple", config=simple_config(label_filename="./labels.txt",
                                                     default_model_filename="../1/model.onnx"))
    classes = classify_simple(client, class_count=2)
    assert [c.split(":")[2] for c in classes] == ["label15", "label14"]


# -- 2. declared shapes are checked against the bytes present before anything is allocated ---

def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


ELEMENT_OVERFLOW = "element count for tensor 'INPUT0' exceeds maximum size of 9223372036854775807"
BYTE_OVERFLOW = "byte size for tensor 'INPUT0' exceeds maximum size of 9223372036854775807"
FIVE_BYTES = (1).to_bytes(4, "little") + b"a"


def strings_missing(count, model="id_bytes", got=1):
    return (f"expected {count} string elements for inference input 'INPUT0' for model "
            f"'{model}', got {got}")


def byte_mismatch(model, expected, got):
    return (f"input byte size mismatch for input 'INPUT0' for model '{model}'. "
            f"Expected {expected}, got {got}")


# (datatype, declared shape, raw payload or typed contents, the whole expected message)
OVERSIZED = [
    ("BYTES", [1, 2**27], FIVE_BYTES, strings_missing(2**27)),
    ("BYTES", [1, 2**31], FIVE_BYTES, strings_missing(2**31)),
    ("BYTES", [1, 12_500_000_000], FIVE_BYTES, strings_missing(12_500_000_000)),
    ("BYTES", [2**20, 2**20], b"", strings_missing(2**40, got=0)),
    ("BYTES", [2**61, 2], FIVE_BYTES, BYTE_OVERFLOW),
    ("BYTES", [2**62, 2], FIVE_BYTES, ELEMENT_OVERFLOW),
    ("BYTES", [1, 2**40], {"bytes_contents": [b"a"]}, strings_missing(2**40)),
    ("FP32", [2**62, 4], b"\0" * 4, ELEMENT_OVERFLOW),
    ("FP32", [2**61, 2], b"\0" * 4, BYTE_OVERFLOW),
    ("FP32", [1, 2**40], {"fp32_contents": [1.0]}, byte_mismatch("id_fp32", 2**42, 4)),
    ("INT64", [2**31, 2**31], b"\0" * 8, BYTE_OVERFLOW),
    ("UINT8", [2**40, 2**10], b"\0" * 10, byte_mismatch("id_uint8", 2**50, 10)),
    ("BOOL", [2**62, 2**62], b"\0", ELEMENT_OVERFLOW),
    ("FP16", [5, 2**61], b"\0" * 2, ELEMENT_OVERFLOW),
    ("INT32", [2**62, 4], {"int_contents": [1]}, ELEMENT_OVERFLOW),
    ("INT32", [2**31, 2**31], {"int_contents": [1, 2]}, BYTE_OVERFLOW),
]


@pytest.mark.parametrize("datatype,shape,data,expected", OVERSIZED,
                         ids=[f"{d}{s}" for d, s, _, _ in OVERSIZED])
def test_oversized_declarations_are_refused_before_allocating(server, client, datatype, shape,
                                                              data, expected):
    model = f"id_{datatype.lower()}"
    if isinstance(data, dict):
        request = pb_request(model, [pb_input("INPUT0", datatype, shape, **data)])
    else:
        request = pb_request(model, [pb_input("INPUT0", datatype, shape)], raw=[data])
    before = peak_rss_kib(server.process.pid)
    code, message = error_of(stub_infer, client, request)
    assert (code, message) == ("INVALID_ARGUMENT", expected)
    grown_mib = (peak_rss_kib(server.process.pid) - before) / 1024
    assert grown_mib < 64, f"the server's peak memory grew by {grown_mib:.0f} MiB"
    assert client.is_server_live()


def test_a_huge_class_count_is_clamped_to_the_classes(client):
    assert len(classify_simple(client, class_count=2**62)) == 16


# -- 4. version folders, load texts and limits -----------------------------------------------

@pytest.fixture
def odd_versions_repo(tmp_path):
    model_dir = models.versioned_model(tmp_path, "odd", [1])
    for folder in ("²", "١", "99999999999999999999", "007", "9223372036854775808"):
        models.add_const_onnx(model_dir / folder / "model.onnx", 5)
    top = models.versioned_model(tmp_path, "top", [1],
                                 policy="specific { versions: [ 9223372036854775807 ] }")
    (top / "1").rename(top / str(INT64_MAX))
    return tmp_path


def test_only_ascii_digit_int64_folders_are_versions(odd_versions_repo, start_server):
    server = start_server(odd_versions_repo)
    client = server.client()
    index = [(m.name, m.version, m.state) for m in client.get_model_repository_index().models]
    assert ("odd", "1", "READY") in index
    assert [row for row in index if row[0] == "odd"] == [("odd", "1", "READY")]
    assert client.get_model_metadata("odd").versions == ["1"]
    # The largest int64 version loads and can be addressed.
    assert client.is_model_ready("top", str(INT64_MAX))


def test_overlong_model_name_fails_the_poll_without_a_traceback(client, server):
    name = "m" * 300
    assert error_of(client.load_model, name) == ("INTERNAL", POLL_FAILED.format(name))
    assert error_of(client.load_model, name, config="{}") == ("INTERNAL", POLL_FAILED.format(name))
    assert "Traceback" not in server.log()
    assert client.is_server_live()


@pytest.mark.parametrize("override", ["[]", "null", "3", '"text"', "[{}]"])
def test_config_override_that_is_not_an_object_fails_the_poll(client, override):
    assert error_of(client.load_model, "simple", config=override) == (
        "INTERNAL", POLL_FAILED.format("simple"))
    assert client.is_model_ready("simple")


# Enum fields set to a number their enum has no name for (proto3 enums are open, so the JSON
# and text parsers take any number): (field path in the refusal, override changes).
UNNAMED_ENUMS = [
    ("instance_group[0].kind", {"instance_group": [{"kind": 7}]}),
    ("instance_group[0].secondary_devices[0].kind",
     {"instance_group": [{"kind": "KIND_CPU", "secondary_devices": [{"kind": 3}]}]}),
    ("sequence_batching.control_input[0].control[0].kind",
     {"sequence_batching": {"control_input": [
         {"name": "START", "control": [{"kind": 9, "int32_false_true": [0, 1]}]}]}}),
    ("sequence_batching.state[0].data_type",
     {"sequence_batching": {"state": [{"input_name": "IN_STATE", "output_name": "OUT_STATE",
                                       "data_type": 55, "dims": [1]}]}}),
    ("dynamic_batching.default_queue_policy.timeout_action",
     {"dynamic_batching": {"default_queue_policy": {"timeout_action": 3}}}),
    ("dynamic_batching.priority_queue_policy[1].timeout_action",
     {"dynamic_batching": {"priority_levels": 2,
                           "priority_queue_policy": {"1": {"timeout_action": 5}}}}),
    ("optimization.priority", {"optimization": {"priority": 4}}),
    ("batch_input[0].kind", {"batch_input": [{"kind": 9, "target_name": ["BATCH"],
                                              "data_type": "TYPE_INT32",
                                              "source_input": ["INPUT0"]}]}),
    ("batch_output[0].kind", {"batch_output": [{"kind": 2, "target_name": ["OUTPUT0"]}]}),
    ("model_warmup[0].inputs['INPUT0'].data_type",
     {"model_warmup": [{"name": "w", "batch_size": 1, "inputs": {
         "INPUT0": {"data_type": 77, "dims": [16], "zero_data": True}}}]}),
    ("input[1].format", {"input": [{"name": "INPUT0", "data_type": "TYPE_INT32", "dims": [16]},
                                   {"name": "INPUT1", "data_type": "TYPE_INT32", "dims": [16],
                                    "format": 5}]}),
    ("output[0].data_type", {"output": [{"name": "OUTPUT0", "data_type": 99, "dims": [16]},
                                        {"name": "OUTPUT1", "data_type": "TYPE_INT32",
                                         "dims": [16]}]}),
]


@pytest.mark.parametrize("field,changes", UNNAMED_ENUMS, ids=[f for f, _ in UNNAMED_ENUMS])
def test_an_enum_number_without_a_name_is_refused_at_load(client, server, field, changes):
    code, message = error_of(client.load_model, "simple", config=simple_config(**changes))
    assert code == "INVALID_ARGUMENT", message
    assert f"for '{field}' of model 'simple'" in message
    assert "Traceback" not in server.log()
    # The refused load left the loaded version serving.
    assert client.is_model_ready("simple")
    result = client.infer("simple", simple_inputs())
    assert (result.as_numpy("OUTPUT0") == 2 * np.arange(16)).all()


def test_overlong_file_name_fails_the_poll(client):
    """Triton's published simple_grpc_model_control.py checks exactly this."""
    code, message = error_of(client.load_model, "simple", config="{}",
                             files={"file:" + "A" * 256: b"a"})
    assert (code, message) == ("INTERNAL", POLL_FAILED.format("simple"))
    assert client.is_server_live()


def test_a_load_racing_an_unload_reports_its_own_outcome(repo):
    """The load's result is judged before an unload waiting on the same model runs.

    In-process, on a real repository: the unload is started the moment the load
    has installed its versions, and the load's verdict waits (bounded) for it.
    """
    from triton_grpc_server.repository import ModelRepository
    from triton_grpc_server.repository.control import ModelControl
    from triton_grpc_server.settings import Settings

    repository = ModelRepository(repo, settings=Settings(model_control_mode="explicit"))
    control = ModelControl(repository, Settings(model_control_mode="explicit"))
    unloaded = threading.Event()
    real_load, real_verdict = repository.load, ModelControl._raise_load_error

    def load_then_race(*args, **kwargs):
        entry = real_load(*args, **kwargs)
        threading.Thread(target=lambda: (control.unload("simple"), unloaded.set())).start()
        return entry

    def verdict_after_the_unload(name, entry):
        unloaded.wait(2.0)  # runs at once where the unload is not held off
        return real_verdict(name, entry)

    repository.load = load_then_race
    control._raise_load_error = verdict_after_the_unload
    try:
        control.load("simple")  # loaded: no "version 1 is at UNLOADING state"
        assert unloaded.wait(10.0)
        assert not repository.is_ready("simple")  # and the unload then did its work
    finally:
        repository.close()


def test_file_payloads_count_against_the_limit(repo, start_server):
    server = start_server(repo, "--model-control-mode", "explicit",
                          "--model-load-max-file-bytes", "1000")
    client = server.client()
    code, message = error_of(client.load_model, "fresh", config="{}",
                             files={"file:1/model.onnx": b"x" * 600, "file:1/extra": b"y" * 600})
    assert code == "INVALID_ARGUMENT"
    assert "1200 bytes of file parameters" in message and "1000" in message
    assert "--model-load-max-file-bytes" in message


def test_instance_count_is_capped(repo, start_server):
    server = start_server(repo, "--model-control-mode", "explicit", "--load-model", "simple",
                          "--model-max-instance-count", "4")
    client = server.client()
    groups = [{"kind": "KIND_CPU", "count": 3}, {"kind": "KIND_CPU", "count": 2}]
    code, message = error_of(client.load_model, "simple",
                             config=simple_config(instance_group=groups))
    assert code == "INVALID_ARGUMENT"
    assert "asks for 5 instances, more than the server's limit of 4" in message
    client.load_model("simple", config=simple_config(instance_group=groups[:1]))
    assert client.get_model_config("simple").config.instance_group[0].count == 3


# -- --allow-grpc / --allow-http -------------------------------------------------------------

def _connects(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_allow_grpc_false_serves_no_grpc_endpoint(repo, start_server):
    metrics_port = free_port()
    server = start_server(repo, "--allow-grpc", "false", "--metrics-port", metrics_port,
                          wait_ready=False)
    deadline = time.monotonic() + 60
    while True:  # the HTTP frontend and metrics come up after gRPC would have
        assert server.process.poll() is None, server.log()
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).read()
            if server.http_client().is_server_live():
                break
        except Exception:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.2)
    assert not _connects(server.port)


# -- echoed client strings stay within what a gRPC status can carry --------------------------

@pytest.mark.parametrize("length", [10_000, 100_000])
def test_long_client_strings_still_get_their_error(client, length):
    name = "n" * length
    code, message = error_of(client.get_model_metadata, name)
    assert code == "NOT_FOUND"
    assert message.startswith("Request for unknown model: 'nnnn")
    assert len(message) < 5000
    request = pb_request("simple", [pb_input("é" * length, "INT32", [1, 16])],
                         raw=[b"\0" * 64])
    code, message = error_of(stub_infer, client, request)
    assert code == "INVALID_ARGUMENT"
    assert "for model 'simple'" in message or message.endswith("...(truncated)")


def _http_infer(server, model: str, header: dict, binary: bytes = b"") -> tuple[int, str]:
    body = json.dumps(header).encode()
    request = urllib.request.Request(
        f"http://{server.http_url}/v2/models/{model}/infer", data=body + binary, method="POST",
        headers={"Inference-Header-Content-Length": str(len(body)),
                 "Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())["error"]


def test_http_declarations_are_checked_against_the_bytes_sent(server):
    before = peak_rss_kib(server.process.pid)
    header = {"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1, 2**31],
                          "parameters": {"binary_data_size": len(FIVE_BYTES)}}]}
    assert _http_infer(server, "id_bytes", header, FIVE_BYTES) == (400, strings_missing(2**31))
    header = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [2**61, 2],
                          "parameters": {"binary_data_size": 4}}]}
    assert _http_infer(server, "id_fp32", header, b"\0" * 4) == (400, BYTE_OVERFLOW)
    assert (peak_rss_kib(server.process.pid) - before) / 1024 < 64
