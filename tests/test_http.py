"""The HTTP/REST frontend, driven by the real tritonclient.http (sync, gevent async, aio),
curl and raw sockets, against a real server: every route, every datatype as JSON and binary,
compression, classification, Triton's status codes and texts for bad requests."""
from __future__ import annotations

import asyncio
import base64
import gzip
import http.client
import json
import shutil
import socket
import subprocess
import zlib

import numpy as np
import pytest
import tritonclient.http as httpclient
import tritonclient.http.aio as aiohttpclient
from tritonclient.utils import InferenceServerException

import models

NUMERIC = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
           "FP16", "FP32", "FP64"]
JSON_TYPES = [t for t in NUMERIC if t != "FP16"] + ["BYTES"]
LABELS = ["cat", "dog", "bird", "fish"]


def model_name(datatype: str) -> str:
    return f"id_{datatype.lower()}"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("http") / "models"
    repo.mkdir()
    models.simple_model(repo, "simple")
    for datatype in models.DATATYPES:
        models.identity_model(repo, model_name(datatype), datatype, max_batch_size=8, dims=[-1])
    models.identity_model(repo, "fixed_nb", "FP32", max_batch_size=0, dims=[4])
    classes = models.identity_model(repo, "classes", "FP32", max_batch_size=8, dims=[4],
                                    output_extra='label_filename: "labels.txt"')
    models.labels_file(classes, LABELS)
    yield from models.serve(repo)


@pytest.fixture(scope="module")
def client(server):
    c = server.http_client()
    yield c
    c.close()


def http_error(fn, *args, **kwargs) -> tuple[str, str]:
    """``(HTTP status as text, message)`` of a tritonclient.http call that must fail."""
    try:
        fn(*args, **kwargs)
    except InferenceServerException as exc:
        return exc.status(), exc.message()
    raise AssertionError("the call succeeded but an error was expected")


def post(server, path: str, body: bytes, headers=None):
    """A raw POST: ``(status, headers, body)``."""
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def get(server, path: str):
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def simple_inputs(binary=True, a=None, b=None):
    a = np.arange(16, dtype=np.int32).reshape(1, 16) if a is None else a
    b = np.ones((1, 16), dtype=np.int32) if b is None else b
    inputs = [httpclient.InferInput("INPUT0", [1, 16], "INT32"),
              httpclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(a, binary_data=binary)
    inputs[1].set_data_from_numpy(b, binary_data=binary)
    return inputs, a, b


def sample(datatype: str, shape=(2, 3)) -> np.ndarray:
    count = int(np.prod(shape))
    if datatype == "BOOL":
        return (np.arange(count) % 2 == 0).reshape(shape)
    if datatype == "BYTES":
        return np.array([f"s{i}é".encode() for i in range(count)], dtype=np.object_).reshape(shape)
    dtype = models.DATATYPES[datatype][2]
    if datatype == "BF16":
        import ml_dtypes

        return np.array([1.5, -2.0, 0.0, 3.0, 256.0, -0.5][:count],
                        ml_dtypes.bfloat16).reshape(shape)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else np.finfo(dtype)
    values = [info.min, info.max, 0, 1, 2, 3] if np.dtype(dtype).kind in "iu" else \
        [-1.5, 0.25, 0.0, 3.0, float(info.max), -7.0]
    return np.array(values[:count], dtype=dtype).reshape(shape)


# -- routes ------------------------------------------------------------------------------------

def test_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("simple") and client.is_model_ready("simple", "1")
    assert not client.is_model_ready("simple", "7")
    assert not client.is_model_ready("no_such_model")
    meta = client.get_server_metadata()
    assert meta["name"] == "triton" and meta["version"]
    assert "classification" in meta["extensions"]
    model = client.get_model_metadata("simple")
    assert model == {"name": "simple", "versions": ["1"], "platform": "onnxruntime_onnx",
                     "inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [-1, 16]},
                                {"name": "INPUT1", "datatype": "INT32", "shape": [-1, 16]}],
                     "outputs": [{"name": "OUTPUT0", "datatype": "INT32", "shape": [-1, 16]},
                                 {"name": "OUTPUT1", "datatype": "INT32", "shape": [-1, 16]}]}
    assert client.get_model_metadata("simple", "1")["versions"] == ["1"]


def test_model_ready_statuses(server):
    assert get(server, "/v2/models/simple/ready")[0] == 200
    status, _, body = get(server, "/v2/models/nope/ready")
    assert status == 400 and json.loads(body) == {"error": "Model version not ready"}
    assert get(server, "/v2/health/live")[0] == 200


def test_model_config_has_triton_fields_and_defaults(client):
    config = client.get_model_config("fixed_nb")
    assert config["name"] == "fixed_nb" and config["max_batch_size"] == 0
    assert config["input"][0]["data_type"] == "TYPE_FP32"
    assert config["input"][0]["dims"] == [4]  # int64 as JSON numbers, not strings
    assert config["input"][0]["format"] == "FORMAT_NONE"  # default-valued fields present
    assert config["input"][0]["is_shape_tensor"] is False
    assert config["version_policy"] == {"latest": {"num_versions": 1}}


