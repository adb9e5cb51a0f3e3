"""The gRPC frontend on ``grpc.aio``: thin handlers over the data plane.

ModelInfer and ModelStreamInfer take and return raw bytes (no protobuf
deserializer is registered for them), so the selected codec decodes and
encodes the messages and a malformed request becomes INVALID_ARGUMENT rather
than grpcio's generic deserialization failure. No thread is held per
in-flight request: a unary ModelInfer awaits its sender's future, a stream
writes whatever its requests' senders hand to the loop. The other RPCs use the
generated protobuf classes and run in a small thread pool (a model load takes
seconds, which must not stall the loop). Each error becomes a status in one
place: :func:`error_status`.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from concurrent import futures
from typing import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from .._ext.wire import InferResponse
from .._proto import grpc_service_pb2 as pb
from ..errors import InvalidArgument, TritonError, Unsupported, grpc_code, status_message
from ..heap import TRIM_AFTER_BYTES, release_freed_memory
from ..senders import StreamSender
from .. import logs
from ..shared_memory import CUDA, SYSTEM
from .codecs import load_codec
from .grpc_security import SecurityConfigError, add_port, aio_interceptors
from .transport_options import HeaderForwarder

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
# Sent by a client at stream start: errors end the stream with their status
# instead of travelling in-band as error_message.
GRPC_ERROR_HEADER = "triton_grpc_error"
EMPTY_FINAL_PARAMETER = "triton_enable_empty_final_response"


def error_status(exc: BaseException, where: str) -> tuple[grpc.StatusCode, str]:
    """The status for an error raised by a handler or sent by the data plane.

    Call it inside the ``except`` block (or with the error at hand), so an
    internal error is logged with its traceback.
    """
    if isinstance(exc, TritonError):
        return grpc_code(exc.status), status_message(exc.message)
    log.error("internal error in %s", where, exc_info=exc)
    return grpc.StatusCode.INTERNAL, status_message(f"internal error: {type(exc).__name__}: {exc}")


class GRPCInferenceServicer:
    """One method per RPC, each a few lines over the data plane."""

    def __init__(self, dataplane, codec):
        self.dataplane = dataplane
        self.codec = codec
        self.forward_headers = HeaderForwarder.for_grpc(dataplane.settings)

    # -- control RPCs (plain functions, run in the pool) ----------------------
    def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=self.dataplane.server_live())

    def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.dataplane.server_ready())

    def ModelReady(self, request, context):
        return pb.ModelReadyResponse(ready=self.dataplane.model_ready(request.name, request.version))

    def ServerMetadata(self, request, context):
        name, version, extensions = self.dataplane.server_metadata()
        return pb.ServerMetadataResponse(name=name, version=version, extensions=extensions)

    def ModelMetadata(self, request, context):
        meta = self.dataplane.model_metadata(request.name, request.version)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta.name, versions=meta.versions, platform=meta.platform,
            inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.inputs],
            outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.outputs])

    def ModelConfig(self, request, context):
        return pb.ModelConfigResponse(config=self.dataplane.model_config(request.name, request.version))

    def RepositoryIndex(self, request, context):
        if request.repository_name:
            raise Unsupported("'repository_name' specification is not supported")
        entry = pb.RepositoryIndexResponse.ModelIndex
        rows = self.dataplane.repository_index(request.ready)
        return pb.RepositoryIndexResponse(
            models=[entry(name=n, version=v, state=s, reason=r) for n, v, s, r in rows])

    def RepositoryModelLoad(self, request, context):
        if request.repository_name:
            raise Unsupported("'repository_name' specification is not supported")
        self.dataplane.load_model(request.model_name, _repository_parameters(request.parameters))
        return pb.RepositoryModelLoadResponse()

    def RepositoryModelUnload(self, request, context):
        if request.repository_name:
            raise Unsupported("'repository_name' specification is not supported")
        self.dataplane.unload_model(request.model_name, _repository_parameters(request.parameters))
        return pb.RepositoryModelUnloadResponse()

    def ModelStatistics(self, request, context):
        rows = self.dataplane.model_statistics(request.name, request.version)
        return pb.ModelStatisticsResponse(model_stats=[_model_statistics(*row) for row in rows])

    def LogSettings(self, request, context):
        values = {key: getattr(value, value.WhichOneof("parameter_choice") or "", None)
                  for key, value in request.settings.items()}
        return _log_settings_response(logs.update_settings(values))

    # -- inference (coroutines on the loop) -----------------------------------
    # -- shared memory and trace: the managers do the work (shared_memory.py, trace.py)
    def SystemSharedMemoryStatus(self, request, context):
        regions = self.dataplane.shared_memory.status(request.name, SYSTEM)
        return pb.SystemSharedMemoryStatusResponse(regions={r.name: _system_region(r) for r in regions})

    def SystemSharedMemoryRegister(self, request, context):
        self.dataplane.shared_memory.register_system(request.name, request.key, request.offset,
                                                     request.byte_size)
        return pb.SystemSharedMemoryRegisterResponse()

    def SystemSharedMemoryUnregister(self, request, context):
        self.dataplane.shared_memory.unregister(request.name, SYSTEM)
        return pb.SystemSharedMemoryUnregisterResponse()

    def CudaSharedMemoryStatus(self, request, context):
        regions = self.dataplane.shared_memory.status(request.name, CUDA)
        return pb.CudaSharedMemoryStatusResponse(regions={r.name: _cuda_region(r) for r in regions})

    def CudaSharedMemoryRegister(self, request, context):
        self.dataplane.shared_memory.register_cuda(request.name, request.raw_handle,
                                                   request.device_id, request.byte_size)
        return pb.CudaSharedMemoryRegisterResponse()

    def CudaSharedMemoryUnregister(self, request, context):
        self.dataplane.shared_memory.unregister(request.name, CUDA)
        return pb.CudaSharedMemoryUnregisterResponse()

    def TraceSetting(self, request, context):
        values = {key: list(setting.value) for key, setting in request.settings.items()}
        settings = self.dataplane.trace_setting(request.model_name, values)
        return pb.TraceSettingResponse(settings={
            key: pb.TraceSettingResponse.SettingValue(value=value) for key, value in settings.items()})

    async def ModelInfer(self, data: bytes, context) -> bytes:
        if len(data) >= TRIM_AFTER_BYTES:
            try:
                return await self._infer(data, context)
            finally:
                release_freed_memory()  # grpcio's receive slices of this message are free now
        return await self._infer(data, context)

    async def _infer(self, data: bytes, context) -> bytes:
        codec = self.codec
        request = codec.decode_request(data)
        if self.forward_headers:  # --grpc-header-forward-pattern
            request.parameters.update(
                self.forward_headers.parameters(context.invocation_metadata()))
        return codec.encode_response(await self.dataplane.infer_async(request))

    async def ModelStreamInfer(self, requests, context) -> None:
        grpc_errors = any(key == GRPC_ERROR_HEADER and value == "true"
                          for key, value in (context.invocation_metadata() or ()))
        stream = _Stream(self.dataplane, self.codec, context, grpc_errors)
        await stream.serve(requests)


class _Slot:
    """One request of a stream and what is still owed for it."""

    __slots__ = ("request", "ordered", "empty_final", "messages", "done")

    def __init__(self, request, ordered: bool, empty_final: bool):
        self.request = request
        self.ordered = ordered        # non-decoupled: answered in request order
        self.empty_final = empty_final
        self.messages: list = []      # encoded, held until the earlier slots are answered
        self.done = False


class _Stream:
    """A ModelStreamInfer call: a reader task enqueues requests, this task writes answers.

    Answers reach ``_put`` on the loop (``StreamSender``). Non-decoupled
    requests' answers are written in request order; a decoupled model's
    responses as they come, each with ``triton_final_response``. The stream
    ends once the client has half-closed and every request has its final answer.
    """

    def __init__(self, dataplane, codec, context, grpc_errors: bool):
        self.dataplane = dataplane
        self.codec = codec
        self.context = context
        self.grpc_errors = grpc_errors
        self.loop = asyncio.get_running_loop()
        self.outbox: deque = deque()
        self.wakeup = asyncio.Event()
        self.ordered: deque[_Slot] = deque()
        self.open: set = set()        # requests without their final answer
        self.reading = True

    async def serve(self, requests) -> None:
        reader = asyncio.ensure_future(self._read(requests))
        try:
            while True:
                while self.outbox:
                    message = self.outbox.popleft()
                    if isinstance(message, _Fatal):  # triton_grpc_error: end with its status
                        code, text = error_status(message.error, "ModelStreamInfer")
                        await self.context.abort(code, text)
                    await self.context.write(message)
                if not self.reading and not self.open and not self.outbox:
                    break
                self.wakeup.clear()
                await self.wakeup.wait()
            await reader  # re-raises what the reader hit
        finally:
            if not reader.done():
                reader.cancel()
            for request in list(self.open):  # client gone, or the stream ended with an error
                request.cancel()

    async def _read(self, requests) -> None:
        try:
            async for data in requests:
                self._submit(data)
        finally:
            self.reading = False
            self.wakeup.set()

    def _submit(self, data: bytes) -> None:
        try:
            request = self.codec.decode_request(data)
        except InvalidArgument as exc:
            self._error_message(None, exc)
            return
        params = request.parameters
        empty_final = params.get(EMPTY_FINAL_PARAMETER, False) is True if params else False
        slot = _Slot(request, not self.dataplane.model_decoupled(request.model_name,
                                                                  request.model_version),
                     empty_final)
        if slot.ordered:
            self.ordered.append(slot)
        self.open.add(request)
        request.sender = StreamSender(self.loop, self._put, slot)
        self.dataplane.enqueue(request)

    def _put(self, item: tuple) -> None:
        """A response, an error or the final flag for one request (on the loop)."""
        value, final, slot = item
        request = slot.request
        if isinstance(value, BaseException):
            if self.grpc_errors:  # in its place in the order, like a response
                message = _Fatal(value)
            else:
                message = self._encode(self._bare_response(request, final),
                                       error_status(value, "ModelStreamInfer")[1])
        elif value is None:  # a decoupled model's "complete" flag without a response
            message = (self._encode(self._bare_response(request, True))
                       if final and slot.empty_final else None)
        else:
            value.parameters["triton_final_response"] = final
            message = self._encode(value)
        if final:
            self.open.discard(request)
        if slot.ordered:
            if message is not None:
                slot.messages.append(message)
            slot.done = slot.done or final
            ordered = self.ordered
            while ordered and ordered[0].done:
                self.outbox.extend(ordered.popleft().messages)
        elif message is not None:
            self.outbox.append(message)
        self.wakeup.set()

    def _encode(self, response, error_message: str = "") -> bytes:
        try:
            return self.codec.encode_stream_response(response, error_message)
        except Exception as exc:  # an output the encoder can't take: say so in-band
            log.exception("encoding a stream response")
            return self.codec.encode_stream_response(
                self._bare_response(response, True) if response is not None else None,
                f"internal error: {type(exc).__name__}: {exc}")

    @staticmethod
    def _bare_response(request, final: bool) -> InferResponse:
        return InferResponse(request.model_name, request.model_version, request.id,
                             parameters={"triton_final_response": final})

    def _error_message(self, request, exc: BaseException) -> None:
        if self.grpc_errors:
            self.outbox.append(_Fatal(exc))
        else:
            self.outbox.append(self.codec.encode_stream_response(None, error_status(exc, "")[1]))
        self.wakeup.set()


class _Fatal:
    """In a stream's outbox: end the stream with this error's status (triton_grpc_error)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException):
        self.error = error


