"""Prometheus metrics with Triton's names and labels, on a registry the server owns.

Per-model figures are not counted twice: a collector reads each loaded
version's :class:`~triton_grpc_server.stats.ModelStats` at scrape time and
reports it as Triton's ``nv_inference_*`` families (labels ``model`` and
``version``; durations in microseconds). Triton exposes its counters without
the ``_total`` suffix that ``prometheus_client`` adds to counter families, so
they are exposed as untyped samples under Triton's exact names; dashboards
written for Triton work unchanged. ``nv_inference_pending_request_count`` is a
gauge. GPU figures come from NVML (``nvidia-ml-py``) when it is installed and
sees a device; nothing here is imported unless metrics are enabled.
"""
from __future__ import annotations

import logging
import threading
from typing import Iterable, Optional

from .stats import FAILURE_REASONS

log = logging.getLogger(__name__)

# (name, help, attribute of ModelStats or a (Duration attribute, field))
_MODEL_COUNTERS = (
    ("nv_inference_request_success", "Number of successful inference requests, all batch sizes",
     ("success", "count")),
    ("nv_inference_count", "Number of inferences performed (does not include cached requests)",
     "inference_count"),
    ("nv_inference_exec_count",
     "Number of model executions performed (does not include cached requests)",
     "execution_count"),
    ("nv_inference_request_duration_us",
     "Cumulative inference request duration in microseconds (includes cached requests)",
     ("success", "ns")),
    ("nv_inference_queue_duration_us",
     "Cumulative inference queuing duration in microseconds (includes cached requests)",
     ("queue", "ns")),
    ("nv_inference_compute_input_duration_us",
     "Cumulative compute input duration in microseconds (does not include cached requests)",
     ("compute_input", "ns")),
    ("nv_inference_compute_infer_duration_us",
     "Cumulative compute inference duration in microseconds (does not include cached requests)",
     ("compute_infer", "ns")),
    ("nv_inference_compute_output_duration_us",
     "Cumulative inference compute output duration in microseconds (does not include cached "
     "requests)", ("compute_output", "ns")),
)


def _value(stats, source) -> float:
    if isinstance(source, str):
        return getattr(stats, source)
    duration = getattr(stats, source[0])
    return duration.count if source[1] == "count" else duration.ns // 1000


class ModelCollector:
    """Triton's per-model families, read from the repository's loaded versions."""

    def __init__(self, repository):
        self.repository = repository

    def _versions(self):
        for name, entry in sorted(self.repository.entries().items()):
            for number, version in sorted(entry.versions.items()):
                stats = getattr(version, "stats", None)
                if version.ready and stats is not None:
                    yield name, str(number), stats.snapshot()

    def collect(self) -> Iterable:
        from prometheus_client.core import GaugeMetricFamily, Metric

        rows = list(self._versions())
        for name, help_text, source in _MODEL_COUNTERS:
            metric = Metric(name, help_text, "unknown")
            for model, version, stats in rows:
                metric.add_sample(name, {"model": model, "version": version},
                                  float(_value(stats, source)))
            yield metric
        failure = Metric("nv_inference_request_failure",
                         "Number of failed inference requests, all batch sizes", "unknown")
        for model, version, stats in rows:
            for reason in FAILURE_REASONS:
                failure.add_sample("nv_inference_request_failure",
                                   {"model": model, "reason": reason, "version": version},
                                   float(stats.failures[reason]))
        yield failure
        pending = GaugeMetricFamily("nv_inference_pending_request_count",
                                    "Instantaneous number of pending requests awaiting execution "
                                    "per-model.", labels=["model", "version"])
        for model, version, stats in rows:
            pending.add_metric([model, version], float(stats.pending))
        yield pending