def test_statistics(client):
    client.infer("simple", simple_inputs()[0])
    stats = client.get_inference_statistics("simple")["model_stats"]
    assert stats[0]["name"] == "simple" and stats[0]["version"] == "1"
    assert stats[0]["inference_stats"]["success"]["count"] >= 1
    assert {"queue", "compute_infer", "fail"} <= set(stats[0]["inference_stats"])
    every = client.get_inference_statistics()["model_stats"]
    assert "simple" in {s["name"] for s in every}
    status, message = http_error(client.get_inference_statistics, "nope")
    assert status == "400" and message == "requested model 'nope' is not available"


def test_repository_index(client):
    index = client.get_model_repository_index()
    assert {"name": "simple", "version": "1", "state": "READY"} in index


def test_repository_control_refused_in_none_mode(client):
    status, message = http_error(client.load_model, "simple")
    assert status == "503"
    assert message == "explicit model load / unload is not allowed if polling is enabled"


def test_unknown_route_and_method(server):
    status, _, body = get(server, "/v2/nothing/here")
    assert status == 404 and json.loads(body) == {"error": "Not Found"}
    status, _, body = post(server, "/v2/health/live", b"")
    assert status == 405 and json.loads(body) == {"error": "Method Not Allowed"}
    status, _, body = get(server, "/v2/models/simple/infer")
    assert status == 405


# -- inference ---------------------------------------------------------------------------------

def test_curl_command_from_the_docs(server):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    command = (
        f"curl -X POST localhost:{server.http_port}/v2/models/simple/versions/1/infer "
        "-H \"Content-Type: application/json\" \\\n"
        "  -d '{\"inputs\":[{\"name\":\"INPUT0\",\"shape\":[1,16],\"datatype\":\"INT32\","
        "\"data\":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]},\n"
        "                 {\"name\":\"INPUT1\",\"shape\":[1,16],\"datatype\":\"INT32\","
        "\"data\":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]}],\n"
        "       \"outputs\":[{\"name\":\"OUTPUT0\"},{\"name\":\"OUTPUT1\"}]}'")
    out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        "model_name": "simple", "model_version": "1",
        "outputs": [{"name": "OUTPUT0", "datatype": "INT32", "shape": [1, 16],
                     "data": [2 * i for i in range(1, 17)]},
                    {"name": "OUTPUT1", "datatype": "INT32", "shape": [1, 16], "data": [0] * 16}]}


@pytest.mark.parametrize("binary_in,binary_out", [(True, True), (False, False), (True, False),
                                                  (False, True)])
def test_simple_json_and_binary(client, binary_in, binary_out):
    inputs, a, b = simple_inputs(binary_in)
    outputs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary_out),
               httpclient.InferRequestedOutput("OUTPUT1", binary_data=binary_out)]
    result = client.infer("simple", inputs, outputs=outputs, request_id="r1")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    response = result.get_response()
    assert response["id"] == "r1" and response["model_version"] == "1"
    output0 = response["outputs"][0]
    assert ("binary_data_size" in output0.get("parameters", {})) == binary_out


def test_mixed_json_and_binary_inputs_and_outputs(client):
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    inputs = [httpclient.InferInput("INPUT0", [1, 16], "INT32"),
              httpclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(a, binary_data=True)
    inputs[1].set_data_from_numpy(a * 3, binary_data=False)
    outputs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=False),
               httpclient.InferRequestedOutput("OUTPUT1", binary_data=True)]
    result = client.infer("simple", inputs, outputs=outputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a * 4)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), -2 * a)
    kinds = {o["name"]: "data" in o for o in result.get_response()["outputs"]}
    assert kinds == {"OUTPUT0": True, "OUTPUT1": False}


def test_no_requested_outputs_returns_all_as_json_unless_binary_output(server, client):
    inputs, a, b = simple_inputs(binary=False)
    result = client.infer("simple", inputs)  # the client asks binary_data_output
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    body = json.dumps({"inputs": [{"name": n, "shape": [1, 16], "datatype": "INT32",
                                   "data": list(range(16))} for n in ("INPUT0", "INPUT1")]})
    status, headers, raw = post(server, "/v2/models/simple/infer", body.encode())
    assert status == 200 and headers["content-type"] == "application/json"
    assert [o["name"] for o in json.loads(raw)["outputs"]] == ["OUTPUT0", "OUTPUT1"]


@pytest.mark.parametrize("datatype", sorted(models.DATATYPES))
@pytest.mark.parametrize("binary", [True, False])
def test_every_datatype(client, datatype, binary):
    if not binary and datatype in ("FP16", "BF16"):
        pytest.skip("Triton refuses FP16/BF16 as JSON (tested below)")
    data = sample(datatype)
    tensor = httpclient.InferInput("INPUT0", list(data.shape), datatype)
    tensor.set_data_from_numpy(data, binary_data=binary)
    out = httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)
    result = client.infer(model_name(datatype), [tensor], outputs=[out])
    got = result.as_numpy("OUTPUT0")
    if datatype == "BYTES":
        as_bytes = [x.encode() if isinstance(x, str) else bytes(x) for x in got.ravel()]
        assert as_bytes == [bytes(x) for x in data.ravel()]
    elif datatype == "BF16":
        np.testing.assert_array_equal(got.astype(np.float32), data.astype(np.float32))
    else:
        np.testing.assert_array_equal(got, data)
    assert got.shape == data.shape


