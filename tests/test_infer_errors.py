"""ModelInfer errors: Triton's gRPC code and exact message text for each case.

Texts come from Triton's sources (see /work/triton_texts.md). Only the core's
checks carry the ``[request id: X] `` prefix; lookups, the frontend's data
checks and unknown-tensor lookups do not.
"""
from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

import models
from models import bytes_raw, error_of, pb_input, pb_request, stub_infer
from models import client  # noqa: F401  (the module-scoped client fixture)

NOTE = ("NOTE: Setting a non-zero max_batch_size in the model config requires a batch dimension "
        "to be prepended to each input shape. If you want to specify the full shape including "
        "the batch dim in your input dims config, try setting max_batch_size to zero. See the "
        "model configuration docs for more info on max_batch_size.")
INVALID = "INVALID_ARGUMENT"


FRONTENDS = models.INFER_FRONTENDS


@pytest.fixture(scope="module", params=sorted(FRONTENDS))
def server(request, tmp_path_factory):
    repo = tmp_path_factory.mktemp("errors") / "models"
    repo.mkdir()
    models.simple_model(repo, "simple")
    models.identity_model(repo, "fixed_nb", "FP32", max_batch_size=0, dims=[4])
    models.identity_model(repo, "id_bytes", "BYTES", max_batch_size=8, dims=[-1])
    models.identity_model(repo, "id_fp16", "FP16", max_batch_size=8, dims=[-1])
    models.identity_model(repo, "id_bool", "BOOL", max_batch_size=8, dims=[-1])
    models.optional_input_model(repo, "optional_in")
    yield from models.serve(repo, *FRONTENDS[request.param])


def tensor(name, array, datatype=None, shape=None):
    t = grpcclient.InferInput(name, list(array.shape), datatype or "INT32")
    t.set_data_from_numpy(array)
    if shape is not None:
        t.set_shape(list(shape))
    return t


def ints(shape=(1, 16), value=1):
    return np.full(shape, value, dtype=np.int32)


def good_inputs():
    return [tensor("INPUT0", ints()), tensor("INPUT1", ints())]


def raw_simple(**kwargs):
    """A raw ``simple`` request with both inputs valid unless overridden."""
    inputs = kwargs.pop("inputs", [pb_input("INPUT0", "INT32", [1, 16]),
                                   pb_input("INPUT1", "INT32", [1, 16])])
    raw = kwargs.pop("raw", [ints().tobytes(), ints().tobytes()])
    return pb_request("simple", inputs, raw=raw, **kwargs)


# -- model lookup ---------------------------------------------------------------------------------

def test_unknown_model(client):
    assert error_of(client.infer, "nope", good_inputs()) == (
        "NOT_FOUND", "Request for unknown model: 'nope' is not found")


def test_unknown_model_no_request_id_prefix(client):
    assert error_of(client.infer, "nope", good_inputs(), request_id="r1") == (
        "NOT_FOUND", "Request for unknown model: 'nope' is not found")


def test_unknown_version(client):
    assert error_of(client.infer, "simple", good_inputs(), model_version="3") == (
        "NOT_FOUND", "Request for unknown model: 'simple' version 3 is not found")


@pytest.mark.parametrize("version", ["abc", "x1", "-", "v2"])
def test_bad_version_string(client, version):
    assert error_of(client.infer, "simple", good_inputs(), model_version=version) == (
        INVALID, f"failed to get model version from specified version string '{version}' "
                 "(details: stol), version should be an integral value > 0")


@pytest.mark.parametrize("version, expected", [
    ("1.5", "1"), (" 1x", "1"), ("1abc", "1"),
    ("99999999999999999999", ("INVALID_ARGUMENT",
                              "failed to get model version from specified version string "
                              "'99999999999999999999' (details: stol), version should be an "
                              "integral value > 0")),
])
def test_version_string_parsed_like_stol(client, version, expected):
    if isinstance(expected, tuple):
        assert error_of(client.infer, "simple", good_inputs(), model_version=version) == expected
    else:
        result = client.infer("simple", good_inputs(), model_version=version)
        assert result.get_response().model_version == expected


