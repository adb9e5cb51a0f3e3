"""System and CUDA shared memory through tritonclient against real servers.

Regions are made the way Triton's clients make them
(``tritonclient.utils.shared_memory``, POSIX shm under /dev/shm); the server
reads inputs from and writes outputs into them. Texts and codes are Triton's
(``src/shared_memory_manager.cc``, ``src/grpc/infer_handler.cc``). The
deferred unregister is checked on the manager itself with real mappings.
"""
from __future__ import annotations

import base64
import os
import subprocess
import sys
import textwrap
import uuid

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

import models
from models import error_of
from models import client  # noqa: F401  (the module-scoped client fixture)

PAGE = os.sysconf("SC_PAGE_SIZE")


@pytest.fixture(scope="module", params=sorted(models.INFER_FRONTENDS))
def server(request, tmp_path_factory):
    repo = tmp_path_factory.mktemp("shm") / "models"
    repo.mkdir()
    models.simple_model(repo, "simple")
    models.identity_model(repo, "id_fp32", "FP32", max_batch_size=0, dims=[-1])
    models.identity_model(repo, "id_bytes", "BYTES", max_batch_size=0, dims=[-1])
    models.identity_model(repo, "cls_fp32", "FP32", max_batch_size=0, dims=[4])
    models.simple_model(repo, "simple_static", max_batch_size=0)  # fixed shapes: io_binding
    yield from models.serve(repo, "--allow-client-shm", "true", "--allow-metrics", "false",
                            *models.INFER_FRONTENDS[request.param])


@pytest.fixture
def regions(client):
    """``make(nbytes) -> (name, key, handle)``: POSIX regions destroyed (and unregistered) after."""
    made = []

    def make(nbytes: int):
        name = f"r{uuid.uuid4().hex[:10]}"
        handle = shm.create_shared_memory_region(name, "/" + name, nbytes)
        made.append((name, handle))
        return name, "/" + name, handle

    yield make
    client.unregister_system_shared_memory()
    for _, handle in made:
        shm.destroy_shared_memory_region(handle)


def simple_inputs(a, b):
    inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"),
              grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    return inputs


def shm_simple(client, regions, offset=0):
    """Register in0, in1, out0, out1 regions (64 bytes each, at ``offset``) holding a and b."""
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 3, dtype=np.int32)
    names, handles = [], []
    for data in (a, b, None, None):
        name, key, handle = regions(offset + 64)
        client.register_system_shared_memory(name, key, 64, offset=offset)
        if data is not None:
            shm.set_shared_memory_region(handle, [data], offset=offset)
        names.append(name)
        handles.append(handle)
    return a, b, names, handles


def shm_tensors(names, in_size=64, out_size=64, out_offset=0):
    inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"),
              grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_shared_memory(names[0], in_size)
    inputs[1].set_shared_memory(names[1], in_size)
    outputs = [grpcclient.InferRequestedOutput("OUTPUT0"),
               grpcclient.InferRequestedOutput("OUTPUT1")]
    outputs[0].set_shared_memory(names[2], out_size, offset=out_offset)
    outputs[1].set_shared_memory(names[3], out_size)
    return inputs, outputs


# -- registration ------------------------------------------------------------------------------

def test_register_status_unregister(client, regions):
    name, key, _ = regions(PAGE + 64)
    client.register_system_shared_memory(name, key, 64, offset=PAGE)
    status = client.get_system_shared_memory_status(name).regions
    assert list(status) == [name]
    assert (status[name].key, status[name].offset, status[name].byte_size) == (key, PAGE, 64)
    code, message = error_of(client.register_system_shared_memory, name, key, 64)
    assert (code, message) == ("ALREADY_EXISTS", f"shared memory region '{name}' already in manager")
    client.unregister_system_shared_memory(name)
    assert len(client.get_system_shared_memory_status().regions) == 0
    code, message = error_of(client.get_system_shared_memory_status, name)
    assert (code, message) == ("NOT_FOUND", f"Unable to find system shared memory region: '{name}'")
    client.unregister_system_shared_memory("never-registered")  # no error, as Triton