@pytest.mark.parametrize("datatype", ["FP16", "BF16"])
def test_half_types_refused_as_json(client, server, datatype):
    body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 2], "datatype": datatype,
                                   "data": [1.0, 2.0]}]}).encode()
    status, _, raw = post(server, f"/v2/models/{model_name(datatype)}/infer", body)
    assert status == 400
    assert json.loads(raw)["error"] == (
        f"receiving {datatype} data via JSON is not supported. Please use the binary data "
        "format for input INPUT0")
    data = sample("FP16") if datatype == "FP16" else sample("BF16")
    tensor = httpclient.InferInput("INPUT0", list(data.shape), datatype)
    tensor.set_data_from_numpy(data)
    status, message = http_error(client.infer, model_name(datatype), [tensor],
                                 outputs=[httpclient.InferRequestedOutput("OUTPUT0",
                                                                          binary_data=False)])
    assert status == "400" and message == (
        f"sending {datatype} data via JSON is not supported. Please use the binary data format "
        "for output")


def test_nested_json_data(server):
    body = json.dumps({"inputs": [
        {"name": "INPUT0", "shape": [2, 2], "datatype": "INT64", "data": [[1, 2], [3, 4]]}]})
    status, _, raw = post(server, "/v2/models/id_int64/infer", body.encode())
    assert status == 200
    assert json.loads(raw)["outputs"][0]["data"] == [1, 2, 3, 4]


@pytest.mark.parametrize("datatype,data", [
    ("UINT8", [255, 256, 2**64 - 1]),
    ("UINT32", [1, 14886589259623781706, 2**32 + 7]),
    ("INT16", [-1, 2**15, -2**63]),
    ("INT32", [2**31, -2**31 - 1, 2**63 - 1]),
])
def test_json_integers_beyond_the_type_are_narrowed_as_triton_does(server, datatype, data):
    # Triton reads a JSON integer as a 64-bit one of the tensor's signedness, then narrows
    # it with a C cast; an unsigned value above 2**63 once overflowed the parser instead.
    body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 3], "datatype": datatype,
                                   "data": data}]})
    status, _, raw = post(server, f"/v2/models/{model_name(datatype)}/infer", body.encode())
    assert status == 200, raw
    wide = np.uint64 if datatype.startswith("U") else np.int64
    expected = np.array(data, dtype=wide).astype(datatype.lower()).tolist()
    assert json.loads(raw)["outputs"][0]["data"] == expected


@pytest.mark.parametrize("datatype,value,why", [
    ("UINT32", -1, "non-unsigned-integer as unsigned-integer"),
    ("INT32", 2**63, "non-signed-integer as signed-integer"),
])
def test_json_integers_outside_64_bits_are_refused(server, datatype, value, why):
    body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 2], "datatype": datatype,
                                   "data": [[1, value]]}]})
    status, _, raw = post(server, f"/v2/models/{model_name(datatype)}/infer", body.encode())
    assert (status, json.loads(raw)["error"]) == (500, f"Unable to parse 'data': attempt to access "
                                                       f"JSON {why}")


def test_classification(client):
    data = np.array([[0.1, 0.9, 0.3, 0.2], [5.0, 1.0, 7.0, 0.0]], dtype=np.float32)
    tensor = httpclient.InferInput("INPUT0", [2, 4], "FP32")
    tensor.set_data_from_numpy(data)
    for binary in (True, False):
        out = httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary, class_count=2)
        result = client.infer("classes", [tensor], outputs=[out])
        got = result.as_numpy("OUTPUT0")
        assert got.shape == (2, 2)
        assert [x.decode() if isinstance(x, bytes) else x for x in got.ravel()] == [
            "0.900000:1:dog", "0.300000:2:bird", "7.000000:2:bird", "5.000000:0:cat"]


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compression_both_ways(client, algorithm):
    inputs, a, b = simple_inputs()
    result = client.infer("simple", inputs, request_compression_algorithm=algorithm,
                          response_compression_algorithm=algorithm)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)


def test_response_compressed_with_its_header(server):
    body = json.dumps({"inputs": [{"name": n, "shape": [1, 16], "datatype": "INT32",
                                   "data": list(range(16))} for n in ("INPUT0", "INPUT1")]})
    status, headers, raw = post(server, "/v2/models/simple/infer", gzip.compress(body.encode()),
                                {"Content-Encoding": "gzip", "Accept-Encoding": "deflate;q=0.5, gzip"})
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert json.loads(gzip.decompress(raw))["outputs"][1]["data"] == [0] * 16
    status, headers, raw = post(server, "/v2/models/simple/infer", zlib.compress(body.encode()),
                                {"Content-Encoding": "br"})
    assert status == 501 and json.loads(raw) == {"error": "Unsupported compression type"}
    assert headers["accept-encoding"] == "gzip, deflate"


def test_binary_response_header_length(server):
    inputs, a, b = simple_inputs()
    body, json_size = httpclient.InferenceServerClient.generate_request_body(
        inputs, outputs=[httpclient.InferRequestedOutput("OUTPUT0", binary_data=True)])
    status, headers, raw = post(server, "/v2/models/simple/infer", body,
                                {"Inference-Header-Content-Length": str(json_size)})
    assert status == 200 and headers["content-type"] == "application/octet-stream"
    size = int(headers["inference-header-content-length"])
    header = json.loads(raw[:size])
    assert header["outputs"][0]["parameters"]["binary_data_size"] == 64
    np.testing.assert_array_equal(np.frombuffer(raw[size:], np.int32).reshape(1, 16), a + b)


