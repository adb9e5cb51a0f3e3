"""The gRPC frontend: thin handlers over the data plane.

ModelInfer takes and returns raw bytes (no protobuf deserializer is
registered for it), so the selected codec decodes and encodes the message and
a malformed request becomes INVALID_ARGUMENT rather than grpcio's generic
deserialization failure. The other RPCs use the generated protobuf classes.
Each error becomes a status in one place: :func:`_abort`.
"""
from __future__ import annotations

import logging
from concurrent import futures
from typing import Callable

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from .._proto import grpc_service_pb2 as pb
from ..errors import TritonError, Unsupported, grpc_code
from .codecs import load_codec

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"


def _guarded(method: Callable) -> Callable:
    """Run a handler; every error becomes a gRPC status here, and none escapes to grpcio."""
    def handler(request, context):
        try:
            return method(request, context)
        except TritonError as exc:
            context.abort(grpc_code(exc.status), exc.message)
        except Exception as exc:
            if context.code() is not None:  # raised by context.abort itself
                raise
            log.exception("internal error in %s", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
    handler.__name__ = method.__name__
    return handler


class GRPCInferenceServicer:
    """One method per RPC, each a few lines over the data plane."""

    def __init__(self, dataplane, codec):
        self.dataplane = dataplane
        self.codec = codec

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

    def ModelInfer(self, data: bytes, context) -> bytes:
        request = self.codec.decode_request(data)
        return self.codec.encode_response(self.dataplane.infer(request))


def _unimplemented(name: str):
    def handler(request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED,
                      f"{name} is not implemented by this server yet")
    return handler


def build_handlers(servicer: GRPCInferenceServicer) -> grpc.GenericRpcHandler:
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    handlers = {}
    for method in service.methods:
        name = method.name
        if name == "ModelInfer":
            handlers[name] = grpc.unary_unary_rpc_method_handler(_guarded(servicer.ModelInfer))
            continue
        request_class = getattr(pb, method.input_type.name)
        impl = getattr(servicer, name, None)
        if method.client_streaming or method.server_streaming:
            handlers[name] = grpc.stream_stream_rpc_method_handler(
                _unimplemented(name), request_deserializer=request_class.FromString,
                response_serializer=lambda m: m.SerializeToString())
            continue
        handlers[name] = grpc.unary_unary_rpc_method_handler(
            _guarded(impl) if impl is not None else _unimplemented(name),
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


def create_grpc_server(dataplane, settings) -> grpc.Server:
    codec = load_codec(settings.infer_codec)
    log.info("ModelInfer codec: %s", codec.__name__)
    limit = settings.grpc_max_message_bytes
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.grpc_infer_thread_count,
                                   thread_name_prefix="grpc"),
        options=[("grpc.max_send_message_length", limit),
                 ("grpc.max_receive_message_length", limit),
                 ("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((build_handlers(GRPCInferenceServicer(dataplane, codec)),))
    health_pb2_grpc.add_HealthServicer_to_server(ReadinessHealthServicer(dataplane), server)
    return server
