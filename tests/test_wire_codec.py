"""The Cython wire codec (ext/wire.pyx) against the protobuf reference codec.

Requests are generated at the wire level by a tiny encoder below, so that
they cover what protobuf accepts but never emits itself: packed and unpacked
repeated scalars (mixed), repeated singular fields (last wins), repeated
message fields (merged), duplicate map keys, non-minimal varints and unknown
fields everywhere. Both decoders must then agree attribute by attribute.
Responses are encoded by both codecs and compared after protobuf parses them.

TGS_FUZZ_EXAMPLES=N raises the example count of the fuzz tests (e.g. for a
run against an AddressSanitizer build).
"""
from __future__ import annotations

import gc
import math
import os
import struct
import sys

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

wire = pytest.importorskip("triton_grpc_server._ext.wire",
                           reason="Cython codec not built (python setup.py build_ext --inplace)")

from triton_grpc_server._proto import grpc_service_pb2 as pb  # noqa: E402
from triton_grpc_server.errors import InvalidArgument  # noqa: E402
from triton_grpc_server.frontends import protobuf_codec as ref  # noqa: E402
from triton_grpc_server._ext.wire import InferResponse, OutputTensor  # noqa: E402

FAST = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
FUZZ = settings(max_examples=int(os.environ.get("TGS_FUZZ_EXAMPLES", "300")), deadline=None, suppress_health_check=list(HealthCheck))

U64 = (1 << 64) - 1


# ---------------------------------------------------------------- wire writer

def varint(v: int, pad: int = 0) -> bytes:
    """Varint of v (taken mod 2**64); pad adds non-minimal continuation bytes."""
    v &= U64
    out = bytearray()
    while True:
        byte = v & 0x7F
        v >>= 7
        if v or pad:
            out.append(byte | 0x80)
            if not v:
                pad -= 1
                while pad > 0:
                    out.append(0x80)
                    pad -= 1
                out.append(0)
                break
        else:
            out.append(byte)
            break
    assert len(out) <= 10 or pad
    return bytes(out)


def tag(field: int, wt: int) -> bytes:
    return varint(field << 3 | wt)


def ld(field: int, body: bytes) -> bytes:
    return tag(field, 2) + varint(len(body)) + body


# ---------------------------------------------------------------- strategies

INT64 = st.integers(-(1 << 63), (1 << 63) - 1)
UINT64 = st.integers(0, U64)
text = st.text(max_size=12)          # UTF-8 encodable text incl. non-ASCII


@st.composite
def unknown_field(draw, first_free: int) -> bytes:
    field = draw(st.integers(first_free, first_free + 40) | st.integers(1000, 536870911))
    kind = draw(st.sampled_from("vfbs"))
    if kind == "v":
        return tag(field, 0) + varint(draw(UINT64))
    if kind == "f":
        return tag(field, 1) + draw(st.binary(min_size=8, max_size=8))
    if kind == "s":
        return tag(field, 5) + draw(st.binary(min_size=4, max_size=4))
    return ld(field, draw(st.binary(max_size=20)))


@st.composite
def parameter_body(draw) -> bytes:
    """An InferParameter with 0..2 choices set (the last one wins) or unknowns."""
    pieces = []
    for _ in range(draw(st.integers(0, 2))):
        kind = draw(st.sampled_from(["bool", "int64", "string", "double", "uint64", "unknown"]))
        if kind == "bool":
            pieces.append(tag(1, 0) + varint(draw(st.sampled_from([0, 1, 2, U64]))))
        elif kind == "int64":
            pieces.append(tag(2, 0) + varint(draw(INT64)))
        elif kind == "string":
            pieces.append(ld(3, draw(text).encode()))
        elif kind == "double":
            pieces.append(tag(4, 1) + struct.pack("<d", draw(st.floats())))
        elif kind == "uint64":
            pieces.append(tag(5, 0) + varint(draw(UINT64)))
        else:
            pieces.append(draw(unknown_field(6)))
    return b"".join(pieces)


