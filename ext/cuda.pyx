"""The CUDA layer: devices, streams, events, device buffers, a pinned host pool.

Thin 1:1 wrappers over the CUDA runtime, linked statically from PyPI's
``nvidia-cuda-runtime`` (see ``ext/cuda_build.py``), in CuPy's style: every
call is ``with nogil:`` -> status -> ``check_status`` -> :class:`CudaError`.
Pointers and handles cross into Python as ``intptr_t`` so TensorRT and torch
can be given them directly.

The module imports everywhere: with no driver or no device,
:func:`device_count` returns 0 and :func:`unavailable_reason` says why, and the
pinned pool falls back to ordinary (aligned) host memory so its bookkeeping
works on a CPU-only machine.
"""
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport intptr_t, uintptr_t
from libc.stdlib cimport free
from libc.string cimport memcpy

from cuda cimport *  # ext/cuda.pxd: the runtime API declarations

cdef extern from "stdlib.h" nogil:
    int posix_memalign(void** ptr, size_t alignment, size_t size)


# ---------------------------------------------------------------- errors

class CudaError(RuntimeError):
    """A CUDA runtime call failed; ``status`` is the ``cudaError_t`` value.

    ``name`` is ``cudaGetErrorName`` (e.g. ``cudaErrorInsufficientDriver``),
    ``description`` is ``cudaGetErrorString``.
    """

    def __init__(self, int status, str context=""):
        self.status = status
        self.name = error_name(status)
        self.description = error_string(status)
        self.context = context
        text = f"{self.name}: {self.description}"
        if context:
            text = f"{context}: {text}"
        super().__init__(text)

    def __reduce__(self):
        return (CudaError, (self.status, self.context))


def error_name(int status):
    """``cudaGetErrorName(status)`` as a str."""
    cdef const char* name = cudaGetErrorName(<cudaError_t>status)
    return name.decode("ascii", "replace") if name != NULL else f"cudaError{status}"


def error_string(int status):
    """``cudaGetErrorString(status)`` as a str."""
    cdef const char* text = cudaGetErrorString(<cudaError_t>status)
    return text.decode("ascii", "replace") if text != NULL else ""


cdef int check_status(cudaError_t status) except -1:
    if status != cudaSuccess:
        # Clear the sticky per-thread "last error" so later calls are not blamed.
        cudaGetLastError()
        raise CudaError(status)
    return 0


def get_last_error():
    """``cudaGetLastError()``: returns and clears the thread's last error status."""
    return cudaGetLastError()


# ---------------------------------------------------------------- devices

#: Status values meaning "no usable GPU here", not "a bug".
NO_DEVICE_STATUSES = (cudaErrorInsufficientDriver, cudaErrorNoDevice)


def get_device_count():
    """``cudaGetDeviceCount``; raises :class:`CudaError` (e.g. status 35 with no driver)."""
    cdef int count = 0
    cdef cudaError_t status
    with nogil:
        status = cudaGetDeviceCount(&count)
    check_status(status)
    return count


def device_count():
    """The number of usable devices, 0 when there is no driver or no device."""
    try:
        return get_device_count()
    except CudaError:
        return 0


def unavailable_reason():
    """``None`` when at least one GPU is usable, else a sentence saying why not."""
    cdef int count = 0
    cdef cudaError_t status
    with nogil:
        status = cudaGetDeviceCount(&count)
    if status == cudaSuccess and count > 0:
        return None
    if status == cudaSuccess:
        return "no CUDA device is visible (cudaGetDeviceCount returned 0)"
    cudaGetLastError()
    reason = f"CUDA is not usable: cudaGetDeviceCount failed with {error_name(status)} ({status}): {error_string(status)}"
    if status == cudaErrorInsufficientDriver:
        rt = runtime_version()
        reason += (f"; no libcuda.so.1 was found, or the driver is older than CUDA {rt // 1000}.x "
                   f"(this build's static CUDA runtime is {_version_str(rt)})")
    return reason


def _version_str(int v):
    return f"{v // 1000}.{(v % 1000) // 10}" if v > 0 else "none"