def test_async_infer_gevent(client):
    inputs, a, b = simple_inputs()
    handles = [client.async_infer("simple", inputs) for _ in range(4)]
    for handle in handles:
        np.testing.assert_array_equal(handle.get_result().as_numpy("OUTPUT0"), a + b)


def test_aio_client(server):
    async def run():
        async with aiohttpclient.InferenceServerClient(server.http_url) as aio:
            assert await aio.is_server_live()
            assert (await aio.get_model_metadata("simple"))["name"] == "simple"
            inputs = [aiohttpclient.InferInput("INPUT0", [1, 16], "INT32"),
                      aiohttpclient.InferInput("INPUT1", [1, 16], "INT32")]
            a = np.arange(16, dtype=np.int32).reshape(1, 16)
            inputs[0].set_data_from_numpy(a)
            inputs[1].set_data_from_numpy(a)
            results = await asyncio.gather(*[aio.infer("simple", inputs) for _ in range(4)])
            for result in results:
                np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), 2 * a)
    asyncio.run(run())


def test_large_binary_tensor(client):
    data = np.random.default_rng(0).random((1, 1 << 20), dtype=np.float32)  # 4 MiB
    tensor = httpclient.InferInput("INPUT0", list(data.shape), "FP32")
    tensor.set_data_from_numpy(data)
    result = client.infer("id_fp32", [tensor])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), data)


# -- errors: the gRPC suite's cases with HTTP's statuses -----------------------------------------

NOTE = ("NOTE: Setting a non-zero max_batch_size in the model config requires a batch dimension "
        "to be prepended to each input shape. If you want to specify the full shape including "
        "the batch dim in your input dims config, try setting max_batch_size to zero. See the "
        "model configuration docs for more info on max_batch_size.")


def infer_json(server, model, inputs, outputs=None, **extra):
    document = {"inputs": inputs, **extra}
    if outputs is not None:
        document["outputs"] = outputs
    status, _, raw = post(server, f"/v2/models/{model}/infer", json.dumps(document).encode())
    return status, json.loads(raw).get("error") if status != 200 else json.loads(raw)


def ints(name="INPUT0", shape=(1, 16), datatype="INT32", data=None):
    count = int(np.prod(shape))
    return {"name": name, "shape": list(shape), "datatype": datatype,
            "data": list(range(count)) if data is None else data}


ERROR_CASES = [
    ("unknown model", "nope", [ints()], None, {}, 404,
     "Request for unknown model: 'nope' is not found"),
    ("unknown version", "simple/versions/3", [ints(), ints("INPUT1")], None, {}, 404,
     "Request for unknown model: 'simple' version 3 is not found"),
    ("datatype", "simple", [ints(datatype="FP32"), ints("INPUT1")], None, {}, 400,
     "inference input 'INPUT0' data-type is 'FP32', but model 'simple' expects 'INT32'"),
    ("datatype with id", "simple", [ints(datatype="FP32"), ints("INPUT1")], None, {"id": "7"},
     400, "[request id: 7] inference input 'INPUT0' data-type is 'FP32', but model 'simple' "
     "expects 'INT32'"),
    ("shape", "simple", [ints(shape=(1, 15)), ints("INPUT1", shape=(1, 15))], None, {}, 400,
     f"unexpected shape for input 'INPUT0' for model 'simple'. Expected [-1,16], got [1,15]. "
     f"{NOTE}"),
    ("batch", "simple", [ints(shape=(9, 16)), ints("INPUT1", shape=(9, 16))], None, {}, 400,
     "inference request batch-size must be <= 8 for 'simple'"),
    ("missing input", "simple", [ints()], None, {}, 400,
     "expected 2 inputs but got 1 inputs for model 'simple'. Got input(s) ['INPUT0'], but "
     "missing required input(s) ['INPUT1']. Please provide all required input(s)."),
    ("unknown input", "simple", [ints(), ints("INPUT1"), ints("EXTRA")], None, {}, 400,
     "expected 2 inputs but got 3 inputs for model 'simple'. Got input(s) "
     "['EXTRA','INPUT0','INPUT1'], but missing required input(s) ]. Please provide all "
     "required input(s)."),
    ("unknown output", "simple", [ints(), ints("INPUT1")], [{"name": "NOPE"}], {}, 400,
     "unexpected inference output 'NOPE' for model 'simple'"),
    ("duplicate output", "simple", [ints(), ints("INPUT1")],
     [{"name": "OUTPUT0"}, {"name": "OUTPUT0"}], {}, 400,
     "output 'OUTPUT0' already exists in request"),
    ("too few values", "simple", [ints(data=list(range(15))), ints("INPUT1")], None, {}, 500,
     "Failed to parse 'data' field: shape does not match true shape"),
    ("too many values", "simple", [ints(data=list(range(18))), ints("INPUT1")], None, {}, 500,
     "Unable to parse 'data': Shape does not match true shape of 'data' field"),
    ("float for int", "simple", [ints(data=[0.5] * 16), ints("INPUT1")], None, {}, 500,
     "Unable to parse 'data': attempt to access JSON non-signed-integer as signed-integer"),
    ("negative dim", "simple", [ints(shape=(1, 16)) | {"shape": [1, -16]}, ints("INPUT1")], None,
     {}, 500, "Unable to parse 'shape': attempt to access JSON non-unsigned-integer as "
     "unsigned-integer"),
    ("no data field", "simple", [{"name": "INPUT0", "shape": [1, 16], "datatype": "INT32"},
                                 ints("INPUT1")], None, {}, 400,
     "Input must set only one of the following fields: 'data', 'binary_data_size' in "
     "'parameters', 'shared_memory_region' in 'parameters'. But no field is set"),
    ("reserved parameter", "simple", [ints(), ints("INPUT1")], None,
     {"parameters": {"triton_x": True}}, 400,
     "parameter keys starting with 'triton_' are reserved for Triton usage and should not be "
     "specified."),
    ("bad priority", "simple", [ints(), ints("INPUT1")], None, {"parameters": {"priority": -1}},
     500, "Unable to parse 'priority': attempt to access JSON non-unsigned-integer as "
     "unsigned-integer"),
    ("element overflow", "simple", [ints(shape=(1, 16)) | {"shape": [2**4, 2**60 + 2]},
                                    ints("INPUT1")], None, {}, 400,
     "invalid shape for input 'INPUT0': shape [16,1152921504606846978] causes total element "
     "count to exceed maximum size of 9223372036854775807"),
    ("bytes count", "id_bytes", [ints(shape=(1, 3), datatype="BYTES", data=["a", "b"])], None,
     {}, 400, "expected 3 string elements for inference input 'INPUT0' for model 'id_bytes', "
     "got 2"),
    ("json depth", "id_int64",
     [ints(shape=(1, 1), datatype="INT64", data=json.loads("[" * 120 + "1" + "]" * 120))],
     None, {}, 400, "Unable to parse 'data': JSON nesting depth exceeds maximum allowed limit "
     "(100)"),
]