@st.composite
def parameter_entry(draw, field: int) -> bytes:
    key = ld(1, draw(st.sampled_from(["", "a", "b", "binary_data", "é"])).encode())
    parts = [key, ld(2, draw(parameter_body()))]
    if draw(st.integers(0, 9)) == 0:
        parts.append(ld(2, draw(parameter_body())))      # value message merged
    if draw(st.integers(0, 9)) == 0:
        parts.pop(0)                                     # no key: ""
    if draw(st.integers(0, 14)) == 0:
        parts.append(draw(unknown_field(3)))             # upb sets such entries aside
    return ld(field, b"".join(draw(st.permutations(parts))))


def _packed_or_not(draw, field: int, encoded: list[bytes], wt: int) -> bytes:
    if not encoded:
        return ld(field, b"") if draw(st.booleans()) else b""
    if draw(st.booleans()):
        return ld(field, b"".join(encoded))
    return b"".join(tag(field, wt) + e for e in encoded)


@st.composite
def contents_body(draw) -> bytes:
    pieces = []
    small = st.lists(st.integers(-(1 << 31), (1 << 31) - 1), max_size=5)
    for field, values, enc, wt in [
        (1, st.lists(st.sampled_from([0, 1, 1, 7, U64]), max_size=5), varint, 0),
        (2, small | st.lists(UINT64, max_size=3), varint, 0),
        (3, st.lists(INT64, max_size=5), varint, 0),
        (4, st.lists(st.integers(0, U64), max_size=5), varint, 0),
        (5, st.lists(UINT64, max_size=5), varint, 0),
        (6, st.lists(st.floats(width=32), max_size=5), lambda x: struct.pack("<f", x), 5),
        (7, st.lists(st.floats(), max_size=5), lambda x: struct.pack("<d", x), 1),
    ]:
        if draw(st.booleans()):
            pieces.append(_packed_or_not(draw, field, [enc(v) for v in draw(values)], wt))
    if draw(st.booleans()):
        pieces.extend(ld(8, b) for b in draw(st.lists(st.binary(max_size=8), max_size=4)))
    if draw(st.booleans()):
        pieces.append(draw(unknown_field(9)))
    return b"".join(draw(st.permutations(pieces)))


@st.composite
def input_body(draw) -> bytes:
    pieces = [ld(1, draw(st.sampled_from(["INPUT0", "x", "é", ""])).encode()),
              ld(2, draw(st.sampled_from(["INT32", "FP32", "BYTES", "BOOL", "FP16"])).encode())]
    shape = draw(st.lists(st.integers(-1, 1 << 40) | INT64, max_size=4))
    pieces.append(_packed_or_not(draw, 3, [varint(d) for d in shape], 0))
    if draw(st.booleans()):      # a second shape run, the other encoding
        pieces.append(_packed_or_not(draw, 3, [varint(d) for d in draw(st.lists(INT64, max_size=2))], 0))
    pieces.extend(draw(st.lists(parameter_entry(4), max_size=3)))
    pieces.extend(ld(5, c) for c in draw(st.lists(contents_body(), max_size=2)))
    if draw(st.booleans()):
        pieces.append(draw(unknown_field(6)))
    if draw(st.integers(0, 5)) == 0:
        pieces.append(ld(1, b"renamed"))                 # repeated singular: last wins
    return b"".join(draw(st.permutations(pieces)))


@st.composite
def output_body(draw) -> bytes:
    pieces = [ld(1, draw(text).encode())]
    pieces.extend(draw(st.lists(parameter_entry(2), max_size=2)))
    if draw(st.booleans()):
        pieces.append(draw(unknown_field(3)))
    return b"".join(draw(st.permutations(pieces)))


@st.composite
def requests(draw) -> bytes:
    pieces = [ld(1, draw(text).encode()), ld(2, draw(st.sampled_from(["", "1", "42"])).encode())]
    if draw(st.booleans()):
        pieces.append(ld(3, draw(text).encode()))
    pieces.extend(draw(st.lists(parameter_entry(4), max_size=4)))
    pieces.extend(ld(5, b) for b in draw(st.lists(input_body(), max_size=3)))
    pieces.extend(ld(6, b) for b in draw(st.lists(output_body(), max_size=2)))
    pieces.extend(ld(7, b) for b in draw(st.lists(st.binary(max_size=40), max_size=3)))
    pieces.extend(draw(st.lists(unknown_field(8), max_size=2)))
    if draw(st.integers(0, 9)) == 0:                     # non-minimal tag varint
        pieces.append(varint(1 << 3 | 2, pad=2) + varint(3) + b"abc")
    return b"".join(draw(st.permutations(pieces)))


