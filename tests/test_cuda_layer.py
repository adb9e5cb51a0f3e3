"""The CUDA layer (ext/cuda.pyx): no-device behaviour, pinned-pool bookkeeping, and GPU round trips.

On a CPU machine the pool runs on its host-memory fallback, which shares every
line of bookkeeping with the pinned path except the block allocation call;
the GPU-marked tests run the same pool on page-locked memory with real copies.
"""
from __future__ import annotations

import gc
import pickle
import threading

import numpy as np
import pytest

cuda = pytest.importorskip("triton_grpc_server._ext.cuda",
                           reason="CUDA extension not built (python setup.py build_ext --inplace)")

GPU_REASON = cuda.unavailable_reason()
no_gpu_only = pytest.mark.skipif(GPU_REASON is None, reason="checks behaviour without a GPU")


# ---------------------------------------------------------------- no device

@no_gpu_only
def test_import_without_gpu_reports_reason_instead_of_failing():
    assert cuda.device_count() == 0
    assert "cudaGetDeviceCount" in GPU_REASON
    with pytest.raises(cuda.CudaError) as info:
        cuda.get_device_count()
    # 35 = cudaErrorInsufficientDriver (no libcuda.so.1), 100 = cudaErrorNoDevice
    assert info.value.status in cuda.NO_DEVICE_STATUSES
    assert info.value.name in GPU_REASON


@no_gpu_only
def test_cuda_objects_raise_cuda_error_without_gpu():
    with pytest.raises(cuda.CudaError):
        cuda.Stream()
    with pytest.raises(cuda.CudaError):
        cuda.Event()
    with pytest.raises(cuda.CudaError):
        cuda.DeviceBuffer(16)


@no_gpu_only
def test_gpu_helpers_report_unavailable_with_reason():
    from triton_grpc_server import gpu
    from triton_grpc_server.errors import Unavailable

    assert gpu.device_count() == 0
    with pytest.raises(Unavailable, match="needs a GPU: CUDA is not usable"):
        gpu.require_devices([0], what="model 'x'")
    assert gpu.pinned_pool().pinned is False


def test_cuda_error_carries_name_and_pickles():
    err = cuda.CudaError(35, "cudaGetDeviceCount")
    assert err.status == 35
    assert err.name == "cudaErrorInsufficientDriver"
    assert str(err).startswith("cudaGetDeviceCount: cudaErrorInsufficientDriver")
    again = pickle.loads(pickle.dumps(err))
    assert (type(again), again.status, again.name, str(again)) == (cuda.CudaError, 35, err.name, str(err))
    assert cuda.error_name(2) == "cudaErrorMemoryAllocation"


def test_runtime_version_is_the_pinned_static_cudart():
    assert cuda.runtime_version() // 1000 in (12, 13)


# ---------------------------------------------------------------- pinned pool (host fallback)

@pytest.fixture
def pool():
    p = cuda.PinnedPool(block_size=1 << 20, alignment=256, host_fallback=True)
    yield p
    gc.collect()
    if p.live_buffers == 0:
        p.close()


def test_size_classes_round_up_with_bounded_slack(pool):
    assert pool.size_class(0) == 256
    assert pool.size_class(1) == 256
    assert pool.size_class(257) == 512
    assert pool.size_class(1024) == 1024
    for n in (1025, 3000, 4097, 100_000, 1 << 20, (1 << 20) + 1, 7_654_321):
        c = pool.size_class(n)
        assert c >= n and c % 256 == 0
        assert c <= n * 1.25 + 256


def test_steady_state_reuses_memory_without_new_blocks(pool):
    sizes = [1000, 4096, 70_000, 1000, 250_000]
    for n in sizes:  # warm up
        pool.alloc(n).release()
    blocks = pool.block_allocations
    reserved = pool.reserved_bytes
    for _ in range(200):
        bufs = [pool.alloc(n) for n in sizes[:3]]
        for b in bufs:
            b.release()
    assert pool.block_allocations == blocks
    assert pool.reserved_bytes == reserved
    assert pool.reuses >= 600
    assert pool.in_use_bytes == 0 and pool.live_buffers == 0


def test_buffers_carve_one_block_and_do_not_overlap(pool):
    bufs = [pool.alloc(10_000) for _ in range(20)]
    assert pool.block_allocations == 1
    spans = sorted((b.ptr, b.ptr + b.capacity) for b in bufs)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))
    assert all(b.ptr % 256 == 0 for b in bufs)
    assert pool.in_use_bytes == sum(b.capacity for b in bufs)


def test_large_request_gets_its_own_block_which_is_reused(pool):
    big = pool.alloc(3 << 20)
    assert pool.block_allocations == 1 and big.capacity >= 3 << 20
    ptr = big.ptr
    big.release()
    again = pool.alloc(3 << 20)
    assert again.ptr == ptr and pool.block_allocations == 1