def test_negative_version(client):
    assert error_of(client.infer, "simple", good_inputs(), model_version="-3") == (
        INVALID, "invalid model version specified '-3' , version should be an integral value > 0")


# -- datatype, shape, batch, byte size -----------------------------------------------------------

def test_datatype_mismatch(client):
    inputs = [tensor("INPUT0", ints().astype(np.float32), "FP32"), tensor("INPUT1", ints())]
    assert error_of(client.infer, "simple", inputs) == (
        INVALID, "inference input 'INPUT0' data-type is 'FP32', but model 'simple' expects 'INT32'")


def test_datatype_mismatch_with_request_id_prefix(client):
    inputs = [tensor("INPUT0", ints()), tensor("INPUT1", ints().astype(np.int64), "INT64")]
    assert error_of(client.infer, "simple", inputs, request_id="abc") == (
        INVALID, "[request id: abc] inference input 'INPUT1' data-type is 'INT64', but model "
                 "'simple' expects 'INT32'")


def test_unknown_datatype_string(client):
    """Triton maps an unknown datatype string to TYPE_INVALID, printed '<invalid>' (common
    model_config.cc DataTypeToProtocolString)."""
    request = raw_simple(inputs=[pb_input("INPUT0", "FOO", [1, 16]),
                                 pb_input("INPUT1", "INT32", [1, 16])])
    assert error_of(stub_infer, client, request) == (
        INVALID, "inference input 'INPUT0' data-type is '<invalid>', but model 'simple' expects "
                 "'INT32'")


def test_shape_mismatch_batched_has_note(client):
    inputs = [tensor("INPUT0", ints((1, 15))), tensor("INPUT1", ints())]
    assert error_of(client.infer, "simple", inputs) == (
        INVALID, "unexpected shape for input 'INPUT0' for model 'simple'. Expected [-1,16], "
                 f"got [1,15]. {NOTE}")


def test_shape_wrong_rank(client):
    inputs = [tensor("INPUT0", ints((2, 16))), tensor("INPUT1", ints((2, 16)))]
    inputs[0].set_shape([2, 8, 2])
    inputs[1].set_shape([2, 8, 2])
    assert error_of(client.infer, "simple", inputs) == (
        INVALID, "unexpected shape for input 'INPUT0' for model 'simple'. Expected [-1,16], "
                 f"got [2,8,2]. {NOTE}")


def test_shape_mismatch_unbatched_no_note(client):
    x = np.zeros(5, dtype=np.float32)
    assert error_of(client.infer, "fixed_nb", [tensor("INPUT0", x, "FP32")]) == (
        INVALID, "unexpected shape for input 'INPUT0' for model 'fixed_nb'. Expected [4], got [5]. ")


def test_wildcard_dim_in_request(client):
    request = raw_simple(inputs=[pb_input("INPUT0", "INT32", [1, -1]),
                                 pb_input("INPUT1", "INT32", [1, 16])])
    assert error_of(stub_infer, client, request) == (
        INVALID, "All input dimensions should be specified for input 'INPUT0' for model "
                 "'simple', got [1,-1]")


def test_batch_too_large(client):
    inputs = [tensor("INPUT0", ints((9, 16))), tensor("INPUT1", ints((9, 16)))]
    assert error_of(client.infer, "simple", inputs) == (
        INVALID, "inference request batch-size must be <= 8 for 'simple'")


def test_batch_too_large_with_request_id(client):
    inputs = [tensor("INPUT0", ints((10, 16))), tensor("INPUT1", ints((10, 16)))]
    assert error_of(client.infer, "simple", inputs, request_id="7") == (
        INVALID, "[request id: 7] inference request batch-size must be <= 8 for 'simple'")


def test_batch_sizes_differ(client):
    inputs = [tensor("INPUT0", ints((1, 16))), tensor("INPUT1", ints((2, 16)))]
    assert error_of(client.infer, "simple", inputs) == (
        INVALID, "input 'INPUT1' batch size does not match other inputs for 'simple'")