# ---------------------------------------------------------------- comparison

def norm(value):
    """Plain comparable data: arrays -> lists, buffers -> bytes, floats by bits."""
    if isinstance(value, np.ndarray):
        return norm(value.tolist())
    if isinstance(value, (memoryview, bytearray)):
        return bytes(value)
    if isinstance(value, float):
        return ("float", struct.pack("<d", value)) if not math.isnan(value) else ("nan",)
    if isinstance(value, dict):
        return {k: norm(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [norm(v) for v in value]
    if isinstance(value, bool):
        return ("bool", value)
    return value


def request_view(req) -> dict:
    return {
        "model_name": req.model_name, "model_version": req.model_version, "id": req.id,
        "parameters": norm(req.parameters),
        "inputs": [{"name": i.name, "datatype": i.datatype, "shape": norm(i.shape),
                    "parameters": norm(i.parameters), "contents": norm(i.contents)}
                   for i in req.inputs],
        "outputs": [{"name": o.name, "parameters": norm(o.parameters)} for o in req.outputs],
        "raw_input_contents": norm(req.raw_input_contents),
    }


def reference_or_error(data: bytes):
    try:
        return request_view(ref.decode_request(data))
    except InvalidArgument:
        return None


def check_agrees(data: bytes) -> None:
    """Cython decode succeeds => the reference agrees; reference fails => Cython fails.

    (The Cython codec is allowed to be stricter: it rejects known fields with
    the wrong wire type and groups, which protobuf keeps as unknown fields.)
    """
    expected = reference_or_error(data)
    try:
        got = wire.decode_request(data)
    except InvalidArgument:
        return
    assert expected is not None, "Cython accepted bytes that protobuf rejects"
    assert request_view(got) == expected


# ---------------------------------------------------------------- decoding

@FAST
@given(requests())
def test_decode_matches_reference(data):
    expected = request_view(ref.decode_request(data))   # generated bytes are valid
    got = wire.decode_request(data)
    assert request_view(got) == expected
    for raw in got.raw_input_contents:
        assert isinstance(raw, memoryview) and raw.readonly and raw.obj is data


@settings(max_examples=20, deadline=None)
@given(requests())
def test_decode_accepts_any_buffer(data):
    expected = request_view(ref.decode_request(data))
    for wrapped in (bytearray(data), memoryview(data), np.frombuffer(data, np.uint8)):
        assert request_view(wire.decode_request(wrapped)) == expected


def test_decode_tritonclient_request():
    import tritonclient.grpc as grpcclient
    from tritonclient.grpc._utils import _get_inference_request

    inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"),
              grpcclient.InferInput("INPUT1", [1, 3], "BYTES")]
    inputs[0].set_data_from_numpy(np.arange(16, dtype=np.int32).reshape(1, 16))
    inputs[1].set_data_from_numpy(np.array([[b"a", b"\x00\xff", b""]], dtype=object))
    outputs = [grpcclient.InferRequestedOutput("OUTPUT0"),
               grpcclient.InferRequestedOutput("OUTPUT1", class_count=3)]
    msg = _get_inference_request("simple", inputs, "1", "req-1", outputs, 7, True, False,
                                 3, 1000, {"custom": "x", "n": 5, "f": 0.5})
    data = msg.SerializeToString()
    got = wire.decode_request(data)
    assert request_view(got) == request_view(ref.decode_request(data))
    assert got.model_name == "simple" and got.parameters["sequence_id"] == 7
    assert np.frombuffer(got.raw_input_contents[0], np.int32).tolist() == list(range(16))


def test_request_is_constructible_with_keywords_and_cancels_once():
    sender = object()
    request = wire.InferRequest(model_name="m", model_version="2", id="r", parameters={"a": 1},
                                inputs=[wire.InferInput("x", "FP32", (1, 2))],
                                outputs=[wire.RequestedOutput("y")], raw_input_contents=[b"\0" * 8],
                                sender=sender)
    assert (request.model_name, request.model_version, request.id) == ("m", "2", "r")
    assert request.inputs[0].shape == [1, 2] and request.outputs[0].name == "y"
    assert request.sender is sender and request.cancelled is False
    calls = []
    request.add_cancel_callback(lambda: calls.append("first"))
    request.add_cancel_callback(lambda: calls.append("second"))
    request.cancel()
    request.cancel()                       # once only
    assert request.cancelled and calls == ["first", "second"]
    request.add_cancel_callback(lambda: calls.append("late"))  # runs at once
    assert calls == ["first", "second", "late"]
    cleared = wire.InferRequest()
    cleared.add_cancel_callback(lambda: calls.append("never"))
    cleared.clear_cancel_callbacks()
    cleared.cancel()
    assert calls[-1] == "late"
    with pytest.raises(AttributeError):
        request.cancelled = False          # only cancel() sets it


@pytest.mark.parametrize("error", ["", "in-band failure ü"])
def test_stream_response_matches_protobuf(error):
    response = InferResponse("m", "1", "id-7", [OutputTensor("OUT", "INT32", [2],
                                                             np.array([1, 2], np.int32))],
                             {"triton_final_response": True})
    data = wire.encode_stream_response(response, error)
    assert data == ref.encode_stream_response(response, error)
    msg = pb.ModelStreamInferResponse.FromString(data)
    assert msg.error_message == error and msg.infer_response.id == "id-7"
    assert msg.infer_response.parameters["triton_final_response"].bool_param is True
    assert np.frombuffer(msg.infer_response.raw_output_contents[0], np.int32).tolist() == [1, 2]
    only_error = wire.encode_stream_response(None, error)
    assert only_error == ref.encode_stream_response(None, error)


def test_parameter_map_semantics():
    def entry(key: bytes, value: bytes) -> bytes:
        return ld(4, ld(1, key) + ld(2, value))

    data = (entry(b"a", tag(2, 0) + varint(-5)) + entry(b"a", tag(5, 0) + varint(U64))  # last wins
            + entry(b"b", tag(1, 0) + varint(1)) + entry(b"b", b"")                     # dropped
            + entry(b"c", ld(3, "ü".encode()) + tag(4, 1) + struct.pack("<d", 0.5))    # oneof
            + ld(4, ld(1, b"d") + ld(2, tag(1, 0) + varint(0)) + tag(3, 0) + varint(1))  # set aside
            + entry(b"e", tag(1, 0) + varint(0)))
    got = wire.decode_request(data).parameters
    assert got == {"a": U64, "c": 0.5, "e": False}
    assert got == ref.decode_request(data).parameters
    assert type(got["e"]) is bool


def test_fp32_contents_are_a_zero_copy_view():
    msg = pb.ModelInferRequest()
    msg.inputs.add(name="x", datatype="FP32", shape=[3]).contents.fp32_contents.extend([1, 2, 3])
    data = msg.SerializeToString()
    values = wire.decode_request(data).inputs[0].contents["fp32_contents"]
    assert values.dtype == np.dtype("<f4") and values.base is data and values.tolist() == [1, 2, 3]


def test_empty_and_absent_contents():
    msg = pb.ModelInferRequest()
    msg.inputs.add(name="a")
    msg.inputs.add(name="b").contents.SetInParent()
    got = wire.decode_request(msg.SerializeToString())
    assert got.inputs[0].contents is None and got.inputs[1].contents == {}
    assert wire.decode_request(b"").inputs == []


def test_raw_views_keep_the_request_alive():
    payload = bytes(range(256)) * 1000
    msg = pb.ModelInferRequest(raw_input_contents=[payload, b"", b"tail"])
    msg.inputs.add(name="x").contents.fp64_contents.extend([1.5, -2.0])
    data = msg.SerializeToString()
    refs = sys.getrefcount(data)
    req = wire.decode_request(data)
    assert sys.getrefcount(data) > refs                 # the views hold the bytes
    del data, msg
    gc.collect()
    _ = [bytes(1 << 16) for _ in range(64)]             # churn the allocator
    assert bytes(req.raw_input_contents[0]) == payload
    assert [bytes(v) for v in req.raw_input_contents[1:]] == [b"", b"tail"]
    assert req.inputs[0].contents["fp64_contents"].tolist() == [1.5, -2.0]


@pytest.mark.parametrize("data, message", [
    (ld(1, b"\xc3\x28"), "invalid UTF-8"),
    (ld(4, ld(1, b"k") + ld(2, ld(3, b"\xff"))), "invalid UTF-8"),
    (ld(5, ld(1, b"\xed\xa0\x80")), "invalid UTF-8"),             # surrogate
    (b"\x0a\x05abc", "past end"),
    (b"\x0a", "truncated varint"),
    (b"\x40" + b"\xff" * 10 + b"\x01", "longer than 10 bytes"),
    (b"\x00\x01", "field number 0"),
    (tag(1, 0) + varint(1), "wire type 0 for field 'model_name'"),
    (ld(5, tag(5, 0) + varint(1)), "wire type 0 for field 'inputs.contents'"),
    (tag(9, 3) + tag(9, 4), "group"),
    (tag(9, 6), "invalid wire type 6"),
    (ld(5, ld(5, ld(6, b"\x00" * 5))), "not a multiple of 4"),
    (ld(5, ld(5, ld(2, b"\x80"))), "truncated varint in packed field"),
    (ld(5, ld(3, b"\x01\x80")), "truncated varint"),
    (varint(1 << 40 | 2), "wider than 32 bits"),
    # field 1, LEN, padded to 6 bytes: upb reads tags as at most 5-byte varints
    (b"\x8a\x80\x80\x80\x80\x00" + b"\x00", "tag longer than 5 bytes"),
    (tag(7, 2) + varint(1 << 62), "past end"),
    (tag(7, 2) + varint(U64), "past end"),
])
def test_malformed_requests_raise_invalid_argument(data, message):
    with pytest.raises(InvalidArgument, match=message) as info:
        wire.decode_request(data)
    assert info.value.status.name == "INVALID_ARG"
    assert "malformed ModelInferRequest" in str(info.value)


# ---------------------------------------------------------------- robustness

@FAST
@given(requests(), st.data())
def test_truncated_prefixes(data, draw):
    assume(len(data) > 0)
    cuts = range(len(data)) if len(data) <= 64 else \
        draw.draw(st.lists(st.integers(0, len(data) - 1), min_size=16, max_size=32))
    for cut in cuts:
        check_agrees(data[:cut])


@FUZZ
@given(requests(), st.lists(st.integers(0, 1 << 30), min_size=1, max_size=4))
def test_bit_flips(data, flips):
    assume(len(data) > 0)
    mutated = bytearray(data)
    for flip in flips:
        mutated[(flip >> 3) % len(mutated)] ^= 1 << (flip & 7)
    check_agrees(bytes(mutated))


@FAST
@given(requests(), st.data())
def test_oversized_lengths(data, draw):
    # Replace one length prefix inside a valid message by a larger one.
    body = draw.draw(st.binary(max_size=8))
    size = draw.draw(st.sampled_from([len(body) + 1, 1 << 31, 1 << 32, 1 << 62, U64]))
    field = draw.draw(st.sampled_from([1, 4, 5, 6, 7, 99]))
    at = draw.draw(st.integers(0, len(data)))
    check_agrees(data[:at] + tag(field, 2) + varint(size) + body)
    check_agrees(data + tag(field, 2) + varint(size) + body)
    check_agrees(ld(5, ld(5, tag(8, 2) + varint(size) + body)))


@FUZZ
@given(st.binary(max_size=200))
def test_random_garbage(data):
    check_agrees(data)


# ---------------------------------------------------------------- encoding

DTYPES = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
          "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
          "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
          "BF16": np.uint16}

