"""TLS (``--grpc-use-ssl``, ``--grpc-use-ssl-mutual``) and restricted protocols
(``--grpc-restricted-protocol``) against real servers, with the real tritonclient;
and the transport-free parsing and route tables of ``restrictions.py``."""
from __future__ import annotations

import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

import models
from certs import ThrowawayCA
from models import error_of
from triton_grpc_server.restrictions import (GRPC_METHOD_GROUPS, GROUPS, RestrictionError,
                                             Restrictions, grpc_method_group, http_route_group)

KEY = "triton-grpc-protocol-admin-key"
REFUSED = f"This protocol is restricted, expecting header '{KEY}'"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("tls_repo")
    models.simple_model(repo, "simple")
    return repo


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return ThrowawayCA(tmp_path_factory.mktemp("pki"))


def infer_simple(client, **kwargs):
    data = np.arange(16, dtype=np.int32).reshape(1, 16)
    tensors = [grpcclient.InferInput(name, [1, 16], "INT32") for name in ("INPUT0", "INPUT1")]
    for tensor in tensors:
        tensor.set_data_from_numpy(data)
    result = client.infer("simple", tensors, **kwargs)
    assert (result.as_numpy("OUTPUT0") == 2 * data).all()


def tls_client(server, ca, pair=None, host="127.0.0.1"):
    extra = {} if pair is None else {"certificate_chain": str(pair[0]), "private_key": str(pair[1])}
    return grpcclient.InferenceServerClient(f"{host}:{server.port}", ssl=True,
                                            root_certificates=str(ca.ca_cert), **extra)


def wait_live_tls(server, ca, pair=None, timeout=60.0):
    client = tls_client(server, ca, pair)
    deadline = time.monotonic() + timeout
    try:
        while True:
            assert server.process.poll() is None, server.log()
            try:
                if client.is_server_live():
                    return
            except Exception:
                assert time.monotonic() < deadline, server.log()
                time.sleep(0.2)
    finally:
        client.close()


# -- TLS ---------------------------------------------------------------------------------

def test_tls_serves_tritonclient_ssl(repo, ca, start_server):
    cert, key = ca.server_pair()
    server = start_server(repo, "--grpc-use-ssl", "true", "--grpc-server-cert", cert,
                          "--grpc-server-key", key, wait_ready=False)
    wait_live_tls(server, ca)
    for host in ("127.0.0.1", "localhost"):
        client = tls_client(server, ca, host=host)
        assert client.is_server_ready()
        infer_simple(client)
        client.close()
    plain = server.client()
    code, _ = error_of(plain.is_server_live)
    assert code == "UNAVAILABLE"  # a plaintext client cannot talk to a TLS port
    plain.close()


def test_tls_client_refuses_a_server_of_another_ca(repo, ca, start_server, tmp_path):
    cert, key = ca.server_pair()
    server = start_server(repo, "--grpc-use-ssl", "true", "--grpc-server-cert", cert,
                          "--grpc-server-key", key, wait_ready=False)
    wait_live_tls(server, ca)
    stranger = ThrowawayCA(tmp_path / "other", name="other-ca")
    client = tls_client(server, stranger)
    assert error_of(client.is_server_live)[0] == "UNAVAILABLE"
    client.close()


def test_mutual_tls_requires_a_client_certificate_of_the_root(repo, ca, start_server, tmp_path):
    cert, key = ca.server_pair()
    server = start_server(repo, "--grpc-use-ssl-mutual", "true",
                          "--grpc-server-cert", cert, "--grpc-server-key", key,
                          "--grpc-root-cert", ca.ca_cert, wait_ready=False)
    pair = ca.client_pair()
    wait_live_tls(server, ca, pair)
    client = tls_client(server, ca, pair)
    infer_simple(client)
    client.close()
    anonymous = tls_client(server, ca)  # TLS, but no client certificate: refused
    assert error_of(anonymous.is_server_live)[0] == "UNAVAILABLE"
    anonymous.close()
    stranger = ThrowawayCA(tmp_path / "other", name="other-ca")
    foreign = tls_client(server, ca, stranger.client_pair("foreign"))
    assert error_of(foreign.is_server_live)[0] == "UNAVAILABLE"
    foreign.close()