def test_no_shape_for_batching_model(client):
    request = raw_simple(inputs=[pb_input("INPUT0", "INT32", []),
                                 pb_input("INPUT1", "INT32", [1, 16])],
                         raw=[ints((1,)).tobytes(), ints().tobytes()])
    assert error_of(stub_infer, client, request) == (
        INVALID, "input 'INPUT0' has no shape but model requires batch dimension for 'simple'")


def test_byte_size_mismatch(client):
    request = raw_simple(raw=[ints().tobytes()[:60], ints().tobytes()])
    assert error_of(stub_infer, client, request) == (
        INVALID, "input byte size mismatch for input 'INPUT0' for model 'simple'. "
                 "Expected 64, got 60")


def test_byte_size_mismatch_with_request_id(client):
    request = raw_simple(raw=[ints().tobytes(), ints().tobytes() + b"\0\0\0\0"], id="req-9")
    assert error_of(stub_infer, client, request) == (
        INVALID, "[request id: req-9] input byte size mismatch for input 'INPUT1' for model "
                 "'simple'. Expected 64, got 68")


def test_typed_contents_wrong_count_is_byte_size_error(client):
    request = raw_simple(inputs=[pb_input("INPUT0", "INT32", [1, 16], int_contents=[1] * 15),
                                 pb_input("INPUT1", "INT32", [1, 16], int_contents=[1] * 16)],
                         raw=[])
    assert error_of(stub_infer, client, request) == (
        INVALID, "input byte size mismatch for input 'INPUT0' for model 'simple'. "
                 "Expected 64, got 60")


# -- missing / unknown tensors --------------------------------------------------------------------

def test_missing_input(client):
    assert error_of(client.infer, "simple", [tensor("INPUT0", ints())]) == (
        INVALID, "expected 2 inputs but got 1 inputs for model 'simple'. Got input(s) "
                 "['INPUT0'], but missing required input(s) ['INPUT1']. Please provide all "
                 "required input(s).")


def test_no_inputs_with_request_id(client):
    request = pb_request("simple", [], id="empty")
    assert error_of(stub_infer, client, request) == (
        INVALID, "[request id: empty] expected 2 inputs but got 0 inputs for model 'simple'. "
                 "Got input(s) [], but missing required input(s) ['INPUT0','INPUT1']. Please "
                 "provide all required input(s).")


def test_too_many_inputs(client):
    inputs = good_inputs() + [tensor("EXTRA", ints())]
    assert error_of(client.infer, "simple", inputs) == (
        INVALID, "expected 2 inputs but got 3 inputs for model 'simple'. Got input(s) "
                 "['EXTRA','INPUT0','INPUT1'], but missing required input(s) ]. Please provide "
                 "all required input(s).")


def test_optional_input_count_message(client):
    request = pb_request("optional_in", [])
    assert error_of(stub_infer, client, request) == (
        INVALID, "expected number of inputs between 1 and 2 but got 0 inputs for model "
                 "'optional_in'. Got input(s) [], but missing required input(s) ['INPUT0']. "
                 "Please provide all required input(s).")


def test_unknown_input_name(client):
    inputs = [tensor("INPUT0", ints()), tensor("BOGUS", ints())]
    assert error_of(client.infer, "simple", inputs, request_id="x") == (
        INVALID, "unexpected inference input 'BOGUS' for model 'simple'")


def test_unknown_output(client):
    outputs = [grpcclient.InferRequestedOutput("OUTPUT0"), grpcclient.InferRequestedOutput("NOPE")]
    assert error_of(client.infer, "simple", good_inputs(), outputs=outputs, request_id="x") == (
        INVALID, "unexpected inference output 'NOPE' for model 'simple'")


def test_duplicate_input(client):
    inputs = [tensor("INPUT0", ints()), tensor("INPUT0", ints())]
    assert error_of(client.infer, "simple", inputs) == (
        INVALID, "input 'INPUT0' already exists in request")


def test_duplicate_input_with_request_id(client):
    inputs = [tensor("INPUT1", ints()), tensor("INPUT1", ints())]
    assert error_of(client.infer, "simple", inputs, request_id="dup") == (
        INVALID, "[request id: dup] input 'INPUT1' already exists in request")