param_values = st.one_of(
    st.booleans(), INT64, st.integers(1 << 63, U64), st.floats(allow_nan=False),
    text, st.sampled_from([None, b"raw", 1j]),   # "other" values become str(value)
)
params = st.dictionaries(st.sampled_from(["", "a", "binary_data", "é", "k" * 200]),
                         param_values, max_size=4)


def serialize_bytes(items) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


@st.composite
def output_tensors(draw) -> OutputTensor:
    name = draw(text)
    shape = draw(st.lists(st.integers(0, 4), max_size=3))
    count = int(np.prod(shape)) if shape else 1
    datatype = draw(st.sampled_from([*DTYPES, "BYTES"]))
    if datatype == "BYTES":
        items = draw(st.lists(st.binary(max_size=6), min_size=count, max_size=count))
        payload = serialize_bytes(items)               # NULs and non-UTF-8 included
        data = draw(st.sampled_from([payload, memoryview(payload), bytearray(payload)]))
    else:
        raw = draw(st.binary(min_size=count * 8, max_size=count * 8))
        array = np.frombuffer(raw, np.uint8)[: count * np.dtype(DTYPES[datatype]).itemsize]
        array = array.view(DTYPES[datatype]).reshape(shape)
        layout = draw(st.sampled_from(["c", "fortran", "strided", "memoryview"]))
        if layout == "fortran" and array.ndim >= 2:
            array = np.asfortranarray(array)
        elif layout == "strided" and array.size:
            array = np.repeat(array, 2, axis=-1)[..., ::2]   # same values, non-contiguous
        elif layout == "memoryview":
            array = memoryview(array)
        data = array
    return OutputTensor(name, datatype, shape, data, draw(params))