def runtime_version():
    """The version of the statically linked CUDA runtime (e.g. 13000)."""
    cdef int v = 0
    cudaRuntimeGetVersion(&v)
    return v


def driver_version():
    """The CUDA version the driver supports (e.g. 13000), 0 with no driver."""
    cdef int v = 0
    if cudaDriverGetVersion(&v) != cudaSuccess:
        cudaGetLastError()
        return 0
    return v


def set_device(int device):
    """``cudaSetDevice``: makes ``device`` current for the calling host thread."""
    cdef cudaError_t status
    with nogil:
        status = cudaSetDevice(device)
    check_status(status)


def get_device():
    cdef int device = 0
    cdef cudaError_t status
    with nogil:
        status = cudaGetDevice(&device)
    check_status(status)
    return device


def device_properties(int device):
    """A few fields of ``cudaDeviceProp`` as a dict."""
    cdef cudaDeviceProp prop
    cdef cudaError_t status
    with nogil:
        status = cudaGetDeviceProperties(&prop, device)
    check_status(status)
    return {
        "name": prop.name.decode("utf-8", "replace"),
        "total_memory": prop.totalGlobalMem,
        "compute_capability": (prop.major, prop.minor),
        "multiprocessor_count": prop.multiProcessorCount,
        "pci_bus_id": prop.pciBusID,
        "async_engine_count": prop.asyncEngineCount,
    }


def mem_get_info():
    """``(free, total)`` bytes on the current device."""
    cdef size_t free_b = 0, total_b = 0
    cdef cudaError_t status
    with nogil:
        status = cudaMemGetInfo(&free_b, &total_b)
    check_status(status)
    return free_b, total_b


def stream_priority_range():
    """``(least, greatest)`` stream priorities; greatest is the numerically lowest."""
    cdef int least = 0, greatest = 0
    check_status(cudaDeviceGetStreamPriorityRange(&least, &greatest))
    return least, greatest


# ---------------------------------------------------------------- streams

cdef class Stream:
    """A ``cudaStreamNonBlocking`` stream on ``device`` (the current one when -1).

    ``ptr`` is the ``cudaStream_t`` as an int, for ``execute_async_v3`` and
    ``torch.cuda.ExternalStream``.
    """

    cdef cudaStream_t _stream
    cdef readonly int device
    cdef readonly bint owned

    def __cinit__(self, int device=-1, int priority=0, bint non_blocking=True):
        cdef cudaError_t status
        cdef unsigned int flags = cudaStreamNonBlocking if non_blocking else 0
        self._stream = NULL
        self.owned = True
        if device >= 0:
            set_device(device)
        self.device = get_device()
        with nogil:
            status = cudaStreamCreateWithPriority(&self._stream, flags, priority)
        check_status(status)

    def __dealloc__(self):
        if self._stream != NULL and self.owned:
            cudaStreamDestroy(self._stream)
            self._stream = NULL

    cdef int _check_open(self) except -1:
        if self._stream == NULL:
            raise ValueError("stream is closed")
        return 0

    @property
    def ptr(self):
        return <intptr_t>self._stream

    def synchronize(self):
        """Block (GIL released) until all work queued on the stream is done."""
        cdef cudaError_t status
        self._check_open()
        with nogil:
            status = cudaStreamSynchronize(self._stream)
        check_status(status)

    def wait_event(self, Event event not None):
        """Make later work on this stream wait for ``event`` (no host blocking)."""
        cdef cudaError_t status
        self._check_open()
        with nogil:
            status = cudaStreamWaitEvent(self._stream, event._event, 0)
        check_status(status)

    def begin_capture(self):
        """Start capturing the stream's work into a CUDA graph (thread-local mode)."""
        cdef cudaError_t status
        self._check_open()
        with nogil:
            status = cudaStreamBeginCapture(self._stream, cudaStreamCaptureModeThreadLocal)
        check_status(status)

    def end_capture(self, bint instantiate=True):
        """End a capture; returns the instantiated :class:`CudaGraph`.

        With ``instantiate=False`` (used to abandon a failed capture) the graph
        is destroyed and ``None`` returned.
        """
        cdef cudaGraph_t graph = NULL
        cdef cudaGraphExec_t exec_ = NULL
        cdef cudaError_t status
        self._check_open()
        with nogil:
            status = cudaStreamEndCapture(self._stream, &graph)
        check_status(status)
        if not instantiate:
            if graph != NULL:
                cudaGraphDestroy(graph)
            return None
        with nogil:
            status = cudaGraphInstantiateWithFlags(&exec_, graph, 0)
            cudaGraphDestroy(graph)
        check_status(status)
        result = CudaGraph.__new__(CudaGraph)
        (<CudaGraph>result)._exec = exec_
        (<CudaGraph>result).device = self.device
        return result

    def close(self):
        cdef cudaError_t status
        if self._stream != NULL and self.owned:
            with nogil:
                status = cudaStreamDestroy(self._stream)
            self._stream = NULL
            check_status(status)

    def __repr__(self):
        return f"<Stream device={self.device} ptr={self.ptr:#x}>"