@pytest.mark.parametrize("case", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_infer_errors(server, case):
    _, model, inputs, outputs, extra, status, message = case
    got_status, got_message = infer_json(server, model, inputs, outputs, **extra)
    assert (got_status, got_message) == (status, message)


def test_classification_of_unsupported_type_with_client(client):
    data = np.ones((1, 3), np.bool_)
    tensor = httpclient.InferInput("INPUT0", [1, 3], "BOOL")
    tensor.set_data_from_numpy(data)
    out = httpclient.InferRequestedOutput("OUTPUT0", class_count=1)
    status, message = http_error(client.infer, "id_bool", [tensor], outputs=[out])
    assert status == "400"
    assert message == "class result not available for output due to unsupported type 'BOOL'"


def test_malformed_json(server):
    status, _, raw = post(server, "/v2/models/simple/infer", b'{"inputs": [')
    assert status == 400
    assert json.loads(raw)["error"].startswith("failed to parse the request JSON buffer: ")


def test_lying_inference_header_length(server):
    body = json.dumps({"inputs": [ints(), ints("INPUT1")]}).encode()
    for value, message in [
            (str(len(body) + 10), f"inference header size should be in range (0, {len(body)}), "
                                  f"got: {len(body) + 10}"),
            ("99999999999", "Unable to parse Inference-Header-Content-Length, value is out of "
                            "range [ -2147483648, 2147483647 ], got: 99999999999"),
            ("abc", "Unable to parse Inference-Header-Content-Length, got: abc")]:
        status, _, raw = post(server, "/v2/models/simple/infer", body,
                              {"Inference-Header-Content-Length": value})
        assert (status, json.loads(raw)["error"]) == (400, message)
    # A header shorter than the JSON: what follows is not valid JSON
    status, _, raw = post(server, "/v2/models/simple/infer", body,
                          {"Inference-Header-Content-Length": str(len(body) - 5)})
    assert status == 400 and "failed to parse the request JSON buffer" in json.loads(raw)["error"]


def binary_body(sizes, data: bytes):
    header = json.dumps({"inputs": [
        {"name": n, "shape": [1, 16], "datatype": "INT32",
         "parameters": {"binary_data_size": s}} for n, s in zip(("INPUT0", "INPUT1"), sizes)]})
    return header.encode() + data, len(header)


def test_binary_sizes_that_do_not_add_up(server):
    data = np.ones(32, np.int32).tobytes()
    body, size = binary_body([64, 64], data[:100])  # 28 bytes short
    status, _, raw = post(server, "/v2/models/simple/infer", body,
                          {"Inference-Header-Content-Length": str(size)})
    assert (status, json.loads(raw)["error"]) == (
        400, "unexpected size for input 'INPUT1', expecting 28 additional bytes for model 'simple'")
    body, size = binary_body([64, 64], data + b"xx")
    status, _, raw = post(server, "/v2/models/simple/infer", body,
                          {"Inference-Header-Content-Length": str(size)})
    assert (status, json.loads(raw)["error"]) == (
        400, "unexpected additional input data for model 'simple'")
    body, size = binary_body([60, 68], data)  # adds up, but each input's size is wrong
    status, _, raw = post(server, "/v2/models/simple/infer", body,
                          {"Inference-Header-Content-Length": str(size)})
    assert (status, json.loads(raw)["error"]) == (
        400, "input byte size mismatch for input 'INPUT0' for model 'simple'. Expected 64, got 60")


def test_client_disconnecting_mid_body(server, client):
    body, size = binary_body([64, 64], np.ones(32, np.int32).tobytes())
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
            sock.sendall(b"POST /v2/models/simple/infer HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Length: %d\r\nInference-Header-Content-Length: %d\r\n\r\n"
                         % (len(body), size) + body[: len(body) // 2])
    # The server forgot those requests and keeps serving.
    inputs, a, b = simple_inputs()
    np.testing.assert_array_equal(client.infer("simple", inputs).as_numpy("OUTPUT0"), a + b)
    assert server.process.poll() is None


def test_server_still_serves_after_errors(client):
    inputs, a, b = simple_inputs(binary=False)
    np.testing.assert_array_equal(client.infer("simple", inputs).as_numpy("OUTPUT0"), a + b)


# -- limits, flags and model control (servers of their own) -------------------------------------

def test_over_size_body_refused(tmp_path):
    repo = tmp_path / "models"
    models.simple_model(repo, "simple")
    server = models.start(repo, "--http-max-input-size", "1024")
    try:
        body = json.dumps({"inputs": [ints(), ints("INPUT1")], "pad": "x" * 2000}).encode()
        status, _, raw = post(server, "/v2/models/simple/infer", body)
        assert (status, json.loads(raw)["error"]) == (
            400, f"request JSON size of {len(body)} bytes exceeds the maximum allowed input size "
                 "of 1024 bytes. Use --http-max-input-size to increase the limit.")
        bomb = gzip.compress(b" " * 5000)  # small on the wire, over the limit inflated
        status, _, raw = post(server, "/v2/models/simple/infer", bomb, {"Content-Encoding": "gzip"})
        assert (status, json.loads(raw)["error"]) == (
            400, "Decompressed data size exceeds the maximum allowed value of 1024 bytes. Use "
                 "--http-max-input-size to increase the limit.")
        with server.http_client() as c:
            assert c.is_server_live()
    finally:
        server.stop()


def test_allow_http_false_serves_no_http(tmp_path):
    repo = tmp_path / "models"
    models.simple_model(repo, "simple")
    server = models.start(repo, "--allow-http", "false")
    try:
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", server.http_port), timeout=2).close()
        assert server.client().is_server_live()
    finally:
        server.stop()


def test_model_control_explicit_mode_with_file_override(tmp_path):
    repo = tmp_path / "models"
    models.simple_model(repo, "simple")
    onnx_path = models.identity_model(tmp_path / "staging", "staged", "FP32") / "1" / "model.onnx"
    server = models.start(repo, "--model-control-mode", "explicit")
    try:
        with server.http_client() as c:
            assert not c.is_model_ready("simple")
            c.load_model("simple")
            assert c.is_model_ready("simple")
            c.load_model("simple", config=json.dumps({"max_batch_size": 4}))
            assert c.get_model_config("simple")["max_batch_size"] == 4
            c.unload_model("simple")
            assert not c.is_model_ready("simple")
            status, message = http_error(c.load_model, "wrong_model_name")
            assert status == "500"
            assert message == "failed to load 'wrong_model_name', failed to poll from model repository"
            # A model whose files travel in the request, base64-encoded
            config = json.dumps({"name": "pushed", "backend": "onnxruntime", "max_batch_size": 8,
                                 "input": [{"name": "INPUT0", "data_type": "TYPE_FP32",
                                            "dims": [-1]}],
                                 "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32",
                                             "dims": [-1]}]})
            c.load_model("pushed", config=config,
                         files={"file:1/model.onnx": onnx_path.read_bytes()})
            assert c.is_model_ready("pushed")
            data = np.arange(3, dtype=np.float32).reshape(1, 3)
            tensor = httpclient.InferInput("INPUT0", [1, 3], "FP32")
            tensor.set_data_from_numpy(data)
            np.testing.assert_array_equal(c.infer("pushed", [tensor]).as_numpy("OUTPUT0"), data)
    finally:
        server.stop()


def test_load_body_base64_decoded(tmp_path):
    """The REST body carries ``file:`` contents base64-encoded (tritonclient encodes them)."""
    repo = tmp_path / "models"
    models.simple_model(repo, "simple")
    onnx_bytes = (repo / "simple" / "1" / "model.onnx").read_bytes()
    server = models.start(repo, "--model-control-mode", "explicit")
    try:
        body = json.dumps({"parameters": {
            "config": json.dumps({"backend": "onnxruntime", "max_batch_size": 8}),
            "file:1/model.onnx": base64.b64encode(onnx_bytes).decode()}}).encode()
        status, _, raw = post(server, "/v2/repository/models/copy/load", body)
        assert status == 200, raw
        with server.http_client() as c:
            assert c.is_model_ready("copy")
            assert len(c.get_model_config("copy")["input"]) == 2  # auto-completed from the file
    finally:
        server.stop()


def test_restricted_api_in_process(tmp_path):
    """--http-restricted-api rules (the shared ``restrictions`` module) give Triton's 403."""
    restrictions = pytest.importorskip("triton_grpc_server.restrictions")
    from triton_grpc_server.frontends.http_app import TritonHttpApp
    from triton_grpc_server.settings import Settings

    class Plane:  # only the health route runs
        def server_live(self):
            return True

    rules = restrictions.Restrictions.for_http(["health,metadata:admin-key=secret"])
    app = TritonHttpApp(Plane(), Settings(), restrictions=rules)

    def call(path, headers=()):
        sent = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)
        scope = {"type": "http", "method": "GET", "path": path, "headers": list(headers)}
        asyncio.run(app(scope, receive, send))
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])

    status, body = call("/v2/health/live")
    assert status == 403
    assert json.loads(body) == {"error": "This API is restricted, expecting header 'admin-key'"}
    assert call("/v2/health/live", [(b"admin-key", b"secret")])[0] == 200
    assert call("/v2/health/live", [(b"admin-key", b"wrong")])[0] == 403