def test_duplicate_requested_output(client):
    outputs = [grpcclient.InferRequestedOutput("OUTPUT0"), grpcclient.InferRequestedOutput("OUTPUT0")]
    assert error_of(client.infer, "simple", good_inputs(), outputs=outputs) == (
        INVALID, "output 'OUTPUT0' already exists in request")


def test_unable_to_find_data(client):
    request = raw_simple(raw=[ints().tobytes()], id="no-prefix")
    assert error_of(stub_infer, client, request) == (
        INVALID, "unable to find data for input tensor 'INPUT1' for model 'simple' in request.")


def test_contents_with_raw(client):
    request = raw_simple(inputs=[pb_input("INPUT0", "INT32", [1, 16]),
                                 pb_input("INPUT1", "INT32", [1, 16], int_contents=[1] * 16)],
                         raw=[ints().tobytes()], id="no-prefix")
    assert error_of(stub_infer, client, request) == (
        INVALID, "contents field must not be specified when using raw_input_contents for "
                 "'INPUT1' for model 'simple'")


def test_empty_contents_message_with_raw(client):
    """A present-but-empty ``contents`` still counts as contents (Triton: has_contents())."""
    second = pb_input("INPUT1", "INT32", [1, 16])
    second.contents.SetInParent()
    request = raw_simple(inputs=[pb_input("INPUT0", "INT32", [1, 16]), second],
                         raw=[ints().tobytes(), ints().tobytes()])
    assert error_of(stub_infer, client, request) == (
        INVALID, "contents field must not be specified when using raw_input_contents for "
                 "'INPUT1' for model 'simple'")


def test_empty_contents_message_without_raw(client):
    first = pb_input("INPUT0", "INT32", [1, 16])
    first.contents.SetInParent()
    request = raw_simple(inputs=[first, pb_input("INPUT1", "INT32", [1, 16],
                                                 int_contents=[1] * 16)], raw=[])
    assert error_of(stub_infer, client, request) == (
        INVALID, "input byte size mismatch for input 'INPUT0' for model 'simple'. "
                 "Expected 64, got 0")


def test_contents_of_wrong_type(client):
    request = raw_simple(inputs=[pb_input("INPUT0", "INT32", [1, 16], fp32_contents=[1.0] * 16),
                                 pb_input("INPUT1", "INT32", [1, 16], int_contents=[1] * 16)],
                         raw=[])
    assert error_of(stub_infer, client, request) == (
        INVALID, "unexpected explicit tensor data for input tensor 'INPUT0' for model 'simple' "
                 "of type 'FP32', expected datatype 'INT32'")


def test_two_contents_fields(client):
    request = raw_simple(inputs=[
        pb_input("INPUT0", "INT32", [1, 16], int_contents=[1] * 16, int64_contents=[1] * 16),
        pb_input("INPUT1", "INT32", [1, 16], int_contents=[1] * 16)], raw=[])
    assert error_of(stub_infer, client, request) == (
        INVALID, "unexpected explicit tensor data for input tensor 'INPUT0' for model 'simple', "
                 "binary data was already supplied.")


# -- BYTES encoding ---------------------------------------------------------------------------------

def bytes_request(raw: bytes, count: int, id: str = ""):
    return pb_request("id_bytes", [pb_input("INPUT0", "BYTES", [1, count])], raw=[raw], id=id)


def test_bytes_too_few_elements(client):
    assert error_of(stub_infer, client, bytes_request(bytes_raw([b"a"]), 2)) == (
        INVALID, "expected 2 string elements for inference input 'INPUT0' for model 'id_bytes', "
                 "got 1")


def test_bytes_too_many_elements(client):
    assert error_of(stub_infer, client, bytes_request(bytes_raw([b"a", b"b", b"c", b"d"]), 2)) == (
        INVALID, "unexpected number of string elements 3 for inference input 'INPUT0' for model "
                 "'id_bytes', expecting 2")