def test_unregister_all_and_cuda_namespace(client, regions):
    for _ in range(3):
        name, key, _ = regions(64)
        client.register_system_shared_memory(name, key, 64)
    assert len(client.get_system_shared_memory_status().regions) == 3
    # CUDA status and unregister-all do not see or touch system regions
    assert len(client.get_cuda_shared_memory_status().regions) == 0
    client.unregister_cuda_shared_memory()
    assert len(client.get_system_shared_memory_status().regions) == 3
    code, message = error_of(client.get_cuda_shared_memory_status, name)
    assert (code, message) == ("NOT_FOUND", f"The region named '{name}' is registered as system "
                                            "shared memory, not CUDA shared memory")
    client.unregister_system_shared_memory()
    assert len(client.get_system_shared_memory_status().regions) == 0


@pytest.mark.parametrize("size,offset", [(65, 0), (64, 1), (1, 64), (0, 65)])
def test_register_out_of_bounds(client, regions, size, offset):
    name, key, _ = regions(64)
    code, message = error_of(client.register_system_shared_memory, name, key, size, offset=offset)
    assert code == "INVALID_ARGUMENT"
    assert message == f"failed to register shared memory region '{name}': invalid args"


def test_register_unaligned_offset_or_zero_size_fails_like_mmap(client, regions):
    name, key, _ = regions(2 * PAGE)
    for size, offset in ((8, 8), (0, 0)):
        code, message = error_of(client.register_system_shared_memory, name, key, size,
                                 offset=offset)
        assert code == "INVALID_ARGUMENT"
        assert message.startswith(f"failed to register shared memory region '{name}': "
                                  "unable to process address space")
    assert len(client.get_system_shared_memory_status().regions) == 0


def test_register_missing_reserved_and_invalid_keys(client):
    code, message = error_of(client.register_system_shared_memory, "x", "/tgs_no_such_key", 8)
    assert (code, message) == ("INTERNAL", "Unable to open shared memory region: '/tgs_no_such_key'")
    for key in ("triton_python_backend_shm_region_a", "//triton_python_backend_shm_region_a"):
        code, message = error_of(client.register_system_shared_memory, "x", key, 8)
        assert code == "INVALID_ARGUMENT"
        assert message == (f"cannot register shared memory region 'x' with key '{key}' as the key "
                           "contains the reserved prefix 'triton_python_backend_shm_region_'")
    for key in ("/", "///"):
        code, message = error_of(client.register_system_shared_memory, "x", key, 8)
        assert (code, message) == ("INVALID_ARGUMENT",
                                   f"cannot register shared memory region 'x' - invalid shm key '{key}'")
    # shm_open's own rule: no further '/' in a key, so nothing outside /dev/shm is reachable
    code, message = error_of(client.register_system_shared_memory, "x", "/../etc/passwd", 8)
    assert (code, message) == ("INTERNAL", "Unable to open shared memory region: '/../etc/passwd'")


def test_cuda_register_without_a_device_is_invalid_args(client):
    from triton_grpc_server._ext import cuda

    if cuda.unavailable_reason() is None:
        pytest.skip("a GPU is present; covered by test_cuda_shared_memory_cross_process")
    code, message = error_of(client.register_cuda_shared_memory, "", b"", 0, 0)
    assert (code, message) == ("INVALID_ARGUMENT",
                               "failed to register shared memory region: invalid args")
    handle = base64.b64encode(bytes(64))
    code, message = error_of(client.register_cuda_shared_memory, "c", handle, 0, 64)
    assert code == "INVALID_ARGUMENT"
    assert len(client.get_cuda_shared_memory_status().regions) == 0
    assert "cuda_shared_memory" not in client.get_server_metadata().extensions
    assert "system_shared_memory" in client.get_server_metadata().extensions


# -- inference ---------------------------------------------------------------------------------