# -- generate and generate_stream (decoupled models) ---------------------------------------------

@pytest.fixture(scope="module")
def generate_server(tmp_path_factory):
    import repeat_backend

    base = tmp_path_factory.mktemp("generate")
    repo = base / "models"
    repo.mkdir()
    models.simple_model(repo, "simple")
    repeat_backend.write_model(repo, "repeat_int32")
    yield from models.serve(repo, env=repeat_backend.plugin_env(base / "plugins"))


def sse_events(raw: bytes) -> list:
    assert raw.endswith(b"\n\n")
    return [json.loads(chunk[len(b"data: "):]) for chunk in raw.split(b"\n\n") if chunk]


def test_generate_non_decoupled(generate_server):
    body = json.dumps({"INPUT0": list(range(16)), "INPUT1": [1] * 16, "id": "g1",
                       "parameters": {"note": "x"}}).encode()
    status, headers, raw = post(generate_server, "/v2/models/simple/generate", body)
    assert status == 200 and headers["content-type"] == "application/json"
    answer = json.loads(raw)
    assert answer["model_name"] == "simple" and answer["model_version"] == "1"
    assert answer["id"] == "g1"
    assert answer["OUTPUT0"] == [i + 1 for i in range(16)]
    assert answer["OUTPUT1"] == [i - 1 for i in range(16)]


