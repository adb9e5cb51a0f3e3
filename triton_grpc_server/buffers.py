"""The buffer layer: where each tensor of one request lives.

Frontends decode a request; before the core validates it, this layer
resolves every input that names a shared-memory region to a buffer with its
memory type, and every output that names one to a destination, as Triton's
frontends do (``InferGRPCToInput``, ``InferAllocatorPayload``). Inputs without
region parameters keep their wire bytes or typed contents (the validator reads
those), so a request with no tensor parameters costs one scan here.

* A system region input is a zero-copy ``memoryview`` slice of the mapping.
* A CUDA region input is copied device-to-host once, for the CPU backends.
* After the model has run, :meth:`RequestBuffers.place_outputs` copies each
  output named to a region into it (one ``memcpy``, or one ``cudaMemcpy``) and
  leaves its raw entry in the response empty, as Triton does.

The request holds its regions from :func:`resolve_buffers` until
:meth:`RequestBuffers.release`, so an unregister meanwhile is deferred.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .errors import InternalError, InvalidArgument
from .shared_memory import CUDA, Region, SharedMemoryManager

# TRITONSERVER_MemoryType names
CPU = "CPU"
GPU = "GPU"

REGION = "shared_memory_region"
OFFSET = "shared_memory_offset"
BYTE_SIZE = "shared_memory_byte_size"


class InputBuffer:
    """One input's data outside the request message."""

    __slots__ = ("data", "memory_type", "device_id", "region")

    def __init__(self, data, memory_type: str, device_id: int, region: Region):
        self.data, self.memory_type, self.device_id, self.region = (
            data, memory_type, device_id, region)


class OutputBuffer:
    """Where one output goes: ``byte_size`` bytes of ``region`` from ``offset``."""

    __slots__ = ("region", "offset", "byte_size")

    def __init__(self, region: Region, offset: int, byte_size: int):
        self.region, self.offset, self.byte_size = region, offset, byte_size

    @property
    def memory_type(self) -> str:
        return GPU if self.region.kind == CUDA else CPU

    def view(self) -> memoryview:
        """The destination window of a system region (writable)."""
        return self.region.buffer[self.offset:self.offset + self.byte_size]