cdef class CudaGraph:
    """An instantiated graph (``cudaGraphExec_t``) captured from a :class:`Stream`."""

    cdef cudaGraphExec_t _exec
    cdef readonly int device

    def __cinit__(self):
        self._exec = NULL

    def __dealloc__(self):
        if self._exec != NULL:
            cudaGraphExecDestroy(self._exec)
            self._exec = NULL

    def launch(self, Stream stream not None):
        cdef cudaError_t status
        if self._exec == NULL:
            raise ValueError("graph is closed")
        with nogil:
            status = cudaGraphLaunch(self._exec, stream._stream)
        check_status(status)

    def close(self):
        if self._exec != NULL:
            cudaGraphExecDestroy(self._exec)
            self._exec = NULL


# ---------------------------------------------------------------- events

cdef class Event:
    """A CUDA event; by default ``BlockingSync | DisableTiming`` as Triton uses.

    :meth:`synchronize` sleeps in the driver with the GIL released: call it
    from a worker thread, never from the event loop.
    """

    cdef cudaEvent_t _event
    cdef readonly int device
    cdef readonly bint timing

    def __cinit__(self, int device=-1, bint blocking_sync=True, bint timing=False):
        cdef unsigned int flags = cudaEventDefault
        cdef cudaError_t status
        self._event = NULL
        if blocking_sync:
            flags |= cudaEventBlockingSync
        if not timing:
            flags |= cudaEventDisableTiming
        if device >= 0:
            set_device(device)
        self.device = get_device()
        self.timing = timing
        with nogil:
            status = cudaEventCreateWithFlags(&self._event, flags)
        check_status(status)

    def __dealloc__(self):
        if self._event != NULL:
            cudaEventDestroy(self._event)
            self._event = NULL

    @property
    def ptr(self):
        """The ``cudaEvent_t`` as an int (for ``set_input_consumed_event``)."""
        return <intptr_t>self._event

    def record(self, Stream stream not None):
        cdef cudaError_t status
        with nogil:
            status = cudaEventRecord(self._event, stream._stream)
        check_status(status)

    def synchronize(self):
        """Block until the event completes, with the GIL released."""
        cdef cudaError_t status
        with nogil:
            status = cudaEventSynchronize(self._event)
        check_status(status)

    def query(self):
        """True when the work before the event has completed."""
        cdef cudaError_t status
        with nogil:
            status = cudaEventQuery(self._event)
        if status == cudaErrorNotReady:
            cudaGetLastError()
            return False
        check_status(status)
        return True

    def elapsed_ms(self, Event end not None):
        """Milliseconds from this event to ``end`` (both created with ``timing=True``)."""
        cdef float ms = 0
        check_status(cudaEventElapsedTime(&ms, self._event, end._event))
        return ms

    def close(self):
        if self._event != NULL:
            cudaEventDestroy(self._event)
            self._event = NULL


def event_synchronize(Event event not None):
    """Wait for ``event`` with the GIL released; meant for a worker thread."""
    event.synchronize()


# ---------------------------------------------------------------- device memory