def test_generate_stream_decoupled_sends_one_event_per_response(generate_server):
    body = json.dumps({"IN": [4, 5, 6], "DELAY": [0, 0, 0], "WAIT": 0}).encode()
    status, headers, raw = post(generate_server, "/v2/models/repeat_int32/generate_stream", body)
    assert status == 200 and headers["content-type"] == "text/event-stream; charset=utf-8"
    events = sse_events(raw)
    assert [(e["OUT"], e["IDX"]) for e in events] == [(4, 0), (5, 1), (6, 2)]
    assert all(e["model_name"] == "repeat_int32" for e in events)


def test_generate_stream_error_event(generate_server):
    body = json.dumps({"IN": [1, 2], "DELAY": [0], "WAIT": 0}).encode()  # DELAY too short
    status, _, raw = post(generate_server, "/v2/models/repeat_int32/generate_stream", body)
    events = sse_events(raw)
    assert status == 400 and len(events) == 1 and "error" in events[0]


def test_generate_needs_exactly_one_response(generate_server):
    one = json.dumps({"IN": [9], "DELAY": [0], "WAIT": 0}).encode()
    status, _, raw = post(generate_server, "/v2/models/repeat_int32/generate", one)
    assert status == 200 and (json.loads(raw)["OUT"], json.loads(raw)["IDX"]) == (9, 0)
    three = json.dumps({"IN": [1, 2, 3], "DELAY": [0, 0, 0], "WAIT": 0}).encode()
    status, _, raw = post(generate_server, "/v2/models/repeat_int32/generate", three)
    assert (status, json.loads(raw)) == (500, {"error": (
        "generate expects model to produce exactly 1 response, use generate stream for model "
        "that generates various number of responses")})


def test_infer_refuses_decoupled_model(generate_server):
    body = json.dumps({"inputs": [{"name": "IN", "shape": [1], "datatype": "INT32",
                                   "data": [1]}]}).encode()
    status, _, raw = post(generate_server, "/v2/models/repeat_int32/infer", body)
    assert (status, json.loads(raw)) == (501, {"error": (
        "HTTP end point doesn't support models with decoupled transaction policy")})


def test_generate_errors(generate_server):
    status, _, raw = post(generate_server, "/v2/models/nope/generate", b"{}")
    assert (status, json.loads(raw)) == (404, {"error": "Request for unknown model: 'nope' is "
                                                        "not found"})
    body = json.dumps({"INPUT0": list(range(15)), "INPUT1": [1] * 15}).encode()
    status, _, raw = post(generate_server, "/v2/models/simple/generate", body)
    assert (status, json.loads(raw)) == (400, {"error": (
        "The schema can not convert input 'INPUT0' to tensor with proper shape")})
    status, _, raw = post(generate_server, "/v2/models/simple/generate", b"{}",
                          {"Content-Encoding": "gzip"})
    assert (status, json.loads(raw)) == (400, {"error": (
        "Unsupported content-encoding, only 'identity' is supported.")})


# -- shared memory and trace routes --------------------------------------------------------------

