"""grpc.health.v1 Health/Check through grpcio-health-checking's own stub: SERVING iff ready."""
from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

import models


def check(url: str, service: str = ""):
    with grpc.insecure_channel(url) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


def test_serving_when_ready(start_server, tmp_path):
    repo = tmp_path / "models"
    models.simple_model(repo, "simple")
    handle = start_server(repo)
    client = handle.client()
    try:
        assert client.is_server_ready() is True
    finally:
        client.close()
    assert check(handle.url) == health_pb2.HealthCheckResponse.SERVING


def test_not_serving_when_a_model_failed(start_server, tmp_path):
    """Strict readiness: a model that failed to load makes the server not ready."""
    repo = tmp_path / "models"
    models.simple_model(repo, "simple")
    models.write_text(repo / "broken" / "1" / "model.onnx", "garbage")
    handle = start_server(repo, "--exit-on-error=false")
    client = handle.client()
    try:
        assert client.is_server_live() is True
        assert client.is_server_ready() is False
    finally:
        client.close()
    assert check(handle.url) == health_pb2.HealthCheckResponse.NOT_SERVING


def test_serving_without_strict_readiness(start_server, tmp_path):
    repo = tmp_path / "models"
    models.simple_model(repo, "simple")
    models.write_text(repo / "broken" / "1" / "model.onnx", "garbage")
    handle = start_server(repo, "--exit-on-error=false", "--strict-readiness=false")
    assert check(handle.url) == health_pb2.HealthCheckResponse.SERVING