def contiguous_copy(response: InferResponse) -> InferResponse:
    """What the reference can encode: C-contiguous bytes for every output."""
    outputs = [OutputTensor(o.name, o.datatype, o.shape,
                            np.ascontiguousarray(o.data).tobytes() if not isinstance(o.data, bytes)
                            else o.data, o.parameters)
               for o in response.outputs]
    return InferResponse(response.model_name, response.model_version, response.id,
                         outputs, response.parameters)


@FAST
@given(text, st.sampled_from(["", "1"]), text, st.lists(output_tensors(), max_size=4), params)
def test_encode_matches_reference(model, version, request_id, outputs, parameters):
    response = InferResponse(model, version, request_id, outputs, parameters)
    got = pb.ModelInferResponse.FromString(wire.encode_response(response))
    expected = ref.response_to_message(contiguous_copy(response))
    assert got == expected
    assert len(got.raw_output_contents) == len(outputs)


def test_encode_large_output_and_zero_size():
    big = np.random.default_rng(0).random((1024, 1024), dtype=np.float32)    # 4 MiB
    response = InferResponse("m", "1", "", [
        OutputTensor("big", "FP32", [1024, 1024], big),
        OutputTensor("bigT", "FP32", [1024, 1024], big.T),
        OutputTensor("empty", "FP32", [0, 3], np.zeros((0, 3), np.float32)),
        OutputTensor("scalar", "INT64", [], np.int64(-3)),
    ])
    got = pb.ModelInferResponse.FromString(wire.encode_response(response))
    assert got.raw_output_contents[0] == big.tobytes()
    assert got.raw_output_contents[1] == np.ascontiguousarray(big.T).tobytes()
    assert got.raw_output_contents[2] == b""
    assert got.raw_output_contents[3] == struct.pack("<q", -3)
    assert list(got.outputs[2].shape) == [0, 3]


def test_encode_round_trips_through_decode():
    # A response re-read as a request: fields 1-6 line up except raw (6 vs 7).
    response = InferResponse("m", "2", "id", [OutputTensor("o", "INT32", [2], np.int32([1, -1]))],
                             {"u": 1 << 63, "i": -1, "s": "ü", "d": 0.25, "b": False})
    msg = pb.ModelInferResponse.FromString(wire.encode_response(response))
    assert ref.parameters_to_dict(msg.parameters) == response.parameters


def test_encode_rejects_bad_values():
    with pytest.raises(OverflowError):
        wire.encode_response(InferResponse("m", "1", "", [], {"x": 1 << 64}))
    with pytest.raises(TypeError):
        wire.encode_response(InferResponse("m", "1", "", [], {1: 2}))
    with pytest.raises(TypeError):
        wire.encode_response(InferResponse("m", "1", "", [OutputTensor("o", "FP32", [1], [1.0])]))
