"""Prometheus metrics scraped over HTTP: Triton's names, labels and counts."""
from __future__ import annotations

import re
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


def scrape_text(port: int, path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return response.read().decode()


def types(text: str) -> dict:
    return dict(line.split()[2:4] for line in text.splitlines() if line.startswith("# TYPE"))


def test_metrics_flags(tmp_path, start_server):
    repo = tmp_path / "models"
    write_model(repo, "add", "add", "max_batch_size: 8")
    port = free_port()
    server = start_server(repo, "--metrics-port", port, "--allow-metrics", "false")
    with pytest.raises(urllib.error.URLError):
        scrape(port)
    assert server.client().is_server_ready()


def test_types_paths_and_system_gauges(tmp_path, start_server):
    """Triton's types (counters without a _total suffix), /metrics only, CPU and pinned-pool
    gauges on by default, load durations."""
    repo = tmp_path / "models"
    write_model(repo, "add", "add", "max_batch_size: 8")
    port = free_port()
    server = start_server(repo, "--metrics-port", port, "--metrics-interval-ms", "200",
                          "--pinned-memory-pool-byte-size", "1048576")
    server.client().infer("add", add_inputs(grpcclient, np.zeros([1, 4], np.float32)))
    text = scrape_text(port)
    kinds = types(text)
    for name in ("nv_inference_request_success", "nv_inference_request_failure",
                 "nv_inference_count", "nv_inference_exec_count",
                 "nv_inference_request_duration_us", "nv_inference_queue_duration_us",
                 "nv_inference_compute_infer_duration_us"):
        assert kinds[name] == "counter", name
    for name in ("nv_inference_pending_request_count", "nv_model_load_duration_secs",
                 "nv_cpu_utilization", "nv_cpu_memory_total_bytes", "nv_cpu_memory_used_bytes",
                 "nv_pinned_memory_pool_total_bytes", "nv_pinned_memory_pool_used_bytes"):
        assert kinds[name] == "gauge", name
    assert "untyped" not in kinds.values()
    assert not re.search(r"^nv_inference_\w*_total\b", text, re.M)  # Triton's exact names
    samples = scrape(port)
    assert value(samples, "nv_model_load_duration_secs", model="add", version="1") > 0
    assert value(samples, "nv_inference_request_success", model="add", version="1") == 1
    plain = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
             if line and not line.startswith("#") and "{" not in line}
    assert plain["nv_pinned_memory_pool_total_bytes"] == 1048576
    assert 0 < plain["nv_cpu_memory_used_bytes"] < plain["nv_cpu_memory_total_bytes"]
    wait_until(lambda: 0.0 <= float(next(
        line.split()[1] for line in scrape_text(port).splitlines()
        if line.startswith("nv_cpu_utilization "))) <= 1.0)
    for path in ("/", "/v2/health/ready", "/metricsx", "/metrics/x"):
        with pytest.raises(urllib.error.HTTPError) as error:
            scrape_text(port, path)
        assert error.value.code == 404

    # --allow-cpu-metrics false drops the CPU gauges only
    port = free_port()
    start_server(repo, "--metrics-port", port, "--allow-cpu-metrics=false")
    kinds = types(scrape_text(port))
    assert "nv_cpu_utilization" not in kinds and "nv_inference_count" in kinds


def test_latency_summaries(tmp_path, start_server):
    """--metrics-config summary_latencies=true: Triton's summary families with quantiles."""
    repo = tmp_path / "models"
    write_model(repo, "add", "add", "max_batch_size: 8")
    port = free_port()
    server = start_server(repo, "--metrics-port", port, "--metrics-config",
                          "summary_latencies=true", "--metrics-config",
                          "summary_quantiles=0.5:0.05,0.99:0.001")
    client = server.client()
    for _ in range(5):
        client.infer("add", add_inputs(grpcclient, np.zeros([1, 4], np.float32)))
    text = scrape_text(port)
    kinds = types(text)
    model = {"model": "add", "version": "1"}
    samples = scrape(port)
    for family in ("request", "queue", "compute_input", "compute_infer", "compute_output"):
        name = f"nv_inference_{family}_summary_us"
        assert kinds[name] == "summary"
        assert value(samples, f"{name}_count", **model) == 5
        assert value(samples, f"{name}_sum", **model) >= 0
        for quantile in ("0.5", "0.99"):
            assert value(samples, name, quantile=quantile, **model) >= 0
    request_sum = value(samples, "nv_inference_request_summary_us_sum", **model)
    assert request_sum > 0
    assert value(samples, "nv_inference_request_summary_us", quantile="0.99", **model) <= \
        request_sum
    # off by default
    port = free_port()
    start_server(repo, "--metrics-port", port)
    assert "nv_inference_request_summary_us" not in scrape_text(port)


def test_summary_window_in_process():
    from triton_grpc_server.metrics import LatencySummaries, parse_quantiles

    summaries = LatencySummaries(max_age_s=60)
    for us in range(1, 101):
        summaries.observe(us * 1000, 0, 0, us * 1000, 0)
    count, sums, per_family = summaries.snapshot((0.5, 0.9, 0.99))
    assert count == 100 and sums[0] == sum(range(1, 101))
    assert per_family[0] == [50.0, 90.0, 99.0] and per_family[3] == [50.0, 90.0, 99.0]
    assert parse_quantiles("0.5:0.05,bad,0.9:0.01") == (0.5, 0.9)