cdef class DeviceBuffer:
    """``cudaMalloc(size)`` on ``device``, freed when the object goes away."""

    cdef void* _ptr
    cdef readonly size_t size
    cdef readonly int device

    def __cinit__(self, size_t size, int device=-1):
        cdef cudaError_t status
        self._ptr = NULL
        if device >= 0:
            set_device(device)
        self.device = get_device()
        self.size = size
        with nogil:
            status = cudaMalloc(&self._ptr, size if size > 0 else 1)
        check_status(status)

    def __dealloc__(self):
        if self._ptr != NULL:
            cudaFree(self._ptr)
            self._ptr = NULL

    @property
    def ptr(self):
        return <intptr_t>self._ptr

    def memset_async(self, int value, Stream stream not None):
        cdef cudaError_t status
        with nogil:
            status = cudaMemsetAsync(self._ptr, value, self.size, stream._stream)
        check_status(status)

    def close(self):
        cdef cudaError_t status
        if self._ptr != NULL:
            with nogil:
                status = cudaFree(self._ptr)
            self._ptr = NULL
            check_status(status)


# ---------------------------------------------------------------- copies

cdef inline int memcpy_async(intptr_t dst, intptr_t src, size_t nbytes, cudaMemcpyKind kind,
                             cudaStream_t stream) except -1:
    cdef cudaError_t status
    with nogil:
        status = cudaMemcpyAsync(<void*>dst, <const void*>src, nbytes, kind, stream)
    return check_status(status)


def memcpy_h2d_async(intptr_t dst, intptr_t src, size_t nbytes, Stream stream not None):
    """Queue a host-to-device copy on ``stream`` (``src`` should be pinned)."""
    memcpy_async(dst, src, nbytes, cudaMemcpyHostToDevice, stream._stream)


def memcpy_d2h_async(intptr_t dst, intptr_t src, size_t nbytes, Stream stream not None):
    """Queue a device-to-host copy on ``stream`` (``dst`` should be pinned)."""
    memcpy_async(dst, src, nbytes, cudaMemcpyDeviceToHost, stream._stream)


def memcpy_d2d_async(intptr_t dst, intptr_t src, size_t nbytes, Stream stream not None):
    memcpy_async(dst, src, nbytes, cudaMemcpyDeviceToDevice, stream._stream)


def stage_h2d(intptr_t dst, PinnedBuffer staging not None, size_t offset,
              const unsigned char[::1] src, Stream stream not None,
              size_t chunk=1 << 20):
    """Copy request bytes ``src`` into ``staging[offset:]`` and on to device ``dst``.

    One pass with the GIL released: each ``chunk`` is memcpy'd into pinned
    memory and its ``cudaMemcpyAsync`` queued at once, so the DMA of chunk k
    overlaps the host copy of chunk k+1. Returns the number of bytes queued.
    The staging buffer and ``src`` must stay alive until the stream has
    passed the copy (record an event and wait for it).
    """
    cdef size_t n = src.shape[0]
    cdef size_t done = 0, step
    cdef cudaError_t status = cudaSuccess
    cdef const unsigned char* s
    cdef unsigned char* p
    if staging._ptr == 0:
        raise ValueError("staging buffer was released")
    if offset + n > staging.size:
        raise ValueError(f"{n} bytes at offset {offset} overrun a staging buffer of {staging.size}")
    if n == 0:
        return 0
    if chunk == 0:
        chunk = n
    s = &src[0]
    p = <unsigned char*>staging._ptr + offset
    with nogil:
        while done < n:
            step = chunk if n - done > chunk else n - done
            memcpy(p + done, s + done, step)
            status = cudaMemcpyAsync(<void*>(dst + done), p + done, step,
                                     cudaMemcpyHostToDevice, stream._stream)
            if status != cudaSuccess:
                break
            done += step
    check_status(status)
    return n


# ---------------------------------------------------------------- pinned pool

cdef size_t _DEFAULT_BLOCK = 64 << 20


