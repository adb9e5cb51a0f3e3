"""ModelStatistics through tritonclient: figures consistent with the requests sent,
Triton's filters and error texts, and the 'statistics' extension."""
from __future__ import annotations

import time

import numpy as np
import pytest

from conftest import free_port
from scheduling_models import NO_AUTO_COMPLETE, add_inputs, write_model

grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture
def server(tmp_path, start_server):
    repo = tmp_path / "models"
    write_model(repo, "plain", "add", "max_batch_size: 8")  # batch dim, no dynamic batching
    write_model(repo, "batched", "add", "max_batch_size: 8\ndynamic_batching { }")
    write_model(repo, "versions", "add", "max_batch_size: 8\n"
                "version_policy { specific { versions: [ 1, 2 ] } }")
    (repo / "versions" / "2").mkdir()
    (repo / "versions" / "2" / "model.onnx").write_bytes(
        (repo / "versions" / "1" / "model.onnx").read_bytes())
    return start_server(repo, "--metrics-port", free_port(), NO_AUTO_COMPLETE)


def _duration(d):
    return d.count, d.ns


def test_statistics_match_the_requests_sent(server):
    client = server.client()
    before_ms = int(time.time() * 1000)
    sizes = [1, 2, 3, 1, 4]
    for size in sizes:
        data = np.zeros([size, 4], np.float32)
        client.infer("plain", add_inputs(grpcclient, data))
    bad = grpcclient.InferInput("INPUT0", [1, 4], "INT32")
    bad.set_data_from_numpy(np.zeros([1, 4], np.int32))
    with pytest.raises(InferenceServerException):
        client.infer("plain", [bad])

    stats = client.get_inference_statistics("plain", "1").model_stats
    assert len(stats) == 1
    s = stats[0]
    assert (s.name, s.version) == ("plain", "1")
    assert s.inference_count == sum(sizes)  # items
    assert s.execution_count == len(sizes)  # executions
    assert s.last_inference >= before_ms
    infer = s.inference_stats
    assert infer.success.count == len(sizes) and infer.success.ns > 0
    assert infer.fail.count == 1 and infer.fail.ns > 0
    for field in (infer.queue, infer.compute_input, infer.compute_infer, infer.compute_output):
        assert field.count == len(sizes)
    assert infer.compute_infer.ns > 0
    # a request's total duration covers its queueing and compute
    assert infer.success.ns >= infer.queue.ns + infer.compute_infer.ns
    by_size = {b.batch_size: b.compute_infer.count for b in s.batch_stats}
    assert by_size == {1: 2, 2: 1, 3: 1, 4: 1}
    assert (infer.cache_hit.count, infer.cache_miss.count) == (0, 0)

    # untouched models report zeros
    untouched = client.get_inference_statistics("batched").model_stats[0]
    assert untouched.inference_count == untouched.execution_count == 0
    assert _duration(untouched.inference_stats.success) == (0, 0)
    assert untouched.last_inference == 0


def test_filters_and_errors(server):
    client = server.client()
    every = client.get_inference_statistics().model_stats
    assert [(s.name, s.version) for s in every] == [
        ("batched", "1"), ("plain", "1"), ("versions", "1"), ("versions", "2")]
    def versions(*args):
        return [s.version for s in client.get_inference_statistics(*args).model_stats]
    assert versions("versions") == ["1", "2"]
    assert versions("versions", "2") == ["2"]

    cases = [
        (("missing", ""), "requested model 'missing' is not available"),
        (("missing", "1"), "requested model 'missing' is not available"),
        (("plain", "3"), "requested model version is not available for model 'plain'"),
        (("plain", "x"), "failed to get model version from specified version string 'x' "
                         "(details: stol), version should be an integral value > 0"),
    ]
    for (name, version), message in cases:
        with pytest.raises(InferenceServerException) as info:
            client.get_inference_statistics(name, version)
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert info.value.message() == message

    as_json = client.get_inference_statistics("plain", as_json=True)
    assert as_json["model_stats"][0]["name"] == "plain"


def test_statistics_extension_listed(server):
    extensions = list(server.client().get_server_metadata().extensions)
    assert "statistics" in extensions
    assert extensions.index("statistics") == extensions.index("parameters") + 1