def _system_region(region) -> pb.SystemSharedMemoryStatusResponse.RegionStatus:
    return pb.SystemSharedMemoryStatusResponse.RegionStatus(
        name=region.name, key=region.key, offset=region.offset, byte_size=region.byte_size)


def _cuda_region(region) -> pb.CudaSharedMemoryStatusResponse.RegionStatus:
    return pb.CudaSharedMemoryStatusResponse.RegionStatus(
        name=region.name, device_id=region.device_id, byte_size=region.byte_size)


def _model_statistics(name: str, version: int, stats) -> pb.ModelStatistics:
    """A :class:`~triton_grpc_server.stats.ModelStats` snapshot as Triton's message."""
    def duration(d):
        return pb.StatisticDuration(count=d.count, ns=d.ns)
    return pb.ModelStatistics(
        name=name, version=str(version), last_inference=stats.last_inference_ms,
        inference_count=stats.inference_count, execution_count=stats.execution_count,
        inference_stats=pb.InferStatistics(
            success=duration(stats.success), fail=duration(stats.fail),
            queue=duration(stats.queue), compute_input=duration(stats.compute_input),
            compute_infer=duration(stats.compute_infer),
            compute_output=duration(stats.compute_output)),
        batch_stats=[pb.InferBatchStatistics(
            batch_size=size, compute_input=duration(b.compute_input),
            compute_infer=duration(b.compute_infer), compute_output=duration(b.compute_output))
            for size, b in sorted(stats.batch_stats.items())])