cdef class PinnedPool:
    """Page-locked host memory taken in large blocks and sub-allocated.

    ``cudaHostAlloc(Portable)`` runs only when a new block is needed; a freed
    buffer goes back to the free list of its size class and the next request
    of that class reuses it, so steady-state serving makes no CUDA
    allocation calls. Size classes are multiples of ``alignment`` up to four
    times it, then four steps per power of two (at most 25% slack). Requests
    larger than ``block_size`` get a block of their own, reused the same way.

    With ``host_fallback`` (the default when no GPU is usable) blocks come from
    ``posix_memalign`` instead; ``pinned`` says which. Bookkeeping runs with
    the GIL held, which serialises it; only memcpy and CUDA calls release it.
    """

    cdef readonly size_t block_size
    cdef readonly size_t alignment
    cdef readonly bint pinned
    cdef list _blocks          # [(base address, size)]
    cdef dict _free            # size class -> [address, ...]
    cdef intptr_t _cursor      # bump pointer inside the newest block
    cdef size_t _left          # bytes left behind _cursor
    cdef readonly size_t reserved_bytes
    cdef readonly size_t in_use_bytes
    cdef readonly Py_ssize_t block_allocations
    cdef readonly Py_ssize_t allocations
    cdef readonly Py_ssize_t reuses
    cdef readonly Py_ssize_t live_buffers
    cdef bint _closed

    def __cinit__(self, size_t block_size=_DEFAULT_BLOCK, size_t alignment=256, host_fallback=None):
        if alignment == 0 or (alignment & (alignment - 1)) != 0:
            raise ValueError("alignment must be a power of two")
        if block_size < alignment:
            raise ValueError("block_size must be at least the alignment")
        self.block_size = block_size
        self.alignment = alignment
        if host_fallback is None:
            host_fallback = device_count() == 0
        self.pinned = not host_fallback
        self._blocks = []
        self._free = {}
        self._cursor = 0
        self._left = 0
        self.reserved_bytes = 0
        self.in_use_bytes = 0
        self.block_allocations = 0
        self.allocations = 0
        self.reuses = 0
        self.live_buffers = 0
        self._closed = False

    def __dealloc__(self):
        # Buffers hold a reference to their pool, so none is alive here.
        self._release_blocks()

    cdef size_t _size_class(self, size_t nbytes):
        cdef size_t a = self.alignment
        cdef size_t n = nbytes if nbytes > 0 else 1
        cdef size_t step, top
        if n <= 4 * a:
            return (n + a - 1) & ~(a - 1)
        top = 1
        while top < n:
            top <<= 1
        step = top >> 3          # (top/2, top] split into 4 steps of top/8
        if step < a:
            step = a
        return (n + step - 1) // step * step

    cdef intptr_t _new_block(self, size_t nbytes) except 0:
        cdef void* p = NULL
        cdef cudaError_t status
        cdef int rc
        if self.pinned:
            # The GIL stays held: it is what makes pool bookkeeping atomic, and
            # a block allocation happens only while the pool warms up.
            status = cudaHostAlloc(&p, nbytes, cudaHostAllocPortable)
            check_status(status)
        else:
            rc = posix_memalign(&p, 4096, nbytes)
            if rc != 0 or p == NULL:
                raise MemoryError(f"posix_memalign({nbytes}) failed")
        self._blocks.append((<intptr_t>p, nbytes))
        self.reserved_bytes += nbytes
        self.block_allocations += 1
        return <intptr_t>p

    def alloc(self, size_t nbytes):
        """A :class:`PinnedBuffer` of ``nbytes`` (capacity rounded up to its size class)."""
        cdef size_t cls
        cdef intptr_t ptr
        cdef list bucket
        if self._closed:
            raise ValueError("pool is closed")
        cls = self._size_class(nbytes)
        bucket = self._free.get(cls)
        if bucket:
            ptr = bucket.pop()
            self.reuses += 1
        elif cls > self.block_size:
            ptr = self._new_block(cls)
        else:
            if cls > self._left:
                # The tail of the old block is dropped: it is less than one class.
                self._cursor = self._new_block(self.block_size)
                self._left = self.block_size
            ptr = self._cursor
            self._cursor += cls
            self._left -= cls
        self.allocations += 1
        self.in_use_bytes += cls
        self.live_buffers += 1
        buf = PinnedBuffer.__new__(PinnedBuffer)
        (<PinnedBuffer>buf)._ptr = ptr
        (<PinnedBuffer>buf).size = nbytes
        (<PinnedBuffer>buf).capacity = cls
        (<PinnedBuffer>buf).pool = self
        (<PinnedBuffer>buf)._views = 0
        return buf

    cdef _give_back(self, intptr_t ptr, size_t capacity):
        self.in_use_bytes -= capacity
        self.live_buffers -= 1
        if self._closed:
            return
        bucket = self._free.get(capacity)
        if bucket is None:
            self._free[capacity] = [ptr]
        else:
            bucket.append(ptr)

    def size_class(self, size_t nbytes):
        """The capacity a request of ``nbytes`` gets."""
        return self._size_class(nbytes)

    def free_counts(self):
        """``{size class: number of free buffers}``."""
        return {cls: len(bucket) for cls, bucket in self._free.items() if bucket}

    def stats(self):
        return {
            "pinned": self.pinned,
            "block_size": self.block_size,
            "blocks": len(self._blocks),
            "reserved_bytes": self.reserved_bytes,
            "in_use_bytes": self.in_use_bytes,
            "block_allocations": self.block_allocations,
            "allocations": self.allocations,
            "reuses": self.reuses,
            "live_buffers": self.live_buffers,
        }

    def _release_blocks(self):
        if self._blocks is None:
            return
        for base, _size in self._blocks:
            if self.pinned:
                cudaFreeHost(<void*><intptr_t>base)
            else:
                free(<void*><intptr_t>base)
        self._blocks = []
        self._free = {}
        self._left = 0
        self.reserved_bytes = 0

    def close(self):
        """Free every block; refused while any buffer is still out."""
        if self.live_buffers:
            raise BufferError(f"{self.live_buffers} pinned buffers are still in use")
        self._closed = True
        self._release_blocks()

    def __repr__(self):
        kind = "pinned" if self.pinned else "host-fallback"
        return (f"<PinnedPool {kind} blocks={len(self._blocks)} reserved={self.reserved_bytes} "
                f"in_use={self.in_use_bytes}>")