def test_tls_without_a_certificate_does_not_start(repo, start_server):
    server = start_server(repo, "--grpc-use-ssl", "true", wait_ready=False)
    assert server.process.wait(60) == 1
    assert "--grpc-server-cert must be given with --grpc-use-ssl" in server.log()


# -- restricted protocols ------------------------------------------------------------------

def test_restricted_model_repository_needs_its_header(repo, start_server):
    server = start_server(repo, "--model-control-mode", "explicit",
                          "--load-model", "simple",
                          "--grpc-restricted-protocol", "model-repository,statistics:admin-key=s3cret",
                          "--grpc-restricted-protocol", "trace:other=x")
    client = server.client()
    for call in (lambda: client.load_model("simple"), lambda: client.unload_model("simple"),
                 client.get_model_repository_index, client.get_inference_statistics):
        assert error_of(call) == ("UNAVAILABLE", REFUSED)
    wrong = {KEY: "guess"}
    assert error_of(client.load_model, "simple", headers=wrong) == ("UNAVAILABLE", REFUSED)
    assert client.is_model_ready("simple")  # nothing was unloaded
    # Unrestricted groups need nothing.
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_model_metadata("simple").name == "simple"
    infer_simple(client)
    # With the header, the calls go through.
    admin = {KEY: "s3cret"}
    client.unload_model("simple", headers=admin)
    client.load_model("simple", headers=admin)
    assert [m.name for m in client.get_model_repository_index(headers=admin).models] == ["simple"]
    infer_simple(client)
    assert client.get_inference_statistics("simple", headers=admin).model_stats[0].name == "simple"
    client.close()


def test_restricted_inference_and_health(repo, start_server):
    server = start_server(repo, "--grpc-restricted-protocol", "inference:infer-key=k1",
                          "--grpc-restricted-protocol", "health:probe=p1", wait_ready=False)
    client = server.client()
    deadline = time.monotonic() + 60
    while True:
        try:
            if client.is_server_live(headers={"triton-grpc-protocol-probe": "p1"}):
                break
        except Exception:
            assert server.process.poll() is None and time.monotonic() < deadline, server.log()
            time.sleep(0.2)
    assert error_of(client.is_server_live) == (
        "UNAVAILABLE", "This protocol is restricted, expecting header 'triton-grpc-protocol-probe'")
    assert error_of(infer_simple, client) == (
        "UNAVAILABLE",
        "This protocol is restricted, expecting header 'triton-grpc-protocol-infer-key'")
    infer_simple(client, headers={"triton-grpc-protocol-infer-key": "k1"})
    assert client.get_server_metadata().name == "triton"  # metadata is not restricted
    client.close()


@pytest.mark.parametrize("value,message", [
    ("bogus:k=v", "unknown restricted protocol 'bogus'"),
    ("health", "--grpc-restricted-protocol option format is '<config name>:<setting>=<value>'"),
    ("health:k=", "option format is"),
])
def test_malformed_restriction_stops_the_launch(repo, start_server, value, message):
    server = start_server(repo, "--grpc-restricted-protocol", value, wait_ready=False)
    assert server.process.wait(60) == 2
    assert message in server.log()


# -- restrictions.py, transport-free ---------------------------------------------------------

def test_parse_as_triton():
    rules = Restrictions.for_grpc(["health,metadata:Key=v", "inference:k2=v=w"]).rules
    assert rules == {"health": ("triton-grpc-protocol-Key", "v"),
                     "metadata": ("triton-grpc-protocol-Key", "v"),
                     "inference": ("triton-grpc-protocol-k2", "v=w")}
    assert Restrictions.for_http(["model-repository:admin=1"]).rules == {
        "model-repository": ("admin", "1")}
    with pytest.raises(RestrictionError, match="can not be specified in multiple config groups"):
        Restrictions.for_http(["health:a=1", "health:b=2"])
    with pytest.raises(RestrictionError, match="unknown restricted api 'infer'"):
        Restrictions.for_http(["infer:a=1"])
    assert not Restrictions.for_grpc([])