@pytest.mark.parametrize("offset", [0, PAGE])
def test_infer_inputs_and_outputs_in_shared_memory(client, regions, offset):
    a, b, names, handles = shm_simple(client, regions, offset)
    inputs, outputs = shm_tensors(names)
    result = client.infer("simple", inputs, outputs=outputs)
    response = result.get_response()
    assert [o.name for o in response.outputs] == ["OUTPUT0", "OUTPUT1"]
    assert list(response.raw_output_contents) == [b"", b""]  # the data went to the regions
    out0 = result.get_output("OUTPUT0")
    assert out0.datatype == "INT32" and list(out0.shape) == [1, 16]
    got0 = shm.get_contents_as_numpy(handles[2], np.int32, [1, 16], offset=offset)
    got1 = shm.get_contents_as_numpy(handles[3], np.int32, [1, 16], offset=offset)
    np.testing.assert_array_equal(got0, a + b)
    np.testing.assert_array_equal(got1, a - b)
    # the regions stay registered after inference, and the request let go of them:
    # an unregister now is immediate, not deferred
    assert len(client.get_system_shared_memory_status().regions) == 4
    client.unregister_system_shared_memory()
    assert len(client.get_system_shared_memory_status().regions) == 0


def test_infer_mixed_raw_and_shared_memory(client, regions):
    a, b, names, handles = shm_simple(client, regions)
    inputs = simple_inputs(a, b)
    inputs[1].set_shared_memory(names[1], 64)  # INPUT0 raw, INPUT1 from its region
    outputs = [grpcclient.InferRequestedOutput("OUTPUT0"), grpcclient.InferRequestedOutput("OUTPUT1")]
    outputs[1].set_shared_memory(names[3], 64)
    result = client.infer("simple", inputs, outputs=outputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(shm.get_contents_as_numpy(handles[3], np.int32, [1, 16]), a - b)


def test_infer_bytes_and_fp32_through_shared_memory(client, regions):
    strings = np.array([b"a", b"", b"\x00\xffbinary", "héllo".encode()], dtype=np.object_)
    serialized = grpcclient.serialize_byte_tensor(strings)
    size = len(serialized.item())
    (iname, ikey, ih), (oname, okey, oh) = regions(size), regions(size)
    client.register_system_shared_memory(iname, ikey, size)
    client.register_system_shared_memory(oname, okey, size)
    shm.set_shared_memory_region(ih, [serialized])
    tensor = grpcclient.InferInput("INPUT0", [4], "BYTES")
    tensor.set_shared_memory(iname, size)
    out = grpcclient.InferRequestedOutput("OUTPUT0")
    out.set_shared_memory(oname, size)
    client.infer("id_bytes", [tensor], outputs=[out])
    got = shm.get_contents_as_numpy(oh, np.object_, [4])
    assert list(got) == list(strings)

    data = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    (iname, ikey, ih), (oname, okey, oh) = regions(4000), regions(4000)
    client.register_system_shared_memory(iname, ikey, 4000)
    client.register_system_shared_memory(oname, okey, 4000)
    shm.set_shared_memory_region(ih, [data])
    tensor = grpcclient.InferInput("INPUT0", [1000], "FP32")
    tensor.set_shared_memory(iname, 4000)
    out = grpcclient.InferRequestedOutput("OUTPUT0")
    out.set_shared_memory(oname, 4000)
    client.infer("id_fp32", [tensor], outputs=[out])
    np.testing.assert_array_equal(shm.get_contents_as_numpy(oh, np.float32, [1000]), data)


def test_fixed_shape_outputs_written_straight_into_regions(client, regions):
    """simple_static's outputs have fixed shapes, so ONNX Runtime writes OUTPUT0 into its
    region itself (io_binding) while OUTPUT1 goes over the wire; INPUT1 is raw."""
    a = np.arange(16, dtype=np.int32)
    b = np.full(16, 5, dtype=np.int32)
    (i0, k0, h0), (o0, ko, ho) = regions(64), regions(128)
    client.register_system_shared_memory(i0, k0, 64)
    client.register_system_shared_memory(o0, ko, 128)
    shm.set_shared_memory_region(h0, [a])
    inputs = [grpcclient.InferInput("INPUT0", [16], "INT32"),
              grpcclient.InferInput("INPUT1", [16], "INT32")]
    inputs[0].set_shared_memory(i0, 64)
    inputs[1].set_data_from_numpy(b)
    outputs = [grpcclient.InferRequestedOutput("OUTPUT0"), grpcclient.InferRequestedOutput("OUTPUT1")]
    outputs[0].set_shared_memory(o0, 64, offset=64)
    result = client.infer("simple_static", inputs, outputs=outputs)
    np.testing.assert_array_equal(shm.get_contents_as_numpy(ho, np.int32, [16], offset=64), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    # too small for the output: not bound, and the usual error
    outputs[0].set_shared_memory(o0, 32)
    code, message = error_of(client.infer, "simple_static", inputs, outputs=outputs)
    assert code == "INTERNAL" and "(32 bytes) should be at least 64 bytes" in message


def test_onnxruntime_run_into_binds_outputs_to_the_given_memory(tmp_path):
    from triton_grpc_server.backends.onnxruntime import OnnxRuntimeBackend
    from triton_grpc_server.backends.base import BackendContext
    from triton_grpc_server.repository.config import read_config

    repo = tmp_path / "models"
    model_dir = models.simple_model(repo, "fixed", max_batch_size=0)
    config = read_config(model_dir)
    backend = OnnxRuntimeBackend(config, 1, model_dir / "1" / "model.onnx",
                                 BackendContext("fixed"))
    instance = backend.create_instance(0, "KIND_CPU", 0)
    a, b = np.arange(16, dtype=np.int32), np.ones(16, dtype=np.int32)
    window = np.zeros(64, dtype=np.uint8)
    out = instance.run_into({"INPUT0": a, "INPUT1": b}, ["OUTPUT0", "OUTPUT1"], {},
                            {"OUTPUT0": window})
    assert np.shares_memory(out["OUTPUT0"], window)  # written in place, no copy
    np.testing.assert_array_equal(window.view(np.int32), a + b)
    np.testing.assert_array_equal(out["OUTPUT1"], a - b)
    small = np.zeros(8, dtype=np.uint8)  # does not fit: ONNX Runtime's own buffer
    out = instance.run_into({"INPUT0": a, "INPUT1": b}, ["OUTPUT0"], {}, {"OUTPUT0": small})
    assert not np.shares_memory(out["OUTPUT0"], small)
    np.testing.assert_array_equal(out["OUTPUT0"], a + b)


def test_input_region_larger_than_tensor_is_a_byte_size_mismatch(client, regions):
    a, b, names, _ = shm_simple(client, regions)
    big, key, handle = regions(128)
    client.register_system_shared_memory(big, key, 128)
    inputs, outputs = shm_tensors([names[0], big, names[2], names[3]])
    inputs[1].set_shared_memory(big, 128)
    code, message = error_of(client.infer, "simple", inputs, outputs=outputs)
    assert (code, message) == ("INVALID_ARGUMENT", "input byte size mismatch for input 'INPUT1' "
                                                   "for model 'simple'. Expected 64, got 128")


def test_offsets_and_sizes_outside_the_region(client, regions):
    _, _, names, _ = shm_simple(client, regions)
    inputs, outputs = shm_tensors(names, out_offset=64)
    code, message = error_of(client.infer, "simple", inputs, outputs=outputs)
    assert (code, message) == ("INVALID_ARGUMENT",
                               f"Invalid offset for shared memory region: '{names[2]}'")
    inputs, outputs = shm_tensors(names, out_offset=1)
    code, message = error_of(client.infer, "simple", inputs, outputs=outputs)
    assert (code, message) == ("INVALID_ARGUMENT",
                               f"Invalid offset + byte size for shared memory region: '{names[2]}'")
    # a negative int64 size is huge as Triton's size_t: caught before any address arithmetic
    inputs, outputs = shm_tensors(names, out_size=-32, out_offset=32)
    code, message = error_of(client.infer, "simple", inputs, outputs=outputs)
    assert code == "INVALID_ARGUMENT"
    assert message == (f"Integer overflow detected: byte_size ({2**64 - 32}) + offset (32) exceeds "
                       f"maximum value ({2**64 - 1}) for region '{names[2]}'")
    inputs, outputs = shm_tensors(["nope"] + names[1:])
    code, message = error_of(client.infer, "simple", inputs, outputs=outputs)
    assert (code, message) == ("NOT_FOUND", "Unable to find shared memory region: 'nope'")


def test_output_region_too_small(client, regions):
    _, _, names, _ = shm_simple(client, regions)
    inputs, outputs = shm_tensors(names, out_size=32)
    code, message = error_of(client.infer, "simple", inputs, outputs=outputs)
    assert code == "INTERNAL"
    assert message == ("shared memory size specified with the request for output 'OUTPUT0' "
                       "(32 bytes) should be at least 64 bytes to hold the results")
    client.unregister_system_shared_memory()  # a failed request releases its regions too
    assert len(client.get_system_shared_memory_status().regions) == 0


def test_shared_memory_parameter_errors(client, regions):
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    name, key, _ = regions(64)
    client.register_system_shared_memory(name, key, 64)
    cases = [
        ({"shared_memory_offset": ("int64_param", 0)},
         "'shared_memory_offset' can not be specified without 'shared_memory_region' parameter "
         "for tensor 'INPUT0'"),
        ({"shared_memory_region": ("string_param", name)},
         "'shared_memory_byte_size' must be specified along with 'shared_memory_region' "
         "parameter for tensor 'INPUT0'"),
        ({"shared_memory_region": ("int64_param", 1), "shared_memory_byte_size": ("int64_param", 64)},
         "invalid value type for 'shared_memory_region' parameter for tensor 'INPUT0', "
         "expected string_param."),
        ({"shared_memory_region": ("string_param", name),
          "shared_memory_byte_size": ("string_param", "64")},
         "invalid value type for 'shared_memory_byte_size' parameter for tensor 'INPUT0', "
         "expected int64_param."),
    ]
    for params, expected in cases:
        tensor = models.pb_input("INPUT0", "INT32", [1, 16])
        for key_, (kind, value) in params.items():
            setattr(tensor.parameters[key_], kind, value)
        request = models.pb_request("simple", [tensor, models.pb_input("INPUT1", "INT32", [1, 16])],
                                    raw=[a.tobytes(), a.tobytes()])
        code, message = error_of(models.stub_infer, client, request)
        assert (code, message) == ("INVALID_ARGUMENT", expected)
    # shared memory and typed contents together
    tensor = models.pb_input("INPUT0", "INT32", [1, 16], int_contents=list(range(16)))
    tensor.parameters["shared_memory_region"].string_param = name
    tensor.parameters["shared_memory_byte_size"].int64_param = 64
    request = models.pb_request("simple", [tensor, models.pb_input(
        "INPUT1", "INT32", [1, 16], int_contents=list(range(16)))])
    code, message = error_of(models.stub_infer, client, request)
    assert (code, message) == ("INVALID_ARGUMENT", "unexpected 'content' provided when using "
                               "shared memory for input tensor 'INPUT0' for model 'simple'")


def test_shared_memory_output_with_classification_is_refused(client, regions):
    name, key, _ = regions(64)
    client.register_system_shared_memory(name, key, 64)
    request = models.pb_request("cls_fp32", [models.pb_input("INPUT0", "FP32", [4])],
                                raw=[np.arange(4, dtype=np.float32).tobytes()])
    out = request.outputs.add(name="OUTPUT0")
    out.parameters["classification"].int64_param = 2
    out.parameters["shared_memory_region"].string_param = name
    out.parameters["shared_memory_byte_size"].int64_param = 64
    code, message = error_of(models.stub_infer, client, request)
    assert (code, message) == ("INVALID_ARGUMENT", "output can't set both 'shared_memory_region' "
                                                   "and 'classification'")


def test_client_shared_memory_is_off_by_default(tmp_path):
    repo = tmp_path / "models"
    models.simple_model(repo, "simple")
    server = models.start(repo, "--allow-metrics", "false")
    handle = shm.create_shared_memory_region("off", "/tgs_off_" + uuid.uuid4().hex[:8], 8)
    try:
        c = server.client()
        disabled = ("Client shared memory is disabled. Start the server with "
                    "'--allow-client-shm=true' to enable.")
        for call in (lambda: c.register_system_shared_memory("off", handle._shm_key, 8),
                     lambda: c.unregister_system_shared_memory("off"),
                     lambda: c.unregister_system_shared_memory(),
                     lambda: c.register_cuda_shared_memory("off", base64.b64encode(bytes(64)), 0, 8),
                     lambda: c.unregister_cuda_shared_memory()):
            assert error_of(call) == ("UNIMPLEMENTED", disabled)
        assert len(c.get_system_shared_memory_status().regions) == 0  # status stays allowed
        assert len(c.get_cuda_shared_memory_status().regions) == 0
        c.close()
    finally:
        shm.destroy_shared_memory_region(handle)
        server.stop()


# -- the manager: deferred unregister ----------------------------------------------------------

def test_unregister_of_a_region_in_use_waits_for_its_requests():
    from triton_grpc_server.errors import TritonError
    from triton_grpc_server.shared_memory import SYSTEM, SharedMemoryManager

    key = "/tgs_defer_" + uuid.uuid4().hex[:8]
    handle = shm.create_shared_memory_region("d", key, 64)
    try:
        manager = SharedMemoryManager(allow_client_shm=True)
        manager.register_system("d", key, 0, 64)
        first = manager.acquire("d", 0, 64)
        second = manager.acquire("d", 8, 8)
        manager.unregister("", SYSTEM)
        assert [r.name for r in manager.status("", SYSTEM)] == ["d"]  # still listed while in use
        assert manager.acquire("d", 0, 8) is first  # and still usable, as in Triton
        manager.release(first)
        manager.release(first)
        assert manager.status("", SYSTEM)
        manager.release(second)
        assert manager.status("", SYSTEM) == []
        with pytest.raises(TritonError, match="Unable to find shared memory region: 'd'"):
            manager.acquire("d", 0, 8)
        # the name is free again
        manager.register_system("d", key, 0, 64)
        assert first.buffer is None and manager.get("d") is not first
        manager.close()
    finally:
        shm.destroy_shared_memory_region(handle)


def test_region_data_written_by_the_client_is_seen_without_copies():
    from triton_grpc_server.shared_memory import SharedMemoryManager

    key = "/tgs_view_" + uuid.uuid4().hex[:8]
    handle = shm.create_shared_memory_region("v", key, 2 * PAGE)
    try:
        manager = SharedMemoryManager(allow_client_shm=True)
        manager.register_system("v", key, PAGE, PAGE)
        region = manager.acquire("v", 16, 16)
        view = np.frombuffer(region.buffer[16:32], dtype=np.int32)
        shm.set_shared_memory_region(handle, [np.arange(4, dtype=np.int32)], offset=PAGE + 16)
        np.testing.assert_array_equal(view, np.arange(4))  # the same pages, no copy
        del view
        manager.release(region)
        manager.close()
    finally:
        shm.destroy_shared_memory_region(handle)


# -- CUDA shared memory on a GPU: the client in another process --------------------------------

CUDA_CLIENT = textwrap.dedent("""
    import base64, sys
    import numpy as np
    import tritonclient.grpc as grpcclient
    from triton_grpc_server._ext import cuda

    url, n = sys.argv[1], 1 << 20
    data = np.random.default_rng(1).standard_normal(n).astype(np.float32)
    src, dst = cuda.DeviceBuffer(data.nbytes, 0), cuda.DeviceBuffer(data.nbytes, 0)
    cuda.memcpy_h2d(src.ptr, data.ctypes.data, data.nbytes)
    c = grpcclient.InferenceServerClient(url)
    for name, buf in (("cin", src), ("cout", dst)):
        c.register_cuda_shared_memory(
            name, base64.b64encode(cuda.ipc_get_mem_handle(buf.ptr)), 0, data.nbytes)
    assert set(c.get_cuda_shared_memory_status().regions) == {"cin", "cout"}
    tensor = grpcclient.InferInput("INPUT0", [n], "FP32")
    tensor.set_shared_memory("cin", data.nbytes)
    out = grpcclient.InferRequestedOutput("OUTPUT0")
    out.set_shared_memory("cout", data.nbytes)
    c.infer("id_fp32", [tensor], outputs=[out])
    back = np.empty_like(data)
    cuda.memcpy_d2h(back.ctypes.data, dst.ptr, data.nbytes)
    assert np.array_equal(back, data), "read-back differs"
    c.unregister_cuda_shared_memory()
    assert len(c.get_cuda_shared_memory_status().regions) == 0
    print("CUDA-SHM-OK")
""")


@pytest.mark.gpu
def test_cuda_shared_memory_cross_process(server):
    from triton_grpc_server._ext import cuda

    reason = cuda.unavailable_reason()
    if reason is not None:
        pytest.skip(f"no GPU: {reason}")
    proc = subprocess.run([sys.executable, "-c", CUDA_CLIENT, server.url], capture_output=True,
                          text=True, timeout=120)
    assert "CUDA-SHM-OK" in proc.stdout, proc.stdout + proc.stderr


# -- the HTTP twins ----------------------------------------------------------------------------

def test_http_register_infer_status_unregister(server, regions):
    import tritonclient.http as httpclient

    c = server.http_client()
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 2, dtype=np.int32)
    names = []
    handles = []
    for data in (a, b, None):
        name, key, handle = regions(PAGE + 64)
        c.register_system_shared_memory(name, key, 64, offset=PAGE)
        if data is not None:
            shm.set_shared_memory_region(handle, [data], offset=PAGE)
        names.append(name)
        handles.append(handle)
    status = c.get_system_shared_memory_status()
    assert sorted(r["name"] for r in status) == sorted(names)
    row = c.get_system_shared_memory_status(names[0])[0]
    assert (row["key"], row["offset"], row["byte_size"]) == ("/" + names[0], PAGE, 64)
    inputs = [httpclient.InferInput("INPUT0", [1, 16], "INT32"),
              httpclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_shared_memory(names[0], 64)
    inputs[1].set_shared_memory(names[1], 64)
    outputs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=True),
               httpclient.InferRequestedOutput("OUTPUT1", binary_data=False)]
    outputs[0].set_shared_memory(names[2], 64)
    result = c.infer("simple", inputs, outputs=outputs)
    np.testing.assert_array_equal(shm.get_contents_as_numpy(handles[2], np.int32, [1, 16],
                                                            offset=PAGE), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    with pytest.raises(InferenceServerException, match="already in manager"):
        c.register_system_shared_memory(names[0], "/" + names[0], 64)
    with pytest.raises(InferenceServerException,
                       match="Unable to find system shared memory region: 'nope'"):
        c.get_system_shared_memory_status("nope")
    c.unregister_system_shared_memory(names[0])
    assert len(c.get_system_shared_memory_status()) == 2
    c.unregister_system_shared_memory()
    assert c.get_system_shared_memory_status() == []
    assert c.get_cuda_shared_memory_status() == []
    with pytest.raises(InferenceServerException, match="invalid args"):
        c.register_cuda_shared_memory("c", base64.b64encode(bytes(64)), 0, 64)
    c.close()


def test_http_register_errors(server, regions):
    """Raw requests: the body checks tritonclient never lets a client get wrong."""
    import http.client
    import json

    def post(path, body):
        conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
        conn.request("POST", path, body=json.dumps(body) if body is not None else None)
        response = conn.getresponse()
        text = response.read().decode()
        conn.close()
        return response.status, (json.loads(text).get("error") if text else "")

    name, key, _ = regions(64)
    base = "/v2/systemsharedmemory"
    assert post(f"{base}/register", {"key": key, "byte_size": 64}) == (
        400, "'region name' is necessary to register system shared memory region")
    assert post(f"{base}/region/{name}/register", {"byte_size": 64}) == (
        400, "Shared memory register request has no 'key' field")
    assert post(f"{base}/region/{name}/register", {"key": key}) == (
        400, "Shared memory register request has no 'byte_size' field")
    assert post(f"{base}/region/{name}/register", {"key": key, "byte_size": -1}) == (
        500, "attempt to access JSON non-unsigned-integer as unsigned-integer")
    assert post(f"/v2/cudasharedmemory/region/c/register",
                {"raw_handle": {"b64": "AAAA"}, "device_id": 0, "byte_size": 8}) == (
        400, "'raw_handle' must be a valid base64 encoded cudaIpcMemHandle_t")
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    conn.request("POST", f"{base}/status")
    assert conn.getresponse().status == 405
    conn.close()
