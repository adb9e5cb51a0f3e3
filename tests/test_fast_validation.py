"""The Cython validator for raw fixed-size inputs against the Python one (the reference).

For every request here, valid or not, ``validate_raw_inputs`` either declines
(None: the Python validator takes the request and alone words its errors) or
returns exactly what the Python validator returns; it never accepts a request
the Python validator refuses. In-process, on real ONNX models loaded by the
repository; one end-to-end check through a real server shows the path in use.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from onnx import TensorProto

from models import (config_text, identity_model, identity_onnx, optional_input_model, pb_input,
                    pb_request, simple_model, write_text)
from triton_grpc_server._ext.wire import decode_request, validate_raw_inputs
from triton_grpc_server.errors import TritonError
from triton_grpc_server.repository import ModelRepository
from triton_grpc_server.request_inputs import RequestValidator

INT32_16 = np.arange(16, dtype=np.int32).tobytes()


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    simple_model(root, "simple")                          # INT32 [-1, 16] x2, max_batch 8
    simple_model(root, "nobatch", max_batch_size=0)       # INT32 [16] x2
    identity_model(root, "ident", "FP32", dims=(-1, 3))   # FP32 [-1, -1, 3]
    identity_model(root, "strings", "BYTES")              # BYTES: never the fast path
    optional_input_model(root)                            # INPUT1 optional
    # config [4] both ways, the model [2, 2]: a reshape on each side
    identity_onnx(root / "reshaped" / "1" / "model.onnx", TensorProto.FLOAT, ["batch", 2, 2])
    write_text(root / "reshaped" / "config.pbtxt", config_text(
        "reshaped", 8, [("INPUT0", "TYPE_FP32", [4], "reshape: { shape: [ 2, 2 ] }")],
        [("OUTPUT0", "TYPE_FP32", [4], "reshape: { shape: [ 2, 2 ] }")]))
    repo = ModelRepository(root, auto_complete=True)
    repo.load_all()
    return repo


def _reference(request, model):
    """What the Python validator makes of it: its result, or the error it raises."""
    try:
        validator = RequestValidator(request, model)
        names = validator.requested_outputs()
        arrays, batch = validator.arrays()
        return arrays, batch, names
    except TritonError as exc:
        return exc


def _check(repository, message):
    request = decode_request(message.SerializeToString())
    model = repository.get(request.model_name, "")
    fast = validate_raw_inputs(request, model.raw_input_specs)
    reference = _reference(request, model)
    if fast is None:
        return None, reference
    assert not isinstance(reference, Exception), f"fast path accepted what Python refuses: {reference}"
    arrays, batch, names = fast
    ref_arrays, ref_batch, ref_names = reference
    assert (batch, names) == (ref_batch, ref_names)
    assert list(arrays) == list(ref_arrays)
    for name, array in arrays.items():
        expected = ref_arrays[name]
        assert array.dtype == expected.dtype and array.shape == expected.shape
        assert np.array_equal(array, expected)
        assert not array.flags.writeable  # a view of the request, as the Python path gives
    return fast, reference


def _simple(model="simple", shapes=([1, 16], [1, 16]), raws=(INT32_16, INT32_16),
            types=("INT32", "INT32"), names=("INPUT0", "INPUT1"), outputs=()):
    inputs = [pb_input(n, t, s) for n, t, s in zip(names, types, shapes)]
    return pb_request(model, inputs, raw=list(raws), outputs=outputs)


def test_valid_requests_take_the_fast_path_with_the_same_result(repository):
    for message in [
        _simple(),
        _simple(outputs=["OUTPUT1"]),
        _simple(outputs=["OUTPUT1", "OUTPUT0"]),
        _simple(shapes=([3, 16], [3, 16]), raws=(INT32_16 * 3, INT32_16 * 3)),
        _simple("nobatch", shapes=([16], [16])),
        pb_request("ident", [pb_input("INPUT0", "FP32", [2, 5, 3])],
                   raw=[np.ones(30, np.float32).tobytes()]),
    ]:
        fast, _ = _check(repository, message)
        assert fast is not None, message
    # An empty tensor: either path, the same result (checked in _check).
    _check(repository, pb_request("ident", [pb_input("INPUT0", "FP32", [1, 0, 3])], raw=[b""]))


@pytest.mark.parametrize("case", [
    "dtype", "unknown_input", "duplicate_input", "too_few", "batch_too_big", "batch_zero",
    "batch_mismatch", "shape_rank", "shape_dim", "negative_dim", "byte_size", "huge_dims",
    "unknown_output", "duplicate_output", "missing_raw", "extra_raw", "typed_contents",
])
def test_bad_or_unusual_requests_are_left_to_the_python_validator(repository, case):
    message = {
        "dtype": _simple(types=("INT32", "FP32")),
        "unknown_input": _simple(names=("INPUT0", "INPUTX")),
        "duplicate_input": _simple(names=("INPUT0", "INPUT0")),
        "too_few": _simple(shapes=([1, 16],), raws=(INT32_16,), names=("INPUT0",)),
        "batch_too_big": _simple(shapes=([9, 16], [9, 16]), raws=(INT32_16 * 9,) * 2),
        "batch_zero": _simple(shapes=([0, 16], [0, 16]), raws=(b"", b"")),
        "batch_mismatch": _simple(shapes=([1, 16], [2, 16]), raws=(INT32_16, INT32_16 * 2)),
        "shape_rank": _simple(shapes=([16], [16])),
        "shape_dim": _simple(shapes=([1, 15], [1, 16]), raws=(INT32_16[:60], INT32_16)),
        "negative_dim": _simple(shapes=([1, -16], [1, 16])),
        "byte_size": _simple(raws=(INT32_16[:-4], INT32_16)),
        "huge_dims": pb_request("ident", [pb_input("INPUT0", "FP32", [1, 2**40, 2**40, 3])],
                                raw=[b"\0" * 12]),
        "unknown_output": _simple(outputs=["OUTPUT9"]),
        "duplicate_output": _simple(outputs=["OUTPUT0", "OUTPUT0"]),
        "missing_raw": _simple(raws=(INT32_16,)),
        "extra_raw": _simple(raws=(INT32_16,) * 3),
        "typed_contents": pb_request("simple", [
            pb_input("INPUT0", "INT32", [1, 16], int_contents=range(16)),
            pb_input("INPUT1", "INT32", [1, 16], int_contents=range(16))]),
    }[case]
    fast, _ = _check(repository, message)
    assert fast is None


def test_models_the_fast_path_does_not_serve(repository):
    strings = pb_request("strings", [pb_input("INPUT0", "BYTES", [1, 1])],
                         raw=[b"\x01\0\0\0a"])
    optional = pb_request("optional_in", [pb_input("INPUT0", "INT32", [1, 4])],
                          raw=[np.zeros(4, np.int32).tobytes()])
    reshaped = pb_request("reshaped", [pb_input("INPUT0", "FP32", [1, 4])],
                          raw=[np.zeros(4, np.float32).tobytes()])
    for message in (strings, optional, reshaped):
        fast, reference = _check(repository, message)
        assert fast is None and not isinstance(reference, Exception), message


def test_shapes_around_the_byte_count_never_pass_unless_exact(repository):
    # Every small shape against a fixed payload: the fast path accepts exactly the
    # shapes whose byte count matches, as the Python validator does (checked in _check).
    payload = np.zeros(12, np.float32).tobytes()
    accepted = 0
    for batch, dim, last in itertools.product([0, 1, 2, 4, 9], [0, 1, 2, 4, 12], [1, 3]):
        message = pb_request("ident", [pb_input("INPUT0", "FP32", [batch, dim, last])],
                             raw=[payload])
        fast, _ = _check(repository, message)
        accepted += fast is not None
        assert (fast is not None) == (batch in (1, 2, 4) and batch * dim * last == 12 and last == 3)
    assert accepted == 3


def test_server_answers_through_the_fast_path(tmp_path):
    # End to end: correct outputs from a real server for the request shape the
    # fast path takes, and the Python path's exact text for a shape it declines.
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from models import start

    simple_model(tmp_path, "simple")
    server = start(tmp_path)
    try:
        client = grpcclient.InferenceServerClient(server.url)
        a = np.arange(16, dtype=np.int32).reshape(1, 16)
        inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"),
                  grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_data_from_numpy(a * 2)
        result = client.infer("simple", inputs)
        assert np.array_equal(result.as_numpy("OUTPUT0"), a * 3)
        assert np.array_equal(result.as_numpy("OUTPUT1"), -a)
        bad = [grpcclient.InferInput("INPUT0", [1, 15], "INT32"),
               grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
        bad[0].set_data_from_numpy(a[:, :15].copy())
        bad[1].set_data_from_numpy(a)
        with pytest.raises(InferenceServerException) as info:
            client.infer("simple", bad)
        assert "unexpected shape for input 'INPUT0' for model 'simple'" in info.value.message()
    finally:
        server.stop()