def test_collected_buffer_returns_to_pool(pool):
    ptr = pool.alloc(5000).ptr  # the temporary dies at once
    assert pool.live_buffers == 0
    assert pool.alloc(5000).ptr == ptr


def test_numpy_view_shares_memory_and_pins_buffer(pool):
    buf = pool.alloc(64)
    src = np.arange(16, dtype=np.float32)
    assert buf.copy_from(memoryview(src).cast("B")) == 64
    view = np.frombuffer(buf, dtype=np.float32)
    np.testing.assert_array_equal(view, src)
    view[0] = 42.0
    assert buf.to_bytes(4) == np.float32(42.0).tobytes()
    with pytest.raises(BufferError):
        buf.release()
    ptr = buf.ptr
    del buf  # the numpy view keeps it alive
    gc.collect()
    assert pool.live_buffers == 1
    del view
    gc.collect()
    assert pool.live_buffers == 0
    assert pool.alloc(64).ptr == ptr


def test_copy_from_checks_bounds_and_accepts_read_only_bytes(pool):
    buf = pool.alloc(8)
    buf.copy_from(b"abcd", offset=4)
    assert buf.to_bytes()[4:] == b"abcd"
    with pytest.raises(ValueError, match="overrun"):
        buf.copy_from(b"abcdefgh", offset=1)
    buf.release()
    with pytest.raises(ValueError, match="released"):
        buf.copy_from(b"a")


def test_close_refuses_while_buffers_are_out(pool):
    buf = pool.alloc(10)
    with pytest.raises(BufferError):
        pool.close()
    buf.release()
    pool.close()
    with pytest.raises(ValueError, match="closed"):
        pool.alloc(10)


def test_pool_bookkeeping_under_threads(pool):
    errors = []

    def work(seed):
        rng = np.random.default_rng(seed)
        try:
            for _ in range(300):
                n = int(rng.integers(1, 200_000))
                b = pool.alloc(n)
                b.copy_from(bytes(n))
                b.release()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert pool.live_buffers == 0 and pool.in_use_bytes == 0


# ---------------------------------------------------------------- on a GPU

@pytest.mark.gpu
@pytest.mark.skipif(GPU_REASON is not None, reason=f"no GPU: {GPU_REASON}")
@pytest.mark.parametrize("nbytes", [1, 4096, 4 << 20])
def test_h2d_d2h_round_trip_through_pinned_pool(nbytes):
    pool = cuda.PinnedPool()
    assert pool.pinned
    stream = cuda.Stream(0)
    done = cuda.Event(0)
    dev = cuda.DeviceBuffer(nbytes, 0)
    src = np.random.default_rng(nbytes).integers(0, 255, nbytes, dtype=np.uint8).tobytes()
    staging = pool.alloc(nbytes)
    cuda.stage_h2d(dev.ptr, staging, 0, src, stream, chunk=1 << 20)
    back = pool.alloc(nbytes)
    cuda.memcpy_d2h_async(back.ptr, dev.ptr, nbytes, stream)
    done.record(stream)
    done.synchronize()
    assert done.query()
    assert back.to_bytes() == src


@pytest.mark.gpu
@pytest.mark.skipif(GPU_REASON is not None, reason=f"no GPU: {GPU_REASON}")
def test_event_wait_in_worker_thread_and_graph_replay():
    from concurrent.futures import ThreadPoolExecutor

    props = cuda.device_properties(0)
    assert props["name"] and props["total_memory"] > 0
    pool = cuda.PinnedPool()
    stream = cuda.Stream(0)
    ev = cuda.Event(0)
    a, b = cuda.DeviceBuffer(1 << 20, 0), cuda.DeviceBuffer(1 << 20, 0)
    host = pool.alloc(1 << 20)
    host.copy_from(bytes(range(256)) * 4096)
    cuda.memcpy_h2d_async(a.ptr, host.ptr, 1 << 20, stream)
    stream.synchronize()
    stream.begin_capture()
    cuda.memcpy_d2d_async(b.ptr, a.ptr, 1 << 20, stream)
    graph = stream.end_capture()
    graph.launch(stream)
    out = pool.alloc(1 << 20)
    cuda.memcpy_d2h_async(out.ptr, b.ptr, 1 << 20, stream)
    ev.record(stream)
    with ThreadPoolExecutor(1) as ex:
        ex.submit(cuda.event_synchronize, ev).result(timeout=30)
    assert out.to_bytes() == host.to_bytes()


@pytest.mark.gpu
@pytest.mark.skipif(GPU_REASON is not None, reason=f"no GPU: {GPU_REASON}")
def test_cuda_error_from_a_real_failure_names_the_error():
    with pytest.raises(cuda.CudaError) as info:
        cuda.set_device(cuda.device_count() + 7)
    assert info.value.name == "cudaErrorInvalidDevice"