def _log_settings_response(current: dict) -> pb.LogSettingsResponse:
    response = pb.LogSettingsResponse()
    for key, value in current.items():
        field = ("bool_param" if isinstance(value, bool) else
                 "uint32_param" if isinstance(value, int) else "string_param")
        setattr(response.settings[key], field, value)
    return response


def _repository_parameters(parameters) -> dict:
    """``ModelRepositoryParameter`` map -> plain values (bool, int, str, bytes; None if unset)."""
    values = {}
    for key, parameter in parameters.items():
        which = parameter.WhichOneof("parameter_choice")
        values[key] = getattr(parameter, which) if which else None
    return values


def _unimplemented(name: str):
    def unimplemented(request, context):
        raise Unsupported(f"{name} is not implemented by this server yet")  # -> UNIMPLEMENTED
    return unimplemented


def _in_pool(executor: futures.Executor, method: Callable) -> Callable:
    """A control RPC as a coroutine handler that runs ``method`` in the pool."""
    async def handler(request, context):
        try:
            return await asyncio.get_running_loop().run_in_executor(
                executor, method, request, context)
        except Exception as exc:
            code, message = error_status(exc, method.__name__)
        await context.abort(code, message)
    handler.__name__ = method.__name__
    return handler


def _on_loop(method: Callable) -> Callable:
    """An inference coroutine as a handler; every error becomes a status here."""
    async def handler(request, context):
        try:
            return await method(request, context)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            code, message = error_status(exc, method.__name__)
        await context.abort(code, message)
    handler.__name__ = method.__name__
    return handler