def test_bytes_incomplete_length_indicator(client):
    raw = bytes_raw([b"ab"]) + b"\x01\x00"
    assert error_of(stub_infer, client, bytes_request(raw, 2, id="q")) == (
        INVALID, "[request id: q] incomplete string length indicator for inference input "
                 "'INPUT0' for model 'id_bytes', expecting 4 bytes but only 2 bytes available. "
                 "Please make sure the string length indicator is in one buffer.")


def test_bytes_contents_too_few_elements(client):
    request = pb_request("id_bytes", [pb_input("INPUT0", "BYTES", [1, 2], bytes_contents=[b"a"])])
    assert error_of(stub_infer, client, request) == (
        INVALID, "expected 2 string elements for inference input 'INPUT0' for model 'id_bytes', "
                 "got 1")


def test_bytes_contents_too_many_elements(client):
    request = pb_request("id_bytes", [
        pb_input("INPUT0", "BYTES", [1, 2], bytes_contents=[b"a", b"b", b"c", b"d"])])
    assert error_of(stub_infer, client, request) == (
        INVALID, "unexpected number of string elements 3 for inference input 'INPUT0' for model "
                 "'id_bytes', expecting 2")


def test_bytes_length_past_end(client):
    """A length prefix claiming more bytes than remain is rejected (text not pinned: Triton
    leaves this one to the backend)."""
    code, message = error_of(stub_infer, client, bytes_request(b"\x09\x00\x00\x00abc", 1))
    assert code == INVALID
    assert "'INPUT0'" in message and "'id_bytes'" in message


# -- parameters -------------------------------------------------------------------------------------

RESERVED = ("parameter keys starting with 'triton_' are reserved for Triton usage. Only the "
            "following keys starting with 'triton_' are allowed: "
            "triton_enable_empty_final_response")


def test_reserved_triton_parameter(client):
    request = raw_simple(parameters={"triton_custom": ("string_param", "x")}, id="no-prefix")
    assert error_of(stub_infer, client, request) == (INVALID, RESERVED)


def test_allowed_triton_parameter_wrong_type(client):
    request = raw_simple(parameters={"triton_enable_empty_final_response": ("int64_param", 1)})
    assert error_of(stub_infer, client, request) == (
        INVALID, "invalid value type for 'triton_enable_empty_final_response' parameter, "
                 "expected bool_param.")


@pytest.mark.parametrize("key, kind, value, message", [
    ("sequence_id", "bool_param", True,
     "invalid value type for 'sequence_id' parameter, expected int64_param or string_param."),
    ("sequence_start", "int64_param", 1,
     "invalid value type for 'sequence_start' parameter, expected bool_param."),
    ("sequence_end", "string_param", "yes",
     "invalid value type for 'sequence_end' parameter, expected bool_param."),
    ("priority", "int64_param", -1, "invalid value for 'priority', expected value >= 0."),
    ("priority", "string_param", "high",
     "invalid value type for 'priority' parameter, expected int64_param or uint64_param."),
    ("timeout", "bool_param", False,
     "invalid value type for 'timeout' parameter, expected int64_param."),
])
def test_scheduling_parameter_types(client, key, kind, value, message):
    request = raw_simple(parameters={key: (kind, value)})
    assert error_of(stub_infer, client, request) == (INVALID, message)


# -- classification -------------------------------------------------------------------------------

@pytest.mark.parametrize("model, datatype, array", [
    ("id_fp16", "FP16", np.ones((1, 3), np.float16)),
    ("id_bool", "BOOL", np.ones((1, 3), np.bool_)),
])
def test_classification_unsupported_type(client, model, datatype, array):
    outputs = [grpcclient.InferRequestedOutput("OUTPUT0", class_count=2)]
    assert error_of(client.infer, model, [tensor("INPUT0", array, datatype)], outputs=outputs) == (
        INVALID, f"class result not available for output due to unsupported type '{datatype}'")


# -- the server survives them all --------------------------------------------------------------------

def test_server_still_serves_after_errors(client):
    result = client.infer("simple", [tensor("INPUT0", ints(value=5)), tensor("INPUT1", ints())])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), ints(value=6))
    assert client.is_server_live() and client.is_server_ready()