cdef class PinnedBuffer:
    """A piece of a :class:`PinnedPool`; returns to the pool when released or collected.

    Supports the buffer protocol (writable bytes), so ``numpy.frombuffer(buf,
    dtype)`` views it without a copy; the buffer cannot be released while a
    view exists, and a numpy view keeps it alive.
    """

    cdef intptr_t _ptr
    cdef readonly size_t size
    cdef readonly size_t capacity
    cdef readonly PinnedPool pool
    cdef Py_ssize_t _views
    cdef Py_ssize_t _shape[1]
    cdef Py_ssize_t _strides[1]

    def __cinit__(self):
        self._ptr = 0
        self._views = 0

    def __dealloc__(self):
        if self._ptr != 0 and self.pool is not None:
            self.pool._give_back(self._ptr, self.capacity)
            self._ptr = 0

    @property
    def ptr(self):
        return self._ptr

    @property
    def views(self):
        return self._views

    def release(self):
        """Give the memory back to the pool now (it must not be in use by the GPU)."""
        if self._views:
            raise BufferError(f"pinned buffer has {self._views} exported views")
        if self._ptr != 0:
            self.pool._give_back(self._ptr, self.capacity)
            self._ptr = 0

    def copy_from(self, const unsigned char[::1] src, size_t offset=0):
        """memcpy ``src`` into this buffer at ``offset`` with the GIL released."""
        cdef size_t n = src.shape[0]
        if self._ptr == 0:
            raise ValueError("pinned buffer was released")
        if offset + n > self.size:
            raise ValueError(f"{n} bytes at offset {offset} overrun a pinned buffer of {self.size}")
        if n:
            with nogil:
                memcpy(<unsigned char*>self._ptr + offset, &src[0], n)
        return n

    def to_bytes(self, Py_ssize_t nbytes=-1):
        """A ``bytes`` copy of the first ``nbytes`` (all when -1)."""
        if self._ptr == 0:
            raise ValueError("pinned buffer was released")
        if nbytes < 0 or <size_t>nbytes > self.size:
            nbytes = self.size
        return PyBytes_FromStringAndSize(<char*>self._ptr, nbytes)

    def __len__(self):
        return self.size

    def __getbuffer__(self, Py_buffer* view, int flags):
        if self._ptr == 0:
            raise BufferError("pinned buffer was released")
        self._shape[0] = self.size
        self._strides[0] = 1
        view.buf = <void*>self._ptr
        view.obj = self
        view.len = self.size
        view.readonly = 0
        view.itemsize = 1
        view.format = "B"
        view.ndim = 1
        view.shape = self._shape
        view.strides = self._strides
        view.suboffsets = NULL
        view.internal = NULL
        self._views += 1

    def __releasebuffer__(self, Py_buffer* view):
        self._views -= 1

    def __repr__(self):
        return f"<PinnedBuffer size={self.size} capacity={self.capacity} ptr={self._ptr:#x}>"