class GpuCollector:
    """``nv_gpu_*`` through NVML, labelled by ``gpu_uuid``."""

    def __init__(self, nvml, handles):
        self.nvml = nvml
        self.handles = handles

    @classmethod
    def create(cls) -> Optional["GpuCollector"]:
        try:
            import pynvml
        except ImportError:
            return None
        try:
            pynvml.nvmlInit()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i)
                       for i in range(pynvml.nvmlDeviceGetCount())]
        except Exception as exc:  # no driver, no device
            log.info("GPU metrics disabled: %s", exc)
            return None
        return cls(pynvml, handles) if handles else None

    def collect(self) -> Iterable:
        from prometheus_client.core import GaugeMetricFamily

        nvml = self.nvml
        families = {
            "util": GaugeMetricFamily("nv_gpu_utilization", "GPU utilization rate [0.0 - 1.0)",
                                      labels=["gpu_uuid"]),
            "total": GaugeMetricFamily("nv_gpu_memory_total_bytes", "GPU total memory, in bytes",
                                       labels=["gpu_uuid"]),
            "used": GaugeMetricFamily("nv_gpu_memory_used_bytes", "GPU used memory, in bytes",
                                      labels=["gpu_uuid"]),
            "power": GaugeMetricFamily("nv_gpu_power_usage", "GPU power usage in watts",
                                       labels=["gpu_uuid"]),
            "limit": GaugeMetricFamily("nv_gpu_power_limit", "GPU power management limit in watts",
                                       labels=["gpu_uuid"]),
        }
        for handle in self.handles:
            try:
                uuid = nvml.nvmlDeviceGetUUID(handle)
                uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                families["util"].add_metric(
                    [uuid], nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0)
                families["total"].add_metric([uuid], float(memory.total))
                families["used"].add_metric([uuid], float(memory.used))
                families["power"].add_metric([uuid], nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0)
                families["limit"].add_metric(
                    [uuid], nvml.nvmlDeviceGetPowerManagementLimit(handle) / 1000.0)
            except Exception as exc:  # a device that stops answering must not break the scrape
                log.debug("NVML query failed: %s", exc)
        yield from families.values()


# Exposition text appended after the registry's: callables returning text in the
# Prometheus format, for families prometheus_client would rename (it adds
# ``_total`` to counters; Python models' own counters keep the name they chose).
TEXT_SOURCES: list = []


def register_text_source(source) -> None:
    if source not in TEXT_SOURCES:
        TEXT_SOURCES.append(source)


class MetricsServer:
    """The ``/metrics`` HTTP endpoint over a registry this server owns."""

    def __init__(self, repository, registry=None, gpu: bool = True):
        from prometheus_client import CollectorRegistry

        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
        self.registry.register(ModelCollector(repository))
        collector = GpuCollector.create() if gpu else None
        if collector is not None:
            self.registry.register(collector)
        self._httpd = self._thread = None

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        text = generate_latest(self.registry)
        extra = "".join(source() for source in TEXT_SOURCES)
        return text + extra.encode("utf-8") if extra else text

    def _app(self, environ, start_response):
        from prometheus_client import CONTENT_TYPE_LATEST

        body = self.exposition()
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST),
                                  ("Content-Length", str(len(body)))])
        return [body]

    def start(self, address: str, port: int) -> bool:
        """Serve on ``address:port``; a port that can't be bound is a warning, not a failure."""
        import socketserver
        from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

        class Server(socketserver.ThreadingMixIn, WSGIServer):
            daemon_threads = True

        class QuietHandler(WSGIRequestHandler):
            def log_message(self, *args):
                pass

        try:
            self._httpd = make_server(address, port, self._app, Server, QuietHandler)
            self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True,
                                            name="metrics-http")
            self._thread.start()
        except OSError as exc:
            log.warning("failed to start metrics service on %s:%d: %s", address, port, exc)
            return False
        log.info("Started Metrics Service at %s:%d", address, port)
        return True

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


def create_metrics_server(repository, settings) -> Optional[MetricsServer]:
    """The metrics endpoint if enabled and ``prometheus_client`` is installed, else ``None``."""
    if not getattr(settings, "allow_metrics", True):
        return None
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        log.warning("metrics disabled: install triton_grpc_server[metrics] (prometheus-client)")
        return None
    server = MetricsServer(repository)
    server.start(settings.grpc_address, settings.metrics_port)
    return server
