# The CUDA layer's contract with the CUDA runtime: the part of
# cuda_runtime_api.h it uses, declared here rather than cimported from
# cuda-bindings, so the build needs only the PyPI headers and the static
# cudart. ``ext/cuda.pyx`` does ``from cuda cimport *``.
#
# Why not the module's own .pxd: Cython looks for the pxd of
# ``triton_grpc_server._ext.cuda`` under that dotted name, not beside the
# .pyx, so this file is a pure declaration module (no runtime import) and the
# cdef classes declare their fields in cuda.pyx.


cdef extern from "cuda_runtime_api.h" nogil:
    ctypedef int cudaError_t
    ctypedef void* cudaStream_t
    ctypedef void* cudaEvent_t
    ctypedef void* cudaGraph_t
    ctypedef void* cudaGraphExec_t

    enum cudaMemcpyKind:  # ``enum cudaMemcpyKind`` in C (no typedef)
        cudaMemcpyHostToHost
        cudaMemcpyHostToDevice
        cudaMemcpyDeviceToHost
        cudaMemcpyDeviceToDevice
        cudaMemcpyDefault

    ctypedef enum cudaStreamCaptureMode:
        cudaStreamCaptureModeGlobal
        cudaStreamCaptureModeThreadLocal
        cudaStreamCaptureModeRelaxed

    cdef enum:
        cudaSuccess
        cudaErrorNotReady
        cudaErrorInsufficientDriver
        cudaErrorNoDevice
        cudaStreamNonBlocking
        cudaEventDefault
        cudaEventBlockingSync
        cudaEventDisableTiming
        cudaHostAllocDefault
        cudaHostAllocPortable

    # Only the fields read here; Cython takes the real layout from the header.
    cdef struct cudaDeviceProp:
        char name[256]
        size_t totalGlobalMem
        int major
        int minor
        int multiProcessorCount
        int pciBusID
        int pciDeviceID
        int asyncEngineCount

    const char* cudaGetErrorName(cudaError_t error)
    const char* cudaGetErrorString(cudaError_t error)
    cudaError_t cudaGetLastError()
    cudaError_t cudaDriverGetVersion(int* version)
    cudaError_t cudaRuntimeGetVersion(int* version)

    cudaError_t cudaGetDeviceCount(int* count)
    cudaError_t cudaGetDevice(int* device)
    cudaError_t cudaSetDevice(int device)
    cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device)
    cudaError_t cudaDeviceGetStreamPriorityRange(int* least, int* greatest)
    cudaError_t cudaMemGetInfo(size_t* free, size_t* total)

    cudaError_t cudaStreamCreateWithPriority(cudaStream_t* stream, unsigned int flags, int priority)
    cudaError_t cudaStreamDestroy(cudaStream_t stream)
    cudaError_t cudaStreamSynchronize(cudaStream_t stream)
    cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags)
    cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode)
    cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph)

    cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int flags)
    cudaError_t cudaEventDestroy(cudaEvent_t event)
    cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream)
    cudaError_t cudaEventSynchronize(cudaEvent_t event)
    cudaError_t cudaEventQuery(cudaEvent_t event)
    cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end)

    cudaError_t cudaMalloc(void** ptr, size_t size)
    cudaError_t cudaFree(void* ptr)
    cudaError_t cudaHostAlloc(void** ptr, size_t size, unsigned int flags)
    cudaError_t cudaFreeHost(void* ptr)
    cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count,
                                cudaMemcpyKind kind, cudaStream_t stream)
    cudaError_t cudaMemsetAsync(void* ptr, int value, size_t count, cudaStream_t stream)

    cudaError_t cudaGraphInstantiateWithFlags(cudaGraphExec_t* exec, cudaGraph_t graph,
                                              unsigned long long flags)
    cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream)
    cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec)
    cudaError_t cudaGraphDestroy(cudaGraph_t graph)


    # Client CUDA shared memory: a region another process exported with
    # cudaIpcGetMemHandle, opened here by its 64-byte handle.
    cdef enum:
        cudaIpcMemLazyEnablePeerAccess
        cudaHostRegisterDefault
        cudaHostRegisterPortable
        CUDA_IPC_HANDLE_SIZE
        cudaEnableDefault
    ctypedef struct cudaIpcMemHandle_t:
        char reserved[64]
    cudaError_t cudaIpcOpenMemHandle(void** ptr, cudaIpcMemHandle_t handle, unsigned int flags)
    cudaError_t cudaIpcCloseMemHandle(void* ptr)
    cudaError_t cudaIpcGetMemHandle(cudaIpcMemHandle_t* handle, void* ptr)
    cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind kind)
    cudaError_t cudaHostRegister(void* ptr, size_t size, unsigned int flags)
    cudaError_t cudaHostUnregister(void* ptr)
    # cuMemGetAddressRange (the size of the allocation behind a pointer) is a driver
    # call; fetched through the runtime so the build never links libcuda.
    cudaError_t cudaGetDriverEntryPointByVersion(const char* symbol, void** func,
                                                 unsigned int version,
                                                 unsigned long long flags, void* status)
