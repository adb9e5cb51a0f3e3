"""Write the seed corpora (tests/fuzz/seeds/<harness>/) from the test suite's own builders.

Requests come from ``tests/models.py``'s ``pb_request``/``pb_input`` and
tritonclient's HTTP request builder, configs from the configs the tests write,
paths from the hardening tests' cases. Rerun after changing those builders:
``python tests/fuzz/make_seeds.py``.
"""
from __future__ import annotations

import hashlib
import shutil
import struct

import _harness
import numpy as np

from models import bytes_raw, pb_input, pb_request


def infer_requests() -> list[bytes]:
    f32 = np.arange(8, dtype=np.float32)
    requests = [
        pb_request("add", [pb_input("INPUT0", "FP32", [2, 4])], raw=[f32.tobytes()],
                   outputs=["OUTPUT0"], id="raw"),
        pb_request("add", [pb_input("INPUT0", "FP32", [1, 4], fp32_contents=[1, 2, 3, 4])], id="typed"),
        pb_request("strings", [pb_input("INPUT0", "BYTES", [2, 1])], raw=[bytes_raw([b"a", b"bc"])]),
        pb_request("strings", [pb_input("INPUT0", "BYTES", [1, 1], bytes_contents=[b"xyz"])]),
        pb_request("seq", [pb_input("INPUT", "INT32", [1], int_contents=[7])],
                   parameters={"sequence_id": ("uint64_param", 2**63), "sequence_start": ("bool_param", True),
                               "priority": ("int64_param", -1), "timeout": ("int64_param", 100),
                               "label": ("string_param", "é"), "scale": ("double_param", 0.5)}),
        pb_request("all", [pb_input("B", "BOOL", [1], bool_contents=[True]),
                           pb_input("U", "UINT32", [1], uint_contents=[5]),
                           pb_input("U8", "UINT64", [1], uint64_contents=[2**64 - 1]),
                           pb_input("I8", "INT64", [1], int64_contents=[-2**63]),
                           pb_input("D", "FP64", [1], fp64_contents=[1e308])], version="3"),
        pb_request("shm", [pb_input("INPUT0", "FP32", [1, 4])], outputs=["OUTPUT0"]),
    ]
    shm = requests[-1]
    shm.inputs[0].parameters["shared_memory_region"].string_param = "region"
    shm.inputs[0].parameters["shared_memory_byte_size"].int64_param = 16
    shm.outputs[0].parameters["classification"].int64_param = 2
    return [r.SerializeToString() for r in requests]


def http_bodies() -> list[bytes]:
    import tritonclient.http as httpclient
    from fuzz_http_body import frame

    bodies = []
    for binary in (False, True):
        a = httpclient.InferInput("INPUT0", [1, 4], "FP32")
        a.set_data_from_numpy(np.arange(4, dtype=np.float32).reshape(1, 4), binary_data=binary)
        s = httpclient.InferInput("S", [2], "BYTES")
        s.set_data_from_numpy(np.array([b"a", b"bc"], dtype=object), binary_data=binary)
        outputs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary, class_count=0)]
        body, json_size = httpclient.InferenceServerClient.generate_request_body(
            [a, s], outputs=outputs, request_id="7", sequence_id=3, sequence_start=True,
            priority=1, timeout=10, parameters={"custom": "v"})
        bodies.append(frame(body, json_size or 0))
    bodies.append(frame(b'{"inputs":[{"name":"X","shape":[2,2],"datatype":"INT32",'
                        b'"data":[[1,2],[3,4]]}],"parameters":{"binary_data_output":true}}'))
    return bodies


def configs() -> list[bytes]:
    from scheduling_models import IO, ONE_THREAD

    return [c.encode() for c in (
        "max_batch_size: 8\n",
        "",
        'name: "add"\nbackend: "onnxruntime"\n' + ONE_THREAD + IO["add"] + "max_batch_size: 8\n"
        "dynamic_batching { preferred_batch_size: [ 4 ] max_queue_delay_microseconds: 100 "
        "default_queue_policy { timeout_action: REJECT default_timeout_microseconds: 300000 } }\n"
        'instance_group [ { kind: KIND_CPU count: 2 } ]\n'
        'version_policy: { specific: { versions: [ 1 ] } }\n',
        'platform: "onnxruntime_onnx"\nmax_batch_size: 0\n'
        'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1, 4 ] } ]\n'
        'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1, 4 ] label_filename: "labels.txt" } ]\n',
        'default_model_filename: "../outside.onnx"\n',
        'sequence_batching { max_sequence_idle_microseconds: 1000 state [ { input_name: "S" '
        'output_name: "S_OUT" data_type: TYPE_INT32 dims: [ 1 ] } ] }\nmax_batch_size: 8\n',
        'model_warmup [ { name: "w" batch_size: 1 inputs { key: "INPUT0" value { data_type: TYPE_FP32 '
        'dims: [ 4 ] input_data_file: "raw" } } } ]\nmax_batch_size: 8\n',
    )]


def paths() -> list[bytes]:
    return [p.encode() for p in (
        "1/model.onnx", "config.pbtxt", "../escape", "1/../../escape", "/etc/passwd", "a//b/./c",
        "x" * 300, "dir/" + "y" * 256, "nul\0byte", ".", "1/", "é/ü.onnx")]


def stream_messages() -> list[bytes]:
    from fuzz_stream import frame

    good = infer_requests()[:2]
    return [frame(good), frame([good[0], b"\xff\xff", good[1]]), frame([b""])]


def write(name: str, items) -> None:
    folder = _harness.SEEDS / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for item in items:
        (folder / hashlib.sha1(item).hexdigest()[:16]).write_bytes(item)


def main() -> None:
    requests = infer_requests()
    write("wire_decode", requests)
    write("wire_encode", [struct.pack("<Q", i) * 8 + r[:64] for i, r in enumerate(requests)])
    write("http_body", http_bodies())
    write("config", configs())
    write("override_paths", paths())
    write("stream", stream_messages())


if __name__ == "__main__":
    main()