# ---------------------------------------------------------------- CUDA IPC (client shared memory)

ctypedef int (*cu_mem_get_address_range_t)(uintptr_t* base, size_t* size,
                                            uintptr_t ptr) noexcept nogil


def ipc_open_mem_handle(bytes raw_handle not None, int device):
    """``cudaIpcOpenMemHandle`` on a 64-byte handle from another process; returns the pointer.

    Fails (``CudaError``) in the process that created the handle, as CUDA does.
    """
    cdef cudaIpcMemHandle_t handle
    cdef void* ptr = NULL
    cdef cudaError_t status
    if len(raw_handle) != sizeof(handle.reserved):
        raise ValueError(f"a CUDA IPC handle is {sizeof(handle.reserved)} bytes, "
                         f"got {len(raw_handle)}")
    memcpy(handle.reserved, <const char*>raw_handle, sizeof(handle.reserved))
    check_status(cudaSetDevice(device))
    with nogil:
        status = cudaIpcOpenMemHandle(&ptr, handle, cudaIpcMemLazyEnablePeerAccess)
    check_status(status)
    return <intptr_t>ptr


def ipc_get_mem_handle(intptr_t ptr):
    """``cudaIpcGetMemHandle``: the 64-byte handle another process opens ``ptr`` with."""
    cdef cudaIpcMemHandle_t handle
    check_status(cudaIpcGetMemHandle(&handle, <void*>ptr))
    return PyBytes_FromStringAndSize(handle.reserved, sizeof(handle.reserved))


def ipc_close_mem_handle(intptr_t ptr):
    """``cudaIpcCloseMemHandle`` on a pointer from :func:`ipc_open_mem_handle`."""
    check_status(cudaIpcCloseMemHandle(<void*>ptr))


def mem_address_range_size(intptr_t ptr):
    """Bytes of the allocation ``ptr`` points into (``cuMemGetAddressRange``)."""
    cdef void* fn = NULL
    cdef uintptr_t base = 0
    cdef size_t size = 0
    cdef int result
    check_status(cudaGetDriverEntryPointByVersion(b"cuMemGetAddressRange", &fn, 12000,
                                                  cudaEnableDefault, NULL))
    if fn == NULL:
        raise RuntimeError("cuMemGetAddressRange is not available from the driver")
    result = (<cu_mem_get_address_range_t>fn)(&base, &size, <uintptr_t>ptr)
    if result != 0:
        raise RuntimeError(f"Failed to get CUDA address range: CUresult {result}")
    return size


def memcpy_d2h(intptr_t dst, intptr_t src, size_t nbytes):
    """Synchronous device-to-host ``cudaMemcpy``."""
    cdef cudaError_t status
    with nogil:
        status = cudaMemcpy(<void*>dst, <const void*>src, nbytes, cudaMemcpyDeviceToHost)
    check_status(status)


def memcpy_h2d(intptr_t dst, intptr_t src, size_t nbytes):
    """Synchronous host-to-device ``cudaMemcpy``."""
    cdef cudaError_t status
    with nogil:
        status = cudaMemcpy(<void*>dst, <const void*>src, nbytes, cudaMemcpyHostToDevice)
    check_status(status)


def host_register(intptr_t ptr, size_t nbytes):
    """``cudaHostRegister``: page-lock host memory (a system shm region) for direct DMA."""
    check_status(cudaHostRegister(<void*>ptr, nbytes, cudaHostRegisterPortable))


def host_unregister(intptr_t ptr):
    check_status(cudaHostUnregister(<void*>ptr))