def test_system_shared_memory_over_http(tmp_path):
    import tritonclient.utils.shared_memory as shm

    repo = tmp_path / "models"
    models.simple_model(repo, "simple")
    server = models.start(repo, "--allow-client-shm", "true")
    key = f"/tgs_http_{server.http_port}"
    handle = shm.create_shared_memory_region("h_in", key + "_in", 128)
    out = shm.create_shared_memory_region("h_out", key + "_out", 128)
    try:
        with server.http_client() as c:
            a = np.arange(16, dtype=np.int32).reshape(1, 16)
            shm.set_shared_memory_region(handle, [a, a])
            c.register_system_shared_memory("in", key + "_in", 128)
            c.register_system_shared_memory("out", key + "_out", 128)
            status = c.get_system_shared_memory_status()
            assert {r["name"] for r in status} == {"in", "out"}
            inputs = [httpclient.InferInput("INPUT0", [1, 16], "INT32"),
                      httpclient.InferInput("INPUT1", [1, 16], "INT32")]
            inputs[0].set_shared_memory("in", 64)
            inputs[1].set_shared_memory("in", 64, offset=64)
            outputs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=True),
                       httpclient.InferRequestedOutput("OUTPUT1", binary_data=False)]
            outputs[0].set_shared_memory("out", 64)
            result = c.infer("simple", inputs, outputs=outputs)
            in_region = result.get_output("OUTPUT0")  # metadata only, as Triton
            assert in_region["shape"] == [1, 16] and "data" not in in_region
            assert "binary_data_size" not in in_region.get("parameters", {})
            np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - a)
            got = shm.get_contents_as_numpy(out, np.int32, [1, 16])
            np.testing.assert_array_equal(got, 2 * a)
            status, message = http_error(c.get_system_shared_memory_status, "nope")
            assert status == "404"
            assert message == "Unable to find system shared memory region: 'nope'"
            c.unregister_system_shared_memory()
            assert c.get_system_shared_memory_status() == []
    finally:
        server.stop()
        shm.destroy_shared_memory_region(handle)
        shm.destroy_shared_memory_region(out)


def test_shared_memory_refused_without_allow_client_shm(server, client):
    status, message = http_error(client.register_system_shared_memory, "r", "/k", 8)
    assert status == "501" and "shared memory" in message.lower()
    status, _, raw = post(server, "/v2/systemsharedmemory/region/r/status", b"")
    assert status == 405


def test_trace_settings(client):
    settings = client.get_trace_settings()
    assert isinstance(settings["trace_level"], list) and isinstance(settings["trace_rate"], str)
    updated = client.update_trace_settings(settings={"trace_rate": "7"})
    assert updated["trace_rate"] == "7"
    per_model = client.update_trace_settings("simple", settings={"trace_count": "3"})
    assert per_model["trace_count"] == "3" and per_model["trace_rate"] == "7"
    cleared = client.update_trace_settings(settings={"trace_rate": None})
    assert cleared["trace_rate"] == settings["trace_rate"]
    status, message = http_error(client.get_trace_settings, "nope")
    assert (status, message) == ("400", "Request for unknown model : nope")


def test_raw_binary_request(server):
    """``Inference-Header-Content-Length: 0``: the body is the one input (Triton's raw request)."""
    data = np.arange(8, dtype=np.float32)
    status, headers, raw = post(server, "/v2/models/id_fp32/infer", data.tobytes(),
                                {"Inference-Header-Content-Length": "0"})
    assert status == 200
    size = int(headers["inference-header-content-length"])
    assert json.loads(raw[:size])["outputs"][0]["shape"] == [1, 8]
    np.testing.assert_array_equal(np.frombuffer(raw[size:], np.float32), data)
    status, headers, raw = post(server, "/v2/models/fixed_nb/infer", b"",
                                {"Inference-Header-Content-Length": "0"})
    assert status == 400 and "input byte size mismatch" in json.loads(raw)["error"]
    status, _, raw = post(server, "/v2/models/id_bytes/infer", b"427",
                          {"Inference-Header-Content-Length": "0"})
    assert (status, json.loads(raw)["error"]) == (
        400, "For BYTE datatype raw input 'INPUT0', the model must have input shape [1]")
    status, _, raw = post(server, "/v2/models/simple/infer", b"x" * 64,
                          {"Inference-Header-Content-Length": "0"})
    assert (status, json.loads(raw)["error"]) == (
        400, "Raw request must only have 1 input (found 1) to be deduced but got 2 inputs in "
             "'simple' model configuration")


def test_http_port_in_use_fails_start_up(tmp_path):
    repo = tmp_path / "models"
    models.simple_model(repo, "simple")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        server = models.start(repo, "--http-port", str(port), wait_ready=False)
        try:
            assert server.process.wait(60) == 1
            assert f"failed to bind HTTP frontend on 127.0.0.1:{port}" in server.log()
        finally:
            server.stop()


def test_log_settings(client, server):
    settings = client.get_log_settings()
    assert set(settings) == {"log_file", "log_info", "log_warning", "log_error",
                             "log_verbose_level", "log_format"}
    assert client.update_log_settings({"log_verbose_level": 1})["log_verbose_level"] == 1
    assert client.update_log_settings({"log_verbose_level": 0})["log_verbose_level"] == 0
    status, message = http_error(client.update_log_settings, {"log_file": "/tmp/x"})
    assert (status, message) == ("501", "log file location can not be updated through "
                                        "network protocol")
    status, message = http_error(client.update_log_settings, {"log_info": "yes"})
    assert (status, message) == ("400", "expect boolean for 'log_info'")