def shared_memory_parameters(tensor) -> Optional[tuple[str, int, int]]:
    """``(region, offset, byte_size)`` from a tensor's parameters, or None without a region.

    Checked as Triton's ``ParseSharedMemoryParams`` checks them, with its texts.
    """
    params = tensor.parameters
    name = tensor.name
    region = params.get(REGION)
    has_region = REGION in params
    if has_region and not isinstance(region, str):
        raise InvalidArgument(f"invalid value type for '{REGION}' parameter for tensor "
                              f"'{name}', expected string_param.")
    offset = 0
    for key in (OFFSET, BYTE_SIZE):
        if key not in params:
            continue
        if not has_region:
            raise InvalidArgument(f"'{key}' can not be specified without '{REGION}' parameter "
                                  f"for tensor '{name}'")
        value = params[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidArgument(f"invalid value type for '{key}' parameter for tensor "
                                  f"'{name}', expected int64_param.")
        if key == OFFSET:
            offset = value
    if not has_region:
        return None
    if BYTE_SIZE not in params:
        raise InvalidArgument(f"'{BYTE_SIZE}' must be specified along with '{REGION}' "
                              f"parameter for tensor '{name}'")
    return region, offset, params[BYTE_SIZE]


class RequestBuffers:
    """The shared-memory buffers of one request, holding their regions until released."""

    __slots__ = ("manager", "inputs", "outputs", "_held")

    def __init__(self, manager: SharedMemoryManager):
        self.manager = manager
        self.inputs: list[Optional[InputBuffer]] = []   # by input position; None: not in shm
        self.outputs: dict[str, OutputBuffer] = {}
        self._held: list[Region] = []

    def _acquire(self, name: str, offset: int, byte_size: int) -> Region:
        region = self.manager.acquire(name, offset, byte_size)
        self._held.append(region)
        return region

    def resolve(self, request) -> None:
        model = request.model_name
        for tensor in request.inputs:
            found = shared_memory_parameters(tensor) if tensor.parameters else None
            if found is None:
                self.inputs.append(None)
                continue
            if tensor.contents is not None:
                raise InvalidArgument(
                    f"unexpected 'content' provided when using shared memory for input tensor "
                    f"'{tensor.name}' for model '{model}'")
            name, offset, byte_size = found
            region = self._acquire(name, offset, byte_size)
            self.inputs.append(_input_buffer(region, offset, byte_size))
        for output in request.outputs:
            found = shared_memory_parameters(output) if output.parameters else None
            if found is None:
                continue
            if "classification" in output.parameters:
                raise InvalidArgument(
                    "output can't set both 'shared_memory_region' and 'classification'")
            name, offset, byte_size = found
            region = self._acquire(name, offset, byte_size)
            self.outputs[output.name] = OutputBuffer(region, offset, byte_size)

    def input_source(self, index: int):
        """The data of input ``index`` when it lives in shared memory, else None."""
        found = self.inputs[index] if index < len(self.inputs) else None
        return found.data if found is not None else None

    def place_outputs(self, response) -> None:
        """Copy each output bound to a region into it; its raw entry becomes empty."""
        if not self.outputs:
            return
        for output in response.outputs:
            target = self.outputs.get(output.name)
            if target is None:
                continue
            source = memoryview(output.data).cast("B")
            size = source.nbytes
            if size > target.byte_size:
                raise InternalError(
                    f"shared memory size specified with the request for output "
                    f"'{output.name}' ({target.byte_size} bytes) should be at least {size} "
                    f"bytes to hold the results")
            if size:
                if target.region.kind == CUDA:
                    _copy_to_device(target, source)
                else:
                    window = target.view()
                    # A backend given the window (output_destinations) wrote it there already.
                    if _address(window) != _address(source):
                        window[:size] = source
            output.data = b""

    def release(self) -> None:
        """The request is done: let go of its regions (an unregister waiting on them runs)."""
        held, self._held = self._held, []
        for region in held:
            self.manager.release(region)

    def wrap(self, sender) -> "BufferedSender":
        """A sender that places outputs before passing responses on, and releases at the end."""
        return BufferedSender(self, sender)


class BufferedSender:
    """Wraps a request's ``ResponseSender``: each response's region outputs are written
    (on the answering worker thread, not the event loop) before it is sent on; the
    final answer, response or error, releases the request's regions."""

    __slots__ = ("buffers", "sender")

    def __init__(self, buffers: RequestBuffers, sender):
        self.buffers, self.sender = buffers, sender

    def send(self, response, *, final: bool) -> None:
        try:
            if response is not None:
                self.buffers.place_outputs(response)
        except Exception as exc:  # e.g. an output region too small for its output
            self.buffers.release()
            self.sender.send_error(exc, final=True)
            return
        if final:
            self.buffers.release()
        self.sender.send(response, final=final)

    def send_error(self, error: BaseException, *, final: bool = True) -> None:
        if final:
            self.buffers.release()
        self.sender.send_error(error, final=final)

    def __getattr__(self, name):  # ``streaming`` and whatever else the transport's sender has
        return getattr(self.sender, name)


def output_destinations(work) -> Optional[dict]:
    """Writable host windows (uint8 arrays) of the request's outputs bound to system
    regions, for a backend that can write its outputs straight into them; else None.

    ``work`` is a ``ScheduledRequest``; its sender is a :class:`BufferedSender` (maybe
    under the tracer's) exactly when the request has tensors in shared memory.
    """
    buffers = getattr(work.sender, "buffers", None)
    if buffers is None or not buffers.outputs:
        return None
    return {name: np.frombuffer(target.view(), dtype=np.uint8)
            for name, target in buffers.outputs.items() if target.region.kind != CUDA} or None


def resolve_buffers(manager: Optional[SharedMemoryManager], request) -> Optional[RequestBuffers]:
    """The request's shared-memory buffers, or None when no tensor carries parameters.

    On error every region taken so far is released before the error propagates.
    """
    if manager is None:
        return None
    if not any(t.parameters for t in request.inputs) and \
            not any(o.parameters for o in request.outputs):
        return None
    buffers = RequestBuffers(manager)
    try:
        buffers.resolve(request)
    except BaseException:
        buffers.release()
        raise
    if not buffers._held:
        return None
    return buffers


def _input_buffer(region: Region, offset: int, byte_size: int) -> InputBuffer:
    if region.kind == CUDA:
        # CPU backends read host memory: one device-to-host copy of the window.
        host = np.empty(byte_size, dtype=np.uint8)
        if byte_size:
            _cuda_layer().memcpy_d2h(host.ctypes.data, region.pointer + offset, byte_size)
        return InputBuffer(host, GPU, region.device_id, region)
    return InputBuffer(region.buffer[offset:offset + byte_size], CPU, 0, region)


def _address(view: memoryview) -> int:
    return np.frombuffer(view, dtype=np.uint8).ctypes.data


def _copy_to_device(target: OutputBuffer, source: memoryview) -> None:
    host = np.frombuffer(source, dtype=np.uint8)
    _cuda_layer().memcpy_h2d(target.region.pointer + target.offset, host.ctypes.data,
                             host.nbytes)


def _cuda_layer():
    from ._ext import cuda

    return cuda
