"""The gRPC frontend: thin handlers over the data plane.

ModelInfer takes and returns raw bytes (no protobuf deserializer is
registered for it), so the selected codec decodes and encodes the message and
a malformed request becomes INVALID_ARGUMENT rather than grpcio's generic
deserialization failure. The other RPCs use the generated protobuf classes.
Each error becomes a status in one place: :func:`error_status`.
"""
from __future__ import annotations

import logging
from concurrent import futures
from typing import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from .._proto import grpc_service_pb2 as pb
from ..errors import TritonError, Unsupported, grpc_code
from .. import logs
from .codecs import load_codec
from .transport_options import HeaderForwarder

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"


def error_status(exc: Exception, where: str) -> tuple[grpc.StatusCode, str]:
    """The status for an error raised by a handler (both serving loops use this).

    Call it inside the ``except`` block, so an internal error is logged with its traceback.
    """
    if isinstance(exc, TritonError):
        return grpc_code(exc.status), exc.message
    log.exception("internal error in %s", where)
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"


def _guarded(method: Callable) -> Callable:
    """Run a handler; every error becomes a gRPC status here, and none escapes to grpcio."""
    def handler(request, context):
        try:
            return method(request, context)
        except Exception as exc:
            if context.code() is not None:  # raised by context.abort itself
                raise
            context.abort(*error_status(exc, method.__name__))
    handler.__name__ = method.__name__
    return handler


class GRPCInferenceServicer:
    """One method per RPC, each a few lines over the data plane."""

    def __init__(self, dataplane, codec):
        self.dataplane = dataplane
        self.codec = codec
        self.forward_headers = HeaderForwarder.for_grpc(dataplane.settings)

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

    def ModelInfer(self, data: bytes, context) -> bytes:
        request = self.codec.decode_request(data)
        if self.forward_headers:
            request.parameters.update(
                self.forward_headers.parameters(context.invocation_metadata()))
        return self.codec.encode_response(self.dataplane.infer(request, _cancelled(context)))

    def LogSettings(self, request, context):
        values = {key: getattr(value, value.WhichOneof("parameter_choice") or "", None)
                  for key, value in request.settings.items()}
        return _log_settings_response(logs.update_settings(values))


def _cancelled(context) -> Callable[[], bool]:
    """A check the scheduler polls: true once the RPC is cancelled or its deadline has passed."""
    is_active = getattr(context, "is_active", None)
    gone = context.cancelled if is_active is None else (lambda: not is_active())  # aio / sync

    def cancelled() -> bool:
        if gone():
            return True
        # gRPC cancels the call at its deadline; this is the fallback should it not have yet
        # (the grace lets the client see DEADLINE_EXCEEDED rather than our CANCELLED)
        remaining = context.time_remaining()
        return remaining is not None and remaining < -0.05
    return cancelled


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


def build_handlers(servicer: GRPCInferenceServicer, guard: Callable = _guarded,
                   guard_infer: Callable | None = None) -> grpc.GenericRpcHandler:
    """The service's handlers, each servicer method wrapped by ``guard``.

    ``guard`` turns a servicer method into a handler of the serving loop (a plain
    function for ``grpc.server``, a coroutine function for ``grpc.aio``);
    ``guard_infer`` wraps ModelInfer when it should run differently (default: ``guard``).
    """
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    handlers = {}
    for method in service.methods:
        name = method.name
        if name == "ModelInfer":
            handlers[name] = grpc.unary_unary_rpc_method_handler(
                (guard_infer or guard)(servicer.ModelInfer))
            continue
        request_class = getattr(pb, method.input_type.name)
        impl = getattr(servicer, name, None)
        if method.client_streaming or method.server_streaming:
            handlers[name] = grpc.stream_stream_rpc_method_handler(
                guard(_unimplemented(name)), request_deserializer=request_class.FromString,
                response_serializer=lambda m: m.SerializeToString())
            continue
        handlers[name] = grpc.unary_unary_rpc_method_handler(
            guard(impl if impl is not None else _unimplemented(name)),
            request_deserializer=request_class.FromString,
            response_serializer=lambda m: m.SerializeToString())
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


class ReadinessHealthServicer(health.HealthServicer):
    """``grpc.health.v1.Health/Check``: SERVING iff the server is ready, as Triton."""

    def __init__(self, dataplane):
        super().__init__()
        self.dataplane = dataplane

    def Check(self, request, context):
        status = (health_pb2.HealthCheckResponse.SERVING if self.dataplane.server_ready()
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        return health_pb2.HealthCheckResponse(status=status)


def server_options(settings) -> list[tuple[str, int]]:
    from .transport_options import grpc_server_options

    return grpc_server_options(settings)


def create_grpc_server(dataplane, settings) -> grpc.Server:
    codec = load_codec(settings.infer_codec)
    log.info("ModelInfer codec: %s", codec.__name__)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.grpc_infer_thread_count,
                                   thread_name_prefix="grpc"),
        options=server_options(settings))
    server.add_generic_rpc_handlers((build_handlers(GRPCInferenceServicer(dataplane, codec)),))
    health_pb2_grpc.add_HealthServicer_to_server(ReadinessHealthServicer(dataplane), server)
    return server
