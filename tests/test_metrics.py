"""Prometheus metrics scraped over HTTP: Triton's names, labels and counts."""
from __future__ import annotations

import re
import socket
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from conftest import free_port
from scheduling_models import (Completions, add_inputs, delay_for, slow_inputs, wait_until,
                               write_model)

grpcclient = pytest.importorskip("tritonclient.grpc")
pytest.importorskip("prometheus_client")
from tritonclient.utils import InferenceServerException  # noqa: E402

_SAMPLE = re.compile(r'^(\w+)\{([^}]*)\} (\S+)$')


def scrape(port: int) -> dict:
    """{(name, frozenset(labels)): value} from the text exposition."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            labels = frozenset(tuple(part.split("=", 1)) for part in
                               re.findall(r'\w+="[^"]*"', match.group(2)))
            labels = frozenset((k, v.strip('"')) for k, v in labels)
            samples[(match.group(1), labels)] = float(match.group(3))
    return samples


def value(samples, name, **labels):
    return samples[(name, frozenset(labels.items()))]


def test_inference_metrics(tmp_path, start_server):
    repo = tmp_path / "models"
    write_model(repo, "add", "add", "max_batch_size: 8\ndynamic_batching { }")
    port = free_port()
    server = start_server(repo, "--metrics-port", port)
    client = server.client()
    sizes = [1, 2, 3]
    for size in sizes:
        client.infer("add", add_inputs(grpcclient, np.zeros([size, 4], np.float32)))
    bad = grpcclient.InferInput("INPUT0", [1, 4], "INT32")
    bad.set_data_from_numpy(np.zeros([1, 4], np.int32))
    with pytest.raises(InferenceServerException):
        client.infer("add", [bad])

    samples = scrape(port)
    model = {"model": "add", "version": "1"}
    assert value(samples, "nv_inference_request_success", **model) == 3
    assert value(samples, "nv_inference_count", **model) == 6
    assert value(samples, "nv_inference_exec_count", **model) == 3
    assert value(samples, "nv_inference_pending_request_count", **model) == 0
    assert value(samples, "nv_inference_request_failure", reason="OTHER", **model) == 1
    for reason in ("REJECTED", "CANCELED", "BACKEND"):
        assert value(samples, "nv_inference_request_failure", reason=reason, **model) == 0
    for name in ("request", "queue", "compute_input", "compute_infer", "compute_output"):
        assert value(samples, f"nv_inference_{name}_duration_us", **model) >= 0
    assert value(samples, "nv_inference_request_duration_us", **model) > 0

    # consistent with the statistics RPC (durations in us there ns)
    stats = client.get_inference_statistics("add").model_stats[0]
    assert stats.inference_count == 6 and stats.execution_count == 3
    assert value(samples, "nv_inference_request_duration_us", **model) == \
        stats.inference_stats.success.ns // 1000


def test_pending_and_rejected(tmp_path, start_server):
    repo = tmp_path / "models"
    write_model(repo, "slow", "slow",
                "max_batch_size: 1\ninstance_group [ { kind: KIND_CPU count: 1 } ]\n"
                "dynamic_batching { default_queue_policy { max_queue_size: 2 } }")
    port = free_port()
    server = start_server(repo, "--metrics-port", port)
    client = server.client()
    done = Completions()
    client.async_infer("slow", slow_inputs(grpcclient, 0, delay_for(1.5)), done.callback(0))
    time.sleep(0.15)
    for tag in (1, 2, 3):
        client.async_infer("slow", slow_inputs(grpcclient, tag, 1), done.callback(tag))
        time.sleep(0.15)
    model = {"model": "slow", "version": "1"}
    # 0 runs, 1 and 2 wait, 3 was rejected
    assert value(scrape(port), "nv_inference_pending_request_count", **model) == 2
    done.wait(4)
    samples = scrape(port)
    assert value(samples, "nv_inference_pending_request_count", **model) == 0
    assert value(samples, "nv_inference_request_failure", reason="REJECTED", **model) == 1
    assert value(samples, "nv_inference_request_success", **model) == 3


def test_metrics_flags(tmp_path, start_server):
    repo = tmp_path / "models"
    write_model(repo, "add", "add", "max_batch_size: 8")
    port = free_port()
    server = start_server(repo, "--metrics-port", port, "--allow-metrics", "false")
    with pytest.raises(urllib.error.URLError):
        scrape(port)
    assert server.client().is_server_ready()

    # a metrics port that is taken is a warning; the server still serves
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy_port = taken.getsockname()[1]
        server = start_server(repo, "--metrics-port", busy_port)
        assert server.client().is_server_ready()
        wait_until(lambda: "failed to start metrics service" in server.log())