def test_refusal_compares_header_names_without_case():
    restrictions = Restrictions.for_http(["inference:X-Api-Key=s"])
    assert restrictions.refusal("inference", {"x-api-key": "s"}) is None
    assert restrictions.refusal("inference", {"x-api-key": "S"}) == "X-Api-Key"
    assert restrictions.refusal("inference", {}) == "X-Api-Key"
    assert restrictions.refusal("health", {}) is None
    assert restrictions.refusal(None, {}) is None


def test_every_rpc_of_the_service_has_a_group():
    from triton_grpc_server._proto import grpc_service_pb2 as pb

    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert sorted(m.name for m in service.methods) == sorted(GRPC_METHOD_GROUPS)
    assert set(GRPC_METHOD_GROUPS.values()) <= set(GROUPS)
    assert grpc_method_group("/inference.GRPCInferenceService/ModelInfer") == "inference"
    assert grpc_method_group("/grpc.health.v1.Health/Check") == "health"
    assert grpc_method_group("/other.Service/ModelInfer") is None


@pytest.mark.parametrize("method,path,group", [
    ("GET", "/v2", "metadata"), ("GET", "/v2/health/live", "health"),
    ("GET", "/v2/health/ready", "health"), ("GET", "/v2/models/m/ready", "health"),
    ("GET", "/v2/models/m", "metadata"), ("GET", "/v2/models/m/versions/3", "metadata"),
    ("POST", "/v2/models/m/infer", "inference"),
    ("POST", "/v2/models/m/versions/2/infer", "inference"),
    ("POST", "/v2/models/m/generate_stream", "inference"),
    ("GET", "/v2/models/m/config", "model-config"), ("GET", "/v2/models/stats", "statistics"),
    ("GET", "/v2/models/m/versions/1/stats", "statistics"),
    ("POST", "/v2/repository/index", "model-repository"),
    ("POST", "/v2/repository/models/m/load", "model-repository"),
    ("GET", "/v2/systemsharedmemory/status", "shared-memory"),
    ("POST", "/v2/cudasharedmemory/region/r/register", "shared-memory"),
    ("GET", "/v2/trace/setting", "trace"), ("POST", "/v2/models/m/trace/setting", "trace"),
    ("GET", "/v2/logging", "logging"), ("GET", "/metrics", None), ("GET", "/v2/nothing", None),
])
def test_http_route_groups(method, path, group):
    assert http_route_group(method, path) == group


def test_http_restricted_api_needs_its_header(repo, start_server):
    import tritonclient.http as httpclient

    server = start_server(repo, "--model-control-mode", "explicit", "--load-model", "simple",
                          "--http-restricted-api", "model-repository:admin-key=s3cret")
    client = server.http_client()
    code = None
    try:
        client.unload_model("simple")
    except Exception as exc:
        code, message = getattr(exc, "status", lambda: None)(), exc.message()
    assert (code, message) == ("403", "This API is restricted, expecting header 'admin-key'")
    assert client.is_model_ready("simple")
    data = np.arange(16, dtype=np.int32).reshape(1, 16)
    tensors = [httpclient.InferInput(name, [1, 16], "INT32") for name in ("INPUT0", "INPUT1")]
    for tensor in tensors:
        tensor.set_data_from_numpy(data)
    assert (client.infer("simple", tensors).as_numpy("OUTPUT0") == 2 * data).all()
    client.unload_model("simple", headers={"admin-key": "s3cret"})
    client.load_model("simple", headers={"admin-key": "s3cret"})
    # The gRPC endpoint has its own flag: unrestricted here.
    assert [m.name for m in server.client().get_model_repository_index().models] == ["simple"]
    client.close()