def build_handlers(servicer: GRPCInferenceServicer,
                   executor: futures.Executor) -> grpc.GenericRpcHandler:
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    handlers = {}
    for method in service.methods:
        name = method.name
        if name == "ModelInfer":
            handlers[name] = grpc.unary_unary_rpc_method_handler(_on_loop(servicer.ModelInfer))
            continue
        if name == "ModelStreamInfer":
            handlers[name] = grpc.stream_stream_rpc_method_handler(
                _on_loop(servicer.ModelStreamInfer))
            continue
        request_class = getattr(pb, method.input_type.name)
        impl = getattr(servicer, name, None)
        handlers[name] = grpc.unary_unary_rpc_method_handler(
            _in_pool(executor, impl if impl is not None else _unimplemented(name)),
            request_deserializer=request_class.FromString,
            response_serializer=lambda m: m.SerializeToString())
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


class ReadinessHealthServicer(health.aio.HealthServicer):
    """``grpc.health.v1.Health/Check``: SERVING iff the server is ready, as Triton."""

    def __init__(self, dataplane):
        super().__init__()
        self.dataplane = dataplane

    async def Check(self, request, context):
        status = (health_pb2.HealthCheckResponse.SERVING if self.dataplane.server_ready()
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        return health_pb2.HealthCheckResponse(status=status)


def server_options(settings) -> list[tuple[str, int]]:
    from .transport_options import grpc_server_options

    return grpc_server_options(settings)


class BindError(RuntimeError):
    """The frontend could not listen on its address."""


class GrpcFrontend:
    """The running gRPC service; ``stop(grace)`` lets in-flight RPCs finish."""

    name = "gRPC"

    def __init__(self, server: grpc.aio.Server, executor: futures.Executor, address: str):
        self.server = server
        self.executor = executor
        self.address = address

    tls = False

    async def serve(self) -> None:
        await self.server.start()
        log.info("Started GRPCInferenceService at %s%s", self.address, " (TLS)" if self.tls else "")

    async def stop(self, grace: float) -> None:
        await self.server.stop(grace)
        self.executor.shutdown(wait=False)


async def start(dataplane, settings) -> GrpcFrontend:
    """Bind and serve ``GRPCInferenceService`` and ``grpc.health.v1`` on the running loop."""
    frontend = await bind(dataplane, settings)
    await frontend.serve()
    return frontend


async def bind(dataplane, settings) -> GrpcFrontend:
    """Bind the port (``serve()`` starts answering): start-up binds before loading models."""
    codec = load_codec(settings.infer_codec)
    log.info("ModelInfer codec: %s", codec.__name__)
    executor = futures.ThreadPoolExecutor(max_workers=settings.grpc_infer_thread_count,
                                          thread_name_prefix="grpc-control")
    server = grpc.aio.server(options=server_options(settings),
                             interceptors=aio_interceptors(settings))  # restricted protocols
    server.add_generic_rpc_handlers(
        (build_handlers(GRPCInferenceServicer(dataplane, codec), executor),))
    health_pb2_grpc.add_HealthServicer_to_server(ReadinessHealthServicer(dataplane), server)
    address = f"{settings.grpc_address}:{settings.grpc_port}"
    try:
        bound = add_port(server, address, settings)  # TLS when the settings ask for it
    except SecurityConfigError as exc:
        bound, reason = 0, str(exc)
    except RuntimeError:  # grpcio's text points at GRPC_VERBOSITY; say what it means
        bound, reason = 0, "address in use or not available"
    else:
        reason = "address in use or not available"
    if not bound:
        executor.shutdown(wait=False)
        raise BindError(f"failed to bind gRPC frontend on {address}: {reason}")
    frontend = GrpcFrontend(server, executor, address)
    frontend.tls = bool(settings.grpc_use_ssl or settings.grpc_use_ssl_mutual)
    return frontend
