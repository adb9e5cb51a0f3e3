"""Every datatype round trip through ONNX Identity models: raw and typed contents, zero-size."""
from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

import models
from models import bytes_raw, error_of, pb_input, pb_request, stub_infer
from models import client  # noqa: F401  (the module-scoped client fixture)

NUMERIC = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
           "FP16", "FP32", "FP64"]

# datatype -> the InferTensorContents field that carries it
CONTENTS_FIELD = {
    "BOOL": "bool_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
    "UINT32": "uint_contents", "UINT64": "uint64_contents", "INT8": "int_contents",
    "INT16": "int_contents", "INT32": "int_contents", "INT64": "int64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}



def model_name(datatype: str, batched: bool = True) -> str:
    return f"id_{datatype.lower()}" + ("" if batched else "_nb")


FRONTENDS = models.INFER_FRONTENDS


@pytest.fixture(scope="module", params=sorted(FRONTENDS))
def server(request, tmp_path_factory):
    repo = tmp_path_factory.mktemp("datatypes") / "models"
    repo.mkdir()
    for datatype in models.DATATYPES:
        models.identity_model(repo, model_name(datatype), datatype, max_batch_size=8, dims=[-1])
    for datatype in ("FP32", "BYTES"):
        models.identity_model(repo, model_name(datatype, False), datatype, max_batch_size=0,
                              dims=[-1, -1])
    yield from models.serve(repo, *FRONTENDS[request.param])


def sample(datatype: str, shape=(2, 6)) -> np.ndarray:
    """Values that exercise each type's range (extremes, signs, fractions)."""
    count = int(np.prod(shape))
    if datatype == "BOOL":
        values = np.array([True, False, False, True, True, False] * count)[:count]
        return values.reshape(shape)
    dtype = models.DATATYPES[datatype][2]
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        pool = [info.min, info.max, 0, 1, info.max // 3, info.min // 7 if info.min else 5]
    else:
        info = np.finfo(dtype)
        pool = [info.min, info.max, 0.0, -0.0, 0.5, -2.75, info.tiny, np.inf, -np.inf, 1e-3]
    return np.resize(np.array(pool, dtype=dtype), count).reshape(shape)


def infer(client, model, array, datatype, **kwargs):
    tensor = grpcclient.InferInput("INPUT0", list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return client.infer(model, [tensor], **kwargs)


def assert_same(got: np.ndarray, expected: np.ndarray):
    assert got.dtype == expected.dtype
    assert got.shape == expected.shape
    assert got.tobytes() == expected.tobytes()  # bit-exact (NaN, -0.0 and all)


@pytest.mark.parametrize("datatype", NUMERIC)
def test_raw_round_trip(client, datatype):
    data = sample(datatype)
    result = infer(client, model_name(datatype), data, datatype)
    out = result.get_output("OUTPUT0")
    assert (out.name, out.datatype, list(out.shape)) == ("OUTPUT0", datatype, [2, 6])
    assert len(result.get_response().raw_output_contents[0]) == data.nbytes
    assert_same(result.as_numpy("OUTPUT0"), data)


def test_fp_nan_round_trip(client):
    data = np.array([[np.nan, 1.0, -np.nan]], dtype=np.float32)
    assert_same(infer(client, "id_fp32", data, "FP32").as_numpy("OUTPUT0"), data)


@pytest.mark.parametrize("datatype", [d for d in NUMERIC if d != "FP16"])
def test_typed_contents_round_trip(request, client, datatype):
    data = sample(datatype, (1, 6))
    values = [bool(v) for v in data.ravel()] if datatype == "BOOL" else data.ravel().tolist()
    request = pb_request(model_name(datatype), [
        pb_input("INPUT0", datatype, [1, 6], **{CONTENTS_FIELD[datatype]: values})])
    result = stub_infer(client, request)
    response = result.get_response()
    assert len(response.raw_output_contents) == 1
    assert not response.outputs[0].HasField("contents")
    assert_same(result.as_numpy("OUTPUT0"), data)


def test_typed_contents_narrow_ints_truncated_like_triton(client):
    """INT8/UINT8 travel widened in 32-bit fields; Triton keeps the low bytes."""
    request = pb_request("id_int8", [pb_input("INPUT0", "INT8", [1, 3], int_contents=[-1, 127, 5])])
    np.testing.assert_array_equal(stub_infer(client, request).as_numpy("OUTPUT0"),
                                  np.array([[-1, 127, 5]], dtype=np.int8))


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "INT64", "BOOL", "UINT8"])
def test_zero_size_tensor(client, datatype):
    dtype = models.DATATYPES[datatype][2]
    data = np.zeros((1, 0), dtype=dtype)
    result = infer(client, model_name(datatype), data, datatype)
    out = result.get_output("OUTPUT0")
    assert (out.datatype, list(out.shape)) == (datatype, [1, 0])
    assert result.get_response().raw_output_contents[0] == b""
    assert result.as_numpy("OUTPUT0").shape == (1, 0)


def test_large_tensor_beyond_grpc_default_message_size(client):
    """24 MiB each way: well past gRPC's 4 MiB default, within Triton's INT32_MAX limit."""
    data = np.arange(6 * 1024 * 1024, dtype=np.float32).reshape(1, -1)
    result = infer(client, "id_fp32", data, "FP32")
    assert_same(result.as_numpy("OUTPUT0"), data)


def test_unbatched_model_two_variable_dims(client):
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    result = infer(client, "id_fp32_nb", data, "FP32")
    assert list(result.get_output("OUTPUT0").shape) == [3, 4]
    assert_same(result.as_numpy("OUTPUT0"), data)


def test_fp16_typed_contents_rejected(client):
    request = pb_request("id_fp16", [pb_input("INPUT0", "FP16", [1, 2], fp32_contents=[1.0, 2.0])])
    assert error_of(stub_infer, client, request) == (
        "INVALID_ARGUMENT",
        "unexpected explicit tensor data for input tensor 'INPUT0' for model 'id_fp16' of type "
        "'FP32', expected datatype 'FP16'")


# -- BYTES --------------------------------------------------------------------------------------

TRICKY_BYTES = [b"plain", b"", b"nul\x00in\x00side", b"\xff\xfe\x80 not utf-8", b"\x00",
                "ünïcödé".encode(), b"x" * 300]


def test_bytes_raw_round_trip_ascii(client):
    data = np.array([[b"hello", b"world"]], dtype=np.object_)
    result = infer(client, "id_bytes", data, "BYTES")
    assert result.as_numpy("OUTPUT0").tolist() == [[b"hello", b"world"]]


def test_bytes_raw_round_trip_nul_non_utf8_empty(client):
    data = np.array([TRICKY_BYTES, TRICKY_BYTES[::-1]], dtype=np.object_)
    result = infer(client, "id_bytes", data, "BYTES")
    out = result.get_output("OUTPUT0")
    assert (out.datatype, list(out.shape)) == ("BYTES", [2, len(TRICKY_BYTES)])
    assert result.get_response().raw_output_contents[0] == bytes_raw(TRICKY_BYTES + TRICKY_BYTES[::-1])
    assert result.as_numpy("OUTPUT0").tolist() == data.tolist()


def test_bytes_typed_contents_round_trip(client):
    request = pb_request("id_bytes_nb", [
        pb_input("INPUT0", "BYTES", [1, len(TRICKY_BYTES)], bytes_contents=TRICKY_BYTES)])
    result = stub_infer(client, request)
    assert result.as_numpy("OUTPUT0").tolist() == [TRICKY_BYTES]


def test_bytes_all_empty_strings(client):
    data = np.array([[b"", b"", b""]], dtype=np.object_)
    result = infer(client, "id_bytes", data, "BYTES")
    assert result.get_response().raw_output_contents[0] == bytes_raw([b"", b"", b""])


def test_bytes_zero_elements(client):
    data = np.zeros((1, 0), dtype=np.object_)
    result = infer(client, "id_bytes", data, "BYTES")
    out = result.get_output("OUTPUT0")
    assert (out.datatype, list(out.shape)) == ("BYTES", [1, 0])
    assert result.get_response().raw_output_contents[0] == b""


# -- BF16 -----------------------------------------------------------------------------------------

def test_bf16_round_trip(client):
    import ml_dtypes

    data = np.array([[1.0, -2.5, 0.0, 3.140625, 65280.0]], dtype=ml_dtypes.bfloat16)
    result = infer(client, "id_bf16", data, "BF16")
    out = result.get_output("OUTPUT0")
    assert (out.datatype, list(out.shape)) == ("BF16", [1, 5])
    assert result.get_response().raw_output_contents[0] == data.tobytes()


# -- property-based: arbitrary payloads survive the round trip -------------------------------------

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

_PROPERTY = settings(max_examples=25, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])


@_PROPERTY
@given(items=st.lists(st.binary(max_size=40), min_size=1, max_size=8),
       batch=st.integers(min_value=1, max_value=3))
def test_property_bytes_round_trip(client, items, batch):
    data = np.array([items] * batch, dtype=np.object_)
    result = infer(client, "id_bytes", data, "BYTES")
    assert result.as_numpy("OUTPUT0").tolist() == data.tolist()


@_PROPERTY
@given(values=st.lists(st.floats(width=32, allow_nan=False), min_size=0, max_size=20))
def test_property_fp32_round_trip(client, values):
    data = np.array([values], dtype=np.float32)
    assert_same(infer(client, "id_fp32", data, "FP32").as_numpy("OUTPUT0"), data)
